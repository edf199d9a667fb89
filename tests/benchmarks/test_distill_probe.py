"""distill_probe.py end to end on synthetic FER2013 faces with a tiny random teacher."""

from __future__ import annotations

import json

import pytest


def test_two_students_side_by_side_paired_and_timed(fer_folder, tiny_checkpoint, tmp_path):
    import distill_probe

    argv = ["--data", f"fer2013={fer_folder}", "--teacher", str(tiny_checkpoint), "--epochs", "1", "--crops", "8"]
    for option in ("model.backbone=tiny", "model.embedding_dim=16", "data.input_size=16", "data.batch_size=8"):
        argv += ["--set", option]
    argv += ["--work", str(tmp_path / "runs"), "--out", str(tmp_path / "probe.json")]
    assert distill_probe.main(argv) == 0
    result = json.loads((tmp_path / "probe.json").read_text())
    students = result["students"]
    assert set(students) == {"plain", "distilled"} and all(0 <= s["accuracy"] <= 1 for s in students.values())
    difference = result["difference_distilled_minus_plain"]
    assert difference["difference"] == pytest.approx(students["distilled"]["accuracy"] - students["plain"]["accuracy"])
    assert all(rate > 0 for rate in result["onnx_faces_per_second_batch64"].values())
    distilled = json.loads((tmp_path / "runs" / "distilled" / "results.json").read_text())
    plain = json.loads((tmp_path / "runs" / "plain" / "results.json").read_text())
    assert distilled["recipe_config"]["distill"]["teacher"] == str(tiny_checkpoint)
    assert plain["recipe_config"]["distill"]["teacher"] is None

    before = (tmp_path / "runs" / "plain" / "results.json").stat().st_mtime_ns
    assert distill_probe.main(argv) == 0  # finished runs are read back, not retrained
    assert (tmp_path / "runs" / "plain" / "results.json").stat().st_mtime_ns == before
