"""RAF-DB basic (Li et al., 2017): 15,339 in-the-wild faces, 7 emotions, aligned 100x100 RGB.

Two layouts are read (``root`` may be the folder itself or its parent):

- **Official** ``basic/``: ``EmoLabel/list_patition_label.txt`` (sic) with lines
  ``train_00001.jpg 5`` and images ``Image/aligned/train_00001_aligned.jpg``; the split comes from
  the ``train_``/``test_`` name prefix. Listed images whose aligned file is missing are skipped
  with a warning.
- **Kaggle** ``DATASET/{train,test}/{1..7}/*.jpg``.

Labels ``1..7`` = surprise, fear, disgust, happy, sad, angry, neutral. Images are converted to
grey and keep their native 100x100 size (``size=`` resizes). Splits: ``train`` and ``test``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .. import vocab
from ..errors import DataError
from .base import is_image_name
from .loader import DATASETS, DatasetReader, Listing, listed, listing_from_folders, scan_class_folders, warn

RAF_LABELS = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "angry", 7: "neutral"}
RAFDB_CLASSES = vocab.ordered(RAF_LABELS.values())
LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"
ALIGNED = Path("Image") / "aligned"
LINE = re.compile(r"^\s*((train|test)_\d+)\.(\w+)\s+(\d+)\s*$", re.IGNORECASE)


@DATASETS.register("rafdb")
class RAFDB(DatasetReader):
    """RAF-DB basic, official or Kaggle layout."""

    name = "rafdb"
    options: dict = {}
    layout_hint = (
        "expected EmoLabel/list_patition_label.txt with Image/aligned/, or DATASET/train|test/1..7/ image folders"
    )

    @staticmethod
    def official(root: Path) -> Path | None:
        for candidate in (root, root / "basic"):
            if (candidate / LABEL_FILE).is_file():
                return candidate
        return None

    @staticmethod
    def kaggle(root: Path) -> Path | None:
        for candidate in (root, root / "DATASET"):
            if any((candidate / s).is_dir() for s in ("train", "test")):
                return candidate
        return None

    def splits(self, root: Path) -> list[str]:
        if self.official(root) is not None:
            return ["train", "test"]
        base = self.kaggle(root)
        if base is None:
            raise self.not_found(root)
        return [s for s in ("train", "test") if (base / s).is_dir()]

    def list_split(self, root: Path, split: str, opts: dict) -> Listing:
        base = self.official(root)
        if base is not None:
            return self._official(root, base, split)
        folder = self.kaggle(root) / split

        def raf_class(name: str) -> str | None:
            return RAF_LABELS.get(int(name)) if name.isdigit() else None

        found = scan_class_folders(root, folder, raf_class)
        if found.unknown:
            raise DataError(f"{folder}: unknown class folder(s) {listed(found.unknown)} for rafdb (expected 1..7)")
        return listing_from_folders(found, RAFDB_CLASSES, folder, self.name)

    def _official(self, root: Path, base: Path, split: str) -> Listing:
        label_file = base / LABEL_FILE
        prefix = (base / ALIGNED).relative_to(root).as_posix()
        present = set(os.listdir(base / ALIGNED)) if (base / ALIGNED).is_dir() else set()
        index = {c: i for i, c in enumerate(RAFDB_CLASSES)}
        relpaths, labels, bad, missing = [], [], [], []
        for line_no, line in enumerate(label_file.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            match = LINE.match(line)
            if match is None or int(match.group(4)) not in RAF_LABELS:
                bad.append(line_no)
                continue
            if match.group(2).lower() != split:
                continue
            name = f"{match.group(1)}_aligned.{match.group(3)}"
            if name not in present or not is_image_name(name):
                missing.append(name)
                continue
            relpaths.append(f"{prefix}/{name}")
            labels.append(index[RAF_LABELS[int(match.group(4))]])
        if bad:
            warn(
                f"{label_file}: skipped {len(bad)} malformed line(s) (expected 'train_00001.jpg 5', labels 1..7): "
                f"lines {listed(bad)}"
            )
        if missing:
            warn(
                f"{base / ALIGNED}: skipped {len(missing)} labelled image(s) whose aligned file is missing: "
                f"{listed(missing)}"
            )
        order = np.argsort(relpaths, kind="stable")
        return Listing(
            relpaths=[relpaths[i] for i in order],
            labels=np.array(labels, dtype=np.int64)[order] if labels else np.zeros(0, np.int64),
            classes=RAFDB_CLASSES,
        )
