"""MultiThresholdTripletLoss against a naive float64 loop, hand-made cases, PML and gradcheck."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pytorch_metric_learning.losses import TripletMarginLoss
from pytorch_metric_learning.miners import BatchHardMiner
from pytorch_metric_learning.reducers import MeanReducer

from fermetric.errors import ConfigError
from fermetric.losses import LossInputError, MultiThresholdTripletLoss


def naive_mtdml(
    emb: np.ndarray, labels: np.ndarray, margins, dual: bool, normalize: bool = True, dual_negative: str = "own"
) -> float:
    """Straight from the definition: per slice, per anchor, scan every pair with explicit loops."""
    n, dim = emb.shape
    size = dim // len(margins)
    slice_losses = []
    for k, tau in enumerate(margins):
        x = emb[:, k * size : (k + 1) * size].astype(np.float64)
        if normalize:
            x = np.stack([row / math.sqrt(sum(v * v for v in row)) for row in x])
        d = [[math.sqrt(sum((x[i, t] - x[j, t]) ** 2 for t in range(size))) for j in range(n)] for i in range(n)]

        def hardest(i, d=d):
            pos = [(d[i][j], j) for j in range(n) if j != i and labels[j] == labels[i]]
            neg = [(d[i][j], j) for j in range(n) if labels[j] != labels[i]]
            return (max(pos) if pos else None), (min(neg) if neg else None)

        total, count = 0.0, 0
        for a in range(n):
            pos, neg = hardest(a)
            if pos is None or neg is None:
                continue
            d_ap, p = pos
            value = max(d_ap - neg[0] + tau, 0.0)
            if dual:
                d_pn = hardest(p)[1][0] if dual_negative == "own" else d[p][neg[1]]
                value += max(d_ap - d_pn + tau, 0.0)
            total += value
            count += 1
        slice_losses.append(total / count if count else 0.0)
    return sum(slice_losses) / len(slice_losses)


def pk_batch(p: int, k: int, dim: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(p).repeat_interleave(k)
    labels = labels[torch.randperm(p * k, generator=g)]
    return torch.randn(p * k, dim, generator=g, dtype=torch.float64), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("p,k", [(2, 2), (3, 4), (5, 3)])
@pytest.mark.parametrize("dual", [False, True])
def test_matches_naive_loop(seed, p, k, dual):
    x, y = pk_batch(p, k, 12, seed)
    loss = MultiThresholdTripletLoss(num_slices=3, margin_range=(0.25, 1.0), dual=dual)
    expected = naive_mtdml(x.numpy(), y.numpy(), [0.25, 0.625, 1.0], dual)  # exact in float32
    assert loss(x, y).item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_shared_dual_negative_matches_naive_loop(seed):
    x, y = pk_batch(3, 4, 12, seed)
    loss = MultiThresholdTripletLoss(num_slices=3, margin_range=(0.25, 1.0), dual=True, dual_negative="shared")
    expected = naive_mtdml(x.numpy(), y.numpy(), [0.25, 0.625, 1.0], True, dual_negative="shared")
    assert loss(x, y).item() == pytest.approx(expected, rel=1e-9, abs=1e-12)
    own = MultiThresholdTripletLoss(num_slices=3, margin_range=(0.25, 1.0), dual=True)
    assert own(x, y).item() != pytest.approx(expected, rel=1e-6)  # the option changes the loss


def test_batch_with_singletons_matches_naive():
    x, _ = pk_batch(1, 9, 8, 5)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 3, 4, 4])  # classes 2 and 3 are singletons: not anchors
    loss = MultiThresholdTripletLoss(num_slices=2, margin_range=(0.25, 0.5))
    assert loss(x, y).item() == pytest.approx(naive_mtdml(x.numpy(), y.numpy(), [0.25, 0.5], True), rel=1e-9)


def test_hand_computed_points():
    # Points on a line, one slice, no normalisation, tau = 1.5. Class 0 at 0, 1, 3; class 1 at 5, 6.
    # anchor: (d_ap, d_an) -> plain term; dual term uses d(p, n') of its hardest positive p:
    #   0: p=3 (3), n=5 (5) -> 0.0;  p=3 has d(3,5)=2 -> [3-2+1.5] = 2.5
    #   1: p=3 (2), n=5 (4) -> 0.0;  d(3,5)=2 -> [2-2+1.5] = 1.5
    #   3: p=0 (3), n=5 (2) -> 2.5;  p=0 has d(0,5)=5 -> 0.0
    #   5: p=6 (1), n=3 (2) -> 0.5;  p=6 has d(6,3)=3 -> 0.0
    #   6: p=5 (1), n=3 (3) -> 0.0;  p=5 has d(5,3)=2 -> 0.5
    # plain = 3.0 / 5 = 0.6, dual = 4.5 / 5 = 0.9
    x = torch.tensor([[0.0, 0], [1, 0], [3, 0], [5, 0], [6, 0]])
    y = torch.tensor([0, 0, 0, 1, 1])
    plain = MultiThresholdTripletLoss(num_slices=1, margin_range=(1.5, 1.5), dual=False, normalize=False)
    dual = MultiThresholdTripletLoss(num_slices=1, margin_range=(1.5, 1.5), dual=True, normalize=False)
    half = MultiThresholdTripletLoss(num_slices=1, margin_range=(1.5, 1.5), normalize=False, dual_weight=0.5)
    assert plain(x, y).item() == pytest.approx(0.6, abs=1e-6)
    assert dual(x, y).item() == pytest.approx(1.5, abs=1e-6)
    assert half(x, y).item() == pytest.approx(0.6 + 0.45, abs=1e-6)


def test_slices_are_independent_and_averaged():
    # Two slices whose per-slice losses are known from the hand case: slice 1 identical to slice 0
    # but scaled by 10 (no normalisation) with its own tau.
    base = torch.tensor([[0.0, 0], [1, 0], [3, 0], [5, 0], [6, 0]])
    y = torch.tensor([0, 0, 0, 1, 1])
    x = torch.cat([base, base], dim=1)
    loss = MultiThresholdTripletLoss(num_slices=2, margin_range=(1.5, 1.5), dual=False, normalize=False)
    assert loss(x, y).item() == pytest.approx(0.6, abs=1e-6)
    x[:, 2:] = 100.0 * base  # every triplet of slice 1 is either 0 or large: check against the loop
    expected = naive_mtdml(x.double().numpy(), y.numpy(), [1.5, 1.5], False, normalize=False)
    assert loss(x, y).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("margin", [0.1, 0.5])
def test_one_slice_no_dual_is_pml_batch_hard_triplet(seed, margin):
    x, y = pk_batch(4, 4, 16, seed)
    ours = MultiThresholdTripletLoss(num_slices=1, margin_range=(margin, margin), dual=False)
    # PML's default reducer (AvgNonZeroReducer) drops zero-loss triplets; ours averages all valid anchors.
    pml = TripletMarginLoss(margin=margin, smooth_loss=False, reducer=MeanReducer())
    expected = pml(x, y, BatchHardMiner()(x, y))
    assert ours(x, y).item() == pytest.approx(expected.item(), rel=1e-7)


def test_margins_buffer():
    linear = MultiThresholdTripletLoss(num_slices=8)
    assert torch.allclose(linear.margins, torch.tensor([0.1 + 0.1 * k for k in range(8)]))
    geometric = MultiThresholdTripletLoss(num_slices=3, margin_range=(0.1, 0.4), spacing="geometric")
    assert torch.allclose(geometric.margins, torch.tensor([0.1, 0.2, 0.4]))
    assert MultiThresholdTripletLoss(num_slices=1).margins.tolist() == pytest.approx([0.1])
    assert "margins" not in linear.state_dict()  # derived from options, not a checkpoint entry
    assert linear.double().margins.dtype == torch.float64


def test_gradcheck():
    x, y = pk_batch(3, 3, 6, 3)
    loss = MultiThresholdTripletLoss(num_slices=2, margin_range=(0.2, 0.6))
    assert torch.autograd.gradcheck(lambda e: loss(e, y), (x.requires_grad_(),), eps=1e-6, atol=1e-6, fast_mode=True)


def test_bad_inputs():
    with pytest.raises(LossInputError, match="not divisible by num_slices=8"):
        MultiThresholdTripletLoss()(torch.randn(4, 12), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ConfigError, match="embedding_dim=100"):
        MultiThresholdTripletLoss(embedding_dim=100)
    with pytest.raises(ConfigError, match="spacing"):
        MultiThresholdTripletLoss(spacing="cosine")
    with pytest.raises(ConfigError, match="margin_range"):
        MultiThresholdTripletLoss(margin_range=(0.8, 0.1))
    with pytest.raises(ConfigError, match="margin_range"):
        MultiThresholdTripletLoss(margin_range=(0.0, 0.5), spacing="geometric")
