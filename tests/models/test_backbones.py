"""Backbones: names, map shapes at several input sizes, parameter counts, gradients, seeds."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from fermetric.errors import ConfigError
from fermetric.models import BACKBONES, create_backbone, list_backbones
from fermetric.models.backbones import feature_stride

ALL = ["efficientnet_lite0", "mobilenetv2", "resnet18", "resnet34", "tiny"]


def expected_side(size: int, stride2_layers: int = 3) -> int:
    """3x3/pad-1 (or TF-"same") stride-2 layers give ceil(n / 2) each; the small-input nets have 3."""
    for _ in range(stride2_layers):
        size = math.ceil(size / 2)
    return size


def test_registry_names():
    assert list_backbones() == ALL
    assert list(BACKBONES) == ALL
    with pytest.raises(ConfigError, match="unknown backbone 'resnet50'"):
        create_backbone("resnet50")


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="tiny"):
        create_backbone("tiny", small_input=False)  # tiny has no such option
    with pytest.raises(ConfigError, match="no option"):
        create_backbone("mobilenetv2", width=0.5)
    with pytest.raises(ConfigError, match="in_chans"):
        create_backbone("tiny", in_chans=0)
    for name in ("resnet18", "resnet34", "tiny"):
        with pytest.raises(ConfigError, match="pretrained"):
            create_backbone(name, pretrained=True)


@pytest.mark.parametrize("name", ALL)
def test_every_backbone_gives_6x6_at_48px(name):
    torch.manual_seed(0)
    net = create_backbone(name).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, 48, 48))
    assert out.shape == (2, net.num_features, 6, 6)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [40, 64])
@pytest.mark.parametrize("name,options", [("tiny", {}), ("resnet18", {"width": 0.25})])
def test_map_side_follows_stride_8(name, options, size):
    net = create_backbone(name, **options).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, size, size))
    side = expected_side(size)  # 40 -> 5, 64 -> 8
    assert out.shape == (1, net.num_features, side, side)
    assert feature_stride(net) == 8


def test_small_input_false_restores_imagenet_stride_32():
    net = create_backbone("resnet18", width=0.25, small_input=False).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 64, 64)).shape[-1] == 2
    assert net.conv1.kernel_size == (7, 7) and isinstance(net.maxpool, torch.nn.MaxPool2d)


def test_in_chans_three_and_dtype_follow_input():
    net = create_backbone("tiny", in_chans=3).eval().to(torch.float64)
    with torch.no_grad():
        out = net(torch.randn(1, 3, 48, 48, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == (1, 128, 6, 6)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_resnet18_small_input_parameter_count_matches_torchvision():
    # Independent reference: torchvision's ResNet-18 without fc, with its 3-channel 7x7 stem
    # (64*3*49 weights) replaced by our 1-channel 3x3 one (64*1*9).
    tv = torchvision.models.resnet18()
    reference = count(tv) - count(tv.fc) - 64 * 3 * 49 + 64 * 1 * 9
    net = create_backbone("resnet18")
    assert count(net) == reference == 11_167_680
    assert net.num_features == 512
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, torch.nn.Identity)


def test_resnet34_parameter_count_matches_torchvision():
    tv = torchvision.models.resnet34()
    assert count(create_backbone("resnet34")) == count(tv) - count(tv.fc) - 64 * 3 * 49 + 64 * 9


def test_tiny_parameter_count_by_hand():
    widths, cin, total = (16, 32, 64, 128), 1, 0
    for cout in widths:  # two bias-free 3x3 convs + two BatchNorms (weight, bias) per stage
        total += 9 * cin * cout + 9 * cout * cout + 2 * 2 * cout
        cin = cout
    assert count(create_backbone("tiny")) == total


def small_input_resnet18_count(c: tuple[int, int, int, int], in_chans: int = 1) -> int:
    """Parameters of a BasicBlock 2-2-2-2 ResNet with a 3x3 stem, counted by hand."""
    total = 9 * in_chans * c[0] + 2 * c[0]  # stem conv + BN
    cin = c[0]
    for cout in c:
        first = 9 * cin * cout + 9 * cout * cout + 4 * cout + (cin * cout + 2 * cout if cin != cout else 0)
        total += first + 18 * cout * cout + 4 * cout
        cin = cout
    return total


def test_resnet_width_multiplier():
    assert small_input_resnet18_count((64, 128, 256, 512)) == 11_167_680  # the formula fits the full net
    net = create_backbone("resnet18", width=0.25)
    assert net.num_features == 128
    assert net.conv1.out_channels == 16 and net.layer1[0].downsample is None
    assert count(net) == small_input_resnet18_count((16, 32, 64, 128))
    with pytest.raises(ConfigError, match="width"):
        create_backbone("resnet18", width=0)


@pytest.mark.parametrize("name,options", [("tiny", {}), ("resnet18", {"width": 0.25})])
def test_every_parameter_gets_a_gradient(name, options):
    torch.manual_seed(0)
    net = create_backbone(name, **options).train()
    # timm zero-initialises each residual block's last BN scale (zero_init_last), which zeroes the
    # block's other gradients at step 0; they are still in the graph (what DDP needs). Undo it so
    # that a non-zero gradient proves every parameter actually influences the output.
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(module.weight)
    net(torch.randn(2, 1, 32, 32)).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_same_seed_same_weights_and_outputs():
    x = torch.randn(2, 1, 48, 48)
    outs = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        net = create_backbone("tiny").eval()
        with torch.no_grad():
            outs.append(net(x))
    assert torch.equal(outs[0], outs[1])
    assert not torch.allclose(outs[0], outs[2])


@pytest.mark.parametrize("arch", ["resnet10t", "mobilenetv3_small_050"])
def test_any_timm_architecture_is_a_small_input_backbone(arch):
    from fermetric.models.backbones import create_backbone, feature_stride

    backbone = create_backbone(f"timm:{arch}")
    assert feature_stride(backbone) == 8  # a 48 px face keeps a 6x6 map, like the registered ResNets
    out = backbone(torch.zeros(2, 1, 48, 48))
    assert out.shape == (2, backbone.num_features, 6, 6)
    assert feature_stride(create_backbone(f"timm:{arch}", small_input=False)) == 32


def test_unknown_or_pretrained_timm_backbones_are_refused():
    from fermetric.errors import ConfigError
    from fermetric.models.backbones import create_backbone

    with pytest.raises(ConfigError, match="timm backbone 'nosuchnet'"):
        create_backbone("timm:nosuchnet")
    with pytest.raises(ConfigError, match="never does"):
        create_backbone("timm:resnet10t", pretrained=True)
