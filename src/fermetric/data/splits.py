"""Subject-independent splits: k-fold by subject and leave-one-subject-out.

Posed datasets (CK+, JAFFE) hold several near-identical frames of each subject, so a split must
never put one subject on both sides.

``subject_folds`` assigns subjects to folds with the algorithm of scikit-learn's ``GroupKFold``
(``shuffle=False``): subjects sorted by image count, largest first, each given to the fold with
the fewest images so far, which balances fold sizes. It is written out here (a dozen lines)
rather than called because the assignment must be identical on every machine and library
version: a model trained on fold 3 on one machine and evaluated on fold 3 on another must see
the same subjects, and older scikit-learn releases ordered equally large subjects with numpy's
default (unstable) sort. Ties are broken as current ``GroupKFold`` does (stable sort, reversed):
among equally large subjects the larger subject id goes first; among equally full folds the
smaller fold index wins. A test checks the result against ``GroupKFold``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from sklearn.model_selection import LeaveOneGroupOut

from ..errors import ConfigError


def subject_folds(groups, num_folds: int = 10) -> np.ndarray:
    """Fold index (``0..num_folds-1``) of every item, so that each subject is in one fold."""
    groups = np.asarray(groups)
    subjects, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if num_folds < 2:
        raise ConfigError(f"num_folds must be >= 2, got {num_folds}")
    if num_folds > len(subjects):
        raise ConfigError(f"num_folds={num_folds} is more than the {len(subjects)} subjects; use fewer folds")
    order = sorted(range(len(subjects)), key=lambda s: (-counts[s], -s))  # largest first; ties: later id
    fold_sizes = np.zeros(num_folds, dtype=np.int64)
    fold_of_subject = np.empty(len(subjects), dtype=np.int64)
    for s in order:
        fold = int(np.argmin(fold_sizes))  # argmin returns the first (smallest) index on ties
        fold_of_subject[s] = fold
        fold_sizes[fold] += counts[s]
    return fold_of_subject[inverse.reshape(-1)]


def fold_split(groups, fold: int, num_folds: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """``(train_indices, test_indices)`` of one subject-independent fold."""
    if not 0 <= int(fold) < num_folds:
        raise ConfigError(f"fold must be in 0..{num_folds - 1}, got {fold}")
    folds = subject_folds(groups, num_folds)
    return np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)


def leave_one_subject_out(groups) -> Iterator[tuple[object, np.ndarray, np.ndarray]]:
    """Yield ``(subject, train_indices, test_indices)`` for each subject in sorted order."""
    groups = np.asarray(groups)
    dummy = np.zeros(len(groups))
    for train, test in LeaveOneGroupOut().split(dummy, groups=groups):
        subject = groups[test[0]]
        yield (subject.item() if isinstance(subject, np.generic) else subject), train, test
