"""``predict --backend onnx``: the exported graph run by onnxruntime gives the torch results."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import fermetric  # noqa: E402
from fermetric.cli import main  # noqa: E402


def test_onnx_backend_matches_torch(tiny_checkpoint, astronaut_small, tmp_path, monkeypatch):
    monkeypatch.setenv("FERMETRIC_CACHE", str(tmp_path / "cache"))
    torch_predictor = fermetric.load(str(tiny_checkpoint), backend="torch")
    onnx_predictor = fermetric.load(str(tiny_checkpoint))  # the default on a CPU: auto -> onnx
    assert onnx_predictor.backend == "onnx" and onnx_predictor.precision == "fp32"
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1  # exported once, cached
    a, b = torch_predictor.predict(astronaut_small), onnx_predictor.predict(astronaut_small)
    assert [r["box"] for r in a] == [r["box"] for r in b] and [r["label"] for r in a] == [r["label"] for r in b]
    for x, y in zip(a, b):
        assert x["probabilities"] == pytest.approx(y["probabilities"], abs=1e-5)
    crops = np.random.default_rng(0).integers(0, 256, (40, 32, 32), dtype=np.uint8)
    np.testing.assert_allclose(torch_predictor.run_crops(crops)[0], onnx_predictor.run_crops(crops)[0], atol=1e-5)
    fermetric.load(str(tiny_checkpoint), backend="onnx")
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1  # the cached graph is reused
    # the same weights whichever backend runs them: an index built with one is queried with the other
    assert onnx_predictor.fingerprint == torch_predictor.fingerprint
    # a precision onnxruntime does not run asks auto for torch
    assert fermetric.load(str(tiny_checkpoint), precision="bf16").backend == "torch"


def test_cli_backend_onnx(tiny_checkpoint, tmp_path, astronaut_small, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.setenv("FERMETRIC_CACHE", str(tmp_path / "cache"))
    photo = tmp_path / "photo.png"
    Image.fromarray(astronaut_small).save(photo)
    assert main(["predict", str(photo), "--checkpoint", str(tiny_checkpoint), "--json", "--backend", "onnx"]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["label"] in record["probabilities"]
