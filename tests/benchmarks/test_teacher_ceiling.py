"""teacher_ceiling.py scores each teacher and every ensemble of them as distill.teacher builds them;
checked against fermetric eval's own path (embed with flip TTA) on the same images."""

from __future__ import annotations

import json

import numpy as np
import pytest


def test_each_teacher_and_every_ensemble_match_an_independent_flip_evaluation(
    tiny_checkpoint, fer_folder, tmp_path, perturbed_copy
):
    import teacher_ceiling

    from fermetric.data import load_dataset
    from fermetric.engine.checkpoint import load_model
    from fermetric.engine.evaluate import embed, preprocessing_from_meta

    b, _ = perturbed_copy(tiny_checkpoint, scale=0.5, seed=1)
    out = tmp_path / "ceiling.json"
    argv = ["--teacher", str(tiny_checkpoint), "--teacher", str(b), "--data", f"fer2013={fer_folder}"]
    assert teacher_ceiling.main(argv + ["--out", str(out)]) == 0
    result = json.loads(out.read_text())

    imageset = load_dataset("fer2013", fer_folder, "val")
    labels = np.asarray(imageset.labels)
    logits = []
    for source in (tiny_checkpoint, b):
        model, model_meta = load_model(source)
        logits.append(embed(model, imageset, preprocessing_from_meta(model_meta), tta="flip", precision="fp32")[0])
    expected = {
        (str(tiny_checkpoint),): logits[0],
        (str(b),): logits[1],
        (str(tiny_checkpoint), str(b)): (logits[0] + logits[1]) / 2,
    }
    assert result["n"] == len(labels) and result["tta"] == "flip"
    assert {tuple(row["members"]) for row in result["rows"]} == set(expected)
    first = np.mean(logits[0].argmax(1) == labels)
    for row in result["rows"]:
        accuracy = np.mean(expected[tuple(row["members"])].argmax(1) == labels)
        assert row["accuracy"] == pytest.approx(accuracy)
        if row["members"] != [str(tiny_checkpoint)]:
            assert row["change_vs_first"]["difference"] == pytest.approx(accuracy - first)


def test_too_many_teachers_is_a_clear_error(tiny_checkpoint, fer_folder, tmp_path):
    import teacher_ceiling

    argv = ["--teacher", str(tiny_checkpoint)] * (teacher_ceiling.MAX_MEMBERS + 1)
    with pytest.raises(SystemExit):
        teacher_ceiling.main(argv + ["--data", f"fer2013={fer_folder}", "--out", str(tmp_path / "x.json")])
