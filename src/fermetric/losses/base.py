"""The base every fermetric metric loss derives from, and the registry it joins.

A loss is one small class (pytorch-metric-learning's shape): its constructor validates options,
:meth:`MetricLoss.compute` is the one method it writes, and what the engine must know about it
is a property of the loss, never guessed from its signature or its name:

- ``embedding_space``: where the loss measures distances (evaluation, retrieval, plots and
  sub-classes use the same space, read back from the checkpoint);
- ``needs_logits``: the engine passes the classifier's logits (TCL's prediction-based negatives).

Losses made of per-sample or per-triplet terms (MT-DML, TCL, EMLF's compactness) average them
through :meth:`MetricLoss.reduce`, so a pytorch-metric-learning reducer given as ``reducer=``
(``AvgNonZeroReducer``, ``ThresholdReducer``, ...) changes how they are averaged, as it does for
PML's own losses.

:meth:`MetricLoss.forward` is the shared preamble: input checks, autocast off, the float32 (or
float64) compute dtype, and the mapping into ``embedding_space`` when ``normalize`` is set.
Adding a loss: a file with ``@LOSSES.register("name") class MyLoss(MetricLoss)`` and one import
line in ``losses/__init__.py`` (``docs/ARCHITECTURE.md`` shows the steps).
"""

from __future__ import annotations

import torch
from torch import nn

from ..registry import Registry
from .functional import check_inputs, compute_dtype_tensor, no_autocast
from .space import L2, RAW, EmbeddingSpace

#: name -> loss class; ``create_loss`` builds from it, the tests loop over it.
LOSSES: Registry = Registry("loss")


class MetricLoss(nn.Module):
    """``loss(embeddings [B, D], labels [B], logits=None) -> scalar`` (float32 for half input)."""

    #: the name used in error messages (the registry name of fermetric's losses)
    loss_name: str = "metric"
    #: L2-normalise (into ``embedding_space``) before :meth:`compute`
    normalize: bool = True
    #: the number of classes labels index (``None``: not checked against the labels)
    num_classes: int | None = None

    def __init__(self) -> None:
        super().__init__()
        # an instance attribute, not a class one: a class-level None would hide the submodule
        # nn.Module registers when a loss assigns its reducer
        self.reducer: nn.Module | None = None  # a PML reducer for :meth:`reduce`; None: the plain mean

    @property
    def needs_logits(self) -> bool:
        """Whether :meth:`forward` needs ``logits=`` (the engine passes them when true)."""
        return False

    @property
    def embedding_space(self) -> EmbeddingSpace:
        """Where this loss measures distances: the L2-normalised embedding, or the raw one."""
        return L2 if self.normalize else RAW

    def check(self, embeddings: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor | None) -> None:
        """Loss-specific input checks (shapes against the loss's options); raise LossInputError."""

    def compute(self, z: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor | None) -> torch.Tensor:
        """The loss of ``z`` (compute dtype, autocast off, already in ``embedding_space`` when
        ``normalize``)."""
        raise NotImplementedError

    def reduce(
        self, losses: torch.Tensor, indices, reduction_type: str, z: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """The per-element (``indices [N]``) or per-triplet (``(a, p, n)``) ``losses [N]`` as one scalar.

        The mean without a reducer; an empty ``losses`` gives 0 with the graph kept (zero gradient).
        """
        if losses.numel() == 0:
            return z.sum() * 0.0
        if self.reducer is None:
            return losses.mean()
        info = {"losses": losses, "indices": indices, "reduction_type": reduction_type}
        return self.reducer({self.loss_name: info}, z, labels)

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_inputs(self.loss_name, embeddings, labels, self.num_classes)
        self.check(embeddings, labels, logits)
        with no_autocast(embeddings):
            z = compute_dtype_tensor(embeddings)
            if self.normalize:
                z = self.embedding_space(z)
            return self.compute(z, labels, logits)
