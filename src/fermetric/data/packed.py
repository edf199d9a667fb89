"""Packed datasets: every split of a dataset in one compressed ``.npz`` file (``packed`` dataset).

A lent GPU machine receives the git working tree plus at most 64 MiB of carried files, and not
the dataset folders, so benchmarks ship each dataset as one pack made by
``benchmarks/pack_dataset.py`` from what :func:`fermetric.data.load_dataset` returns, and train
from it with ``--data packed=.pack/fer2013.npz``. Design decisions (each with its default):

- **Lossless**: the pack holds exactly the uint8 pixels, labels, classes, paths, subject groups and
  soft labels the dataset reader produced; a packed split equals the loaded one item for item.
- **Container**: ``np.savez_compressed`` (a zip of ``.npy`` members, read with
  ``allow_pickle=False``) holding ``meta`` (one JSON string), ``images`` (one xz stream as uint8
  bytes) and per split ``<split>.index``, ``.labels``, ``.paths`` and optional ``.groups``,
  ``.soft_labels``. ``<split>.index`` is each item's row in the decoded images.
- **Images are stored once**: exact duplicates (across and within splits) share one row (FER2013:
  35,887 images, 34,034 distinct), in order of first appearance.
- **Codec** (``codec="xz-delta"``): the distinct images ``[U, H, W]`` in C order go through
  xz's delta filter at distance ``W`` (each byte becomes its difference from the pixel above)
  and LZMA2 at preset 6. Measured on FER2013's 82.7 MB of pixels (all 35,887 images): zlib-9
  79.1 MB, PNG per image 64.8, lossless WebP 59.9, xz 62.4, xz with this delta filter 57.3; on
  the 34,034 distinct images 56.23 MB, and preset 9 only 0.05% less for a slower encode. The
  whole FER2013 pack is 56.5 MB (53.9 MiB). After the best simple pixel predictor (MED) these
  faces hold about 5.6 bits of entropy per pixel, so no lossless pack is much smaller. xz's
  CRC-64 detects corruption.
- **Subject-fold datasets** (readers with a ``fold`` option, e.g. ``ckplus48``, ``jaffe``) pack
  split ``all`` with its ``groups``; ``train`` / ``test`` of fold ``f`` are cut at load time by
  :func:`fermetric.data.splits.fold_split`, the function the dataset readers use, so folds are the
  same subjects as when reading the original folders (``num_folds`` defaults to the packed value).
- **Options fixed at pack time**: loader options such as FER+'s ``label_mode`` are recorded in
  ``meta["options"]``; asking a pack for a different value is a ConfigError naming the repack.
- **Info**: the JSON-able scalars of each split's ``ImageSet.info`` (e.g. FER+'s ``label_mode``,
  which training reads) are kept; per-item arrays (FER+ vote counts) are not.
- **Decoding cost**: the image stream is decoded once per process and file version (path, size,
  mtime) and kept for the last two packs, so loading train, val and test decodes once.
"""

from __future__ import annotations

import json
import lzma
import os
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import ConfigError, DataError
from ..fileio import atomic_write
from .base import ImageSet
from .cache import normalise_size, stack_images
from .loader import DATASETS, DatasetReader, Listing
from .splits import fold_split

FORMAT = "fermetric-pack/1"
CODEC = "xz-delta"
DEFAULT_PRESET = 6
_DECODED: OrderedDict[tuple, np.ndarray] = OrderedDict()
_DECODED_KEEP = 2


# ----------------------------------------------------------------------------------- writing
def _jsonable_info(info: Mapping[str, Any]) -> dict:
    """The entries of ``info`` that JSON holds faithfully (scalars and lists of scalars)."""
    scalar = (str, int, float, bool, type(None))
    kept = {}
    for key, value in (info or {}).items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, scalar) or (
            isinstance(value, (list, tuple)) and all(isinstance(v, scalar) for v in value)
        ):
            kept[str(key)] = list(value) if isinstance(value, tuple) else value
    return kept


def _distinct_rows(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(distinct, index)`` with ``distinct[index] == images``, distinct rows in first-seen order."""
    flat = images.reshape(len(images), -1)
    _, first, inverse = np.unique(flat, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # distinct rows in order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return np.ascontiguousarray(images[first[order]]), rank[inverse.reshape(-1)].astype(np.int64)


def _compress(images: np.ndarray, preset: int) -> bytes:
    width = images.shape[-1]
    filters = [{"id": lzma.FILTER_DELTA, "dist": width}, {"id": lzma.FILTER_LZMA2, "preset": preset}]
    return lzma.compress(
        np.ascontiguousarray(images).tobytes(), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, filters=filters
    )


def write_packed(
    path: str | os.PathLike,
    splits: Mapping[str, ImageSet],
    dataset: str,
    *,
    kfold: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    source_root: str = "",
    preset: int = DEFAULT_PRESET,
) -> dict:
    """Write ``splits`` (``{"train": ImageSet, ...}``) of ``dataset`` to one pack; returns its meta.

    All splits must share classes and image size. ``kfold={"num_folds": 10}`` marks a
    subject-fold dataset packed as split ``all`` (its ImageSet must carry ``groups``). The file
    is written to a temporary name beside ``path`` and renamed, so a pack is never half-written.
    """
    if not splits:
        raise ConfigError(f"{path}: nothing to pack (no splits given)")
    sets = list(splits.values())
    classes = tuple(sets[0].classes)
    shape = tuple(sets[0].images.shape[1:])
    for name, imageset in splits.items():
        if tuple(imageset.classes) != classes:
            raise DataError(
                f"{dataset} split {name!r} has classes {list(imageset.classes)} but "
                f"{list(classes)} elsewhere; pack splits of one dataset only"
            )
        if tuple(imageset.images.shape[1:]) != shape:
            raise DataError(
                f"{dataset} split {name!r} has {imageset.images.shape[1:]} images but {shape} "
                "elsewhere; load the dataset with size=... to pack it"
            )
    if kfold is not None and (set(splits) != {"all"} or splits["all"].groups is None):
        raise ConfigError(f"{dataset}: a k-fold pack holds split 'all' with subject groups only")
    if not 0 <= int(preset) <= 9:
        raise ConfigError(f"xz preset must be 0..9, got {preset}")

    all_images = np.concatenate([np.asarray(s.images) for s in sets])
    distinct, index = _distinct_rows(all_images)
    blob = _compress(distinct, int(preset))
    arrays: dict[str, np.ndarray] = {"images": np.frombuffer(blob, dtype=np.uint8)}
    split_meta: dict[str, dict] = {}
    start = 0
    for name, imageset in splits.items():
        n = len(imageset)
        arrays[f"{name}.index"] = index[start : start + n]
        arrays[f"{name}.labels"] = np.asarray(imageset.labels, dtype=np.int64)
        arrays[f"{name}.paths"] = np.asarray(list(imageset.paths), dtype=str)
        if imageset.groups is not None:
            arrays[f"{name}.groups"] = np.asarray(imageset.groups, dtype=np.int64)
        if imageset.soft_labels is not None:
            arrays[f"{name}.soft_labels"] = np.asarray(imageset.soft_labels, dtype=np.float32)
        split_meta[name] = {"n": int(n), "info": _jsonable_info(imageset.info)}
        start += n
    meta = {
        "format": FORMAT,
        "dataset": dataset,
        "classes": list(classes),
        "image_shape": list(shape),
        "splits": split_meta,
        "kfold": dict(kfold) if kfold is not None else None,
        "options": {k: v for k, v in (options or {}).items() if v is not None},
        "source_root": str(source_root),
        "codec": {
            "name": CODEC,
            "preset": int(preset),
            "distinct_images": int(len(distinct)),
            "total_images": int(len(all_images)),
        },
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "fermetric_version": __version__,
    }
    arrays["meta"] = np.asarray(json.dumps(meta))
    # A file object: numpy adds no ".npz" to the name.
    atomic_write(path, writer=lambda out: np.savez_compressed(out, **arrays))
    return meta


# ----------------------------------------------------------------------------------- reading
def _open(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: no such pack file; make one with benchmarks/pack_dataset.py NAME=ROOT --out {path}")
    try:
        archive = np.load(path, allow_pickle=False)
        meta = json.loads(str(archive["meta"]))
    except Exception as err:  # zip, npy or JSON damage: all mean "not a usable pack"
        raise DataError(
            f"{path}: not a readable fermetric pack ({type(err).__name__}); re-create it with "
            "benchmarks/pack_dataset.py"
        ) from None
    if meta.get("format") != FORMAT:
        raise DataError(
            f"{path}: pack format {meta.get('format')!r} is not {FORMAT!r}; re-create it with "
            "benchmarks/pack_dataset.py"
        )
    return archive, meta


def read_pack_meta(path: str | os.PathLike) -> dict:
    """The JSON metadata of a pack (dataset, classes, splits and counts, kfold, options, codec)."""
    archive, meta = _open(Path(path))
    archive.close()
    return meta


def _decoded_images(path: Path, archive, meta: dict) -> np.ndarray:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _DECODED:
        _DECODED.move_to_end(key)
        return _DECODED[key]
    codec = meta["codec"]
    height, width = meta["image_shape"]
    try:
        raw = lzma.decompress(archive["images"].tobytes(), format=lzma.FORMAT_XZ)
    except lzma.LZMAError:
        raise DataError(f"{path}: the image stream is corrupt (xz check failed); re-create the pack") from None
    expected = codec["distinct_images"] * height * width
    if len(raw) != expected:
        raise DataError(f"{path}: the image stream holds {len(raw)} bytes, expected {expected}; re-create the pack")
    images = np.frombuffer(raw, dtype=np.uint8).reshape(codec["distinct_images"], height, width)
    images.flags.writeable = False  # shared between the splits of this cache entry
    _DECODED[key] = images
    while len(_DECODED) > _DECODED_KEEP:
        _DECODED.popitem(last=False)
    return images


def pack_splits(meta: dict) -> list[str]:
    """The splits a pack serves: its stored splits, plus ``train``/``test`` of a k-fold pack."""
    stored = list(meta["splits"])
    return ["train", "test", *stored] if meta.get("kfold") else stored


def load_packed(
    path: str | os.PathLike,
    split: str = "train",
    *,
    fold: int | None = None,
    num_folds: int | None = None,
    label_mode: str | None = None,
    size: int | tuple[int, int] | None = None,
) -> ImageSet:
    """One split of a pack as an :class:`ImageSet` (``name`` is the packed dataset's name).

    ``fold``/``num_folds`` cut ``train``/``test`` of a subject-fold pack; ``label_mode`` is only
    checked against the packed one; ``size`` resizes (as the dataset readers' ``size`` option).
    """
    path = Path(path).expanduser()
    archive, meta = _open(path)
    with archive:
        stored = meta["splits"]
        kfold = meta.get("kfold")
        packed_mode = meta["options"].get("label_mode")
        if label_mode is not None and label_mode != packed_mode:
            raise ConfigError(
                f"{path} was packed with label_mode={packed_mode!r}; re-pack with "
                f"benchmarks/pack_dataset.py --label-mode {label_mode} to use {label_mode!r}"
            )
        source = split
        select = None
        if kfold and split in ("train", "test"):
            if fold is None:
                raise ConfigError(
                    f"{path}: {meta['dataset']} split {split!r} needs a fold "
                    f"(fold=0..{(num_folds or kfold['num_folds']) - 1}, CLI --fold N); `eval`, `index build` and "
                    "`subclasses` can also read --split all"
                )
            source = "all"
        elif fold is not None:
            raise ConfigError(f"{path}: {meta['dataset']} has fixed splits; it takes no fold option")
        if source not in stored:
            raise DataError(
                f"{path}: {meta['dataset']} pack has no split {split!r}; available: {', '.join(pack_splits(meta))}"
            )
        images = _decoded_images(path, archive, meta)
        index = archive[f"{source}.index"]
        labels = archive[f"{source}.labels"]
        paths = archive[f"{source}.paths"].tolist()
        groups = archive[f"{source}.groups"] if f"{source}.groups" in archive.files else None
        soft = archive[f"{source}.soft_labels"] if f"{source}.soft_labels" in archive.files else None
    info = dict(stored[source]["info"])
    info["packed"] = str(path)
    if source != split:
        folds = int(num_folds if num_folds is not None else kfold["num_folds"])
        train, test = fold_split(groups, int(fold), folds)
        select = train if split == "train" else test
        info.update({"fold": int(fold), "num_folds": folds})
    if select is not None:
        index, labels = index[select], labels[select]
        paths = [paths[i] for i in select]
        groups = None if groups is None else groups[select]
        soft = None if soft is None else soft[select]
        if "subjects" in info and groups is not None:  # a count of the whole set; recount the fold's
            info["subjects"] = int(len(np.unique(groups)))
    split_images = images[index]  # a fresh, writable array
    if size is not None:
        target = normalise_size(size)
        if target is not None and tuple(split_images.shape[1:]) != tuple(target):
            split_images, _ = stack_images(list(split_images), target)
    return ImageSet(
        images=split_images,
        labels=np.asarray(labels, dtype=np.int64),
        classes=tuple(meta["classes"]),
        paths=paths,
        groups=groups,
        soft_labels=soft,
        name=meta["dataset"],
        split=split,
        root=str(path),
        info=info,
    )


@DATASETS.register("packed")
class PackedDataset(DatasetReader):
    """A pack written by ``benchmarks/pack_dataset.py``: ``--data packed=.pack/fer2013.npz``."""

    name = "packed"
    options = {"fold": None, "num_folds": None, "label_mode": None}
    layout_hint = "expected a .npz pack made by benchmarks/pack_dataset.py NAME=ROOT --out FILE.npz"

    def splits(self, root: Path) -> list[str]:
        return pack_splits(read_pack_meta(root))

    def partition(self, root: Path) -> list[str]:
        meta = read_pack_meta(root)
        return ["all"] if meta.get("kfold") else list(meta["splits"])

    def list_split(self, root: Path, split: str, opts: dict) -> Listing:  # pragma: no cover - not used
        raise NotImplementedError("packed datasets are read whole by load_split")

    def load_split(self, root: Path, split: str, opts: dict) -> ImageSet:
        return load_packed(
            root,
            split,
            fold=opts["fold"],
            num_folds=opts["num_folds"],
            label_mode=opts["label_mode"],
            size=opts["size"],
        )
