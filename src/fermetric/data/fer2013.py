"""FER2013 (Goodfellow et al., 2013): 48x48 grey faces, 7 emotions, in either of its two forms.

- **Kaggle image folders**: ``{train,val,test}/<class>/*.jpg`` (``train`` = Training,
  ``val`` = PublicTest, ``test`` = PrivateTest, the standard reporting split). Folder names are
  matched case-insensitively; ``training``/``publictest``/``privatetest`` and
  ``valid``/``validation`` are accepted spellings. Class folders must be FER2013's seven
  (``angry disgust fear happy neutral sad surprise``, or their vocabulary aliases).
- **The original csv** ``fer2013.csv`` with columns ``emotion,pixels,Usage`` (emotion ids
  0=Angry 1=Disgust 2=Fear 3=Happy 4=Sad 5=Surprise 6=Neutral; Usage Training / PublicTest /
  PrivateTest -> train / val / test). ``root`` may be the csv itself or a folder holding it
  (also ``<root>/fer2013/fer2013.csv``, as the Kaggle archive unpacks). Column names are matched
  after stripping spaces and case, so the ``icml_face_data.csv`` variant reads too. Item paths
  are ``csv:<row>`` with the 0-based data row. The whole csv is parsed once and cached.

When a folder holds both split folders and a csv, the split folders are read.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from .. import vocab
from ..errors import DataError
from .base import ImageSet
from .cache import ArrayCache, fingerprint_file, normalise_size, stack_images
from .loader import (
    DATASETS,
    DatasetReader,
    Listing,
    alias_class,
    listed,
    listing_from_folders,
    scan_class_folders,
    split_folders,
)

FER2013_CSV_EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # csv ids 0..6
FER2013_CLASSES = vocab.ordered(FER2013_CSV_EMOTIONS)
USAGE_TO_SPLIT = {"training": "train", "publictest": "val", "privatetest": "test"}
SPLIT_ORDER = ("train", "val", "test")


@DATASETS.register("fer2013")
class FER2013(DatasetReader):
    """FER2013 from Kaggle image folders or the original ``fer2013.csv``."""

    name = "fer2013"
    options: dict = {}
    layout_hint = "expected train/ val/ test/ with class folders (angry, disgust, fear, happy, neutral, sad, surprise), or fer2013.csv"

    # -- layout ----------------------------------------------------------------------------------
    @staticmethod
    def csv_path(root: Path) -> Path | None:
        if root.is_file():
            return root if root.suffix.lower() == ".csv" else None
        for candidate in (root / "fer2013.csv", root / "fer2013" / "fer2013.csv"):
            if candidate.is_file():
                return candidate
        return None

    def splits(self, root: Path) -> list[str]:
        folders = split_folders(root)
        if folders:
            return [s for s in SPLIT_ORDER if s in folders]
        csv_file = self.csv_path(root)
        if csv_file is None:
            raise self.not_found(root, "no split folders and no fer2013.csv")
        _, extra = self.read_csv(csv_file, cache=True)
        present = [s for s in SPLIT_ORDER if s in set(extra["usage"])]
        if not present:
            raise self.not_found(csv_file, "the csv has no usable rows")
        return present

    # -- image folders -----------------------------------------------------------------------------
    def list_split(self, root: Path, split: str, opts: dict) -> Listing:
        folder = split_folders(root)[split]

        def fer_class(name: str) -> str | None:
            label = alias_class(name)
            return label if label in FER2013_CLASSES else None

        found = scan_class_folders(root, folder, fer_class)
        if found.unknown:
            raise DataError(
                f"{folder}: unknown class folder(s) {listed(found.unknown)} for fer2013 "
                f"(expected {', '.join(sorted(FER2013_CSV_EMOTIONS))}); "
                f"use the 'folder' dataset for other class sets"
            )
        return listing_from_folders(found, FER2013_CLASSES, folder, self.name)

    # -- csv ---------------------------------------------------------------------------------------
    def load_split(self, root: Path, split: str, opts: dict) -> ImageSet:
        csv_file = None if split_folders(root) else self.csv_path(root)
        if csv_file is None:
            return super().load_split(root, split, opts)
        images, extra = self.read_csv(csv_file, cache=opts["cache"])
        usage = np.asarray(extra["usage"])
        n = len(usage)
        failures = [(f"csv:{row}", why) for row, why in extra["failures"]]
        failed_rows = np.zeros(n, dtype=bool)
        failed_rows[[row for row, _ in extra["failures"]]] = True
        # a row whose Usage is unreadable belongs to no split: report it with every split
        in_split = (usage == split) | (failed_rows & ~np.isin(usage, SPLIT_ORDER))
        listing = Listing(
            relpaths=[f"csv:{row}" for row in range(n)],
            labels=np.asarray(extra["labels"], dtype=np.int64),
            classes=FER2013_CLASSES,
            select=np.flatnonzero(in_split),
            info={"source": "csv"},
        )
        size = normalise_size(opts["size"])
        if size is not None and images.shape[1:] != size:
            images, _ = stack_images(list(images), size)
        return self.assemble(csv_file, split, listing, images, failures, 0, opts)

    def read_csv(self, csv_file: Path, cache: bool = True) -> tuple[np.ndarray, dict]:
        """All rows of the csv: (images of the good rows, {labels, usage, failures}), cached."""
        store = ArrayCache.default() if cache else ArrayCache(None)
        if store.directory is None:
            return _parse_csv(csv_file)
        parts = {"dataset": self.name, "split": "csv", "mode": "grey", "source": fingerprint_file(csv_file)}
        return store.get_or_build(parts, f"{self.name}-csv", lambda: _parse_csv(csv_file))


def _parse_csv(csv_file: Path) -> tuple[np.ndarray, dict]:
    """Parse ``emotion,pixels,Usage`` rows; bad rows become ``(row, reason)`` failures."""
    labels, usage, failures, images = [], [], [], []
    class_index = {c: i for i, c in enumerate(FER2013_CLASSES)}
    side = None
    try:
        with open(csv_file, newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            columns = {name.strip().lower(): i for i, name in enumerate(header or [])}
            missing = [c for c in ("emotion", "pixels", "usage") if c not in columns]
            if missing:
                raise DataError(
                    f"{csv_file}: not a FER2013 csv: needs the columns emotion, pixels, Usage "
                    f"(found: {', '.join((header or [])[:6]) or 'nothing'})"
                )
            ie, ip, iu = columns["emotion"], columns["pixels"], columns["usage"]
            for row, fields in enumerate(reader):
                if not fields or all(not x.strip() for x in fields):
                    labels.append(-1)
                    usage.append("?")
                    failures.append((row, "empty row"))
                    continue
                split = "?"
                try:
                    if len(fields) <= max(ie, ip, iu):
                        raise ValueError(f"{len(fields)} fields, expected {len(columns)}")
                    split = USAGE_TO_SPLIT.get(fields[iu].strip().lower(), "?")
                    if split == "?":
                        raise ValueError(f"unknown Usage {fields[iu].strip()!r}")
                    emotion = int(fields[ie])
                    if not 0 <= emotion < len(FER2013_CSV_EMOTIONS):
                        raise ValueError(f"emotion {emotion} is not 0..6")
                    pixels = np.fromstring(fields[ip], dtype=np.int32, sep=" ")  # ~10x faster than split()
                    n = pixels.size
                    row_side = math.isqrt(n)
                    if n == 0 or row_side * row_side != n or (side is not None and row_side != side):
                        raise ValueError(f"{n} pixel values, expected {side * side if side else 'a square number'}")
                    if pixels.min() < 0 or pixels.max() > 255:
                        raise ValueError("pixel values outside 0..255")
                except ValueError as err:
                    labels.append(-1)
                    usage.append(split)
                    failures.append((row, " ".join(str(err).split())))
                    continue
                side = row_side
                images.append(pixels.astype(np.uint8).reshape(side, side))
                labels.append(class_index[vocab.canonical(FER2013_CSV_EMOTIONS[emotion])])
                usage.append(split)
    except csv.Error as err:
        raise DataError(f"{csv_file}: not a readable csv ({err})") from None
    except UnicodeError as err:
        raise DataError(f"{csv_file}: not a text csv ({err})") from None
    stacked = np.stack(images) if images else np.zeros((0, 48, 48), np.uint8)
    return stacked, {"labels": labels, "usage": usage, "failures": [list(f) for f in failures]}
