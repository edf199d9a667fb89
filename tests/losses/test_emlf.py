"""ExpressionMetricLoss: running/learnable centres against a naive stateful loop, hand cases, buffers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fermetric.errors import ConfigError
from fermetric.losses import ExpressionMetricLoss


class NaiveEMLF:
    """The documented recurrence, one class and one sample at a time, in float64."""

    def __init__(self, num_classes, margin, weight, momentum, normalize=True):
        self.running = [None] * num_classes
        self.margin, self.weight, self.momentum, self.normalize = margin, weight, momentum, normalize

    def step(self, z, labels, train=True):
        z = [np.asarray(row, dtype=np.float64) for row in z]
        if self.normalize:
            z = [row / math.sqrt(float(row @ row)) for row in z]
        centres = {}
        for j, old in enumerate(self.running):
            members = [z[i] for i in range(len(z)) if labels[i] == j]
            if members:
                mean = sum(members) / len(members)
                centres[j] = mean if old is None else self.momentum * old + (1 - self.momentum) * mean
            elif old is not None:
                centres[j] = old

        def norm(v):
            return math.sqrt(float(v @ v))

        compact = sum(norm(z[i] - centres[labels[i]]) ** 2 for i in range(len(z))) / len(z)
        keys = sorted(centres)
        separation = sum(
            max(self.margin - norm(centres[a] - centres[b]), 0) ** 2 for n, a in enumerate(keys) for b in keys[n + 1 :]
        )
        if train:
            for j, c in centres.items():
                self.running[j] = c
        return compact + self.weight * separation


def test_running_centres_match_naive_over_batches():
    g = torch.Generator().manual_seed(0)
    loss = ExpressionMetricLoss(5, 4, margin=1.2, separation_weight=0.7, momentum=0.8, centers="running").double()
    naive = NaiveEMLF(5, 1.2, 0.7, 0.8)
    batches = [[0, 0, 1, 1], [1, 1, 1, 2, 2, 0], [3, 3, 0, 0], [4, 2, 2]]  # classes appear over time
    for step, labels in enumerate(batches):
        x = torch.randn(len(labels), 4, generator=g, dtype=torch.float64)
        y = torch.tensor(labels)
        expected = naive.step(x.numpy(), labels)
        assert loss(x, y).item() == pytest.approx(expected, rel=1e-9), step
        for j, c in enumerate(naive.running):
            assert bool(loss.seen[j]) == (c is not None)
            if c is not None:
                assert np.allclose(loss.running_centers[j].numpy(), c)
    loss.eval()  # evaluation reads but never writes the running centres
    before = loss.running_centers.clone()
    x = torch.randn(3, 4, generator=g, dtype=torch.float64)
    expected = naive.step(x.numpy(), [0, 1, 1], train=False)
    assert loss(x, torch.tensor([0, 1, 1])).item() == pytest.approx(expected, rel=1e-9)
    assert torch.equal(loss.running_centers, before)


def test_hand_computed():
    loss = ExpressionMetricLoss(
        2, 2, margin=2.0, separation_weight=0.5, momentum=0.5, normalize=False, centers="running"
    )
    # Batch 1 (first sighting: centres = batch means): class 0 at (0,0),(2,0) -> c0 = (1,0); class 1 at (0,1).
    # compact = (1 + 1 + 0) / 3; separation = (2 - sqrt 2)^2.
    first = loss(torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0, 1]))
    assert first.item() == pytest.approx(2 / 3 + 0.5 * (2 - math.sqrt(2)) ** 2, rel=1e-6)
    # Batch 2: class 0 at (4,0) only. c0 = 0.5 (1,0) + 0.5 (4,0) = (2.5,0); class 1 absent -> running (0,1).
    # compact = 1.5^2; |c0 - c1| = sqrt(7.25) > 2 -> no separation.
    second = loss(torch.tensor([[4.0, 0.0]]), torch.tensor([0]))
    assert second.item() == pytest.approx(2.25, rel=1e-6)
    assert loss.running_centers.tolist() == [[2.5, 0.0], [0.0, 1.0]]


def test_separation_term_trains_the_embedding():
    # Singleton classes seen for the first time: centres are the samples, so compactness is exactly 0
    # and every gradient comes from the separation term.
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1]], requires_grad=True)
    y = torch.tensor([0, 1])
    value = ExpressionMetricLoss(2, 2, centers="running")(x, y)
    value.backward()
    assert value.item() > 0 and x.grad.abs().sum() > 0
    x.grad = None
    ExpressionMetricLoss(2, 2, separation_weight=0.0, centers="running")(x, y).backward()
    assert x.grad.abs().sum() == 0


def test_running_buffers_in_state_dict_round_trip():
    loss = ExpressionMetricLoss(3, 4, centers="running")
    loss(torch.randn(4, 4), torch.tensor([0, 0, 2, 2]))
    state = loss.state_dict()
    assert set(state) == {"running_centers", "seen"} and state["seen"].tolist() == [True, False, True]
    fresh = ExpressionMetricLoss(3, 4, centers="running")
    fresh.load_state_dict(state)
    x, y = torch.randn(4, 4), torch.tensor([0, 1, 1, 2])
    assert fresh.eval()(x, y).item() == loss.eval()(x, y).item()


def test_learnable_centres_match_naive_and_get_gradients():
    torch.manual_seed(3)
    loss = ExpressionMetricLoss(4, 3, margin=1.5, centers="learnable").double()
    assert not list(loss.buffers()) and [n for n, _ in loss.named_parameters()] == ["centers"]
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 1, 3])
    c = loss.centers.detach().numpy()  # every centre exists, present in the batch or not
    z = x.numpy() / np.linalg.norm(x.numpy(), axis=1, keepdims=True)
    compact = np.mean([((z[i] - c[y[i]]) ** 2).sum() for i in range(6)])
    separation = sum(max(1.5 - np.linalg.norm(c[a] - c[b]), 0) ** 2 for a in range(4) for b in range(a + 1, 4))
    value = loss(x, y)
    assert value.item() == pytest.approx(compact + 0.5 * separation, rel=1e-9)
    value.backward()
    assert loss.centers.grad[2].abs().sum() > 0  # class 2 is absent: only separation moves it


def test_gradcheck_running_eval_and_learnable():
    g = torch.Generator().manual_seed(2)
    loss = ExpressionMetricLoss(4, 3, margin=1.5, momentum=0.6, centers="running").double()
    loss(torch.randn(4, 3, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 2]))  # classes 0-2 seen
    loss.eval()
    x = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 3, 3])  # 0, 1 blended; 2 running only; 3 first sighting
    assert torch.autograd.gradcheck(lambda e: loss(e, y), (x,), eps=1e-6, atol=1e-6, fast_mode=True)
    learnable = ExpressionMetricLoss(4, 3, margin=1.5, centers="learnable").double()
    centres = learnable.centers.detach().clone().requires_grad_()
    fn = lambda e, c: torch.func.functional_call(learnable, {"centers": c}, (e, y))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, centres), eps=1e-6, atol=1e-6, fast_mode=True)


def test_bad_options():
    with pytest.raises(ConfigError, match="centers='ema'"):
        ExpressionMetricLoss(3, 4, centers="ema")
    with pytest.raises(ConfigError, match="momentum"):
        ExpressionMetricLoss(3, 4, momentum=1.0, centers="running")
