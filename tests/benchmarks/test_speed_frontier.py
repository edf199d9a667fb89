"""speed_frontier.py: two small candidates timed end to end, without the fer peer."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def test_candidates_are_exported_timed_and_rendered(tmp_path):
    import speed_frontier

    out = tmp_path / "frontier.json"
    argv = ["--only", "tiny-48-w0.5", "mobilenetv2-48", "--faces", "16", "--batch", "8", "--repeats", "1"]
    argv += ["--fer-python", str(tmp_path / "absent" / "python"), "--out", str(out)]
    assert speed_frontier.main(argv) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert list(rows) == ["tiny-48-w0.5", "mobilenetv2-48"] and all(r["faces_per_second"] > 0 for r in rows.values())
    assert rows["mobilenetv2-48"]["parameters"] > rows["tiny-48-w0.5"]["parameters"]
    assert result["fer_tflite_faces_per_second"] is None and result["threads"] == 1
    table = speed_frontier.render(result)
    assert "| tiny-48-w0.5 | 48 |" in table and "x `fer` TFLite" in table and "mini-Xception" not in table
    with pytest.raises(SystemExit):
        speed_frontier.parse_args(["--only", "resnet1000"])
