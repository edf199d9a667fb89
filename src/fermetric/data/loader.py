"""The machinery every dataset reader shares: options, layout scanning, cached decoding.

A reader (one class per dataset file, registered in :data:`DATASETS`) only says which files
belong to a split and what their labels are (a :class:`Listing`); this module decodes them
through the cache (``cache.py``), applies the bad-image policy and returns an
:class:`~fermetric.data.base.ImageSet`. Design decisions (each with its default):

- **Options** common to every dataset: ``size=None`` (keep the native size; images are resized
  only when they differ within a split, to the most common size), ``skip_bad=False`` (a file that
  does not decode is a :class:`DataError` naming it; ``True`` skips such files with one warning
  listing them, and records them in ``info["skipped"]``), ``cache=True`` and ``workers=None``
  (decode threads). An option given as ``None`` means "default", so callers can pass
  ``fold=...`` to any dataset; a non-``None`` option a dataset does not have is a
  :class:`ConfigError`.
- **Split "all"** is accepted by every dataset: datasets without a native "all" concatenate
  their partition (e.g. train + val + test).
- **Class folders** are matched case-insensitively through ``vocab.ALIASES``; hidden files and
  non-image files are ignored; files are sorted by relative path so item order is reproducible;
  an empty class folder warns; a split with no image at all is a :class:`DataError`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .. import vocab
from ..errors import ConfigError, DataError
from ..registry import Registry
from .base import DataWarning, ImageSet, is_image_name
from .cache import decode_split, stack_images

DATASETS: Registry[type[DatasetReader]] = Registry("dataset")

COMMON_OPTIONS: dict[str, Any] = {"size": None, "skip_bad": False, "cache": True, "workers": None}
MAX_LISTED = 5  # names quoted in one warning / error line before "... and N more"


def listed(names: Sequence[object], limit: int = MAX_LISTED) -> str:
    """``a, b, c ... and 7 more``: a bounded, one-line list for messages."""
    names = [str(n) for n in names]
    head = ", ".join(names[:limit])
    return head + (f" ... and {len(names) - limit} more" if len(names) > limit else "")


def warn(message: str) -> None:
    warnings.warn(message, DataWarning, stacklevel=3)


@dataclass
class Listing:
    """What a reader found for one split, before decoding.

    Attributes:
        relpaths: files to decode, relative to the dataset root (POSIX separators).
        labels: int64 class index per file (into ``classes``).
        classes: canonical names in vocabulary order.
        groups: optional subject id per file.
        soft_labels: optional float32 ``[N, C]`` label distributions.
        select: optional indices of the files that form the split; all listed files are decoded
            (and cached) together, so e.g. every CK+ fold or FER+ label mode reuses one cache
            entry.
        cache_split: the name the decoded files are cached under (default: the split).
        info: extra facts copied into ``ImageSet.info``.
        row_info: per-file arrays (same length as relpaths) subset with the items, into ``info``.
    """

    relpaths: list[str]
    labels: np.ndarray
    classes: tuple[str, ...]
    groups: np.ndarray | None = None
    soft_labels: np.ndarray | None = None
    select: np.ndarray | None = None
    cache_split: str | None = None
    info: dict = field(default_factory=dict)
    row_info: dict = field(default_factory=dict)


class DatasetReader:
    """Base class of the dataset readers (subclasses set ``name``, ``options``, ``layout_hint``)."""

    name: ClassVar[str] = ""
    options: ClassVar[dict[str, Any]] = {}
    layout_hint: ClassVar[str] = ""

    # -- what subclasses implement -------------------------------------------------------------
    def splits(self, root: Path) -> list[str]:
        """The splits this root holds (raises DataError with the layout hint if it holds none)."""
        raise NotImplementedError

    def list_split(self, root: Path, split: str, opts: dict) -> Listing:
        raise NotImplementedError

    def partition(self, root: Path) -> list[str]:
        """Disjoint splits that together hold every image once (what an audit reads).

        Readers whose train/test splits are views of one set (CK+ folds, JAFFE subjects, a flat
        class folder) override this to return ``["all"]``.
        """
        return [s for s in self.splits(root) if s != "all"]

    # -- shared --------------------------------------------------------------------------------
    def not_found(self, root: Path, what: str = "") -> DataError:
        detail = f" ({what})" if what else ""
        return DataError(f"{root}: not a {self.name} dataset{detail}; {self.layout_hint}")

    def resolve_options(self, options: dict) -> dict:
        allowed = {**COMMON_OPTIONS, **self.options}
        given = {k: v for k, v in options.items() if v is not None}
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            raise ConfigError(
                f"dataset {self.name!r} has no option {', '.join(unknown)}; its options: {', '.join(sorted(allowed))}"
            )
        return {**allowed, **given}

    def load(self, root: Path, split: str, **options) -> ImageSet:
        opts = self.resolve_options(options)
        root = Path(root).expanduser()
        if not root.exists():
            raise DataError(f"{root}: no such file or directory; {self.layout_hint}")
        available = self.splits(root)
        if split == "all" and "all" not in available:
            parts = [self.load(root, s, **options) for s in self.partition(root)]
            return concat_imagesets(parts, split="all")
        if split not in available:
            raise DataError(f"{root}: {self.name} has no split {split!r}; available: {', '.join(available)}")
        return self.load_split(root, split, opts)

    def load_split(self, root: Path, split: str, opts: dict) -> ImageSet:
        """List, decode (cached), drop bad files per ``skip_bad``, select, build the ImageSet."""
        listing = self.list_split(root, split, opts)
        if not listing.relpaths:
            raise DataError(f"{root}: split {split!r} of {self.name} has no images; {self.layout_hint}")
        images, failures, resized = decode_split(
            self.name,
            listing.cache_split or split,
            root,
            listing.relpaths,
            size=opts["size"],
            cache=opts["cache"],
            workers=opts["workers"],
        )
        return self.assemble(root, split, listing, images, failures, resized, opts)

    def assemble(
        self,
        root: Path,
        split: str,
        listing: Listing,
        images: np.ndarray,
        failures: list[tuple[str, str]],
        resized: int,
        opts: dict,
    ) -> ImageSet:
        n = len(listing.relpaths)
        ok = np.ones(n, dtype=bool)
        if failures:
            failed = {rel for rel, _ in failures}
            ok = np.array([rel not in failed for rel in listing.relpaths])
        select = np.arange(n) if listing.select is None else np.asarray(listing.select, dtype=np.int64)
        bad_in_split: list[tuple[str, str]] = []
        if failures:
            selected = {listing.relpaths[i] for i in select}
            bad_in_split = [(rel, why) for rel, why in failures if rel in selected]
        if bad_in_split and not opts["skip_bad"]:
            rel, why = bad_in_split[0]
            more = f" (and {len(bad_in_split) - 1} more bad images)" if len(bad_in_split) > 1 else ""
            raise DataError(
                f"{Path(root) / rel}: {why}{more}; fix or delete it, or load with skip_bad=True (--skip-bad)"
            )
        if bad_in_split:
            warn(
                f"{root}: skipped {len(bad_in_split)} unreadable image(s) in {self.name} {split}: "
                f"{listed([rel for rel, _ in bad_in_split])}"
            )
        if resized:
            warn(
                f"{root}: {self.name} {split}: {resized} image(s) differ in size from the rest and were "
                f"resized to {images.shape[1]}x{images.shape[2]} (pass size= to choose)"
            )
        image_row = np.cumsum(ok) - 1  # row of each decoded file in `images`
        select = select[ok[select]]
        if len(select) == 0:
            raise DataError(f"{root}: split {split!r} of {self.name} has no usable images; {self.layout_hint}")
        rows = image_row[select]
        if len(rows) == len(images) and np.array_equal(rows, np.arange(len(images))):
            split_images = images  # the whole cache entry: keep it memory-mapped
        else:
            split_images = np.ascontiguousarray(images[rows])
        info = dict(listing.info)
        for key, values in listing.row_info.items():
            info[key] = np.asarray(values)[select]
        if bad_in_split:
            info["skipped"] = [list(f) for f in bad_in_split]
        return ImageSet(
            images=split_images,
            labels=np.asarray(listing.labels, dtype=np.int64)[select],
            classes=tuple(listing.classes),
            paths=[listing.relpaths[i] for i in select],
            groups=None if listing.groups is None else np.asarray(listing.groups, dtype=np.int64)[select],
            soft_labels=None
            if listing.soft_labels is None
            else np.asarray(listing.soft_labels, dtype=np.float32)[select],
            name=self.name,
            split=split,
            root=str(root),
            info=info,
        )


def concat_imagesets(sets: Sequence[ImageSet], split: str = "all") -> ImageSet:
    """One ImageSet from several splits of the same dataset (same classes)."""
    first = sets[0]
    if any(s.classes != first.classes for s in sets):
        raise DataError(f"{first.root}: splits of {first.name} disagree on classes; cannot join them")
    if len({s.image_size for s in sets}) == 1:
        images = np.concatenate([np.asarray(s.images) for s in sets])
    else:
        images, _ = stack_images([im for s in sets for im in np.asarray(s.images)], None)
    groups = None
    if all(s.groups is not None for s in sets):
        groups = np.concatenate([s.groups for s in sets])
    soft = None
    if all(s.soft_labels is not None for s in sets):
        soft = np.concatenate([s.soft_labels for s in sets])
    return ImageSet(
        images=images,
        labels=np.concatenate([s.labels for s in sets]),
        classes=first.classes,
        paths=[p for s in sets for p in s.paths],
        groups=groups,
        soft_labels=soft,
        name=first.name,
        split=split,
        root=first.root,
        info={
            "splits": [s.split for s in sets],
            "split_of_item": np.concatenate([np.full(len(s), s.split) for s in sets]),
        },
    )


# ---------------------------------------------------------------------------------------------
# folder layouts: <split>/<class>/<files>


@dataclass
class ClassFolders:
    """Files found under one folder of class folders."""

    files: dict[str, list[str]]  # canonical class -> relpaths (relative to the dataset root)
    unknown: list[str]  # folder names that are not classes
    empty: list[str]  # class folders without images


def list_images(folder: Path, relative_to: Path | None = None) -> list[str]:
    """Image files under ``folder`` (recursively, hidden entries skipped), as sorted POSIX paths
    relative to ``relative_to`` (default: absolute paths). Plain string operations: pathlib
    costs tens of microseconds per file, seconds for FER2013. Symlinked folders are followed,
    each real folder once (a link to an ancestor does not loop); non-regular files (a FIFO would
    block the reader) are refused by ``read_image`` with their reason.
    """
    base = os.fspath(relative_to) if relative_to is not None else None
    found = []
    visited = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        prefix = os.path.relpath(dirpath, base) if base is not None else dirpath
        prefix = "" if prefix == "." else prefix.replace(os.sep, "/") + "/"
        found += [prefix + f for f in filenames if is_image_name(f)]
    return sorted(found)


def scan_class_folders(root: Path, folder: Path, class_of: Callable[[str], str | None]) -> ClassFolders:
    """Group the images under ``folder/<class name>/`` by canonical class.

    ``class_of(folder_name)`` gives the canonical class of a folder name, or None if unknown.
    """
    files: dict[str, list[str]] = {}
    unknown, empty = [], []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        label = class_of(entry.name)
        if label is None:
            unknown.append(entry.name)
            continue
        paths = list_images(Path(entry.path), relative_to=root)
        if not paths:
            empty.append(entry.name)
        files.setdefault(label, []).extend(paths)
    return ClassFolders(files, unknown, empty)


# Folder names accepted for each split (case-insensitive): the Kaggle FER2013 names, the
# original csv Usage names, and common spellings of a validation folder.
SPLIT_FOLDERS: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation", "publictest"),
    "test": ("test", "privatetest"),
}


def split_folders(root: Path) -> dict[str, Path]:
    """``{split: folder}`` for the split folders directly under ``root`` (first spelling wins)."""
    if not root.is_dir():
        return {}
    by_name = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith("."):
            by_name.setdefault(entry.name.lower(), Path(entry.path))
    found = {}
    for split, names in SPLIT_FOLDERS.items():
        for name in names:
            if name in by_name:
                found[split] = by_name[name]
                break
    return found


def alias_class(name: str) -> str | None:
    try:
        return vocab.canonical(name)
    except KeyError:
        return None


def listing_from_folders(found: ClassFolders, classes: Sequence[str], where: Path, dataset: str) -> Listing:
    """A Listing of class-folder files (sorted by path) with labels indexing ``classes``."""
    if found.empty:
        warn(f"{where}: empty class folder(s) in {dataset}: {listed(found.empty)}")
    index = {c: i for i, c in enumerate(classes)}
    pairs = sorted((rel, index[c]) for c, rels in found.files.items() for rel in rels)
    return Listing(
        relpaths=[rel for rel, _ in pairs],
        labels=np.array([lab for _, lab in pairs], dtype=np.int64),
        classes=tuple(classes),
    )
