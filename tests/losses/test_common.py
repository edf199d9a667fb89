"""Properties every loss must have: edge cases, precision policy, determinism, the registry."""

from __future__ import annotations

import pytest
import torch

from fermetric.config import load_recipe, recipe_names
from fermetric.errors import ConfigError, FermetricError
from fermetric.losses import (
    LOSSES,
    ExpressionMetricLoss,
    GaussianStructureLoss,
    LossInputError,
    MetricLoss,
    MultiThresholdTripletLoss,
    TripletCenterLoss,
    create_loss,
)

NUM_CLASSES, DIM = 5, 16
NAMES = ["mtdml", "dmsl", "tcl-full", "tcl-semi", "tcl-pred", "emlf", "emlf-learnable"]


def build(name: str):
    torch.manual_seed(0)
    if name == "mtdml":
        return MultiThresholdTripletLoss(num_slices=4)
    if name == "dmsl":
        return GaussianStructureLoss(num_classes=NUM_CLASSES)
    if name.startswith("tcl"):
        kind = {"full": "fully_synthesized", "semi": "semi_synthesized", "pred": "prediction_based"}[name[4:]]
        return TripletCenterLoss(NUM_CLASSES, DIM, negatives=kind)
    return ExpressionMetricLoss(NUM_CLASSES, DIM, centers="learnable" if name.endswith("learnable") else "running")


def call(loss, x, y):
    if loss.needs_logits:
        g = torch.Generator().manual_seed(1)
        return loss(x, y, logits=torch.randn(len(y), NUM_CLASSES, generator=g))
    return loss(x, y)


def value_and_grad(loss, x, y):
    x = x.detach().clone().requires_grad_()
    value = call(loss, x, y)
    value.backward()
    return value, x.grad


EDGE_BATCHES = {
    "one_class": lambda x: torch.full((len(x),), 3),
    "all_singletons": lambda x: torch.arange(len(x)) % NUM_CLASSES,
    "one_singleton": lambda x: torch.tensor([0, 0, 1, 1, 2]),
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", sorted(EDGE_BATCHES))
def test_edge_batches_are_finite(name, case):
    x = torch.randn(5, DIM, generator=torch.Generator().manual_seed(2))
    y = EDGE_BATCHES[case](x)
    value, grad = value_and_grad(build(name), x, y)
    assert value.ndim == 0 and torch.isfinite(value) and torch.isfinite(grad).all()
    if case == "one_class" and name in ("mtdml", "dmsl"):
        assert value.item() == 0.0 and grad.abs().sum() == 0  # no valid triplet / pi = y = 1


@pytest.mark.parametrize("name", NAMES)
def test_duplicate_embeddings_have_finite_gradients(name):
    # d(x, x) = 0 everywhere, and exactly 0 in floating point (dyadic entries, unit-norm slices):
    # a plain sqrt would give inf slopes and NaN gradients here.
    row = torch.full((1, DIM), 0.5)
    for y in (torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 0, 0, 1, 1, 1])):
        value, grad = value_and_grad(build(name), row.repeat(6, 1), y)
        assert torch.isfinite(value) and torch.isfinite(grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_input_computes_in_float32(name):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(12, DIM, generator=g).bfloat16()
    y = torch.arange(12) % 4
    value, grad = value_and_grad(build(name), x, y)
    reference, _ = value_and_grad(build(name), x.float(), y)
    assert value.dtype == torch.float32 and grad.dtype == torch.bfloat16 and torch.isfinite(grad.float()).all()
    assert value.item() == pytest.approx(reference.item(), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_autocast_is_switched_off_inside(name):
    x = torch.randn(12, DIM, generator=torch.Generator().manual_seed(5))
    y = torch.arange(12) % 4
    reference = call(build(name), x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = call(build(name), x, y)
    assert value.dtype == torch.float32 and value.item() == pytest.approx(reference.item(), rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name):
    x = torch.randn(12, DIM, generator=torch.Generator().manual_seed(6))
    y = torch.arange(12) % 4
    first, first_grad = value_and_grad(build(name), x, y)
    again, again_grad = value_and_grad(build(name), x, y)
    assert torch.equal(first, again) and torch.equal(first_grad, again_grad)


@pytest.mark.parametrize("name", NAMES)
def test_bad_shapes_raise_one_line_errors(name):
    loss = build(name)
    for x, y in [
        (torch.randn(4, DIM), torch.zeros(3, dtype=torch.long)),
        (torch.randn(4, DIM), torch.zeros(4)),
        (torch.randn(4, 2, DIM), torch.zeros(4, dtype=torch.long)),
    ]:
        with pytest.raises(LossInputError) as info:
            call(loss, x, y)
        assert isinstance(info.value, FermetricError) and "\n" not in str(info.value)


def test_registry_and_create_loss():
    assert {"dmsl", "emlf", "mtdml", "tcl"} <= set(LOSSES.names())
    tcl = create_loss("tcl", 7, 32, negatives="semi_synthesized", margin=0.3)
    assert isinstance(tcl, TripletCenterLoss) and tcl.centers.shape == (7, 32) and tcl.margin == 0.3
    mtdml = create_loss("mtdml", 7, 512, num_slices=8, margin_range=[0.1, 0.8], dual=True)  # YAML gives lists
    assert mtdml.margin_range == (0.1, 0.8) and len(mtdml.margins) == 8
    assert create_loss("dmsl", 7, 64).num_classes == 7
    emlf = create_loss("emlf", 7, 64, separation_weight=0.25)
    assert emlf.running_centers.shape == (7, 64) and emlf.separation_weight == 0.25 and emlf.center_mode == "running"
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['margn'\]"):
        create_loss("tcl", 7, 32, margn=0.3)
    with pytest.raises(ConfigError, match="come from the dataset and model"):
        create_loss("emlf", 7, 32, num_classes=3)
    with pytest.raises(ConfigError, match="unknown loss 'arcface'"):
        create_loss("arcface", 7, 32)
    with pytest.raises(ConfigError, match="not divisible by num_slices=8"):
        create_loss("mtdml", 7, 100)


def test_every_shipped_recipe_builds_its_loss():
    built = 0
    for name in recipe_names():
        recipe = load_recipe(name)
        if recipe.loss.name is None:
            continue
        loss = create_loss(recipe.loss.name, 7, recipe.model.embedding_dim, **recipe.loss.options)
        x = torch.randn(16, recipe.model.embedding_dim, generator=torch.Generator().manual_seed(0))
        y = torch.arange(16) % 4
        logits = torch.randn(16, 7)
        value = loss(x, y, logits=logits) if loss.needs_logits else loss(x, y)
        assert torch.isfinite(value)
        built += 1
    assert built >= 4


def test_safe_sqrt_and_pairwise_distances():
    from fermetric.losses.functional import pairwise_distances, safe_sqrt

    squared = torch.tensor([0.0, 1e-20, 4.0], dtype=torch.float64, requires_grad=True)
    root = safe_sqrt(squared)
    root.sum().backward()
    assert root.tolist() == [0.0, 0.0, 2.0] and squared.grad.tolist() == [0.0, 0.0, 0.25]
    g = torch.Generator().manual_seed(8)
    x, y = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(pairwise_distances(x, y), torch.cdist(x, y), atol=1e-12)
    assert torch.allclose(pairwise_distances(x, y, squared=True), torch.cdist(x, y) ** 2, atol=1e-12)
    self_d = pairwise_distances(x)
    assert torch.equal(self_d.diagonal(), torch.zeros(5, dtype=torch.float64))
    assert torch.allclose(self_d, torch.cdist(x, x), atol=1e-12)


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_registered_loss_keeps_the_contract(name):
    """A new loss joins this test by registering itself: built from defaults, it is a MetricLoss,
    declares its space, takes logits only when it says so, and trains (finite value, gradient)."""
    loss = create_loss(name, NUM_CLASSES, DIM)
    assert isinstance(loss, MetricLoss) and loss.loss_name == name
    space = loss.embedding_space
    g = torch.Generator().manual_seed(2)
    x = torch.randn(20, DIM, generator=g, requires_grad=True)
    y = torch.arange(20) % NUM_CLASSES
    logits = torch.randn(20, NUM_CLASSES, generator=g)
    value = loss(x, y, logits=logits) if loss.needs_logits else loss(x, y)
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value) and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # The loss is blind to whatever its space removes (the norm, for a normalised space).
    if loss.normalize and space.kind != "raw":
        torch.manual_seed(0)
        again = loss(3.0 * x.detach(), y, logits=logits) if loss.needs_logits else loss(3.0 * x.detach(), y)
        assert torch.allclose(again, value.detach(), atol=1e-5)


def test_needs_logits_is_declared_not_guessed():
    assert not create_loss("tcl", NUM_CLASSES, DIM).needs_logits  # fully synthesized (default)
    assert create_loss("tcl", NUM_CLASSES, DIM, negatives="prediction_based").needs_logits
    assert not any(create_loss(n, NUM_CLASSES, DIM).needs_logits for n in ("mtdml", "dmsl", "emlf"))
