"""Expression metric loss function (EMLF) of PI&DML (Yu & Bai, IEEE Access 8:4700-4707, 2020)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from .base import LOSSES, MetricLoss
from .functional import (
    LossInputError,
    one_hot,
    pairwise_distances,
)
from .pml import pml_component

CENTERS = ("running", "learnable")


@LOSSES.register("emlf")
class ExpressionMetricLoss(MetricLoss):
    """Compactness towards class centres plus a squared hinge that pushes centres apart.

    Paper (Yu & Bai 2020): a metric loss that increases intra-class similarity and inter-class
    distance, optimised jointly with the classification loss. fermetric's form
    (``docs/METHODS.md`` section 4)::

        loss = mean_i ||z_i - c_{y_i}||^2 + separation_weight * sum_{j<k} [margin - ||c_j - c_k||]_+^2

    Options and their defaults: ``margin=1.0``; ``separation_weight=0.5`` (lambda);
    ``normalize=True`` (L2-normalised embeddings, the shared convention; margin 1.0 is on that
    scale); ``centers`` picks where c comes from:

    - ``"running"`` (default, as ``docs/methods.md`` specifies): buffers ``running_centers [C, D]``
      and ``seen [C]`` (both in the state_dict). A class present in the batch uses
      ``c_j = momentum * running_j.detach() + (1 - momentum) * batch_mean_j`` (``momentum=0.9`` is
      the weight of the *old* value, unlike BatchNorm's), and just ``batch_mean_j`` the first time
      the class is seen. The batch mean carries gradient, so both terms train the embedding (the
      separation gradient is scaled by ``1 - momentum``). A class absent from the batch uses its
      running centre (no gradient); a class never seen is left out of the separation sum. In
      training mode the buffers take the new c_j after the forward pass (under no_grad); eval
      mode leaves them untouched. Each DDP rank keeps its own running centres.
    - ``"learnable"``: centres are an ``nn.Parameter`` (unit-norm random rows, global RNG) that
      receives the gradient of both terms, as in center loss. Why not the default (measured):
      the separation gradient then moves only the centres, never the embeddings, so nothing
      stops the compactness pull from gathering every embedding near the centres' middle. On
      FER2013 (CPU protocol: ResNet-18 width 0.25, weight 1 beside cross-entropy, 12 epochs)
      that run collapsed: every test face predicted happy (24.6%), cross-entropy at the class
      prior from epoch 3. With running centres the separation term pushes the embeddings' class
      means apart (at ``1 - momentum`` of its weight), which a collapse would violate.

    The separation sum runs over pairs, not their mean (as written in methods.md). ``reducer``
    (a pytorch-metric-learning reducer: a class name, ``{name, options}`` or an instance) replaces
    the mean of the per-sample compactness terms; the separation term is one number per batch.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        margin: float = 1.0,
        separation_weight: float = 0.5,
        momentum: float = 0.9,
        centers: str = "running",
        normalize: bool = True,
        reducer=None,
    ) -> None:
        super().__init__()
        if num_classes < 1 or embedding_dim < 1:
            raise ConfigError(f"emlf: num_classes={num_classes} and embedding_dim={embedding_dim} must be positive")
        if centers not in CENTERS:
            raise ConfigError(f"emlf option centers={centers!r} is unknown; use one of {', '.join(CENTERS)}")
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"emlf option momentum={momentum!r} must lie in [0, 1)")
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        self.margin = float(margin)
        self.separation_weight = float(separation_weight)
        self.momentum = float(momentum)
        self.center_mode = centers
        self.normalize = bool(normalize)
        self.reducer = pml_component(reducer, "Reducer")
        if centers == "running":
            self.register_buffer("running_centers", torch.zeros(num_classes, embedding_dim))
            self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))
        else:
            self.centers = nn.Parameter(F.normalize(torch.randn(num_classes, embedding_dim), dim=1))

    loss_name = "emlf"

    def check(self, embeddings, labels, logits) -> None:
        if embeddings.shape[1] != self.embedding_dim:
            raise LossInputError(
                f"emlf: embedding dim {embeddings.shape[1]} != embedding_dim={self.embedding_dim}; "
                "create the loss with the model's embedding_dim"
            )

    def compute(self, z: torch.Tensor, labels: torch.Tensor, logits=None) -> torch.Tensor:
        if self.center_mode == "learnable":
            dtype = torch.promote_types(z.dtype, self.centers.dtype)
            z, centers = z.to(dtype), self.centers.to(dtype)
            exists = torch.ones(self.num_classes, dtype=torch.bool, device=z.device)
        else:
            centers, exists = self._blend_running(z, labels)
        per_sample = (z - centers[labels]).pow(2).sum(1)
        compact = self.reduce(per_sample, torch.arange(z.shape[0], device=z.device), "element", z, labels)
        pairs = torch.triu(exists.unsqueeze(0) & exists.unsqueeze(1), diagonal=1)
        hinge = F.relu(self.margin - pairwise_distances(centers)).pow(2)
        separation = (hinge * pairs.to(hinge.dtype)).sum()
        return compact + self.separation_weight * separation

    def _blend_running(self, z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Snapshots: the buffers are updated in place below, after autograd has saved what it needs.
        running = self.running_centers.detach().clone().to(z.dtype)
        seen = self.seen.clone()
        members = one_hot(labels, self.num_classes, z.dtype)  # [B, C]
        counts = members.sum(0)
        present = counts > 0
        batch_mean = (members.T @ z) / counts.clamp_min(1.0).unsqueeze(1)
        blended = torch.where(
            seen.unsqueeze(1), self.momentum * running + (1.0 - self.momentum) * batch_mean, batch_mean
        )
        centers = torch.where(present.unsqueeze(1), blended, running)
        if self.training:
            with torch.no_grad():
                self.running_centers.copy_(centers.detach())
                self.seen.logical_or_(present)
        return centers, present | seen

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, margin={self.margin}, "
            f"separation_weight={self.separation_weight}, momentum={self.momentum}, "
            f"centers={self.center_mode!r}, normalize={self.normalize}"
        )
