"""Knowledge distillation's soft-target term (Hinton, Vinyals & Dean, arXiv 1503.02531, 2015)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * mean_i KL(softmax(t_i / T) || softmax(s_i / T))``, in float32.

    The ``T^2`` keeps the gradient's scale independent of the temperature (the paper's remark),
    so the term's weight means the same at any ``T``. The teacher's logits carry no gradient.
    """
    if not temperature > 0:
        raise ConfigError(f"distillation temperature must be > 0, got {temperature!r}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ: the two models must predict the same classes"
        )
    student = F.log_softmax(student_logits.float() / temperature, dim=1)
    teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature**2
