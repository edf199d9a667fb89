"""Embedding and classifier heads.

``features [B,F] -> EmbeddingHead -> embedding z [B,D] -> ClassifierHead -> logits [B,C]``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EmbeddingHead", "ClassifierHead"]


class EmbeddingHead(nn.Module):
    """``Dropout(p) -> Linear(F, D, bias=False) -> BatchNorm1d(D)``, no activation.

    Why no ReLU: every metric loss in fermetric L2-normalises (or otherwise rescales) z itself,
    and a ReLU would confine z to the positive orthant, wasting most directions of the sphere.
    Cross-entropy then sees one linear map (classifier after embedding), the usual "BNNeck" of
    re-identification models. The Linear has no bias because BatchNorm's shift makes it redundant.
    BatchNorm keeps z centred with unit scale per dimension, so the triplet margins of MT-DML and
    TCL and DMSL's sigma mean the same thing from the first step. Dropout (default 0) acts on the
    pooled features, before the projection.
    """

    def __init__(self, in_features: int, embedding_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_features = in_features
        self.embedding_dim = embedding_dim
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.linear = nn.Linear(in_features, embedding_dim, bias=False)
        self.bn = nn.BatchNorm1d(embedding_dim)

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
