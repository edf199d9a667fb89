"""The four metric losses fermetric reproduces, one file each, behind the ``LOSSES`` registry.

Every loss is a :class:`~fermetric.losses.base.MetricLoss`: pytorch-metric-learning's calling
convention, ``loss(embeddings, labels, logits=None)``, a scalar tensor (float32 for half-precision
input, autocast off inside), and the properties the engine reads (``embedding_space``,
``needs_logits``). The recipe's ``loss.options`` are passed as keyword arguments through
:func:`create_loss`.
"""

from __future__ import annotations

import inspect

import torch.nn as nn

from ..errors import ConfigError
from .base import LOSSES, MetricLoss

# Each loss registers itself in LOSSES on import: adding one is its file plus one line here.
from .dmsl import GaussianStructureLoss, class_centroids, nearest_centroid_predict
from .emlf import ExpressionMetricLoss
from .functional import LossInputError
from .mtdml import MultiThresholdTripletLoss
from .pml import PREFIX as PML_PREFIX
from .pml import PMLLoss
from .space import EmbeddingSpace, space_of_meta, space_of_recipe
from .tcl import TripletCenterLoss

__all__ = [
    "LOSSES",
    "MetricLoss",
    "create_loss",
    "MultiThresholdTripletLoss",
    "GaussianStructureLoss",
    "TripletCenterLoss",
    "ExpressionMetricLoss",
    "class_centroids",
    "nearest_centroid_predict",
    "LossInputError",
    "PMLLoss",
    "EmbeddingSpace",
    "space_of_meta",
    "space_of_recipe",
]


_SIZES = ("num_classes", "embedding_dim")


def create_loss(name: str, num_classes: int, embedding_dim: int, /, **options) -> nn.Module:
    """The registered loss ``name`` built with ``options``.

    ``num_classes`` and ``embedding_dim`` come from the dataset and the model, and are passed only
    to losses whose constructor takes them; unknown options raise a one-line ``ConfigError``.
    ``pml:<LossClass>`` builds a pytorch-metric-learning loss as a baseline (:class:`PMLLoss`).
    """
    if name.startswith(PML_PREFIX):
        clashing = sorted(set(options) & {"num_classes", "embedding_size"})
        if clashing:
            raise ConfigError(
                f"loss {name!r}: {', '.join(clashing)} come from the dataset and model; remove them from loss.options"
            )
        return PMLLoss(name[len(PML_PREFIX) :], num_classes, embedding_dim, **options)
    factory = LOSSES.get(name)
    accepted = inspect.signature(factory).parameters
    clashing = sorted(set(options) & set(_SIZES))
    if clashing:
        raise ConfigError(
            f"loss {name!r}: {', '.join(clashing)} come from the dataset and model; remove them from loss.options"
        )
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        known = sorted(set(accepted) - set(_SIZES))
        raise ConfigError(f"loss {name!r}: unknown option(s) {unknown}; known: {known}")
    sizes = {"num_classes": num_classes, "embedding_dim": embedding_dim}
    return factory(**options, **{key: value for key, value in sizes.items() if key in accepted})
