"""Tensor helpers shared by the metric losses: dtype policy, safe distances, label masks, checks.

Dtype policy (all four losses): inputs in float16/bfloat16 are computed in float32 with autocast
switched off inside the loss, so a loss called under ``torch.autocast(dtype=bfloat16)`` still runs
its distance matrices in float32 and returns float32; float32 and float64 inputs keep their dtype
(float64 is what the gradient checks use).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError

LOW_PRECISION = (torch.float16, torch.bfloat16)

# Squared distances at or below this are treated as exactly zero by `safe_sqrt` (value and gradient).
SQRT_EPS = 1e-12


class LossInputError(ConfigError, ValueError):
    """Embeddings, labels or logits handed to a loss have the wrong shape, dtype or range."""


def compute_dtype_tensor(x: torch.Tensor) -> torch.Tensor:
    """``x`` upcast to float32 when it is half precision (or not floating), else unchanged."""
    if x.dtype in LOW_PRECISION or not x.is_floating_point():
        return x.float()
    return x


def no_autocast(x: torch.Tensor) -> torch.autocast:
    """A context that disables autocast on ``x``'s device (matmuls stay in the input dtype)."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[..., N, M]`` squared Euclidean distances between rows of ``x [..., N, D]`` and ``y [..., M, D]``.

    Uses the Gram expansion ||x||^2 + ||y||^2 - 2 x.y (O(N*M) memory instead of O(N*M*D)),
    clamped at 0 against round-off.
    """
    x_sq = x.pow(2).sum(-1, keepdim=True)
    y_sq = y.pow(2).sum(-1).unsqueeze(-2)
    return (x_sq + y_sq - 2.0 * (x @ y.transpose(-1, -2))).clamp_min(0.0)


def safe_sqrt(squared: torch.Tensor, eps: float = SQRT_EPS) -> torch.Tensor:
    """sqrt with value 0 and gradient 0 where ``squared <= eps`` (plain sqrt has an infinite slope at 0).

    The clamp keeps the unselected branch finite, so ``torch.where``'s backward never sees 0 * inf.
    """
    positive = squared > eps
    return torch.where(positive, squared.clamp_min(eps).sqrt(), torch.zeros_like(squared))


def pairwise_distances(x: torch.Tensor, y: torch.Tensor | None = None, squared: bool = False) -> torch.Tensor:
    """Euclidean (or squared) distances between rows; with ``y=None`` the diagonal is exactly 0."""
    d2 = squared_distances(x, x if y is None else y)
    if y is None:
        n = x.shape[-2]
        d2 = d2.masked_fill(torch.eye(n, dtype=torch.bool, device=x.device), 0.0)
    return d2 if squared else safe_sqrt(d2)


def one_hot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.bool) -> torch.Tensor:
    """``[B, num_classes]`` one-hot by comparison (unlike ``F.one_hot``, no device sync to check the range)."""
    classes = torch.arange(num_classes, device=labels.device)
    return (labels.unsqueeze(1) == classes).to(dtype)


def label_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean ``[B, B]`` masks: positives (same label, not self) and negatives (other label)."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


#: smallest norm divided by (an all-zero embedding stays zero instead of NaN)
EPS = 1e-12


def l2_normalize(z, slices: int = 1):
    """``z [..., D]`` (torch or numpy) with each vector, or each of its ``slices`` equal parts, at unit L2 norm.

    The one normalisation of the package: the losses, the embedding spaces (``losses/space.py``)
    and the evaluation metrics all call it, so "normalised" means the same everywhere.
    """
    *lead, dim = z.shape
    if dim % slices:
        raise ValueError(f"embedding dim {dim} is not divisible into {slices} slices")
    parts = z.reshape(*lead, slices, dim // slices)
    if isinstance(z, torch.Tensor):
        norms = parts.norm(dim=-1, keepdim=True).clamp_min(EPS)
    else:
        norms = np.maximum(np.linalg.norm(parts, axis=-1, keepdims=True), EPS)
    return (parts / norms).reshape(*lead, dim)


def _compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())


def check_inputs(
    loss_name: str, embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None
) -> None:
    """Shapes and dtypes always; the label range (one host sync) only outside ``torch.compile``."""
    if embeddings.ndim != 2:
        raise LossInputError(f"{loss_name}: embeddings must be [batch, dim], got shape {tuple(embeddings.shape)}")
    if not embeddings.is_floating_point():
        raise LossInputError(f"{loss_name}: embeddings must be floating point, got {embeddings.dtype}")
    if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise LossInputError(
            f"{loss_name}: labels must be [batch]={embeddings.shape[0]}, got shape "
            f"{tuple(labels.shape)}; pass integer class indices, not one-hot"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise LossInputError(f"{loss_name}: labels must be integer class indices, got {labels.dtype}")
    if num_classes is not None and labels.numel() and not _compiling():
        low, high = (int(v) for v in torch.stack([labels.min(), labels.max()]).tolist())
        if low < 0 or high >= num_classes:
            raise LossInputError(
                f"{loss_name}: labels must lie in [0, {num_classes - 1}], got [{low}, {high}]; "
                "drop unlabeled (-1) items or set num_classes to the dataset's class count"
            )
