"""pytorch-metric-learning miners and reducers inside fermetric's own losses, against PML and naive loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses, miners, reducers

from fermetric.config import load_recipe
from fermetric.errors import ConfigError
from fermetric.losses import create_loss


def batch(seed: int = 0, n: int = 24, dim: int = 16, classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=torch.float64), torch.arange(n) % classes


@pytest.mark.parametrize("miner", ["TripletMarginMiner", "MultiSimilarityMiner", "BatchEasyHardMiner"])
def test_one_slice_mtdml_with_a_miner_and_reducer_is_pml_triplet_margin_loss(miner):
    z, y = batch()
    ours = create_loss(
        "mtdml", 4, 16, num_slices=1, dual=False, margin_range=(0.3, 0.3), miner=miner, reducer="AvgNonZeroReducer"
    )
    pml = losses.TripletMarginLoss(margin=0.3)  # default reducer: AvgNonZeroReducer
    expected = pml(z, y, getattr(miners, miner)()(z, y))
    # the margins are a float32 buffer, so agreement is to float32 round-off
    assert ours(z, y).item() == pytest.approx(expected.item(), rel=1e-6)
    assert ours(z, y).item() > 0


def naive_mined_mtdml(z, y, margins, dual_negative, miner):
    """Per slice: normalise, mine with PML, then the (dual) triplet terms from numpy distances."""
    slices = np.split(z.numpy(), len(margins), axis=1)
    total = 0.0
    for part, tau in zip(slices, margins):
        part = part / np.linalg.norm(part, axis=1, keepdims=True)
        d = np.linalg.norm(part[:, None] - part[None], axis=-1)
        a, p, n = (t.numpy() for t in miner(torch.from_numpy(part), y))
        labels = y.numpy()
        terms = []
        for i, j, k in zip(a, p, n):
            loss = max(d[i, j] - d[i, k] + tau, 0.0)
            if dual_negative == "own":  # p's nearest other-label sample
                other = d[j][labels != labels[j]].min()
            else:
                other = d[j, k]
            terms.append(loss + max(d[i, j] - other + tau, 0.0))
        total += np.mean(terms) if terms else 0.0
    return total / len(margins)


@pytest.mark.parametrize("dual_negative", ["own", "shared"])
def test_sliced_dual_mtdml_with_a_miner_equals_a_naive_loop(dual_negative):
    z, y = batch(1, n=20, dim=12)
    miner = miners.TripletMarginMiner(margin=0.4, type_of_triplets="semihard")
    ours = create_loss("mtdml", 4, 12, num_slices=3, margin_range=(0.1, 0.5), dual_negative=dual_negative, miner=miner)
    expected = naive_mined_mtdml(z, y, [0.1, 0.3, 0.5], dual_negative, miner)
    assert ours(z, y).item() == pytest.approx(expected, rel=1e-6)
    z.requires_grad_(True)
    ours(z, y).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_a_miner_that_finds_nothing_gives_zero_with_a_gradient():
    z, y = batch(2)
    easy = {"name": "TripletMarginMiner", "options": {"margin": 0.0, "type_of_triplets": "hard"}}
    ours = create_loss("mtdml", 4, 16, num_slices=2, miner=easy)
    points = torch.eye(16, dtype=z.dtype)
    z = (points[y] + points[y + 8]).requires_grad_(True)  # each class one point in each slice: no hard triplet
    value = ours(z, y)
    value.backward()
    assert value.item() == 0.0 and z.grad is not None


def test_tcl_and_emlf_take_a_reducer_over_their_per_sample_terms():
    z, y = batch(3)
    torch.manual_seed(0)
    plain = create_loss("tcl", 4, 16, margin=0.1)
    torch.manual_seed(0)
    nonzero = create_loss("tcl", 4, 16, margin=0.1, reducer="AvgNonZeroReducer")
    zn = torch.nn.functional.normalize(z, dim=1)
    to_centers = torch.cdist(zn, plain.centers.double())
    own = to_centers[torch.arange(24), y]
    other = to_centers.masked_fill(torch.nn.functional.one_hot(y, 4).bool(), float("inf")).min(1).values
    hinge = torch.relu(own + 0.1 - other)
    assert 0 < (hinge > 0).sum() < 24  # the two reductions differ on this batch
    assert plain(z, y).item() == pytest.approx(hinge.mean().item(), rel=1e-9)
    assert nonzero(z, y).item() == pytest.approx(hinge[hinge > 0].mean().item(), rel=1e-9)

    torch.manual_seed(0)
    emlf = create_loss(
        "emlf", 4, 16, centers="learnable", reducer={"name": "ThresholdReducer", "options": {"low": 1.0}}
    )
    compact = (zn - emlf.centers.double()[y]).pow(2).sum(1)
    gaps = torch.pdist(emlf.centers.double())
    separation = torch.relu(emlf.margin - gaps).pow(2).sum()
    expected = compact[compact > 1.0].mean() + emlf.separation_weight * separation
    assert emlf(z, y).item() == pytest.approx(expected.item(), rel=1e-9)


def test_a_pml_baseline_takes_its_reducer_by_name():
    z, y = batch(4)
    ours = create_loss("pml:ContrastiveLoss", 4, 16, reducer="MeanReducer")
    expected = losses.ContrastiveLoss(reducer=reducers.MeanReducer())(z, y)
    assert ours(z, y).item() == pytest.approx(expected.item(), rel=1e-9)


def test_bad_miners_and_reducers_are_one_line_errors():
    with pytest.raises(ConfigError, match="no miner 'NoSuchMiner'"):
        create_loss("mtdml", 4, 16, miner="NoSuchMiner")
    with pytest.raises(ConfigError, match="no reducer 'NoSuchReducer'"):
        create_loss("tcl", 4, 16, reducer="NoSuchReducer")
    with pytest.raises(ConfigError, match="expected a pytorch-metric-learning reducer"):
        create_loss("emlf", 4, 16, reducer=miners.BatchHardMiner())
    with pytest.raises(ConfigError, match="pml reducer ThresholdReducer"):
        create_loss("tcl", 4, 16, reducer={"name": "ThresholdReducer", "options": {"lowest": 1}})
    with pytest.raises(ConfigError, match="unknown option"):
        create_loss("dmsl", 4, 16, reducer="MeanReducer")


def test_a_recipe_names_its_miner_and_reducer_on_the_command_line():
    recipe = load_recipe("mtdml", ["loss.options.miner=MultiSimilarityMiner", "loss.options.reducer=AvgNonZeroReducer"])
    loss = create_loss(recipe.loss.name, 7, recipe.model.embedding_dim, **recipe.loss.options)
    assert isinstance(loss.miner, miners.MultiSimilarityMiner)
    assert isinstance(loss.reducer, reducers.AvgNonZeroReducer)
    assert "reducer" in dict(loss.named_children())  # a registered submodule, moved by .to(device)
    z, y = batch(5, n=32, dim=recipe.model.embedding_dim, classes=7)
    z.requires_grad_(True)
    loss(z.float(), y).backward()
    assert torch.isfinite(z.grad).all()
