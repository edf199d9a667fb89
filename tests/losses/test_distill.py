"""The distillation term against a direct computation of the tempered KL divergence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fermetric.errors import ConfigError
from fermetric.losses.distill import distillation_loss


def tempered_kl(student: np.ndarray, teacher: np.ndarray, temperature: float) -> float:
    def softmax(logits):
        e = np.exp(logits / temperature - (logits / temperature).max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    p, q = softmax(teacher), softmax(student)
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)) * temperature**2)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_the_term_is_t_squared_times_the_mean_tempered_kl(temperature):
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(5, 7)) * 3, rng.normal(size=(5, 7)) * 3
    value = distillation_loss(torch.tensor(student), torch.tensor(teacher), temperature)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(tempered_kl(student, teacher, temperature), rel=1e-5)
    same = distillation_loss(torch.tensor(teacher), torch.tensor(teacher), temperature)
    assert same.item() == pytest.approx(0.0, abs=1e-6)


def test_only_the_student_gets_a_gradient_and_it_moves_towards_the_teacher():
    teacher = torch.tensor([[4.0, 0.0, 0.0]], requires_grad=True)
    student = torch.zeros(1, 3, requires_grad=True)
    distillation_loss(student, teacher, 2.0).backward()
    assert teacher.grad is None
    assert student.grad[0, 0] < 0 < student.grad[0, 1]  # descent raises the teacher's class


def test_bad_inputs_are_refused():
    with pytest.raises(ConfigError, match="temperature"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), 0.0)
    with pytest.raises(ValueError, match="same classes"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 4), 1.0)
