"""Embedding and classifier heads.

``features [B,F] -> EmbeddingHead -> embedding z [B,D] -> ClassifierHead -> logits [B,C]``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EmbeddingHead", "ClassifierHead"]


class EmbeddingHead(nn.Module):
    """``Dropout(p) -> Linear(F, D, bias=False) -> BatchNorm1d(D)``, no activation; the BatchNorm
    weight starts at ``1 / sqrt(D)``, so ``||z||`` is about 1 at initialisation whatever ``D``.

    Why no ReLU: every metric loss in fermetric L2-normalises (or otherwise rescales) z itself,
    and a ReLU would confine z to the positive orthant, wasting most directions of the sphere.
    Cross-entropy then sees one linear map (classifier after embedding), the "BNNeck" of
    re-identification models. The Linear has no bias because BatchNorm's shift makes it redundant.

    Why the small BatchNorm weight (measured, not folklore): with the usual weight 1 every one of
    the D dimensions has unit variance, ``||z||^2`` is about D (512), and the classifier on top of
    it takes steps D times larger than on a unit-norm input. On FER2013 (ResNet-18 width 0.25,
    SGD lr 0.05, batch 128, 6000 images, 3 epochs) that head did not learn: train loss 2.63 ->
    2.30 -> 2.17, above the class prior's 1.81, while the same net with the BatchNorm weight at
    1/sqrt(D) went 1.83 -> 1.76 -> 1.69 (a plain Linear classifier on the pooled features: 1.83 ->
    1.76 -> 1.64). The weight is learnable and free of weight decay, so the network still sets
    the scale it needs; DMSL's sigma on the raw embedding starts on the unit-norm scale too.
    Dropout (default 0) acts on the pooled features, before the projection.

    Why the BatchNorm shift is frozen at 0 (BNNeck as Luo et al. 2019 train it): a learnable shift
    lets a metric loss collapse every embedding onto one point, the shift, by shrinking the
    weight. Measured on FER2013 (MT-DML, ResNet-18 width 0.25, lr 0.05, batch 128): after 2
    epochs the BatchNorm weight had fallen from 0.044 to 0.003 while the shift grew to norm 3.2,
    the batch-hard triplet loss sat at its collapsed value (the mean margin, twice with the dual
    term: 0.94) and cross-entropy at ln 7 = 1.946 (uniform outputs), validation accuracy 13%.
    With the shift at 0 each dimension of z has batch mean 0, so one point for all is impossible;
    cross-entropy loses nothing (the classifier's bias absorbs any shift), and the losses that
    normalise z are blind to the weight's overall scale.
    """

    def __init__(self, in_features: int, embedding_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_features = in_features
        self.embedding_dim = embedding_dim
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.linear = nn.Linear(in_features, embedding_dim, bias=False)
        self.bn = nn.BatchNorm1d(embedding_dim)
        nn.init.constant_(self.bn.weight, embedding_dim**-0.5)
        self.bn.bias.requires_grad_(False)  # frozen at 0: see "Why the BatchNorm shift is frozen"

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.bn(self.linear(self.dropout(features)))


class ClassifierHead(nn.Module):
    """``Linear(D, num_classes)`` on the embedding: logits for cross-entropy and prediction."""

    def __init__(self, embedding_dim: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.linear = nn.Linear(embedding_dim, num_classes)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.linear(embedding)
