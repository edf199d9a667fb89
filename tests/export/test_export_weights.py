"""safetensors export: deployable weights in float32 / float16 / bfloat16 that load back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fermetric
from fermetric.cli import main
from fermetric.engine.checkpoint import load_weights
from fermetric.errors import ConfigError
from fermetric.export import export_weights

CROPS = np.random.default_rng(11).integers(0, 256, (16, 32, 32), dtype=np.uint8)


@pytest.mark.parametrize("dtype, atol", [("float32", 0.0), ("float16", 2e-3), ("bfloat16", 2e-2)])
def test_exported_weights_load_and_predict_like_the_checkpoint(predictor, tiny_checkpoint, tmp_path, dtype, atol):
    out = export_weights(tiny_checkpoint, tmp_path / f"w-{dtype}.safetensors", dtype)
    tensors, meta = load_weights(out)
    reference = predictor.model.state_dict()
    assert set(tensors) == set(reference) and meta["weights_dtype"] == dtype
    for name, tensor in tensors.items():
        # floating tensors are stored as dtype; integer buffers (BN step counters) keep theirs
        assert tensor.dtype == (getattr(torch, dtype) if reference[name].is_floating_point() else reference[name].dtype)
        assert torch.equal(tensor, reference[name].to(tensor.dtype))  # the rounding is the only change
    loaded = fermetric.load(out, backend="torch")
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())  # computed in float32
    expected, _ = predictor.run_crops(CROPS)
    got, _ = loaded.run_crops(CROPS)
    np.testing.assert_allclose(got, expected, atol=atol, rtol=0)
    if dtype == "float32":
        assert np.array_equal(got, expected)


def test_half_precision_halves_the_file(tiny_checkpoint, tmp_path):
    full = export_weights(tiny_checkpoint, tmp_path / "full.safetensors").stat().st_size
    half = export_weights(tiny_checkpoint, tmp_path / "half.safetensors", "float16").stat().st_size
    metadata_bytes = 8192  # header: tensor names and the JSON meta
    assert half < full / 2 + metadata_bytes and half > full / 2 - metadata_bytes


def test_cli_safetensors_export_and_its_errors(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(tiny_checkpoint),
                "--format",
                "safetensors",
                "--dtype",
                "float16",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "float16 weights" in capsys.readouterr().out and load_weights(out)[1]["weights_dtype"] == "float16"
    assert (
        main(["export", "--checkpoint", str(tiny_checkpoint), "--dtype", "float16", "--out", str(tmp_path / "m.onnx")])
        == 2
    )
    assert "--dtype applies to --format safetensors" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"\*\.safetensors"):
        export_weights(tiny_checkpoint, tmp_path / "model.bin", "float16")
    with pytest.raises(ConfigError, match="unknown weight dtype"):
        export_weights(tiny_checkpoint, out, "int8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_int8_calibration_is_stored_and_runs_with_the_compiled_int8_backend(
    predictor, tiny_checkpoint, tmp_path, capsys
):
    pytest.importorskip("torchao")
    import cv2

    rng = np.random.default_rng(3)
    for name in ("happy", "sad"):  # a folder dataset's training split: the calibration faces
        folder = tmp_path / "faces" / "train" / name
        folder.mkdir(parents=True)
        for i in range(6):
            cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (40, 40), dtype=np.uint8))
    out = tmp_path / "int8.safetensors"
    argv = ["export", "--checkpoint", str(tiny_checkpoint), "--format", "safetensors", "--int8-calibration"]
    argv += ["--data", f"folder={tmp_path / 'faces'}", "--calibration-faces", "8", "--out", str(out)]
    assert main(argv) == 0
    assert "int8 calibration of 8 faces" in capsys.readouterr().out
    tensors, meta = load_weights(out)
    calibration = meta["int8_calibration"]
    assert calibration["faces"] == 8 and calibration["data"].endswith("/train") and calibration["activations"]
    reference = predictor.model.state_dict()
    assert all(torch.equal(tensor, reference[name]) for name, tensor in tensors.items())  # the weights untouched

    int8 = fermetric.load(out, backend="compiled-int8")
    assert int8.backend == "compiled-int8" and "backend='compiled-int8'" in repr(int8)
    (expected, _), (got, _) = predictor.run_crops(CROPS), int8.run_crops(CROPS)
    np.testing.assert_allclose(got, expected, atol=0.1, rtol=0)  # int8 rounding, not another model
    assert not np.array_equal(got, expected)

    with pytest.raises(ConfigError, match="carries no int8 calibration; add one with fermetric export"):
        fermetric.load(tiny_checkpoint, backend="compiled-int8")
    with pytest.raises(ConfigError, match="at least one face"):
        export_weights(tiny_checkpoint, tmp_path / "none.safetensors", int8_calibration=CROPS, calibration_faces=0)
