"""Gaussian structured loss of DMSL (Marrero Fernandez et al., arXiv 2001.06612) and nearest-centroid helpers."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import LOSSES, MetricLoss
from .functional import (
    LossInputError,
    compute_dtype_tensor,
    no_autocast,
    one_hot,
    squared_distances,
)

MIXUP_LABELS = ("soft", "authors")


@LOSSES.register("dmsl")
class GaussianStructureLoss(MetricLoss):
    """Makes every class a Gaussian around its batch mean: responsibilities should equal the labels.

    Paper (Marrero Fernandez et al.; the structured loss as in the authors' public code, ``docs/METHODS.md``
    section 2): for a batch, mu_j is the mean embedding of class j present in the batch,
    ``pi_ij = softmax_j(-||z_i - mu_j||^2 / (2 sigma^2))`` over the classes present, and
    ``loss = mean_i sum_j (pi_ij - y_ij)^2`` with one-hot (or mixed) y. Trained with cross-entropy,
    unit weights (the recipe's job); prediction is the nearest class centroid
    (:func:`class_centroids`, :func:`nearest_centroid_predict`).

    Options and their defaults:

    - ``sigma=0.5`` (paper code default): the shared isotropic standard deviation.
    - ``normalize=False``: embeddings are used as they are (the authors' code does not normalise);
      ``True`` L2-normalises them first.
    - ``mixup=False``, ``mixup_alpha=2.0`` (Beta(2, 2) as in the authors' code). fermetric design:
      in training mode only, one lambda ~ Beta(alpha, alpha) per batch and a random permutation
      pair each sample with another; the mixed points ``lambda z_i + (1 - lambda) z_perm(i)`` with
      soft labels ``lambda y_i + (1 - lambda) y_perm(i)`` are *appended* to the batch (the mean runs
      over 2B rows), while the centroids mu_j come from the clean samples only. The soft labels
      are a fermetric design choice (``mixup_labels="soft"``); ``mixup_labels="authors"`` does
      what the authors' code does: it interpolates class *indices*, so a cross-class mix has an
      all-zero target and a same-class mix keeps its class (unlike the authors' code, the
      mixed points never enter the class means mu_j here). Randomness comes
      from torch's global RNG on the embeddings' device (seed it with ``torch.manual_seed``).
    - ``num_classes=None``: classes present are found from the labels (one host sync); giving it
      (``create_loss`` does) keeps shapes static for ``torch.compile``. Classes absent from the
      batch get responsibility 0 and are excluded from the softmax.

    A one-class batch gives loss 0 (pi = y = 1); a singleton class has mu = z_i (well defined).
    Unlike the other three losses it takes no pytorch-metric-learning miner or reducer: every
    sample is compared with every class mean (no tuples to mine), and the squared error of a
    well-placed sample is small rather than zero, so non-zero or threshold reducers have nothing
    to select.
    """

    def __init__(
        self,
        sigma: float = 0.5,
        mixup: bool = False,
        mixup_alpha: float = 2.0,
        normalize: bool = False,
        num_classes: int | None = None,
        mixup_labels: str = "soft",
    ) -> None:
        super().__init__()
        if not sigma > 0:
            raise ConfigError(f"dmsl option sigma={sigma!r} must be > 0")
        if mixup and not mixup_alpha > 0:
            raise ConfigError(f"dmsl option mixup_alpha={mixup_alpha!r} must be > 0")
        if mixup_labels not in MIXUP_LABELS:
            raise ConfigError(
                f"dmsl option mixup_labels={mixup_labels!r} is unknown; use one of {', '.join(MIXUP_LABELS)}"
            )
        if num_classes is not None and num_classes < 1:
            raise ConfigError(f"dmsl: num_classes={num_classes!r} must be a positive integer")
        self.sigma = float(sigma)
        self.mixup = bool(mixup)
        self.mixup_alpha = float(mixup_alpha)
        self.mixup_labels = mixup_labels
        self.normalize = bool(normalize)
        self.num_classes = num_classes

    loss_name = "dmsl"

    def check(self, embeddings, labels, logits) -> None:
        if self.num_classes is None and labels.numel() and int(labels.min()) < 0:
            raise LossInputError("dmsl: labels must be >= 0; drop unlabeled (-1) items before the loss")

    def compute(self, z: torch.Tensor, labels: torch.Tensor, logits=None) -> torch.Tensor:
        num_classes = self.num_classes
        if num_classes is None:
            num_classes = int(labels.max()) + 1 if labels.numel() else 1
        targets = one_hot(labels, num_classes, z.dtype)  # [B, C]
        counts = targets.sum(0)
        present = counts > 0
        centroids = (targets.T @ z) / counts.clamp_min(1.0).unsqueeze(1)  # [C, D], batch class means
        if self.mixup and self.training and z.shape[0] > 1:
            lam = (
                torch.distributions.Beta(
                    torch.tensor(self.mixup_alpha, device=z.device), torch.tensor(self.mixup_alpha, device=z.device)
                )
                .sample()
                .to(z.dtype)
            )
            perm = torch.randperm(z.shape[0], device=z.device)
            z = torch.cat([z, lam * z + (1 - lam) * z[perm]])
            if self.mixup_labels == "soft":
                mixed_targets = lam * targets + (1 - lam) * targets[perm]
            else:  # "authors": interpolated class indices, so only same-class mixes keep a target
                mixed_targets = targets * (labels == labels[perm]).to(z.dtype).unsqueeze(1)
            targets = torch.cat([targets, mixed_targets])
        logits = squared_distances(z, centroids) / (-2.0 * self.sigma**2)
        responsibilities = logits.masked_fill(~present, float("-inf")).softmax(-1)
        return (responsibilities - targets).pow(2).sum(-1).sum() / max(z.shape[0], 1)

    def extra_repr(self) -> str:
        return (
            f"sigma={self.sigma}, mixup={self.mixup}, mixup_alpha={self.mixup_alpha}, "
            f"mixup_labels={self.mixup_labels!r}, normalize={self.normalize}"
        )


@torch.no_grad()
def class_centroids(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean embedding per class, ``[num_classes, D]`` (float32, or float64 for float64 input).

    Items labelled < 0 (unlabeled) are ignored; a class without items gets a row of NaN, which
    :func:`nearest_centroid_predict` never predicts. DMSL re-estimates these on the whole training
    set after training (``docs/METHODS.md``), not from batch means.
    """
    if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
        raise LossInputError(
            f"class_centroids: need embeddings [N, D] and labels [N], got "
            f"{tuple(embeddings.shape)} and {tuple(labels.shape)}"
        )
    z = compute_dtype_tensor(embeddings)
    labels = labels.to(z.device).long()
    keep = (labels >= 0) & (labels < num_classes)
    sums = torch.zeros(num_classes, z.shape[1], dtype=z.dtype, device=z.device).index_add_(0, labels[keep], z[keep])
    counts = torch.bincount(labels[keep], minlength=num_classes).to(z.dtype)
    centroids = sums / counts.clamp_min(1.0).unsqueeze(1)
    return centroids.masked_fill((counts == 0).unsqueeze(1), float("nan"))


@torch.no_grad()
def nearest_centroid_predict(embeddings: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest (Euclidean) centroid per row, int64 ``[N]``; non-finite centroids are skipped."""
    if embeddings.ndim != 2 or centroids.ndim != 2 or embeddings.shape[1] != centroids.shape[1]:
        raise LossInputError(
            f"nearest_centroid_predict: need embeddings [N, D] and centroids [C, D], got "
            f"{tuple(embeddings.shape)} and {tuple(centroids.shape)}"
        )
    usable = torch.isfinite(centroids).all(1)
    if not bool(usable.any()):
        raise LossInputError(
            "nearest_centroid_predict: no class has a finite centroid; estimate centroids on a set with labelled items"
        )
    z = compute_dtype_tensor(embeddings)
    c = compute_dtype_tensor(centroids).to(device=z.device, dtype=z.dtype)
    with no_autocast(z):
        d2 = squared_distances(z, torch.where(usable.to(z.device).unsqueeze(1), c, torch.zeros_like(c)))
    return d2.masked_fill(~usable.to(z.device), float("inf")).argmin(1)
