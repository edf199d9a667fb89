"""CK+48: the 48x48 crops of the extended Cohn-Kanade peak frames (7 emotions, no neutral).

Layout ``<class>/S<subject>_<sequence>_<frame>.png`` with class folders ``anger contempt disgust
fear happy sadness surprise`` (any vocabulary alias is accepted; a ``neutral`` folder too).
``groups`` holds the subject number (``S010`` -> 10), ``info["sequences"]`` the sequence id.

Splits: ``all`` (every image), and ``train`` / ``test`` of a **subject-independent** fold:
``fold`` in ``0..num_folds-1`` (default ``num_folds=10``, the standard 10-fold protocol).
Subjects are assigned to folds by :func:`fermetric.data.splits.subject_folds` (largest subject
first to the fold with the fewest images: deterministic and balanced by image count), so the
three near-identical frames of a sequence, and every sequence of a subject, stay on one side.
Files whose name does not follow ``S<subject>_<sequence>_<frame>`` cannot be assigned to a
subject and are skipped with a warning.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .. import vocab
from ..errors import ConfigError, DataError
from .base import ImageSet
from .loader import DATASETS, DatasetReader, Listing, alias_class, listed, scan_class_folders, warn
from .splits import fold_split

NAME = re.compile(r"^S(\d+)_(\d+)_(\d+)\.[A-Za-z]+$")


@DATASETS.register("ckplus48")
class CKPlus48(DatasetReader):
    """CK+48 crops with subject-independent k-fold splits."""

    name = "ckplus48"
    options = {"fold": None, "num_folds": 10}
    layout_hint = (
        "expected class folders (anger, contempt, disgust, fear, happy, sadness, surprise) "
        "of S<subject>_<sequence>_<frame>.png images"
    )

    def splits(self, root: Path) -> list[str]:
        if not root.is_dir() or not any(alias_class(p.name) for p in root.iterdir() if p.is_dir()):
            raise self.not_found(root, "no emotion class folders")
        return ["train", "test", "all"]

    def partition(self, root: Path) -> list[str]:
        return ["all"]

    def list_split(self, root: Path, split: str, opts: dict) -> Listing:
        found = scan_class_folders(root, root, alias_class)
        if found.unknown:
            raise DataError(
                f"{root}: unknown class folder(s) {listed(found.unknown)} for ckplus48; "
                f"known spellings: {', '.join(sorted(vocab.ALIASES))}"
            )
        if found.empty:
            warn(f"{root}: empty class folder(s) in ckplus48: {listed(found.empty)}")
        classes = vocab.ordered(found.files)
        index = {c: i for i, c in enumerate(classes)}
        items, unnamed = [], []
        for label, rels in found.files.items():
            for rel in rels:
                match = NAME.match(rel.rsplit("/", 1)[-1])
                if match is None:
                    unnamed.append(rel)
                else:
                    items.append((rel, index[label], int(match.group(1)), int(match.group(2))))
        if unnamed:
            warn(f"{root}: skipped {len(unnamed)} file(s) not named S<subject>_<sequence>_<frame>: {listed(unnamed)}")
        items.sort()
        groups = np.array([s for _, _, s, _ in items], dtype=np.int64)
        listing = Listing(
            relpaths=[rel for rel, _, _, _ in items],
            labels=np.array([lab for _, lab, _, _ in items], dtype=np.int64),
            classes=classes,
            groups=groups,
            cache_split="all",
            row_info={"sequences": np.array([q for _, _, _, q in items], dtype=np.int64)},
        )
        if split != "all" and items:
            fold = opts["fold"]
            if fold is None:
                raise ConfigError(
                    f"ckplus48 split {split!r} needs a fold (fold=0..{opts['num_folds'] - 1}, "
                    f"CLI --fold N); `eval`, `index build` and `subclasses` can also read --split all"
                )
            train, test = fold_split(groups, int(fold), int(opts["num_folds"]))
            listing.select = train if split == "train" else test
            listing.info.update({"fold": int(fold), "num_folds": int(opts["num_folds"])})
        return listing

    def load_split(self, root: Path, split: str, opts: dict) -> ImageSet:
        imageset = super().load_split(root, split, opts)
        imageset.info["subjects"] = int(len(np.unique(imageset.groups)))
        return imageset
