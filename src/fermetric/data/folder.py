"""Any folder of class folders: ``root/<class>/*`` or ``root/{train,val,test}/<class>/*``.

Class folder names are mapped onto the canonical vocabulary through its aliases (``anger`` ->
``angry``, ``happiness`` -> ``happy``, case-insensitive); a folder name that is not an emotion is
a :class:`DataError` listing it and the known spellings. ``classes`` is the union of the classes
found in every split (vocabulary order), so class indices agree between train and test.

With split folders (``train``/``val``/``test``; also ``training``, ``valid``, ``validation``,
``publictest``, ``privatetest``) the splits are those present, and other folders beside them are
ignored with a warning. Without, the single split is ``all``.
"""

from __future__ import annotations

from pathlib import Path

from .. import vocab
from ..errors import DataError
from .loader import (
    DATASETS,
    ClassFolders,
    DatasetReader,
    Listing,
    alias_class,
    listed,
    listing_from_folders,
    scan_class_folders,
    split_folders,
    warn,
)


@DATASETS.register("folder")
class ImageFolder(DatasetReader):
    """Generic class-folder dataset, flat or with split folders."""

    name = "folder"
    options: dict = {}
    layout_hint = "expected <class>/ image folders (e.g. happy/, sad/), or train/ val/ test/ holding them"

    def splits(self, root: Path) -> list[str]:
        if not root.is_dir():
            raise self.not_found(root, "not a folder")
        folders = split_folders(root)
        if folders:
            return [s for s in ("train", "val", "test") if s in folders]
        if not any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()):
            raise self.not_found(root, "no sub-folders")
        return ["all"]

    def partition(self, root: Path) -> list[str]:
        return self.splits(root)

    def _scan(self, root: Path, folder: Path) -> ClassFolders:
        found = scan_class_folders(root, folder, alias_class)
        if found.unknown:
            raise DataError(
                f"{folder}: folder name(s) {listed(found.unknown)} are not emotions; "
                f"rename them to one of: {', '.join(sorted(vocab.ALIASES))}"
            )
        return found

    def list_split(self, root: Path, split: str, opts: dict) -> Listing:
        folders = split_folders(root)
        if not folders:
            found = self._scan(root, root)
            return listing_from_folders(found, vocab.ordered(found.files), root, self.name)
        others = sorted(
            p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p not in folders.values()
        )
        if others:
            warn(f"{root}: ignored folder(s) beside the split folders: {listed(others)}")
        # classes over every split, so that a label means the same class in train and test
        scans = {s: self._scan(root, f) for s, f in folders.items()}
        classes = vocab.ordered(c for found in scans.values() for c in found.files)
        return listing_from_folders(scans[split], classes, folders[split], self.name)
