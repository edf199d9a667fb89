"""``fermetric audit-data DATASET=ROOT``: what is in a dataset before anyone trains on it.

The report (a plain dict, JSON-ready) holds, over the dataset's disjoint splits (train / val /
test, or ``all`` for fold-based sets):

- per split: image count, class counts and image size;
- **exact duplicates**: groups of byte-identical files (MD5 of the file bytes; for csv-sourced
  sets, of the decoded pixels), how many groups span several splits (train/test leakage) and
  with which split pairs, and how many groups carry conflicting labels;
- **pixel duplicates**: the same over decoded pixels (catches re-encoded copies of one image);
- **near-blank images**: ``max - min <= blank_threshold`` grey levels (default 10; FER2013's
  blank images have a range of 0 or 3, the next smallest is 47);
- **unreadable images** (the dataset is loaded with ``skip_bad=True`` and the skipped files are
  listed with their reasons) and every loader warning.

File hashing and decoding run in thread pools; FER2013 (36k files) audits in a few seconds once
its decode is cached.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from .base import DataWarning, ImageSet
from .cache import map_chunks
from .loader import DATASETS

DEFAULT_BLANK_THRESHOLD = 10


def _file_hashes(root: str, paths: list[str], workers: int | None) -> list[str]:
    def hash_chunk(chunk: list[str]) -> list[str]:
        out = []
        for rel in chunk:
            with open(os.path.join(root, rel), "rb") as f:
                out.append(hashlib.md5(f.read(), usedforsecurity=False).hexdigest())
        return out

    return [h for block in map_chunks(hash_chunk, paths, workers) for h in block]


def _pixel_hashes(images: np.ndarray) -> list[str]:
    return [hashlib.md5(np.ascontiguousarray(im).tobytes(), usedforsecurity=False).hexdigest() for im in images]


def _duplicate_report(keys: list[str], items: list[dict], method: str) -> dict:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    members = [idx for idx in groups.values() if len(idx) > 1]
    pairs: Counter = Counter()
    split_sets: Counter = Counter()
    across = conflicting = 0
    for idx in members:
        splits = sorted({items[i]["split"] for i in idx})
        if len(splits) > 1:
            across += 1
            split_sets["/".join(splits)] += 1
            for a in range(len(splits)):
                for b in range(a + 1, len(splits)):
                    pairs[f"{splits[a]}/{splits[b]}"] += 1
        if len({items[i]["label"] for i in idx}) > 1:
            conflicting += 1
    members.sort(key=lambda idx: [items[i]["path"] for i in idx])
    return {
        "method": method,
        "groups": len(members),
        "images": int(sum(len(idx) for idx in members)),
        "across_splits": across,
        "split_pairs": dict(sorted(pairs.items())),  # groups holding both splits of the pair
        "split_sets": dict(sorted(split_sets.items())),  # groups by their exact set of splits
        "conflicting_labels": conflicting,
        "members": [[items[i] for i in idx] for idx in members],
    }


def audit(
    name: str, root: str | Path, blank_threshold: int = DEFAULT_BLANK_THRESHOLD, workers: int | None = None, **options
) -> dict:
    """Audit every image of a dataset once (see the module docstring for the report's keys)."""
    reader = DATASETS.get(name)()
    root = Path(root).expanduser()
    from . import load_dataset  # late: the package imports this module's siblings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        splits = reader.partition(root) if root.exists() else ["train"]
        sets: dict[str, ImageSet] = {
            split: load_dataset(name, root, split, skip_bad=True, workers=workers, **options) for split in splits
        }
    messages = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, DataWarning)))

    items, file_keys, pixel_keys = [], [], []
    ranges = []
    from_files = True
    for split, imageset in sets.items():
        for path, label in zip(imageset.paths, imageset.labels):
            items.append({"split": split, "path": path, "label": imageset.classes[label] if label >= 0 else None})
        images = np.asarray(imageset.images)
        pixel_keys += _pixel_hashes(images)
        flat = images.reshape(len(images), -1)
        ranges.append(np.stack([flat.min(1), flat.max(1)], 1))
        if imageset.paths and imageset.paths[0].startswith("csv:"):
            from_files = False
        else:
            file_keys += _file_hashes(imageset.root, imageset.paths, workers)
    lo_hi = np.concatenate(ranges) if ranges else np.zeros((0, 2), np.uint8)

    blank = np.flatnonzero(lo_hi[:, 1].astype(int) - lo_hi[:, 0].astype(int) <= blank_threshold)
    unreadable = [
        {"split": split, "path": p, "reason": why} for split, s in sets.items() for p, why in s.info.get("skipped", [])
    ]
    first = next(iter(sets.values()))
    return {
        "dataset": name,
        "root": str(root),
        "classes": list(first.classes),
        "options": {k: v for k, v in options.items() if v is not None},
        "total": len(items),
        "splits": {
            split: {"images": len(s), "classes": s.class_counts(), "image_size": list(s.image_size)}
            for split, s in sets.items()
        },
        "exact_duplicates": _duplicate_report(
            file_keys if from_files else pixel_keys,
            items,
            "md5 of file bytes" if from_files else "md5 of decoded pixels",
        ),
        "pixel_duplicates": {
            k: v for k, v in _duplicate_report(pixel_keys, items, "md5 of decoded pixels").items() if k != "members"
        },
        "near_blank": {
            "threshold": blank_threshold,
            "count": int(len(blank)),
            "items": [{**items[i], "min": int(lo_hi[i, 0]), "max": int(lo_hi[i, 1])} for i in blank],
        },
        "unreadable": {"count": len(unreadable), "items": unreadable},
        "warnings": messages,
    }
