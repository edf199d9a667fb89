"""paired_checkpoints.py: two checkpoints scored on the same images, the difference paired."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fermetric.data import load_dataset
from fermetric.engine.checkpoint import load_weights, save_weights


def test_a_model_that_always_answers_one_class_against_the_original(fer_folder, tiny_checkpoint, tmp_path):
    import paired_checkpoints

    tensors, meta = load_weights(tiny_checkpoint)
    happy = meta["classes"].index("happy")
    bias = tensors["classifier.linear.bias"].clone()
    bias[happy] += 1e4  # the argmax is "happy" for every face
    always_happy = save_weights(tmp_path / "happy.safetensors", {**tensors, "classifier.linear.bias": bias}, meta)

    out = tmp_path / "paired.json"
    argv = ["--new", str(always_happy), "--old", str(tiny_checkpoint), "--data", f"fer2013/val,test={fer_folder}"]
    assert paired_checkpoints.main([*argv, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [row["split"] for row in result["results"]] == ["val", "test"]
    for row in result["results"]:
        labels = np.asarray(load_dataset("fer2013", fer_folder, row["split"]).labels)
        assert row["n"] == len(labels)
        assert row["new"]["accuracy"] == pytest.approx(np.mean(labels == happy))  # computed independently
        change = row["accuracy_change"]
        assert change["difference"] == pytest.approx(row["new"]["accuracy"] - row["old"]["accuracy"])
        assert change["ci95"][0] <= change["difference"] <= change["ci95"][1]


def test_a_model_against_itself_differs_by_nothing(fer_folder, tiny_checkpoint, tmp_path):
    import paired_checkpoints

    out = tmp_path / "same.json"
    argv = ["--new", str(tiny_checkpoint), "--old", str(tiny_checkpoint), "--data", f"fer2013={fer_folder}"]
    assert paired_checkpoints.main([*argv, "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["results"]
    assert row["split"] == "test" and row["new"] == row["old"]
    assert row["accuracy_change"]["difference"] == 0 and row["accuracy_change"]["ci95"] == [0, 0]


class LeftMinusRight(torch.nn.Module):
    """Class 0's logit is how much brighter a face's left half is than its right: zero for any face
    averaged with its mirror. Class 1's is a small constant, so flip TTA must answer class 1."""

    def forward(self, x):
        half = x.shape[-1] // 2
        asymmetry = x[..., :half].mean(dim=(1, 2, 3)) - x[..., -half:].mean(dim=(1, 2, 3))
        logits = torch.full((len(x), 7), -1.0)
        logits[:, 0], logits[:, 1] = asymmetry, 1e-3
        return {"logits": logits, "embedding": logits}


def test_flip_tta_averages_each_face_with_its_mirror(fer_folder, tiny_checkpoint, tmp_path):
    import paired_checkpoints

    _, meta = load_weights(tiny_checkpoint)
    test = load_dataset("fer2013", fer_folder, "test")
    single, _ = paired_checkpoints.split_predictions(LeftMinusRight(), meta, test)
    mirrored, _ = paired_checkpoints.split_predictions(LeftMinusRight(), meta, test, tta="flip")
    assert (single == 0).any()  # one crop: the brighter-left faces answer class 0
    assert (mirrored == 1).all()

    out = tmp_path / "flip.json"
    argv = ["--new", str(tiny_checkpoint), "--old", str(tiny_checkpoint), "--new-tta", "flip"]
    assert paired_checkpoints.main([*argv, "--data", f"fer2013={fer_folder}", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["tta"] == {"new": "flip", "old": "none"}
