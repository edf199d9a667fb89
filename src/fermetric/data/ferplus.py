"""FER+ (Barsoum et al., 2016): FER2013 images relabelled by 10 crowd votes each, 8 emotions.

Layout (as Microsoft's FERPlus repository generates it): ``FER2013Train/``, ``FER2013Valid/``,
``FER2013Test/`` (splits ``train``, ``val``, ``test``), each with ``ferNNNNNNN.png`` images and a
header-less ``label.csv``: ``name, "(x, y, w, h)", 10 vote counts`` in the order neutral,
happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF (not a face). ``root``
may also be the repository folder holding ``data/FER2013*``. A split folder without
``label.csv`` is labelled from the master ``fer2013new.csv`` (``Usage, Image name, votes``)
found beside the folders or one level up.

Label modes (``label_mode``, default ``majority``), following the FERPlus reference code
(``FERPlusReader._process_data`` and ``load_folders`` in microsoft/FERPlus ``src/ferplus.py``):

- ``majority``: vote counts of 1 are treated as noise and set to 0 (``count < 1 + eps``); the
  image keeps the emotion whose remaining count is **more than half** of the remaining votes
  (unknown and NF included in the total). Images whose majority is unknown or NF, or that have
  no majority, are dropped. This is the standard FER+ reporting protocol.
- ``plurality``: the argmax of the raw votes; images with a tie for the maximum, a maximum on
  unknown/NF, or no votes are dropped.
- ``probability``: ``soft_labels`` are the emotion votes normalised to sum to 1 (unknown and NF
  removed); the label is their argmax (ties: first in the vote-column order above). Images
  with no emotion vote, or where unknown or NF alone outvotes every emotion, are dropped.

Every mode keeps the raw vote counts of its images in ``info["votes"]`` (vote-column order).
Label-file rows are checked, and problems skipped with one warning per kind rather than a crash:
malformed rows, rows with an empty image name (FER+ has 173, all "not a face"), image names that
occur more than once (FER+ has 4: identical duplicate rows are kept once, conflicting ones are all
dropped because the file cannot tell which votes belong to the image), and rows whose image file
is missing. All listed images of a split are decoded and cached together, so the label modes
share one cache entry.
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from .. import vocab
from ..errors import ConfigError, DataError
from .loader import DATASETS, DatasetReader, Listing, listed, warn

VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")
NUM_EMOTIONS = 8  # the first 8 vote columns are emotions; then unknown and NF
FERPLUS_CLASSES = vocab.ordered(vocab.canonical(c) for c in VOTE_COLUMNS[:NUM_EMOTIONS])
COLUMN_TO_CLASS = np.array([FERPLUS_CLASSES.index(vocab.canonical(c)) for c in VOTE_COLUMNS[:NUM_EMOTIONS]])
SPLIT_FOLDERS = {"train": "FER2013Train", "val": "FER2013Valid", "test": "FER2013Test"}
USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
LABEL_MODES = ("majority", "plurality", "probability")


def vote_labels(votes: np.ndarray, mode: str = "majority") -> tuple[np.ndarray, np.ndarray | None]:
    """Labels from FER+ vote counts ``[N, 10]`` (vote-column order).

    Returns ``(labels, soft)``: labels are emotion column indices 0..7, or -1 for a dropped image;
    ``soft`` is ``[N, 8]`` float32 (probability mode) or None.
    """
    votes = np.asarray(votes, dtype=np.float64)
    if votes.ndim != 2 or votes.shape[1] != len(VOTE_COLUMNS):
        raise ValueError(f"votes must be [N, {len(VOTE_COLUMNS)}], got {votes.shape}")
    if mode == "majority":
        kept = np.where(votes < 1.0 + np.finfo(float).eps, 0.0, votes)  # single votes are outliers
        top = kept.argmax(1)
        ok = (kept.max(1) > 0.5 * kept.sum(1)) & (top < NUM_EMOTIONS)
        return np.where(ok, top, -1), None
    if mode == "plurality":
        top_count = votes.max(1)
        unique_top = (votes == top_count[:, None]).sum(1) == 1
        top = votes.argmax(1)
        ok = unique_top & (top < NUM_EMOTIONS) & (top_count > 0)
        return np.where(ok, top, -1), None
    if mode == "probability":
        emotions = votes[:, :NUM_EMOTIONS]
        total = emotions.sum(1)
        ok = (total > 0) & ~(votes[:, NUM_EMOTIONS:].max(1) > emotions.max(1))
        soft = np.divide(emotions, total[:, None], out=np.zeros_like(emotions), where=total[:, None] > 0)
        return np.where(ok, soft.argmax(1), -1), soft.astype(np.float32)
    raise ConfigError(f"unknown FER+ label_mode {mode!r}; choose one of {', '.join(LABEL_MODES)}")


@DATASETS.register("ferplus")
class FERPlus(DatasetReader):
    """FER+ in the official folder layout, with the FERPlus paper's label modes."""

    name = "ferplus"
    options = {"label_mode": "majority"}
    layout_hint = "expected FER2013Train/ FER2013Valid/ FER2013Test/ folders with ferNNNNNNN.png images and label.csv"

    @staticmethod
    def base(root: Path) -> Path | None:
        for candidate in (root, root / "data"):
            if any((candidate / folder).is_dir() for folder in SPLIT_FOLDERS.values()):
                return candidate
        return None

    @staticmethod
    def master_csv(base: Path) -> Path | None:
        for candidate in (base / "fer2013new.csv", base.parent / "fer2013new.csv"):
            if candidate.is_file():
                return candidate
        return None

    def splits(self, root: Path) -> list[str]:
        base = self.base(root)
        if base is None:
            raise self.not_found(root)
        has_master = self.master_csv(base) is not None
        return [
            s
            for s, folder in SPLIT_FOLDERS.items()
            if (base / folder).is_dir() and ((base / folder / "label.csv").is_file() or has_master)
        ]

    def list_split(self, root: Path, split: str, opts: dict) -> Listing:
        mode = opts["label_mode"]
        if mode not in LABEL_MODES:
            raise ConfigError(f"unknown FER+ label_mode {mode!r}; choose one of {', '.join(LABEL_MODES)}")
        base = self.base(root)
        folder = base / SPLIT_FOLDERS[split]
        label_file = folder / "label.csv"
        if label_file.is_file():
            rows, bad = _read_label_csv(label_file)
        else:
            label_file = self.master_csv(base)
            rows, bad = _read_master_csv(label_file, split)
        if not rows:  # every row broken: one clear error instead of "split has no images"
            what = (
                (
                    f"none of its {len(bad)} {split} row(s) has an image name, a box and 10 vote counts "
                    f"(12 columns; malformed lines {listed(bad)})"
                )
                if bad
                else f"it holds no {split} label rows"
            )
            raise DataError(f"{label_file}: {what}; fix or regenerate the label file")
        names, votes = _clean_rows(rows, bad, folder, label_file)
        labels, soft = vote_labels(votes, mode) if len(votes) else (np.zeros(0, np.int64), None)
        prefix = folder.relative_to(root).as_posix()
        prefix = "" if prefix == "." else prefix + "/"
        classes = np.where(labels >= 0, COLUMN_TO_CLASS[np.maximum(labels, 0)], -1)
        soft_classes = None
        if soft is not None:  # vote-column order -> vocabulary order
            soft_classes = np.zeros_like(soft)
            soft_classes[:, COLUMN_TO_CLASS] = soft
        return Listing(
            relpaths=[prefix + n for n in names],
            labels=classes,
            classes=FERPLUS_CLASSES,
            soft_labels=soft_classes,
            select=np.flatnonzero(labels >= 0),
            info={"label_mode": mode, "vote_columns": list(VOTE_COLUMNS), "label_file": str(label_file)},
            row_info={"votes": votes.astype(np.int16)},
        )


def _parse_vote_rows(candidates: list[tuple[int, str, list[str]]]):
    """(line, name, vote strings) -> (rows as (line, name, votes), malformed line numbers).

    One vectorised conversion for the whole file; only when it fails are rows parsed one by one
    to find the malformed ones.
    """
    fields = [v for _, _, v in candidates]
    try:
        votes = np.array(fields, dtype=np.float64).reshape(len(fields), len(VOTE_COLUMNS))
        valid = np.isfinite(votes).all(1) & (votes >= 0).all(1)
    except ValueError:
        votes = np.zeros((len(fields), len(VOTE_COLUMNS)))
        valid = np.zeros(len(fields), dtype=bool)
        for i, row in enumerate(fields):
            try:
                votes[i] = [float(v) for v in row]
                valid[i] = all(0.0 <= v < math.inf for v in votes[i])  # NaN fails too
            except ValueError:
                pass
    rows = [(line, name, votes[i].tolist()) for i, (line, name, _) in enumerate(candidates) if valid[i]]
    bad = [line for i, (line, _, _) in enumerate(candidates) if not valid[i]]
    return rows, bad


def _read_label_csv(path: Path) -> tuple[list[tuple[int, str, list[float]]], list[int]]:
    """``label.csv`` rows as (line, name, votes); also the line numbers of malformed rows."""
    candidates, bad = [], []
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for line, fields in enumerate(csv.reader(f), start=1):
            if not fields:
                continue
            if len(fields) != 2 + len(VOTE_COLUMNS):
                bad.append(line)
            else:
                candidates.append((line, fields[0].strip(), fields[2:]))
    rows, malformed = _parse_vote_rows(candidates)
    return rows, sorted(bad + malformed)


def _read_master_csv(path: Path, split: str) -> tuple[list[tuple[int, str, list[float]]], list[int]]:
    """``fer2013new.csv`` rows of one split (``Usage, Image name, votes`` with a header)."""
    candidates, bad = [], []
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        next(reader, None)
        for line, fields in enumerate(reader, start=2):
            if not fields:
                continue
            if len(fields) != 2 + len(VOTE_COLUMNS):
                bad.append(line)
            elif USAGE_TO_SPLIT.get(fields[0].strip()) == split:
                candidates.append((line, fields[1].strip(), fields[2:]))
    rows, malformed = _parse_vote_rows(candidates)
    return rows, sorted(bad + malformed)


def _clean_rows(rows, bad, folder: Path, label_file: Path) -> tuple[list[str], np.ndarray]:
    """Drop malformed, nameless, ambiguous-duplicate and missing-file rows, warning once per kind."""
    if bad:
        warn(
            f"{label_file}: skipped {len(bad)} malformed row(s) (expected name, box and 10 vote counts): "
            f"lines {listed(bad)}"
        )
    nameless = [line for line, name, _ in rows if not name]
    if nameless:
        warn(f"{label_file}: skipped {len(nameless)} row(s) without an image name: lines {listed(nameless)}")
    by_name: dict[str, list[list[float]]] = defaultdict(list)
    order: list[str] = []
    for _, name, votes in rows:
        if name:
            if name not in by_name:
                order.append(name)
            by_name[name].append(votes)
    repeated = [n for n in order if len(by_name[n]) > 1]
    conflicting = {n for n in repeated if any(v != by_name[n][0] for v in by_name[n][1:])}
    if repeated:
        warn(
            f"{label_file}: {len(repeated)} image name(s) occur more than once "
            f"({len(repeated) - len(conflicting)} identical, kept once; {len(conflicting)} with different votes, "
            f"dropped): {listed(repeated)}"
        )
    existing = set(os.listdir(folder)) if folder.is_dir() else set()
    missing = [n for n in order if n not in conflicting and n not in existing]
    if missing:
        warn(f"{folder}: skipped {len(missing)} labelled image(s) whose file is missing: {listed(missing)}")
    missing_set = set(missing)
    names = [n for n in order if n not in conflicting and n not in missing_set]
    votes = np.array([by_name[n][0] for n in names], dtype=np.float64).reshape(-1, len(VOTE_COLUMNS))
    return names, votes
