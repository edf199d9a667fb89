"""embed/evaluate, class alignment, and the `fermetric eval` / `fermetric info` commands."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from fermetric import cli, vocab
from fermetric.config import recipe_names
from fermetric.data import load_dataset
from fermetric.data.transforms import Preprocessing
from fermetric.engine import checkpoint as ckpt
from fermetric.engine.evaluate import align_classes, embed, embed_reference, evaluate
from fermetric.errors import CheckpointError
from fermetric.models import create_model

from .engine_helpers import CLASSES, make_imageset, tiny_recipe

PREP = Preprocessing(size=16, mean=0.5, std=0.25)


def _model(classes=CLASSES, seed=0):
    torch.manual_seed(seed)
    model = create_model(tiny_recipe("ce").model, num_classes=len(classes))
    model.eval()
    return model


def test_embed_flip_averages_image_and_mirror():
    imageset = make_imageset(3, seed=9)
    model = _model()
    logits, embeddings = embed(model, imageset, PREP, batch_size=5)
    mirrored = make_imageset(3, seed=9)
    mirrored.images[:] = imageset.images[:, :, ::-1]
    logits_m, embeddings_m = embed(model, mirrored, PREP, batch_size=7)
    logits_f, embeddings_f = embed(model, imageset, PREP, tta="flip")
    np.testing.assert_allclose(logits_f, (logits + logits_m) / 2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(embeddings_f, (embeddings + embeddings_m) / 2, rtol=1e-5, atol=1e-5)
    assert logits.shape == (12, 4) and embeddings.shape == (12, 32) and logits.dtype == np.float32
    # Batching does not change results, and the model's train/eval mode is left as it was.
    model.train()
    np.testing.assert_allclose(embed(model, imageset, PREP, batch_size=1)[0], logits, rtol=1e-5, atol=1e-5)
    assert model.training


def test_evaluate_against_direct_computation():
    imageset = make_imageset(6, seed=3)
    imageset.labels[:2] = -1  # unlabeled items are left out
    model = _model()
    with torch.no_grad():
        logits = model(PREP.apply(torch.from_numpy(imageset.images)))["logits"].numpy()
    keep = imageset.labels >= 0
    result = evaluate(model, imageset, PREP, tta="none")
    assert result["n"] == keep.sum() == 22
    assert result["accuracy"] == pytest.approx(np.mean(logits[keep].argmax(1) == imageset.labels[keep]))
    assert np.sum(result["confusion"]) == 22 and result["classes"] == list(CLASSES)
    assert result["reference"] == "leave-one-out" and result["tta"] == "none"
    for key in ("knn_accuracy", "precision_at_1", "map_at_r", "nmi", "macro_f1"):
        assert 0.0 <= result[key] <= 1.0, key
    assert result["centroid_accuracy"] is None  # centroids from the evaluated labels would leak them
    reference = make_imageset(5, seed=4, split="train")
    with_reference = evaluate(model, imageset, PREP, reference=reference)
    assert with_reference["reference"] == "synthetic/train"
    assert with_reference["accuracy"] == result["accuracy"]  # the classifier does not use the reference
    reference.labels[:3] = -1  # embedded once for several splits: the same numbers, unlabelled left out
    embedded = embed_reference(model, reference, PREP)
    assert embedded.name == "synthetic/train" and len(embedded.labels) == len(embedded.embeddings) == 17
    once, again = (evaluate(model, imageset, PREP, reference=r) for r in (embedded, reference))
    assert once["reference"] == again["reference"] == "synthetic/train"
    for key in ("knn_accuracy", "centroid_accuracy", "precision_at_1", "map_at_r", "nmi"):
        assert once[key] == pytest.approx(again[key], abs=1e-9), key
    kept = evaluate(model, imageset, PREP, embedding_metrics=False, keep_predictions=True)
    assert kept["labels"] == imageset.labels[keep].tolist()
    assert kept["predictions"] == logits[keep].argmax(1).tolist()
    assert "predictions" not in result  # only on request: the eval CLI's JSON stays small


def test_align_classes_maps_subsets_and_refuses_unknown_classes():
    imageset = make_imageset(2, classes=("happy", "surprise"))
    aligned = align_classes(imageset, vocab.EMOTIONS)
    names = [vocab.EMOTIONS[i] for i in aligned.labels]
    assert names == [imageset.classes[i] for i in imageset.labels]
    assert aligned.classes == vocab.EMOTIONS
    with pytest.raises(CheckpointError, match=r"class\(es\) \['surprise'\]"):
        align_classes(imageset, ("neutral", "happy"))


@pytest.fixture
def weights(tmp_path):
    """A (random-weight) tiny model saved as safetensors with meta, classes in CLASSES order."""
    model = _model()
    meta = ckpt.make_meta(tiny_recipe("ce"), CLASSES, PREP, "synthetic", 0)
    return ckpt.save_weights(tmp_path / "model.safetensors", model, meta), model


def test_eval_cli_json_and_out(weights, folder_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FERMETRIC_CACHE", "off")
    path, model = weights
    code = cli.main(
        [
            "eval",
            "--checkpoint",
            str(path),
            "--data",
            f"folder={folder_dataset}",
            "--split",
            "test",
            "--json",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "report"),
        ]
    )
    stdout = capsys.readouterr().out
    assert code == 0 and len(stdout.strip().splitlines()) == 1
    result = json.loads(stdout)
    test_set = load_dataset("folder", folder_dataset, "test")
    expected = evaluate(model, test_set, PREP)
    assert result["n"] == 32 and result["accuracy"] == pytest.approx(expected["accuracy"])
    assert result["macro_f1"] == pytest.approx(expected["macro_f1"])
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["accuracy"] == result["accuracy"]
    assert (tmp_path / "report" / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    code = cli.main(
        ["eval", "--checkpoint", str(path), "--data", f"folder={folder_dataset}", "--split", "val", "--tta", "flip"]
    )
    table = capsys.readouterr().out
    assert code == 0 and "accuracy" in table and "tta" in table and "flip" in table


def test_eval_cli_scores_under_a_uniform_prior_and_names_it(weights, folder_dataset, capsys, monkeypatch):
    from fermetric.engine.priors import logit_offset

    monkeypatch.setenv("FERMETRIC_CACHE", "off")
    path, model = weights
    argv = ["eval", "--checkpoint", str(path), "--data", f"folder={folder_dataset}", "--json", "--device", "cpu"]
    assert cli.main(argv + ["--prior", "uniform"]) == 2  # the fixture records no class prior
    assert "class_prior" in capsys.readouterr().err
    tensors, meta = ckpt.load_weights(path)
    meta["class_prior"] = [0.6, 0.1, 0.1, 0.2]
    ckpt.save_weights(path, tensors, meta)
    assert cli.main(argv + ["--prior", "uniform", "--precision", "fp32"]) == 0
    result = json.loads(capsys.readouterr().out)
    test_set = load_dataset("folder", folder_dataset, "test")
    expected = evaluate(model, test_set, PREP, precision="fp32", logit_offset=logit_offset(meta, "uniform"))
    plain = evaluate(model, test_set, PREP, precision="fp32")
    assert result["prior"] == "uniform" and result["accuracy"] == pytest.approx(expected["accuracy"])
    assert expected["confusion"] != plain["confusion"]  # the prior moved some predictions
    assert cli.main(argv + ["--prior", "happy=0.5"]) == 2  # a mapping must name every class
    assert "missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(argv + ["--prior", "happy:0.5"])
    assert "class=weight" in capsys.readouterr().err


def test_eval_cli_refuses_a_foreign_class_vocabulary(tmp_path, folder_dataset, capsys, monkeypatch):
    monkeypatch.setenv("FERMETRIC_CACHE", "off")
    meta = ckpt.make_meta(tiny_recipe("ce"), ("happy", "sad"), PREP, "synthetic", 0)
    path = ckpt.save_weights(tmp_path / "two.safetensors", _model(("happy", "sad")), meta)
    code = cli.main(["eval", "--checkpoint", str(path), "--data", f"folder={folder_dataset}", "--json"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "neutral" in err and "not trained on" in err


def test_info_cli_json(capsys):
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["recipes"] == recipe_names() and "tiny" in info["backbones"]
    assert {"folder", "fer2013"} <= set(info["datasets"]) and {"mtdml", "tcl"} <= set(info["losses"])
    assert info["versions"]["torch"] == torch.__version__ and info["device"]["type"] in ("cpu", "cuda")
    shipped = {model["name"]: model for model in info["shipped_models"]}
    assert shipped["default"]["path"] == str(ckpt.default_weights_path()) and "error" not in shipped["default"]
    assert shipped["default"]["int8_graph"].endswith("default.int8.onnx")
    backends = info["backends"]  # read from package metadata: what --backend onnx / compiled-int8 need
    for name, module in (("onnxruntime", "onnxruntime"), ("torchao", "torchao"), ("openvino", "openvino")):
        installed = importlib.util.find_spec(module) is not None
        assert (backends[name] is not None) == installed, name
    assert cli.main(["info"]) == 0
    text = capsys.readouterr().out
    assert "shipped models" in text and f"{100 * shipped['default']['measured'][0]['accuracy']:.1f}%" in text
    assert "(+ int8 graph)" in text
    assert "backends:" in text and "compiled-int8" in text and "openvino-int8" in text
