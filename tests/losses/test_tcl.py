"""TripletCenterLoss: the three negative strategies against naive loops, hand cases, gradcheck."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fermetric.errors import ConfigError
from fermetric.losses import LossInputError, TripletCenterLoss


def dist(a, b, squared=False):
    d2 = sum((float(u) - float(v)) ** 2 for u, v in zip(a, b, strict=True))
    return d2 if squared else math.sqrt(d2)


def naive_tcl(z, labels, centers, margin, negatives, semi_mix=0.5, logits=None, squared=False, normalize=True):
    z = np.asarray(z, dtype=np.float64)
    if normalize:
        z = np.stack([row / math.sqrt(sum(v * v for v in row)) for row in z])
    n, num_classes = len(z), len(centers)
    total = 0.0
    for i in range(n):
        y = labels[i]
        d_pos = dist(z[i], centers[y], squared)
        d_full = min(dist(z[i], centers[j], squared) for j in range(num_classes) if j != y)
        if negatives == "fully_synthesized":
            d_neg = d_full
        elif negatives == "prediction_based":
            wrong = max((logits[i][j], j) for j in range(num_classes) if j != y)[1]
            d_neg = dist(z[i], centers[wrong], squared)
        else:
            others = [(dist(z[i], z[j]), j) for j in range(n) if labels[j] != y]
            if not others:
                d_neg = d_full
            else:
                m = min(others)[1]
                point = [(1 - semi_mix) * z[m][t] + semi_mix * centers[labels[m]][t] for t in range(len(z[i]))]
                d_neg = dist(z[i], point, squared)
        total += max(d_pos + margin - d_neg, 0.0)
    return total / n


def make_loss(num_classes, dim, seed, **options):
    torch.manual_seed(seed)
    return TripletCenterLoss(num_classes, dim, **options).double()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("p,k", [(2, 2), (3, 4), (5, 3)])
@pytest.mark.parametrize("negatives", ["fully_synthesized", "semi_synthesized", "prediction_based"])
@pytest.mark.parametrize("distance", ["euclidean", "squared"])
def test_matches_naive_loop(seed, p, k, negatives, distance):
    g = torch.Generator().manual_seed(seed)
    num_classes = p + 2  # some classes absent from the batch
    y = torch.randperm(num_classes, generator=g)[:p].repeat_interleave(k)
    x = torch.randn(p * k, 4, generator=g, dtype=torch.float64)
    logits = torch.randn(p * k, num_classes, generator=g, dtype=torch.float64)
    loss = make_loss(num_classes, 4, seed, margin=0.7, negatives=negatives, semi_mix=0.3, distance=distance)
    with torch.no_grad():  # spread the unit-norm init so hinges are neither all 0 nor all active
        loss.centers.mul_(0.8)
    expected = naive_tcl(
        x.numpy(), y.tolist(), loss.centers.detach().numpy(), 0.7, negatives, 0.3, logits.numpy(), distance == "squared"
    )
    assert loss(x, y, logits=logits).item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def hand_loss(negatives, **options):
    loss = TripletCenterLoss(3, 2, margin=2.0, negatives=negatives, normalize=False, **options)
    with torch.no_grad():
        loss.centers.copy_(torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]]))
    return loss


HAND_Z = torch.tensor([[0.5, 0.0], [1.5, 0.0], [0.0, 2.0]])
HAND_Y = torch.tensor([0, 1, 2])


def test_hand_fully_synthesized():
    # D_pos = 0.5, 0.5, 1; nearest other centre: c1 at 1.5, c0 at 1.5, c0 at 2 -> every hinge = 1.0
    assert hand_loss("fully_synthesized")(HAND_Z, HAND_Y).item() == pytest.approx(1.0, abs=1e-6)


def test_hand_semi_synthesized():
    # Hardest real negatives: a -> b (1.0), b -> a (1.0), c -> a (sqrt 4.25).
    # Negative points (midpoints): a: (1.5+2)/2 = (1.75, 0) at 1.25; b: (0.5+0)/2 = (0.25, 0) at 1.25;
    # c: (0.25, 0) at sqrt(0.0625 + 4). Hinges: 1.25, 1.25, 3 - sqrt(4.0625).
    expected = (1.25 + 1.25 + 3 - math.sqrt(4.0625)) / 3
    assert hand_loss("semi_synthesized")(HAND_Z, HAND_Y).item() == pytest.approx(expected, abs=1e-6)
    # semi_mix = 1 puts the negative on the hardest sample's centre: a -> c1 (1.5), b -> c0 (1.5), c -> c0 (2)
    assert hand_loss("semi_synthesized", semi_mix=1.0)(HAND_Z, HAND_Y).item() == pytest.approx(1.0, abs=1e-6)


def test_hand_prediction_based():
    logits = torch.tensor([[9.0, 1.0, 3.0], [0.0, 5.0, 2.0], [4.0, 1.0, 0.0]])
    # wrong classes: a -> 2 (D = sqrt(9.25)), b -> 2 (D = sqrt(2.25 + 9)), c -> 0 (D = 2)
    expected = (max(2.5 - math.sqrt(9.25), 0) + max(2.5 - math.sqrt(11.25), 0) + (3 - 2)) / 3
    got = hand_loss("prediction_based")(HAND_Z, HAND_Y, logits=logits).item()
    assert got == pytest.approx(expected, abs=1e-6)
    with pytest.raises(LossInputError, match="needs the classifier logits") as info:
        hand_loss("prediction_based")(HAND_Z, HAND_Y)
    assert isinstance(info.value, ValueError)
    with pytest.raises(LossInputError, match="logits must be"):
        hand_loss("prediction_based")(HAND_Z, HAND_Y, logits=logits[:, :2])


def test_semi_falls_back_to_fully_synthesized_without_batch_negatives():
    torch.manual_seed(0)
    x = torch.randn(6, 4, dtype=torch.float64)
    y = torch.full((6,), 2)
    semi = make_loss(4, 4, 3, negatives="semi_synthesized")
    full = make_loss(4, 4, 3, negatives="fully_synthesized")
    assert semi(x, y).item() == pytest.approx(full(x, y).item(), rel=1e-12)


@pytest.mark.parametrize("negatives", ["fully_synthesized", "semi_synthesized", "prediction_based"])
def test_gradcheck_embeddings_and_centres(negatives):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = torch.randn(6, 3, generator=g, dtype=torch.float64)
    loss = make_loss(3, 3, 5, margin=1.0, negatives=negatives)
    centres = loss.centers.detach().clone().requires_grad_()

    def fn(e, c):  # the loss as a function of embeddings and centres
        return torch.func.functional_call(loss, {"centers": c}, (e, y), {"logits": logits})

    assert torch.autograd.gradcheck(fn, (x, centres), eps=1e-6, atol=1e-6, fast_mode=True)


def test_centres_receive_gradients_and_are_saved():
    loss = TripletCenterLoss(4, 8, margin=1.0)
    assert [name for name, _ in loss.named_parameters()] == ["centers"]
    assert loss.centers.shape == (4, 8) and torch.allclose(loss.centers.norm(dim=1), torch.ones(4))
    loss(torch.randn(8, 8), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).backward()
    assert loss.centers.grad is not None and loss.centers.grad.abs().sum() > 0
    assert "centers" in loss.state_dict()


def test_bad_options_and_inputs():
    with pytest.raises(ConfigError, match="negatives='hardest'"):
        TripletCenterLoss(3, 4, negatives="hardest")
    with pytest.raises(ConfigError, match="distance"):
        TripletCenterLoss(3, 4, distance="cosine")
    with pytest.raises(ConfigError, match=">= 2"):
        TripletCenterLoss(1, 4)
    with pytest.raises(LossInputError, match=r"labels must lie in \[0, 2\]"):
        TripletCenterLoss(3, 4)(torch.randn(2, 4), torch.tensor([0, 3]))
    with pytest.raises(LossInputError, match="embedding dim 5"):
        TripletCenterLoss(3, 4)(torch.randn(2, 5), torch.tensor([0, 1]))


def test_semi_negative_on_the_anchor_has_finite_gradient():
    # semi_mix = 0 and an other-class duplicate: the negative point *is* the anchor, D = sqrt(0).
    x = torch.tensor([[0.5, 0.5, 0.5, 0.5]] * 2 + [[1.0, 0.0, 0.0, 0.0]], requires_grad=True)
    loss = make_loss(3, 4, 0, negatives="semi_synthesized", semi_mix=0.0)
    value = loss(x, torch.tensor([0, 1, 2]))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all() and torch.isfinite(loss.centers.grad).all()
