"""FERNet and create_model: outputs, pooling, gradients (DDP), bf16/channels_last, ONNX."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch
import torch.nn.functional as F

from fermetric.config import ModelConfig, load_recipe, recipe_names
from fermetric.errors import ConfigError
from fermetric.models import FERNet, FERNetExport, create_backbone, create_model

TINY = ModelConfig(backbone="tiny", embedding_dim=32)
VARIANTS = {
    "plain": TINY,
    "attention": dataclasses.replace(TINY, attention=True),
    "template_shared": dataclasses.replace(TINY, partial="template"),
    "landmarks_separate": dataclasses.replace(TINY, partial="landmarks", partial_shared=False, attention=True),
}


@pytest.mark.parametrize("recipe", recipe_names())
def test_every_recipe_builds_and_runs(recipe):
    cfg = dataclasses.replace(load_recipe(recipe).model, backbone="tiny")
    model = create_model(cfg, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 32, 32))
    assert set(out) == {"features", "embedding", "logits"}
    assert out["features"].shape == (2, 128)
    assert out["embedding"].shape == (2, cfg.embedding_dim)
    assert out["logits"].shape == (2, 7)
    assert (model.attention is not None) == cfg.attention
    assert (model.partial is not None) == (cfg.partial is not None)


def test_plain_forward_equals_manual_pipeline():
    torch.manual_seed(0)
    model = create_model(TINY, num_classes=5).eval()
    x = torch.randn(3, 1, 48, 48)
    with torch.no_grad():
        out = model(x)
        pooled = model.backbone(x).mean(dim=(2, 3))
        head = model.embedding_head
        z = F.batch_norm(
            pooled @ head.linear.weight.T,
            head.bn.running_mean,
            head.bn.running_var,
            head.bn.weight,
            head.bn.bias,
            eps=head.bn.eps,
        )
        logits = z @ model.classifier.linear.weight.T + model.classifier.linear.bias
    torch.testing.assert_close(out["features"], pooled)
    torch.testing.assert_close(out["embedding"], z)
    torch.testing.assert_close(out["logits"], logits)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ce_plus_metric_loss_reaches_every_parameter(variant):
    # DDP without find_unused_parameters needs every parameter in every default forward.
    torch.manual_seed(0)
    model = create_model(VARIANTS[variant], num_classes=4).train()
    out = model(torch.randn(2, 1, 32, 32))
    labels = torch.tensor([0, 3])
    z = F.normalize(out["embedding"], dim=1)
    loss = F.cross_entropy(out["logits"], labels) + torch.cdist(z, z).mean()
    loss.backward()
    missing = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not torch.any(p.grad != 0))
    ]
    assert missing == []
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ["embedding_head.bn.bias"]  # the BNNeck shift (see EmbeddingHead)
    assert torch.count_nonzero(model.embedding_head.bn.bias) == 0


def test_regions_override_the_template_and_are_validated():
    torch.manual_seed(0)
    model = create_model(VARIANTS["landmarks_separate"], num_classes=3).eval()
    x = torch.randn(2, 1, 32, 32)
    template = model.partial.template
    with torch.no_grad():
        default = model(x)["features"]
        same = model(x, regions=template.expand(2, -1, -1).clone())["features"]
        moved = model(x, regions=torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 1.0, 0.5], [0.0, 0.5, 1.0, 1.0]]))[
            "features"
        ]
    torch.testing.assert_close(default, same)
    assert not torch.allclose(default, moved)
    with pytest.raises(ConfigError, match="built for 3 regions"):
        model(x, regions=template[:2])
    plain = create_model(TINY, num_classes=3)
    with pytest.raises(ConfigError, match="no partial-image branches"):
        plain(x, regions=template)


def test_bad_configs_raise():
    with pytest.raises(ConfigError, match="model.partial"):
        create_model(dataclasses.replace(TINY, partial="eyes"), num_classes=7)
    with pytest.raises(ConfigError, match="num_classes"):
        create_model(TINY, num_classes=1)
    with pytest.raises(ConfigError, match="unknown backbone"):
        create_model(dataclasses.replace(TINY, backbone="vgg"), num_classes=7)


def test_small_input_is_a_recipe_field_that_travels_with_the_checkpoint(tmp_path):
    """model.small_input=false: the standard stride-32 ImageNet network (96 px -> 3x3 map), and a
    model fine-tuned from such a checkpoint gets the same network (architecture_overrides)."""
    from fermetric.engine import checkpoint as ckpt

    standard = ModelConfig(backbone="mobilenetv2", embedding_dim=16, small_input=False)
    model = create_model(standard, num_classes=7).eval()
    with torch.no_grad():
        assert model.backbone(torch.randn(1, 1, 96, 96)).shape[-2:] == (3, 3)
        assert create_model(dataclasses.replace(standard, small_input=True), 7).backbone(
            torch.randn(1, 1, 96, 96)
        ).shape[-2:] == (12, 12)
    with pytest.raises(ConfigError, match="small_input"):
        create_model(dataclasses.replace(TINY, small_input=False), num_classes=7)  # tiny has no such stem
    recipe = load_recipe("ce", ["model.backbone=mobilenetv2", "model.small_input=false", "model.embedding_dim=16"])
    prep = {"input_size": 96, "mean": 0.5, "std": 0.25}
    meta = ckpt.make_meta(recipe, tuple(f"c{i}" for i in range(7)), prep, "synthetic", 0)
    path = ckpt.save_weights(tmp_path / "standard.safetensors", model, meta)
    assert "model.small_input=false" in ckpt.architecture_overrides(path)
    assert ckpt.load_model(path)[0].backbone.features[0][0].stride == (2, 2)


def test_seeded_models_are_identical():
    x = torch.randn(2, 1, 32, 32)
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = create_model(VARIANTS["template_shared"], num_classes=7).eval()
        with torch.no_grad():
            outs.append(model(x)["logits"])
    assert torch.equal(outs[0], outs[1])


def test_bf16_autocast_with_channels_last():
    torch.manual_seed(0)
    model = create_model(VARIANTS["attention"], num_classes=7).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        reference = model(x)["logits"]
        model = model.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x.to(memory_format=torch.channels_last))
    assert out["logits"].dtype == torch.bfloat16
    assert torch.isfinite(out["embedding"].float()).all()
    torch.testing.assert_close(out["logits"].float(), reference, atol=0.1, rtol=0.05)


def test_resnet18_fernet_parameter_count():
    backbone = create_backbone("resnet18")
    model = FERNet(backbone, num_classes=7, embedding_dim=512)
    heads = 512 * 512 + 2 * 512 + 512 * 7 + 7  # Linear(no bias) + BN + classifier
    assert sum(p.numel() for p in model.parameters()) == 11_167_680 + heads


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("variant", ["attention", "template_shared"])
def test_onnx_export_matches_pytorch(variant):
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = create_model(VARIANTS[variant], num_classes=7).eval()
    buffer = io.BytesIO()
    torch.onnx.export(
        FERNetExport(model),
        (torch.randn(2, 1, 32, 32),),
        buffer,
        input_names=["image"],
        output_names=["logits", "embedding"],
        dynamic_axes={"image": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    assert not model.training  # the export wrapper must not flip the model back to train mode
    session = onnxruntime.InferenceSession(buffer.getvalue())
    x = torch.randn(3, 1, 32, 32)
    logits, embedding = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        expected = model.forward_export(x)
    torch.testing.assert_close(torch.from_numpy(logits), expected[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.from_numpy(embedding), expected[1], atol=1e-4, rtol=1e-4)
