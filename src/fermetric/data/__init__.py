"""Datasets, image decoding, caches, splits, samplers and GPU transforms.

``load_dataset(name, root, split, **options)`` returns an :class:`ImageSet` (uint8 ``[N,H,W]``
grey images, int64 labels in vocabulary order); the readers are registered in :data:`DATASETS`:

- ``fer2013``: Kaggle ``{train,val,test}/<class>/`` folders or the original ``fer2013.csv``
- ``ferplus``: ``FER2013Train/Valid/Test`` with ``label.csv`` votes (``label_mode``)
- ``ckplus48``: ``<class>/S<subj>_<seq>_<frame>.png`` (``fold``, ``num_folds=10``)
- ``jaffe``: ``XX.AN1.39.tiff`` (``subject`` or ``fold``)
- ``rafdb``: official ``EmoLabel`` + ``Image/aligned`` or Kaggle ``DATASET/{train,test}/{1..7}``
- ``folder``: any ``<class>/`` or ``{train,val,test}/<class>/`` folder

Options every dataset takes: ``size`` (None: native), ``skip_bad`` (False), ``cache`` (True),
``workers`` (decode threads).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, DataError
from . import ckplus, fer2013, ferplus, folder, jaffe, rafdb  # noqa: F401  (register the readers)
from .base import DataWarning, ImageSet
from .imageio import decode_image_bytes, read_image, to_array
from .loader import DATASETS, DatasetReader

__all__ = [
    "DATASETS",
    "DataWarning",
    "DatasetReader",
    "ImageSet",
    "dataset_splits",
    "decode_image_bytes",
    "load_dataset",
    "parse_data_arg",
    "read_image",
    "to_array",
]


def load_dataset(name: str, root: str | Path, split: str = "train", **options) -> ImageSet:
    """One split of a dataset as an :class:`ImageSet` (decoded once, then cached)."""
    return DATASETS.get(name)().load(Path(root).expanduser(), split, **options)


def dataset_splits(name: str, root: str | Path) -> list[str]:
    """The splits ``root`` holds for dataset ``name`` (``all`` is always accepted besides)."""
    reader = DATASETS.get(name)()
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such file or directory; {reader.layout_hint}")
    return reader.splits(root)


def parse_data_arg(text: str) -> tuple[str, Path]:
    """``"fer2013=../data/fer2013"`` -> ``("fer2013", Path("../data/fer2013"))``."""
    name, sep, root = str(text).partition("=")
    name, root = name.strip(), root.strip()
    if not sep or not name or not root:
        raise ConfigError(
            f"--data {text!r} must look like DATASET=ROOT, e.g. fer2013=../shared/data/fer2013; "
            f"datasets: {', '.join(DATASETS.names())}"
        )
    DATASETS.get(name)  # unknown name -> ConfigError listing the known ones
    return name, Path(root).expanduser()


from . import packed  # noqa: E402,F401  (registers the "packed" dataset: benchmarks/pack_dataset.py)
