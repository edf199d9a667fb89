"""ONNX export: onnxruntime agrees with torch; metadata travels with the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fermetric.cli import main

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    from fermetric.export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    assert export_onnx(str(tiny_checkpoint), out) == out
    return out


def run_both(predictor, onnx_path, x: np.ndarray):
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["logits", "embedding"]
    logits, embedding = session.run(None, {"image": x.astype(np.float32)})
    with torch.no_grad():
        out = predictor.model(torch.from_numpy(x.astype(np.float32)))
    return (logits, embedding), (out["logits"].numpy(), out["embedding"].numpy())


@pytest.mark.parametrize("batch", [1, 5])  # the export used batch 2: the batch axis is dynamic
def test_onnx_matches_torch_on_random_inputs(predictor, exported, batch):
    x = np.random.default_rng(batch).normal(size=(batch, 1, 32, 32))
    (logits, embedding), (t_logits, t_embedding) = run_both(predictor, exported, x)
    assert logits.shape == (batch, 7) and embedding.shape == (batch, 16)
    np.testing.assert_allclose(logits, t_logits, atol=1e-4)
    np.testing.assert_allclose(embedding, t_embedding, atol=1e-4)


def test_onnx_matches_torch_on_a_real_face_crop(predictor, exported, astronaut_small):
    ((face, crop),) = predictor.faces(astronaut_small)
    x = predictor.preprocessing.apply(torch.from_numpy(crop[None])).numpy()
    assert x.shape == (1, 1, 32, 32)
    (logits, embedding), (t_logits, t_embedding) = run_both(predictor, exported, x)
    np.testing.assert_allclose(logits, t_logits, atol=1e-4)
    np.testing.assert_allclose(embedding, t_embedding, atol=1e-4)
    # and the predictor's probabilities are the softmax of the ONNX logits
    probabilities = predictor.predict(astronaut_small)[0]["probabilities"]
    softmax = np.exp(logits[0] - logits[0].max()) / np.exp(logits[0] - logits[0].max()).sum()
    np.testing.assert_allclose([probabilities[c] for c in predictor.classes], softmax, atol=1e-5)


def test_metadata_describes_the_model(exported, predictor):
    import onnx

    from fermetric.export import read_onnx_meta

    onnx.checker.check_model(onnx.load(str(exported)))
    meta = read_onnx_meta(exported)
    assert meta["classes"] == list(predictor.classes)
    assert meta["preprocessing"] == {"size": 32, "mean": 0.5, "std": 0.25}
    assert meta["fermetric_meta"]["recipe"]["model"]["backbone"] == "tiny"
    assert meta["input"]["shape"] == ["batch", 1, 32, 32]


def test_cli_export_and_failure(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out)]) == 0
    assert out.is_file() and "wrote" in capsys.readouterr().out
    assert main(["export", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x.onnx")]) != 0
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary file left behind


@pytest.mark.realdata
def test_onnx_matches_torch_on_fer2013_test_images(shared_data, predictor, exported):
    from fermetric.data.imageio import read_image

    files = sorted((shared_data / "fer2013" / "test").glob("*/*.jpg"))[::500][:6]
    if not files:
        pytest.skip("fer2013 test images are absent")
    crops = np.stack([read_image(f, mode="grey") for f in files])  # 48 px: Preprocessing resizes to 32
    x = predictor.preprocessing.apply(torch.from_numpy(crops)).numpy()
    (logits, embedding), (t_logits, t_embedding) = run_both(predictor, exported, x)
    np.testing.assert_allclose(logits, t_logits, atol=1e-4)
    np.testing.assert_allclose(embedding, t_embedding, atol=1e-4)


def test_an_untrained_module_exports_with_the_given_meta(tmp_path):
    from fermetric.config import ModelConfig
    from fermetric.errors import ConfigError
    from fermetric.export import export_model_onnx, read_onnx_meta
    from fermetric.models import create_model

    torch.manual_seed(0)
    model = create_model(ModelConfig(backbone="tiny", width=0.5, small_input=True, embedding_dim=8), 3)
    meta = {"classes": ["a", "b", "c"], "preprocessing": {"size": 24, "mean": 0.5, "std": 0.5}}
    out = export_model_onnx(model, meta, tmp_path / "m.onnx")
    assert read_onnx_meta(out)["classes"] == ["a", "b", "c"]
    x = np.random.default_rng(0).normal(size=(3, 1, 24, 24)).astype(np.float32)
    logits, embedding = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    with torch.no_grad():
        expected = model(torch.from_numpy(x))
    np.testing.assert_allclose(logits, expected["logits"].numpy(), atol=1e-4)
    assert embedding.shape == (3, 8)
    with pytest.raises(ConfigError, match="classes"):
        export_model_onnx(model, {"preprocessing": meta["preprocessing"]}, tmp_path / "n.onnx")
    assert not (tmp_path / "n.onnx").exists()
