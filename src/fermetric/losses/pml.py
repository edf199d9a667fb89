"""pytorch-metric-learning's losses as baselines: ``loss.name: pml:<LossClass>`` in any recipe.

The field's standard losses (``pml:ArcFaceLoss``, ``pml:SupConLoss``, ``pml:TripletMarginLoss``
with a miner, ``pml:ProxyAnchorLoss``, ...) run under fermetric's protocol beside the four FER
methods, so that "does the FER-specific method beat a generic metric loss?" has an answer too.

Options (``loss.options``): every keyword of the PML class, plus ``miner`` (a PML miner class
name such as ``BatchHardMiner``, or ``{name: ..., options: {...}}``); ``reducer`` is given the
same way. ``num_classes`` and
``embedding_size`` are filled in from the dataset and the model for the classes that take them
(ArcFace, CosFace, proxies...). PML's default distances normalise embeddings (LpDistance with
``normalize_embeddings=True``, CosineSimilarity), so the embedding space is L2-normalised; a
loss whose ``distance`` is given with ``normalize_embeddings=False`` is refused rather than
measured in the wrong space.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn as nn

from ..errors import ConfigError
from .base import MetricLoss
from .space import L2, EmbeddingSpace

PREFIX = "pml:"


def _pml_class(module, name: str, kind: str):
    cls = getattr(module, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        known = sorted(n for n, v in vars(module).items() if inspect.isclass(v) and n.endswith(kind))
        raise ConfigError(f"pytorch-metric-learning has no {kind.lower()} {name!r}; known: {', '.join(known)}")
    return cls


def pml_component(spec, kind: str) -> nn.Module | None:
    """A PML miner (``kind="Miner"``) or reducer (``"Reducer"``) from its spec, or ``None``.

    ``spec``: a class name (``"BatchHardMiner"``), ``{"name": ..., "options": {...}}`` (what a
    recipe's YAML holds), or an instance of that kind (the Python API), returned as is.
    """
    if spec is None:
        return None
    from pytorch_metric_learning import miners, reducers

    module, base = {"Miner": (miners, miners.BaseMiner), "Reducer": (reducers, reducers.BaseReducer)}[kind]
    if isinstance(spec, nn.Module):
        if not isinstance(spec, base):
            raise ConfigError(f"expected a pytorch-metric-learning {kind.lower()}, got {type(spec).__name__}")
        return spec
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    cls = _pml_class(module, str(spec.get("name")), kind)
    try:
        return cls(**dict(spec.get("options") or {}))
    except TypeError as err:
        raise ConfigError(f"pml {kind.lower()} {spec.get('name')}: {err}") from None


class PMLLoss(MetricLoss):
    """A pytorch-metric-learning loss (and optional miner) behind fermetric's loss contract."""

    def __init__(self, name: str, num_classes: int, embedding_dim: int, miner=None, **options) -> None:
        super().__init__()
        from pytorch_metric_learning import losses

        cls = _pml_class(losses, name, "Loss")
        accepted = inspect.signature(cls.__init__).parameters
        if options.get("reducer") is not None:  # PML losses take the object; a recipe names it
            options["reducer"] = pml_component(options["reducer"], "Reducer")
        sizes = {"num_classes": num_classes, "embedding_size": embedding_dim}
        try:
            self.loss = cls(**options, **{k: v for k, v in sizes.items() if k in accepted and k not in options})
        except TypeError as err:
            raise ConfigError(f"pml:{name}: {err}") from None
        distance = getattr(self.loss, "distance", None)
        if distance is not None and not getattr(distance, "normalize_embeddings", True):
            raise ConfigError(
                f"pml:{name}: a distance without normalize_embeddings is not supported "
                "(fermetric measures these losses on L2-normalised embeddings)"
            )
        self.name = name
        self.loss_name = f"pml:{name}"
        self.miner = pml_component(miner, "Miner")

    normalize = False  # PML's distance normalises (checked in __init__)

    @property
    def embedding_space(self) -> EmbeddingSpace:
        return L2

    def compute(self, z: torch.Tensor, labels: torch.Tensor, logits=None) -> torch.Tensor:
        pairs = self.miner(z, labels) if self.miner is not None else None
        return self.loss(z, labels, pairs)

    def extra_repr(self) -> str:
        return f"{self.name}, miner={type(self.miner).__name__ if self.miner is not None else None}"
