"""FERNet: backbone -> [selective attention] -> pool -> [partial-image fusion] -> embedding -> logits."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .attention import SelectiveAttention
from .backbones import create_backbone
from .heads import ClassifierHead, EmbeddingHead
from .partial import PARTIAL_MODES, PartialImageBranches, default_regions

__all__ = ["FERNet", "FERNetExport", "create_model"]


class FERNet(nn.Module):
    """The one network every method trains.

    ``forward(x, regions=None)`` takes normalised images ``[B,in_chans,S,S]`` and returns
    ``{"features": [B,F], "embedding": [B,D], "logits": [B,C]}``:

    - ``features``: global average pool of the backbone's last map (after ``SelectiveAttention``
      when ``attention=True``). With ``partial`` set, the pooled whole-face feature and the
      partial-image region features are fused (see :class:`PartialImageBranches`) and
      ``features`` is the fused vector; ``F`` is ``backbone.num_features`` in every case.
    - ``embedding``: :class:`EmbeddingHead` of ``features`` (Linear + BatchNorm, not normalised:
      each metric loss normalises as its method prescribes).
    - ``logits``: :class:`ClassifierHead` of the embedding, so cross-entropy also shapes z.

    ``partial``: ``None`` (whole face only), ``"template"`` (upper/lower face boxes for aligned
    crops) or ``"landmarks"`` (eyes+brows, nose, mouth boxes; per-sample boxes are passed as
    ``regions [B,3,4]``, and without them a fixed template of the same three regions is used so
    that the model still runs on aligned crops). ``regions`` (``[R,4]`` or ``[B,R,4]``, normalised
    ``x0,y0,x1,y1``) overrides the template in either mode.

    Every parameter is used by every forward (no ``find_unused_parameters`` needed under DDP).
    For ONNX use :meth:`forward_export` via :class:`FERNetExport`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        embedding_dim: int = 512,
        attention: bool = False,
        partial: str | None = None,
        partial_shared: bool = True,
        dropout: float = 0.0,
        partial_backbone: str = "tiny",
        partial_crop_size: int = 24,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
        if embedding_dim < 1:
            raise ConfigError(f"model.embedding_dim must be >= 1, got {embedding_dim}")
        if partial not in PARTIAL_MODES:
            raise ConfigError(f"model.partial must be one of {PARTIAL_MODES}, got {partial!r}")
        self.backbone = backbone
        self.num_classes = num_classes
        self.num_features = backbone.num_features
        self.embedding_dim = embedding_dim
        self.partial_mode = partial
        self.attention = SelectiveAttention(self.num_features) if attention else None
        self.partial = None
        if partial is not None:
            in_chans = _in_channels(backbone)
            self.partial = PartialImageBranches(
                partial_backbone,
                default_regions(partial),
                shared=partial_shared,
                crop_size=partial_crop_size,
                in_chans=in_chans,
                global_features=self.num_features,
            )
        self.embedding_head = EmbeddingHead(self.num_features, embedding_dim, dropout)
        self.classifier = ClassifierHead(embedding_dim, num_classes)

    def forward_features(self, x: torch.Tensor, regions: torch.Tensor | None = None) -> torch.Tensor:
        fmap = self.backbone(x)
        if self.attention is not None:
            fmap = self.attention(fmap)
        pooled = fmap.mean(dim=(2, 3))  # global average pooling
        if self.partial is not None:
            pooled = self.partial(x, pooled, regions)
        elif regions is not None:
            raise ConfigError("regions were given but this model has no partial-image branches (model.partial is null)")
        return pooled

    def forward(self, x: torch.Tensor, regions: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        features = self.forward_features(x, regions)
        embedding = self.embedding_head(features)
        logits = self.classifier(embedding)
        return {"features": features, "embedding": embedding, "logits": logits}

    def forward_export(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, embedding)`` as a tuple (template regions), for ``torch.onnx.export``."""
        out = self.forward(x)
        return out["logits"], out["embedding"]


class FERNetExport(nn.Module):
    """Wraps a :class:`FERNet` so that ``forward(x)`` returns ``(logits, embedding)`` (ONNX export).

    The wrapper starts in the model's train/eval mode: a fresh ``nn.Module`` is in train mode,
    and exporters that restore the mode afterwards would otherwise flip the wrapped model back to
    training.
    """

    def __init__(self, model: FERNet) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_export(x)


def _in_channels(module: nn.Module) -> int:
    return next(m for m in module.modules() if isinstance(m, nn.Conv2d)).in_channels


def create_model(model_cfg, num_classes: int, in_chans: int = 1, **backbone_options) -> FERNet:
    """:class:`FERNet` from a :class:`fermetric.config.ModelConfig`.

    ``model_cfg.width`` (when not 1.0), ``model_cfg.small_input`` (when False) and
    ``backbone_options`` go to :func:`create_backbone`.
    When rebuilding a trained model from a checkpoint, pass a config with ``pretrained=False``:
    the checkpoint holds the weights and the weight packages need not be installed.
    """
    width = getattr(model_cfg, "width", 1.0)
    if width != 1.0:  # only the backbones with a width option accept it; 1.0 is every backbone's own size
        backbone_options = {"width": width, **backbone_options}
    if not getattr(model_cfg, "small_input", True):  # likewise only the ImageNet backbones have the option
        backbone_options = {"small_input": False, **backbone_options}
    backbone = create_backbone(
        model_cfg.backbone, in_chans=in_chans, pretrained=model_cfg.pretrained, **backbone_options
    )
    return FERNet(
        backbone,
        num_classes,
        embedding_dim=model_cfg.embedding_dim,
        attention=model_cfg.attention,
        partial=model_cfg.partial,
        partial_shared=model_cfg.partial_shared,
        dropout=model_cfg.dropout,
    )
