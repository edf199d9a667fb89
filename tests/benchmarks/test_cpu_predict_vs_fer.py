"""cpu_predict_vs_fer.py's cross-dataset part on synthetic CK+48 faces (the fer peer is not needed)."""

from __future__ import annotations

import numpy as np
import pytest

from fermetric.data import load_dataset
from fermetric.data.synthetic import make_synthetic_faces

FER2013 = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry")


def test_ckplus_crops_keep_the_shared_classes_and_are_scored_pairwise(tmp_path):
    import cpu_predict_vs_fer as bench

    root = make_synthetic_faces(tmp_path / "ck", "ckplus48", n_per_class=4, seed=3)
    cross = bench.cross_dataset_crops(root, FER2013)
    assert cross["left_out"] == ["contempt"] and "contempt" not in cross["truth"]
    every = load_dataset("ckplus48", root, "all")
    kept = int(sum(every.classes[y] != "contempt" for y in every.labels))
    assert len(cross["truth"]) == len(cross["images"]) == kept < len(every) and cross["images"].shape[1:] == (48, 48)
    assert set(cross["classes"]) == set(FER2013) - {"neutral"}
    truth = np.asarray(cross["truth"])
    wrong_half = truth.copy()
    wrong_half[::2] = "neutral"  # a class CK+48 does not have: always wrong
    cross["predicted"] = {"fermetric": list(truth), "fer": list(wrong_half)}
    scores = bench.cross_dataset_scores(cross, seed=0)
    assert scores["n"] == kept and scores["accuracy"]["fermetric"]["accuracy"] == 1.0
    half = int(np.ceil(kept / 2)) / kept  # every other answer is "neutral"
    assert scores["accuracy"]["fer"]["accuracy"] == pytest.approx(1 - half)
    difference = scores["fermetric_minus_fer"]
    assert difference["difference"] == pytest.approx(half) and difference["ci95"][0] > 0


def test_render_names_the_parameters_or_an_exported_graph():
    import json
    from pathlib import Path

    import cpu_predict_vs_fer as bench

    committed = Path(bench.REPO) / "benchmarks/results/cpu_predict_vs_fer_openvino_int8.json"
    result = json.loads(committed.read_text())
    assert "openvino-int8 backend in int8, 2.88 M parameters); fer" in bench.render(result)
    result["model"]["parameters"] = None  # an .onnx graph run by openvino-int8: no weights file to count
    assert "openvino-int8 backend in int8, an exported graph); fer" in bench.render(result)
