"""GaussianStructureLoss and the nearest-centroid helpers against naive float64 loops and hand cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fermetric.errors import ConfigError
from fermetric.losses import GaussianStructureLoss, LossInputError, class_centroids, nearest_centroid_predict


def naive_dmsl(
    points: np.ndarray, soft_targets: np.ndarray, centre_points: np.ndarray, centre_labels: np.ndarray, sigma: float
) -> float:
    """mu_j from ``centre_points`` of class j; responsibilities of every row of ``points`` vs soft targets."""
    classes = sorted(set(int(c) for c in centre_labels))
    mus = {}
    for c in classes:
        members = [centre_points[i] for i in range(len(centre_labels)) if centre_labels[i] == c]
        mus[c] = [sum(m[t] for m in members) / len(members) for t in range(points.shape[1])]
    total = 0.0
    for i, z in enumerate(points):
        weights = {c: math.exp(-sum((z[t] - mus[c][t]) ** 2 for t in range(len(z))) / (2 * sigma**2)) for c in classes}
        norm = sum(weights.values())
        total += sum((weights[c] / norm - soft_targets[i][c]) ** 2 for c in classes)
    return total / len(points)


def one_hot(labels, num_classes):
    return np.eye(num_classes)[np.asarray(labels)]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("p,k", [(2, 3), (4, 4), (6, 2)])
@pytest.mark.parametrize("sigma", [0.5, 2.0])
def test_matches_naive_loop(seed, p, k, sigma):
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(p) * 2).repeat_interleave(k)  # even ids only: odd classes are absent
    x = torch.randn(p * k, 5, generator=g, dtype=torch.float64)
    expected = naive_dmsl(x.numpy(), one_hot(y, 2 * p), x.numpy(), y.numpy(), sigma)
    assert GaussianStructureLoss(sigma=sigma)(x, y).item() == pytest.approx(expected, rel=1e-9, abs=1e-14)
    with_c = GaussianStructureLoss(sigma=sigma, num_classes=2 * p + 3)(x, y)  # fixed width, absent classes masked
    assert with_c.item() == pytest.approx(expected, rel=1e-9, abs=1e-14)


def test_normalize_option():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(8, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2])
    xn = x / x.norm(dim=1, keepdim=True)
    expected = naive_dmsl(xn.numpy(), one_hot(y, 3), xn.numpy(), y.numpy(), 0.5)
    assert GaussianStructureLoss(normalize=True)(x, y).item() == pytest.approx(expected, rel=1e-9)


def test_hand_computed_1d():
    # sigma = 2 (2 sigma^2 = 8). Class 0 at 0 and 2 (mu 1), class 1 at 4 (singleton, mu 4).
    #   z=0: d^2 = (1, 16) -> pi_1 = 1 / (1 + e^(15/8)); row loss = 2 pi_1^2
    #   z=2: d^2 = (1, 4)  -> pi_1 = 1 / (1 + e^(3/8));  row loss = 2 pi_1^2
    #   z=4: d^2 = (9, 0)  -> pi_0 = 1 / (1 + e^(9/8));  row loss = 2 pi_0^2
    x = torch.tensor([[0.0], [2.0], [4.0]])
    y = torch.tensor([0, 0, 1])
    rows = [1 / (1 + math.exp(15 / 8)), 1 / (1 + math.exp(3 / 8)), 1 / (1 + math.exp(9 / 8))]
    expected = sum(2 * r * r for r in rows) / 3
    assert GaussianStructureLoss(sigma=2.0)(x, y).item() == pytest.approx(expected, rel=1e-6)


def test_mixup_appends_mixed_points_with_soft_labels():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(9, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    loss = GaussianStructureLoss(mixup=True, mixup_alpha=2.0, num_classes=3)
    torch.manual_seed(123)
    value = loss(x, y).item()
    # Replay the documented draws: one lambda ~ Beta(2, 2), then one permutation, global RNG.
    torch.manual_seed(123)
    lam = torch.distributions.Beta(torch.tensor(2.0), torch.tensor(2.0)).sample().double().item()
    perm = torch.randperm(9).numpy()
    t = one_hot(y, 3)
    points = np.concatenate([x.numpy(), lam * x.numpy() + (1 - lam) * x.numpy()[perm]])
    targets = np.concatenate([t, lam * t + (1 - lam) * t[perm]])
    assert value == pytest.approx(naive_dmsl(points, targets, x.numpy(), y.numpy(), 0.5), rel=1e-9)
    torch.manual_seed(123)
    assert loss(x, y).item() == value  # deterministic under a seed
    loss.eval()  # mixup is a training-time augmentation
    assert loss(x, y).item() == pytest.approx(GaussianStructureLoss()(x, y).item(), rel=1e-12)


def test_authors_mixup_labels_zero_cross_class_targets():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(9, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    loss = GaussianStructureLoss(mixup=True, mixup_labels="authors", num_classes=3)
    torch.manual_seed(5)
    value = loss(x, y).item()
    torch.manual_seed(5)
    lam = torch.distributions.Beta(torch.tensor(2.0), torch.tensor(2.0)).sample().double().item()
    perm = torch.randperm(9).numpy()
    t = one_hot(y, 3)
    same = (y.numpy() == y.numpy()[perm])[:, None]
    points = np.concatenate([x.numpy(), lam * x.numpy() + (1 - lam) * x.numpy()[perm]])
    targets = np.concatenate([t, t * same])
    assert value == pytest.approx(naive_dmsl(points, targets, x.numpy(), y.numpy(), 0.5), rel=1e-9)


def test_one_class_and_singletons():
    x = torch.randn(5, 3, requires_grad=True)
    value = GaussianStructureLoss()(x, torch.zeros(5, dtype=torch.long))
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(x.grad).all()
    x.grad = None
    value = GaussianStructureLoss()(x, torch.arange(5))  # every class a singleton: mu_j = z_j
    value.backward()
    assert math.isfinite(value.item()) and torch.isfinite(x.grad).all()


def test_gradcheck():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 3])
    loss = GaussianStructureLoss(sigma=1.0)
    assert torch.autograd.gradcheck(lambda e: loss(e, y), (x,), eps=1e-6, atol=1e-7, fast_mode=True)


def test_class_centroids_and_prediction():
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [0.0, 4.0], [99.0, 99.0]])
    y = torch.tensor([0, 0, 2, 2, -1])  # -1: unlabeled, ignored; class 1 absent; class 3 absent
    c = class_centroids(x, y, 4)
    assert c[0].tolist() == [1.0, 0.0] and c[2].tolist() == [5.0, 7.0]
    assert torch.isnan(c[1]).all() and torch.isnan(c[3]).all()
    queries = torch.tensor([[1.0, 1.0], [5.0, 6.0], [3.5, 3.0]])
    # |q2 - c0|^2 = 6.25 + 9 = 15.25 < |q2 - c2|^2 = 2.25 + 16 = 18.25
    assert nearest_centroid_predict(queries, c).tolist() == [0, 2, 0]
    with pytest.raises(LossInputError, match="no class has a finite centroid"):
        nearest_centroid_predict(queries, torch.full((3, 2), float("nan")))


def test_class_centroids_match_numpy(rng):
    x = rng.normal(size=(40, 6))
    y = rng.integers(0, 5, size=40)
    c = class_centroids(torch.from_numpy(x), torch.from_numpy(y), 5).numpy()
    for j in range(5):
        assert np.allclose(c[j], x[y == j].mean(0))
    brute = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
    assert nearest_centroid_predict(torch.from_numpy(x), torch.from_numpy(c)).numpy().tolist() == brute.tolist()


def test_bad_options_and_inputs():
    with pytest.raises(ConfigError, match="sigma"):
        GaussianStructureLoss(sigma=0)
    with pytest.raises(LossInputError, match=r"labels must lie in \[0, 2\]"):
        GaussianStructureLoss(num_classes=3)(torch.randn(2, 4), torch.tensor([0, 3]))
    with pytest.raises(LossInputError, match="labels must be >= 0"):
        GaussianStructureLoss()(torch.randn(2, 4), torch.tensor([0, -1]))


def authors_dgmm_loss(x: torch.Tensor, y: torch.Tensor, classes: int, sigma: float = 0.5) -> torch.Tensor:
    """``DGMMLoss.forward`` of the authors' code (pedrodiamel/ferattention, torchlib/netlosses.py),
    with ``mix=False`` and ``knn=False``, transcribed line by line (CPU, no ``to_gpu``)."""
    num = x.shape[0]
    pi = torch.zeros((num, classes), dtype=x.dtype)
    yh = torch.zeros((num, classes), dtype=x.dtype)
    for i, c in enumerate(range(classes)):
        index = y == int(c)
        if index.sum() == 0:
            continue
        xc = x[index, ...]
        muc = xc.mean(dim=0)
        pi[:, i] = torch.exp(-torch.sum((x - muc) ** 2, dim=1).squeeze() / (2.0 * sigma**2))
        yh[index, i] = 1
    eps = 1e-15
    s = torch.sum(pi, dim=1).unsqueeze(1)
    pi = pi / (s.expand_as(pi) + eps)
    pi = pi.clamp(0.0, 1.0)
    return torch.mean(torch.sum((pi - yh.float()) ** 2, dim=1).squeeze())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_the_authors_dgmm_loss_without_mixup(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 16, generator=g) * 0.3  # the unit-norm scale the embedding head starts at
    y = torch.randint(0, 6, (32,), generator=g)  # some classes may be absent from the batch
    expected = authors_dgmm_loss(x, y, classes=7)
    got = GaussianStructureLoss(sigma=0.5, num_classes=7)(x, y)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
