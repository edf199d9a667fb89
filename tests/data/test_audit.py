"""audit-data on a fixture with planted duplicates, blank and unreadable images."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from fermetric.cli import main
from fermetric.data.audit import audit
from fermetric.data.synthetic import make_synthetic_faces


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = make_synthetic_faces(tmp_path_factory.mktemp("audit"), "fer2013", n_per_class=3, seed=11)
    first = {c: sorted((root / "train" / c).iterdir())[0] for c in ("happy", "sad", "fear")}
    shutil.copy(first["happy"], root / "test" / "happy" / "copy_same_label.jpg")  # test/train leak
    shutil.copy(first["sad"], root / "val" / "angry" / "copy_other_label.jpg")  # val/train, conflicting
    shutil.copy(first["fear"], root / "train" / "fear" / "copy_within.jpg")  # within train
    Image.new("L", (48, 48), 0).save(root / "train" / "neutral" / "black.png")
    flat = np.full((48, 48), 127, np.uint8)
    flat[0, :3] = (128, 129, 130)
    Image.fromarray(flat).save(root / "train" / "neutral" / "flat.png")
    low = np.full((48, 48), 100, np.uint8)
    low[0, 0] = 111  # a range of 11: not blank at the default threshold of 10
    Image.fromarray(low).save(root / "train" / "neutral" / "low_contrast.png")
    (root / "test" / "sad" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not finished")
    return root


def test_audit_counts_what_was_planted(planted):
    report = audit("fer2013", planted)
    assert report["total"] == 3 * 7 + 2 * 7 * 1 + 3 + 3  # 21 train + 7 val + 7 test, 3 copies, 3 flat images
    assert report["splits"]["train"]["images"] == 21 + 1 + 3
    assert report["splits"]["test"]["classes"]["happy"] == 2
    dup = report["exact_duplicates"]
    assert dup["groups"] == 3 and dup["images"] == 6
    assert dup["across_splits"] == 2 and dup["split_pairs"] == {"test/train": 1, "train/val": 1}
    assert dup["conflicting_labels"] == 1
    conflicting = [g for g in dup["members"] if len({m["label"] for m in g}) > 1][0]
    assert {m["path"] for m in conflicting} >= {"val/angry/copy_other_label.jpg"}
    assert report["pixel_duplicates"]["groups"] == 3
    blank = report["near_blank"]
    assert blank["count"] == 2
    assert {(i["path"], i["min"], i["max"]) for i in blank["items"]} == {
        ("train/neutral/black.png", 0, 0),
        ("train/neutral/flat.png", 127, 130),
    }
    assert report["unreadable"]["count"] == 1
    assert report["unreadable"]["items"][0]["path"] == "test/sad/broken.jpg"
    assert audit("fer2013", planted, blank_threshold=11)["near_blank"]["count"] == 3


def test_audit_cli_json_and_table(planted, capsys):
    assert main(["audit-data", f"fer2013={planted}", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    assert report["exact_duplicates"]["groups"] == 3
    assert main(["audit-data", f"fer2013={planted}"]) == 0
    table = capsys.readouterr().out
    assert "exact duplicate groups" in table and "near-blank images" in table and "broken.jpg" in table
    # piped (captured) output keeps whole class names in the header instead of Rich's 80 columns
    assert all(name in table for name in ("surprise", "neutral", "disgust"))


def test_audit_cli_bad_argument_is_one_line_error(tmp_path, capsys):
    assert main(["audit-data", f"fer2013={tmp_path / 'missing'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fermetric audit-data: error: ") and "\n" not in err


def test_audit_fold_dataset_reads_everything_once(tmp_path):
    root = make_synthetic_faces(tmp_path, "ckplus48", n_per_class=3, seed=1)
    report = audit("ckplus48", root)
    assert list(report["splits"]) == ["all"] and report["total"] == 21
    assert report["exact_duplicates"]["groups"] == 0
