"""Index batches for one epoch: shuffled, or P classes x K samples (metric learning).

The engine keeps a whole split on the device and gathers each batch by index, so a sampler is a
function of ``(labels, seed, epoch, rank)`` returning the epoch's batches as index arrays; no
DataLoader, no worker state, and resuming at epoch ``e`` reproduces epoch ``e`` exactly.

Design decisions (each with its default):

- **Epoch length**: ``len(labels) // batch_size`` batches (``drop_last=True``), so a P x K epoch
  shows as many samples as a shuffled one; ``drop_last=False`` adds the partial batch (random)
  or rounds up (``ceil``, P x K batches are always full).
- **Ranks**: the epoch's batches form one global sequence that depends only on ``seed`` and
  ``epoch``; rank ``r`` of ``world_size`` takes batches ``r, r + world_size, ...``. The batch count
  is first cut to a multiple of ``world_size``, so every rank gets the same number of batches and
  the shards are disjoint (together they are a prefix of the ``world_size=1`` sequence).
  ``batch_size`` is per rank.
- **random**: one permutation of all items (unlabeled ``-1`` items included) per epoch from
  ``numpy.random.default_rng([seed, epoch])``. With ``drop_last=False`` the items left after the
  full batches (fewer than ``world_size`` batches' worth) are cut into ``world_size`` equal,
  smaller batches, one per rank (at most ``world_size - 1`` items per epoch are left out).
- **pk**: batches of P classes x K samples from pytorch-metric-learning's ``MPerClassSampler``
  (K = ``samples_per_class``; a class with fewer than K items is sampled with replacement).
  PML draws from the module-level ``c_f.NUMPY_RANDOM``; it is swapped for a ``RandomState``
  seeded from ``[seed, epoch]`` while the epoch is drawn (under a lock), which makes the sampler
  deterministic. P = ``batch_size // K``; when that exceeds the number of classes (e.g. 256 / 16
  = 16 > 7 FER classes) every class is in every batch and K grows to ``batch_size // P`` so the
  batch stays close to ``batch_size``. Unlabeled items never enter P x K batches.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from ..errors import ConfigError

SAMPLER_MODES = ("random", "pk")
_PML_RANDOM_LOCK = threading.Lock()


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])


def pk_shape(labels, batch_size: int, samples_per_class: int) -> tuple[int, int]:
    """``(P, K)`` of the P x K batches for these labels (see the module docstring)."""
    num_classes = len(np.unique(np.asarray(labels)[np.asarray(labels) >= 0]))
    if num_classes < 2:
        raise ConfigError(f"P x K batches need at least 2 labelled classes, found {num_classes}")
    if samples_per_class < 1:
        raise ConfigError(f"samples_per_class must be >= 1, got {samples_per_class}")
    k = min(samples_per_class, batch_size)
    p = batch_size // k
    if p > num_classes:
        p = num_classes
        k = batch_size // p
    if p < 2:
        raise ConfigError(
            f"batch_size {batch_size} holds fewer than 2 classes of {k} samples; "
            f"use a larger batch_size or a smaller samples_per_class"
        )
    return p, k


def epoch_batches(
    labels,
    batch_size: int,
    mode: str = "random",
    samples_per_class: int = 16,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = True,
) -> list[np.ndarray]:
    """This rank's batches (int64 index arrays into ``labels``) for one epoch."""
    labels = np.asarray(labels)
    n = len(labels)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not in 0..world_size-1 (world_size={world_size})")
    if mode not in SAMPLER_MODES:
        raise ConfigError(f"unknown sampler {mode!r}; choose one of {', '.join(SAMPLER_MODES)}")
    if mode == "random":
        order = np.random.default_rng([int(seed), int(epoch)]).permutation(n).astype(np.int64)
        full = n // batch_size
        full -= full % world_size
        batches = [order[i * batch_size : (i + 1) * batch_size] for i in range(full)]
        if not drop_last:  # what is left, cut into world_size equal (smaller) batches
            rest = order[full * batch_size :]
            rest = rest[: len(rest) - len(rest) % world_size]
            if len(rest):
                batches += np.split(rest, world_size)
        return batches[rank::world_size]
    num_batches = n // batch_size if drop_last else math.ceil(n / batch_size)
    num_batches -= num_batches % world_size
    return _pk_batches(labels, batch_size, samples_per_class, seed, epoch, num_batches)[rank::world_size]


def _pk_batches(
    labels: np.ndarray, batch_size: int, samples_per_class: int, seed: int, epoch: int, num_batches: int
) -> list[np.ndarray]:
    from pytorch_metric_learning.samplers import MPerClassSampler
    from pytorch_metric_learning.utils import common_functions as c_f

    if num_batches == 0:
        return []
    p, k = pk_shape(labels, batch_size, samples_per_class)
    labelled = np.flatnonzero(labels >= 0)
    sampler = MPerClassSampler(labels[labelled], m=k, batch_size=p * k, length_before_new_iter=num_batches * p * k)
    with _PML_RANDOM_LOCK:
        saved = c_f.NUMPY_RANDOM
        c_f.NUMPY_RANDOM = np.random.RandomState(_epoch_seed(seed, epoch))
        try:
            flat = np.fromiter(iter(sampler), dtype=np.int64, count=len(sampler))
        finally:
            c_f.NUMPY_RANDOM = saved
    return [labelled[b] for b in flat.reshape(num_batches, p * k)]
