"""Triplet center loss with negative selection strategies (Rajoli et al., CISS 2023, arXiv 2302.04108)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from .base import LOSSES, MetricLoss
from .functional import (
    LossInputError,
    one_hot,
    safe_sqrt,
    squared_distances,
)
from .pml import pml_component

NEGATIVES = ("fully_synthesized", "semi_synthesized", "prediction_based")
DISTANCES = ("euclidean", "squared")


@LOSSES.register("tcl")
class TripletCenterLoss(MetricLoss):
    """``mean_i [D(z_i, c_{y_i}) + margin - D(z_i, neg_i)]_+`` with learnable class centres.

    Paper (Rajoli et al. 2023): a triplet center loss on all embedding dimensions, added to
    cross-entropy, with three negative selection strategies; fermetric's reading of them
    (``docs/METHODS.md`` section 3), selected by ``negatives``:

    - ``"fully_synthesized"`` (default): neg_i is the nearest other-class centre to z_i (a
      synthetic point, as in the original triplet-center loss of He et al. 2018).
    - ``"semi_synthesized"``: take the hardest real negative in the batch (the other-label sample
      nearest to z_i) and use the point ``(1 - semi_mix) * z_n + semi_mix * c_{y_n}`` between it and
      its class centre (``semi_mix=0.5``: the midpoint; 0: the sample; 1: its centre). Gradients
      flow into z_n and c_{y_n}. An anchor with no other-label sample in the batch falls back to
      the fully-synthesized negative.
    - ``"prediction_based"``: neg_i is the centre of the highest-scoring wrong class under the
      classifier's current ``logits`` (required; argmax taken without gradient).

    Other options: ``margin=0.5``; ``distance="euclidean"`` (``"squared"``: squared Euclidean);
    ``normalize=True``: embeddings are L2-normalised first (the shared convention of
    ``docs/METHODS.md``; the margin 0.5 is on that scale). Centres ``centers`` are an
    ``nn.Parameter [num_classes, embedding_dim]`` initialised as standard normal rows rescaled to
    unit norm (on the sphere where normalised embeddings live), drawn from torch's global RNG;
    they are not constrained afterwards. Give them to the optimiser (the engine's
    ``optim.loss_lr_multiplier`` scales their learning rate). Loss averaged over all samples, or
    reduced by ``reducer`` (a pytorch-metric-learning reducer: a class name, ``{name, options}``
    or an instance; e.g. ``AvgNonZeroReducer`` averages only the samples inside the margin). A
    miner has no place here: the negatives are centres or centre-blends chosen per sample.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        margin: float = 0.5,
        negatives: str = "fully_synthesized",
        semi_mix: float = 0.5,
        distance: str = "euclidean",
        normalize: bool = True,
        reducer=None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"tcl: num_classes={num_classes} must be >= 2 (a negative class is needed)")
        if embedding_dim < 1:
            raise ConfigError(f"tcl: embedding_dim={embedding_dim} must be a positive integer")
        if negatives not in NEGATIVES:
            raise ConfigError(f"tcl option negatives={negatives!r} is unknown; use one of {', '.join(NEGATIVES)}")
        if distance not in DISTANCES:
            raise ConfigError(f"tcl option distance={distance!r} is unknown; use one of {', '.join(DISTANCES)}")
        if not 0.0 <= semi_mix <= 1.0:
            raise ConfigError(f"tcl option semi_mix={semi_mix!r} must lie in [0, 1]")
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        self.margin = float(margin)
        self.negatives = negatives
        self.semi_mix = float(semi_mix)
        self.distance = distance
        self.normalize = bool(normalize)
        self.reducer = pml_component(reducer, "Reducer")
        self.centers = nn.Parameter(F.normalize(torch.randn(num_classes, embedding_dim), dim=1))

    def _dist(self, squared: torch.Tensor) -> torch.Tensor:
        return squared if self.distance == "squared" else safe_sqrt(squared)

    loss_name = "tcl"

    @property
    def needs_logits(self) -> bool:
        """Prediction-based negatives are the classifier's highest-scoring wrong classes."""
        return self.negatives == "prediction_based"

    def check(self, embeddings, labels, logits) -> None:
        if embeddings.shape[1] != self.embedding_dim:
            raise LossInputError(
                f"tcl: embedding dim {embeddings.shape[1]} != embedding_dim={self.embedding_dim} "
                "of the centres; create the loss with the model's embedding_dim"
            )
        if self.negatives == "prediction_based":
            if logits is None:
                raise LossInputError(
                    "tcl: negatives='prediction_based' needs the classifier logits; "
                    "call loss(embeddings, labels, logits=logits)"
                )
            if logits.shape != (embeddings.shape[0], self.num_classes):
                expected = [embeddings.shape[0], self.num_classes]
                raise LossInputError(f"tcl: logits must be [batch, num_classes]={expected}, got {list(logits.shape)}")

    def compute(self, z: torch.Tensor, labels: torch.Tensor, logits=None) -> torch.Tensor:
        dtype = torch.promote_types(z.dtype, self.centers.dtype)
        z, centers = z.to(dtype), self.centers.to(dtype)
        to_centers = self._dist(squared_distances(z, centers))  # [B, C]
        own = one_hot(labels, self.num_classes)
        d_pos = to_centers.gather(1, labels.unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            if self.negatives == "prediction_based":
                neg_class = logits.detach().float().masked_fill(own, float("-inf")).argmax(1)
            else:
                neg_class = to_centers.masked_fill(own, float("inf")).argmin(1)
        d_neg = to_centers.gather(1, neg_class.unsqueeze(1)).squeeze(1)
        if self.negatives == "semi_synthesized":
            other = labels.unsqueeze(0) != labels.unsqueeze(1)  # [B, B]
            with torch.no_grad():  # hardest real negative: nearest other-label sample
                nearest = squared_distances(z, z).masked_fill(~other, float("inf")).argmin(1)
            point = (1.0 - self.semi_mix) * z[nearest] + self.semi_mix * centers[labels[nearest]]
            d_semi = self._dist((z - point).pow(2).sum(1))
            d_neg = torch.where(other.any(1), d_semi, d_neg)
        per_sample = F.relu(d_pos + self.margin - d_neg)
        return self.reduce(per_sample, torch.arange(z.shape[0], device=z.device), "element", z, labels)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, margin={self.margin}, "
            f"negatives={self.negatives!r}, semi_mix={self.semi_mix}, distance={self.distance!r}, "
            f"normalize={self.normalize}"
        )
