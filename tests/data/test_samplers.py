"""Epoch batches: shuffled and P x K, deterministic per (seed, epoch), disjoint per rank."""

from __future__ import annotations

import numpy as np
import pytest

from fermetric.data.samplers import epoch_batches, pk_shape
from fermetric.errors import ConfigError


@pytest.fixture
def labels(rng):
    counts = [300, 12, 150, 90, 60, 200, 5]  # FER-like imbalance, one class smaller than K
    return rng.permutation(np.repeat(np.arange(7), counts))


def as_lists(batches):
    return [b.tolist() for b in batches]


def test_random_batches_are_a_permutation(labels):
    batches = epoch_batches(labels, 64, seed=3, epoch=1)
    assert len(batches) == len(labels) // 64 and all(len(b) == 64 and b.dtype == np.int64 for b in batches)
    flat = np.concatenate(batches)
    assert len(set(flat.tolist())) == len(flat)  # no repeats within an epoch
    last = epoch_batches(labels, 64, seed=3, epoch=1, drop_last=False)
    assert sorted(np.concatenate(last).tolist()) == list(range(len(labels)))  # everything, once


def test_determinism_per_seed_and_epoch(labels):
    for mode in ("random", "pk"):
        a = epoch_batches(labels, 64, mode, 8, seed=1, epoch=4)
        assert as_lists(a) == as_lists(epoch_batches(labels, 64, mode, 8, seed=1, epoch=4))
        assert as_lists(a) != as_lists(epoch_batches(labels, 64, mode, 8, seed=1, epoch=5))
        assert as_lists(a) != as_lists(epoch_batches(labels, 64, mode, 8, seed=2, epoch=4))


def test_pk_batches_have_p_classes_of_k(labels):
    batches = epoch_batches(labels, 64, "pk", samples_per_class=16, seed=0)
    assert len(batches) == len(labels) // 64
    for batch in batches:
        classes, counts = np.unique(labels[batch], return_counts=True)
        assert len(classes) == 4 and set(counts) == {16}
    rare = np.flatnonzero(labels == 6)  # 5 items, K = 16: drawn with replacement
    assert any(np.isin(b, rare).sum() == 16 for b in batches)


def test_pk_grows_k_when_batch_holds_every_class(labels):
    assert pk_shape(labels, 256, 16) == (7, 36)  # 16 classes asked, 7 exist: all 7 x 36
    for batch in epoch_batches(labels, 256, "pk", 16, seed=0):
        assert len(batch) == 252 and set(np.bincount(labels[batch])) == {36}


def test_pk_ignores_unlabeled_items(labels):
    labels = labels.copy()
    labels[::3] = -1
    for batch in epoch_batches(labels, 32, "pk", 8, seed=0):
        assert (labels[batch] >= 0).all()


@pytest.mark.parametrize("mode", ["random", "pk"])
def test_ranks_get_disjoint_equal_shares(labels, mode):
    single = as_lists(epoch_batches(labels, 50, mode, 10, seed=7, epoch=2))
    for world in (2, 3):
        shards = [
            as_lists(epoch_batches(labels, 50, mode, 10, seed=7, epoch=2, rank=r, world_size=world))
            for r in range(world)
        ]
        assert len({len(s) for s in shards}) == 1  # equal number of steps on every rank
        merged = [b for step in zip(*shards) for b in step]
        assert merged == single[: len(merged)]  # rank r holds batches r, r+world, ... of one sequence
        if mode == "random":
            flat = [i for s in shards for b in s for i in b]
            assert len(flat) == len(set(flat))
    shards = [epoch_batches(labels, 50, "random", seed=7, rank=r, world_size=3, drop_last=False) for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    flat = np.concatenate([b for s in shards for b in s])
    assert len(set(flat.tolist())) == len(flat) >= len(labels) - 2


def test_bad_arguments(labels):
    with pytest.raises(ConfigError, match="unknown sampler"):
        epoch_batches(labels, 8, "balanced")
    with pytest.raises(ConfigError, match="rank 2"):
        epoch_batches(labels, 8, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="at least 2 labelled classes"):
        epoch_batches(np.zeros(100, int), 8, "pk", 4)
