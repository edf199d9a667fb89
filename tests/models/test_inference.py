"""Inference-ready networks: BatchNorm folded into its convolution and channels_last give the
trained network's outputs (within float rounding) and leave the trained network untouched."""

import pytest
import torch
from torch import nn

from fermetric.config import ModelConfig
from fermetric.errors import ConfigError
from fermetric.models import CompiledInference, create_model, fold_batchnorm, inference_model


def _trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random running statistics and affine BatchNorm parameters, as after training."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()


def test_folding_a_conv_batchnorm_pair_against_the_formula():
    torch.manual_seed(0)
    block = _trained_like(nn.Sequential(nn.Conv2d(2, 3, 3, bias=False), nn.BatchNorm2d(3), nn.ReLU()))
    conv, norm = block[0], block[1]
    x = torch.randn(4, 2, 9, 9)
    with torch.no_grad():
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        y = nn.functional.conv2d(x, conv.weight) - norm.running_mean[:, None, None]
        expected = torch.relu(y * scale[:, None, None] + norm.bias[:, None, None])
        assert fold_batchnorm(block) == 1
        assert isinstance(block[1], nn.Identity) and block[0].bias is not None
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_a_batchnorm_after_something_else_is_left_alone():
    block = _trained_like(nn.Sequential(nn.Conv2d(2, 3, 1), nn.ReLU(), nn.BatchNorm2d(3)))
    assert fold_batchnorm(block) == 0 and isinstance(block[2], nn.BatchNorm2d)


@pytest.mark.parametrize("backbone", ["tiny", "mobilenetv2", "resnet18"])
def test_inference_model_gives_the_trained_outputs(backbone):
    torch.manual_seed(0)
    config = ModelConfig(backbone=backbone, width=0.25 if backbone == "resnet18" else 1.0, embedding_dim=16)
    if backbone == "mobilenetv2":
        config = ModelConfig(backbone=backbone, embedding_dim=16, small_input=False)
    model = _trained_like(create_model(config, num_classes=7))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = [p.requires_grad for p in model.parameters()]
    ready = inference_model(model)
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in ready.modules())
    original_norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert norms < original_norms  # all of tiny's and MobileNetV2's, ResNet's stem (its blocks are not Sequential)
    x = torch.rand(5, 1, 48, 48)
    with torch.no_grad():
        expected, got = model(x), ready(x)
    for key in ("logits", "embedding"):
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-4)
    # the trained network is untouched: same modules, same weights, still trainable
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert [p.requires_grad for p in model.parameters()] == trainable and not ready.training


def test_compiled_inference_gives_the_eager_outputs_for_every_batch_size():
    """Chunks of ``micro_batch`` and a zero-padded last chunk: any batch size, the eager numbers."""
    torch.manual_seed(0)
    model = _trained_like(create_model(ModelConfig(backbone="tiny", embedding_dim=16), num_classes=7))
    compiled = CompiledInference(model, "fp32", micro_batch=4)
    x = torch.rand(11, 1, 48, 48)  # chunks of 4, 4 and 3 (padded to 4): one compiled shape
    with torch.no_grad():
        expected = model(x)
    got = compiled(x)
    assert got["logits"].shape == (11, 7) and got["embedding"].shape == (11, 16)
    for key in ("logits", "embedding"):
        assert got[key].dtype == torch.float32
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-4)
    # the padding never leaks into the real rows: the first 3 faces alone give the same numbers
    torch.testing.assert_close(compiled(x[:3])["logits"], got["logits"][:3], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options", [{"precision": "fp16"}, {"micro_batch": 24}, {"micro_batch": 0}])
def test_compiled_inference_refuses_what_it_cannot_run(options):
    model = create_model(ModelConfig(backbone="tiny", embedding_dim=16), num_classes=7)
    with pytest.raises(ConfigError, match="precision|micro_batch"):
        CompiledInference(model, **options)


def test_a_machine_that_cannot_compile_gets_a_clear_error(monkeypatch):
    compiled = CompiledInference(create_model(ModelConfig(backbone="tiny", embedding_dim=16), num_classes=7))

    class NoCompiler(nn.Module):  # what torch.compile raises where Inductor finds no C++ compiler
        def forward(self, x):
            failed = torch._dynamo.exc.BackendCompilerFailed  # its constructor differs between releases
            error = failed.__new__(failed)
            error.inner_exception = RuntimeError("no C++ compiler found")
            raise error

    monkeypatch.setattr(compiled, "_compiled", NoCompiler())
    with pytest.raises(
        ConfigError, match=r"could not compile .*RuntimeError: no C\+\+ compiler found\); use the torch or onnx backend"
    ):
        compiled(torch.rand(2, 1, 48, 48))
