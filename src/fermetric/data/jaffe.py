"""JAFFE (Lyons et al., 1998): 213 posed images of 10 Japanese women, 7 expressions, 256x256 grey.

Files are named ``<subject>.<expression><n>.<index>.tiff`` (e.g. ``KA.AN1.39.tiff``): subject
initials, an expression code (``NE HA SA SU AN DI FE`` = neutral, happy, sad, surprise, angry,
disgust, fear) with a repetition number, and a running index. They are searched for anywhere
under ``root`` (distributions nest them differently); ``.tif``/``.png``/``.jpg`` copies are read
too; other files are ignored, and files that look like JAFFE images but carry an unknown
expression code are skipped with a warning.

``groups`` holds a subject number (initials in sorted order; the list is ``info["subjects"]``).
Splits: ``all``, and ``train``/``test`` either leaving one subject out (``subject="KA"`` or its
number) or by subject-independent fold (``fold``, ``num_folds=10``: with 10 subjects the folds are
exactly leave-one-subject-out, in the fold order of :func:`~fermetric.data.splits.subject_folds`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .. import vocab
from ..errors import ConfigError
from .loader import DATASETS, DatasetReader, Listing, list_images, listed, warn
from .splits import fold_split

EXPRESSION_CODES = {
    "NE": "neutral",
    "HA": "happy",
    "SA": "sad",
    "SU": "surprise",
    "AN": "angry",
    "DI": "disgust",
    "FE": "fear",
}
JAFFE_CLASSES = vocab.ordered(EXPRESSION_CODES.values())
NAME = re.compile(r"^([A-Za-z]{2})\.([A-Za-z]{2})\d*\.(\d+)\.(tiff?|png|jpe?g|bmp)$", re.IGNORECASE)


@DATASETS.register("jaffe")
class JAFFE(DatasetReader):
    """JAFFE with leave-one-subject-out (or subject k-fold) splits."""

    name = "jaffe"
    options = {"subject": None, "fold": None, "num_folds": 10}
    layout_hint = "expected JAFFE files named like KA.AN1.39.tiff (subject.expression.index.tiff)"

    def _items(self, root: Path) -> list[tuple[str, str, str]]:
        """(relpath, subject initials, canonical class) of every JAFFE-named image under root."""
        if not root.is_dir():
            raise self.not_found(root, "not a folder")
        items, unknown_codes = [], []
        for rel in list_images(root, relative_to=root):
            match = NAME.match(rel.rsplit("/", 1)[-1])
            if match is None:
                continue
            subject, code = match.group(1).upper(), match.group(2).upper()
            if code not in EXPRESSION_CODES:
                unknown_codes.append(rel)
                continue
            items.append((rel, subject, EXPRESSION_CODES[code]))
        if unknown_codes:
            warn(
                f"{root}: skipped {len(unknown_codes)} file(s) with an unknown expression code "
                f"(known: {', '.join(EXPRESSION_CODES)}): {listed(unknown_codes)}"
            )
        if not items:
            raise self.not_found(root, "no file named like KA.AN1.39.tiff")
        return items

    def splits(self, root: Path) -> list[str]:
        self._items(root)
        return ["train", "test", "all"]

    def partition(self, root: Path) -> list[str]:
        return ["all"]

    def list_split(self, root: Path, split: str, opts: dict) -> Listing:
        items = self._items(root)
        subjects = sorted({s for _, s, _ in items})
        subject_id = {s: i for i, s in enumerate(subjects)}
        index = {c: i for i, c in enumerate(JAFFE_CLASSES)}
        groups = np.array([subject_id[s] for _, s, _ in items], dtype=np.int64)
        listing = Listing(
            relpaths=[rel for rel, _, _ in items],
            labels=np.array([index[c] for _, _, c in items], dtype=np.int64),
            classes=JAFFE_CLASSES,
            groups=groups,
            cache_split="all",
            info={"subjects": subjects},
        )
        if split == "all":
            return listing
        subject, fold = opts["subject"], opts["fold"]
        if subject is not None and fold is not None:
            raise ConfigError("jaffe: give either subject= (leave one subject out) or fold=, not both")
        if subject is not None:
            held_out = self._subject_number(subject, subjects)
            test = np.flatnonzero(groups == held_out)
            train = np.flatnonzero(groups != held_out)
            listing.info["subject"] = subjects[held_out]
        elif fold is not None:
            train, test = fold_split(groups, int(fold), int(opts["num_folds"]))
            listing.info.update({"fold": int(fold), "num_folds": int(opts["num_folds"])})
        else:
            raise ConfigError(
                f"jaffe split {split!r} needs subject= (one of {', '.join(subjects)}) or fold=; "
                f"`eval`, `index build` and `subclasses` can also read --split all"
            )
        listing.select = train if split == "train" else test
        return listing

    @staticmethod
    def _subject_number(subject, subjects: list[str]) -> int:
        if isinstance(subject, str) and subject.strip().isdigit():
            subject = int(subject)
        if isinstance(subject, (int, np.integer)) and not isinstance(subject, bool):
            if 0 <= int(subject) < len(subjects):
                return int(subject)
        elif str(subject).upper() in subjects:
            return subjects.index(str(subject).upper())
        raise ConfigError(
            f"jaffe has no subject {subject!r}; subjects: {', '.join(subjects)} (or 0..{len(subjects) - 1})"
        )
