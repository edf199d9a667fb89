"""Subject-independent folds and leave-one-subject-out."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import GroupKFold

from fermetric.data.splits import fold_split, leave_one_subject_out, subject_folds
from fermetric.errors import ConfigError


def subject_groups(rng, n_subjects=40):
    sizes = rng.integers(1, 12, n_subjects)
    sizes[:6] = 6  # ties between equally large subjects
    groups = np.repeat(rng.permutation(np.arange(100, 100 + n_subjects)), sizes)
    return rng.permutation(groups)


def test_folds_are_subject_disjoint_and_cover_everything(rng):
    groups = subject_groups(rng)
    folds = subject_folds(groups, 10)
    assert folds.shape == groups.shape and set(folds) == set(range(10))
    for subject in np.unique(groups):
        assert len(set(folds[groups == subject])) == 1  # a subject is in one fold only
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= np.bincount(np.unique(groups, return_inverse=True)[1]).max()
    for fold in range(10):
        train, test = fold_split(groups, fold, 10)
        assert not set(groups[train]) & set(groups[test])
        assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(groups)))


def test_same_assignment_as_sklearn_group_kfold(rng):
    for _ in range(5):
        groups = subject_groups(rng, n_subjects=int(rng.integers(10, 60)))
        ours = subject_folds(groups, 7)
        for fold, (_, test) in enumerate(GroupKFold(n_splits=7).split(groups, groups=groups)):
            np.testing.assert_array_equal(np.flatnonzero(ours == fold), np.sort(test))


def test_fold_errors():
    groups = np.array([1, 1, 2, 3])
    with pytest.raises(ConfigError, match="more than the 3 subjects"):
        subject_folds(groups, 4)
    with pytest.raises(ConfigError, match="fold must be in 0..2"):
        fold_split(groups, 3, 3)


def test_leave_one_subject_out():
    groups = np.array(["b", "a", "b", "c", "a"])
    out = list(leave_one_subject_out(groups))
    assert [s for s, _, _ in out] == ["a", "b", "c"]
    subject, train, test = out[0]
    assert test.tolist() == [1, 4] and train.tolist() == [0, 2, 3]
