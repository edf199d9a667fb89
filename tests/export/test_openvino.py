"""OpenVINO backends: the float graph agrees with torch, the int8 graph is tied to its weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

import fermetric
from fermetric.cli import main
from fermetric.engine.checkpoint import state_digest
from fermetric.errors import CheckpointError, ConfigError
from fermetric.export import export_onnx, export_onnx_int8, read_onnx_meta

pytest.importorskip("onnxruntime")
CROPS = np.random.default_rng(5).integers(0, 256, (9, 32, 32), dtype=np.uint8)


@pytest.fixture(scope="module")
def faces_folder(tmp_path_factory):
    """A folder dataset whose training split serves as calibration faces."""
    import cv2

    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(3)
    for name in ("happy", "sad"):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for i in range(6):
            cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (40, 40), dtype=np.uint8))
    return root


@pytest.fixture(scope="module")
def int8_graph(tiny_checkpoint, faces_folder, tmp_path_factory):
    from fermetric.data import load_dataset

    faces = load_dataset("folder", faces_folder, "train")
    out = tmp_path_factory.mktemp("int8") / "tiny.int8.onnx"
    assert export_onnx_int8(tiny_checkpoint, out, faces, faces=10, seed=1) == out
    return out


def test_the_int8_graph_records_its_calibration_and_weights(predictor, int8_graph):
    meta = read_onnx_meta(int8_graph)
    assert meta["int8"]["faces"] == 10 and meta["int8"]["seed"] == 1 and meta["int8"]["data"].endswith("/train")
    assert meta["int8"]["weights"] == state_digest(predictor.model.state_dict())
    assert meta["fermetric_meta"]["classes"] == list(predictor.classes)  # the float export's metadata, kept
    import onnx

    ops = {node.op_type for node in onnx.load(str(int8_graph)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops  # quantise/dequantise pairs around the convs


def test_onnxruntime_runs_the_int8_graph_close_to_torch(predictor, int8_graph):
    """Independent of OpenVINO: the quantised graph is the same network, rounded to int8."""
    import onnxruntime as ort
    import torch

    x = predictor.preprocessing.apply(torch.from_numpy(CROPS)).numpy()
    logits, _ = ort.InferenceSession(str(int8_graph), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    with torch.no_grad():
        expected = predictor.model(torch.from_numpy(x))["logits"].numpy()
    scale = np.abs(expected).max()
    np.testing.assert_allclose(logits, expected, atol=0.1 * scale, rtol=0)  # int8 rounding, not another model
    assert not np.array_equal(logits, expected)


def test_openvino_float_backend_matches_torch(predictor, tiny_checkpoint):
    pytest.importorskip("openvino")
    ov = fermetric.load(str(tiny_checkpoint), backend="openvino", precision="fp32")
    assert ov.backend == "openvino" and ov.precision == "fp32"
    (expected, expected_emb), (got, got_emb) = predictor.run_crops(CROPS), ov.run_crops(CROPS)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got_emb, expected_emb, atol=1e-3, rtol=1e-3)
    assert ov.fingerprint == predictor.fingerprint  # digested through the checkpoint, as onnx is


def test_openvino_int8_backend_runs_an_exported_graph(predictor, int8_graph):
    pytest.importorskip("openvino")
    int8 = fermetric.load(str(int8_graph), backend="openvino-int8", precision="fp32")
    assert int8.backend == "openvino-int8" and int8.classes == predictor.classes
    (expected, _), (got, _) = predictor.run_crops(CROPS), int8.run_crops(CROPS)
    np.testing.assert_allclose(got, expected, atol=0.1, rtol=0)
    for batch in (1, 4, 7):  # the batch axis stays dynamic: the same answers at any batch size
        int8.batch_size = batch
        np.testing.assert_allclose(int8.run_crops(CROPS)[0], got, atol=1e-5, rtol=0)
    # the graph records the digest of the weights it quantises: no checkpoint needed to fingerprint it
    assert int8.fingerprint == predictor.fingerprint


def test_one_openvino_model_serves_several_threads(int8_graph):
    pytest.importorskip("openvino")
    from concurrent.futures import ThreadPoolExecutor

    int8 = fermetric.load(str(int8_graph), backend="openvino-int8", precision="fp32")
    int8.batch_size = 4
    expected, _ = int8.run_crops(CROPS)
    with ThreadPoolExecutor(max_workers=3) as pool:  # each thread gets its own inference request
        answers = list(pool.map(lambda _: int8.run_crops(CROPS)[0], range(9)))
    for got in answers:
        np.testing.assert_array_equal(got, expected)


def test_openvino_int8_refuses_what_is_not_an_int8_graph(tiny_checkpoint, tmp_path):
    pytest.importorskip("openvino")
    with pytest.raises(ConfigError, match="--format onnx --int8-calibration"):
        fermetric.load(str(tiny_checkpoint), backend="openvino-int8")
    float_graph = export_onnx(str(tiny_checkpoint), tmp_path / "float.onnx")
    with pytest.raises(ConfigError, match="is a float graph"):
        fermetric.load(str(float_graph), backend="openvino-int8")
    with pytest.raises(CheckpointError, match="does not exist"):
        fermetric.load(str(tmp_path / "missing.int8.onnx"), backend="openvino-int8")


def test_a_shipped_model_without_its_int8_graph_is_refused_clearly(monkeypatch, tmp_path):
    pytest.importorskip("openvino")
    import dataclasses

    from fermetric.engine import shipped

    catalogue = shipped.shipped_models()
    for graph, error, message in (
        (None, ConfigError, "has no int8 graph"),
        (tmp_path / "gone.onnx", CheckpointError, "is missing"),
    ):
        models = {**catalogue, "default": dataclasses.replace(catalogue["default"], int8_graph=graph)}
        monkeypatch.setattr(shipped, "shipped_models", lambda models=models: models)
        with pytest.raises(error, match=message):
            fermetric.load("default", backend="openvino-int8")


def test_without_openvino_the_backend_says_what_to_install(tiny_checkpoint, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'fermetric\[openvino\]'"):
        fermetric.load(str(tiny_checkpoint), backend="openvino")


def test_cli_exports_an_int8_graph(tiny_checkpoint, faces_folder, tmp_path, capsys):
    out = tmp_path / "model.int8.onnx"
    argv = ["export", "--checkpoint", str(tiny_checkpoint), "--format", "onnx", "--int8-calibration"]
    argv += ["--data", f"folder={faces_folder}", "--calibration-faces", "8", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "int8 graph" in printed and "--backend openvino-int8" in printed
    assert read_onnx_meta(out)["int8"]["faces"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8.onnx"]  # no temporary file left
    assert main(argv[:-1] + [str(tmp_path / "model.bin")]) == 2
    assert "*.onnx" in capsys.readouterr().err
    assert main(argv[:6] + ["--out", str(tmp_path / "none.onnx")]) == 2  # no --data
    assert "needs --data" in capsys.readouterr().err


def test_shipped_int8_graphs_belong_to_the_shipped_weights():
    """A weights file replaced without its int8 graph would run the old model: the digest says so."""
    from fermetric.engine.checkpoint import load_model
    from fermetric.engine.shipped import shipped_models

    graphs = {name: model.int8_graph for name, model in shipped_models().items() if model.int8_graph}
    assert {"default", "fast", "ferplus"} <= set(graphs)
    for name, graph in graphs.items():
        meta = read_onnx_meta(graph)
        model, weights_meta = load_model(name)
        assert meta["int8"]["weights"] == state_digest(model.state_dict()), name
        # the faces the weights file's own calibration used: its training split, never a test split
        assert meta["int8"]["data"] == weights_meta["int8_calibration"]["data"] and meta["int8"]["faces"] == 512
        assert json.dumps(meta["fermetric_meta"]["classes"]) == json.dumps(weights_meta["classes"])
