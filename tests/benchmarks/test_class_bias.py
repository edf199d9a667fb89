"""class_bias.py: the rare-class logit bias is chosen on validation, folded in exactly, and a rerun
on the biased file searches from the trained logits again."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fermetric.engine.checkpoint import load_weights


def test_scores_shift_one_logit_before_the_argmax():
    from class_bias import scores

    logits = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.4], [0.9, 0.1]], np.float32)
    labels = np.array([0, 1, 1, 0])
    plain = scores(logits, labels, column=1, bias=0.0)
    assert plain["accuracy"] == 0.75 and plain["recall"] == 0.5 and plain["predicted"] == 1
    shifted = scores(logits, labels, column=1, bias=0.2)  # 0.4 + 0.2 > 0.5; 0.1 + 0.2 < 0.9
    assert shifted["accuracy"] == 1.0 and shifted["recall"] == 1.0 and shifted["predicted"] == 2
    assert shifted["macro_f1"] == pytest.approx(1.0) and list(shifted["correct"]) == [True] * 4


def test_the_bias_is_chosen_on_val_written_once_and_not_stacked(tiny_checkpoint, fer_folder, tmp_path):
    import class_bias

    def choose(checkpoint, write, out):
        argv = ["--checkpoint", str(checkpoint), "--data", f"fer2013={fer_folder}", "--class", "fear"]
        argv += ["--max-bias", "3", "--step", "1", "--write", str(write), "--out", str(out)]
        assert class_bias.main(argv) == 0
        return json.loads(out.read_text())

    first = choose(tiny_checkpoint, tmp_path / "biased.safetensors", tmp_path / "first.json")
    grid = first["select_split"]["grid"]
    assert [row["bias"] for row in grid] == [0.0, 1.0, 2.0, 3.0]
    best = max(row["macro_f1"] for row in grid)
    assert first["selected_bias"] == min(row["bias"] for row in grid if row["macro_f1"] == best)
    assert first["report_split"]["biased"]["bias"] == first["selected_bias"]

    trained, meta = load_weights(tiny_checkpoint)
    biased, biased_meta = load_weights(tmp_path / "biased.safetensors")
    column = meta["classes"].index("fear")
    expected = trained["classifier.linear.bias"].clone()
    expected[column] += first["selected_bias"]
    torch.testing.assert_close(biased["classifier.linear.bias"], expected)
    assert all(torch.equal(biased[k], v) for k, v in trained.items() if k != "classifier.linear.bias")
    assert biased_meta["logit_bias"]["biases"] == {"fear": first["selected_bias"]}

    again = choose(tmp_path / "biased.safetensors", tmp_path / "again.safetensors", tmp_path / "again.json")
    for before, after in zip(grid, again["select_split"]["grid"], strict=True):  # from the trained logits
        assert after == pytest.approx(before)
    rewritten, _ = load_weights(tmp_path / "again.safetensors")
    torch.testing.assert_close(rewritten["classifier.linear.bias"], expected)  # one bias, not two
