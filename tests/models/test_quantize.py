"""int8 inference: stored activation ranges rebuild exactly the graph a direct calibration builds,
the int8 network keeps the float network's answers, and what cannot work fails clearly."""

import json

import pytest
import torch

from fermetric.config import ModelConfig
from fermetric.errors import ConfigError
from fermetric.models import CompiledInference, create_model
from fermetric.models.quantize import CALIBRATION_FORMAT, calibrate_int8, quantize_int8

pytest.importorskip("torchao")

SIZE = 48


def _model(seed: int = 0):
    torch.manual_seed(seed)
    model = create_model(ModelConfig(backbone="tiny", embedding_dim=16), num_classes=7)
    with torch.no_grad():  # running statistics away from their init, as after training
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _batches(count: int = 4, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(8, 1, SIZE, SIZE, generator=generator) * 4 - 2 for _ in range(count)]


def test_the_stored_ranges_rebuild_the_directly_calibrated_graph():
    """The independent computation: torchao's own prepare -> calibrate -> convert on the same batches."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from fermetric.models import FERNetExport, inference_model

    model, batches = _model(), _batches()
    calibration = calibrate_int8(model, batches, SIZE)
    assert calibration["format"] == CALIBRATION_FORMAT and calibration["faces"] == 32
    assert json.loads(json.dumps(calibration)) == calibration  # plain JSON: it lives in a file's metadata
    assert all(scale > 0 and 0 <= zero_point <= 255 for scale, zero_point in calibration["activations"])

    network = FERNetExport(inference_model(model)).eval()
    dim = torch.export.Dim("batch", min=1, max=1 << 16)
    exported = torch.export.export(network, (batches[0],), dynamic_shapes=({0: dim},)).module()
    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
    direct = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for batch in batches:
            direct(batch)
    direct = convert_pt2e(direct)

    rebuilt = quantize_int8(model, calibration, SIZE)
    x = torch.rand(5, 1, SIZE, SIZE) * 4 - 2
    with torch.no_grad():
        for got, expected in zip(rebuilt(x), direct(x)):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_compiled_int8_keeps_the_float_answers_for_every_batch_size():
    model, batches = _model(), _batches()
    calibration = calibrate_int8(model, batches, SIZE)
    compiled = CompiledInference(model, "int8", micro_batch=4, int8_calibration=calibration)
    x = torch.cat(batches)[:11]  # chunks of 4, 4 and 3 (padded): faces like the calibration's
    with torch.no_grad():
        expected = model(x)
    got = compiled(x)
    assert got["logits"].shape == (11, 7) and got["embedding"].shape == (11, 16)
    assert got["logits"].dtype == torch.float32
    # int8 rounding: close to the float logits, not equal to them
    scale = expected["logits"].abs().max()
    assert (got["logits"] - expected["logits"]).abs().max() < 0.1 * scale
    assert (got["logits"] - expected["logits"]).abs().max() > 0
    torch.testing.assert_close(compiled(x[:3])["logits"], got["logits"][:3], rtol=1e-5, atol=1e-5)


def test_int8_refuses_a_missing_foreign_or_mismatched_calibration():
    model = _model()
    with pytest.raises(ConfigError, match="int8 calibration"):
        CompiledInference(model, "int8")
    with pytest.raises(ConfigError, match="not an int8 calibration"):
        quantize_int8(model, {"format": "onnx-qdq", "activations": []}, SIZE)
    calibration = calibrate_int8(model, _batches(1), SIZE)
    shorter = {**calibration, "activations": calibration["activations"][:-1]}
    with pytest.raises(ConfigError, match="activation ranges but this torch/torchao observes"):
        quantize_int8(model, shorter, SIZE)
    with pytest.raises(ConfigError, match="at least one batch"):
        calibrate_int8(model, [], SIZE)
    other = _model(seed=1)  # e.g. a fine-tuned copy that kept the calibrated file's metadata
    with pytest.raises(ConfigError, match="made for other weights"):
        quantize_int8(other, calibration, SIZE)


@pytest.mark.parametrize(
    "failure, message",
    [
        (ImportError("torchao"), "int8 inference needs torchao"),
        (AttributeError("no _C"), "does not load with this torch"),
    ],
)
def test_without_a_working_torchao_int8_says_what_to_install(monkeypatch, failure, message):
    import builtins

    real_import = builtins.__import__

    def broken_torchao(name, *args, **kwargs):
        if name.startswith("torchao"):
            raise failure
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken_torchao)
    with pytest.raises(ConfigError, match=message + r".*pip install 'fermetric\[int8\]'"):
        calibrate_int8(_model(), _batches(1), SIZE)
