"""crop_resolution.py scores both crop sides on the same detected faces; checked against
``Predictor.predict`` on the same photos (the real path: detection, crop, preprocessing, model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

TRAINED_AT = 8  # the synthetic faces are 16 px; the tiny model's input is 32


@pytest.fixture
def fixed_face(monkeypatch):
    """Detectors find few synthetic faces: every photo gets the face where make_photo put it."""
    from cpu_predict_vs_fer import BORDER, UPSCALE

    from fermetric.data.faces import Face, HaarDetector, YuNetDetector

    side = 16 * UPSCALE
    box = (float(BORDER), float(BORDER), float(BORDER + side), float(BORDER + side))
    for detector in (HaarDetector, YuNetDetector):
        monkeypatch.setattr(detector, "_detect", lambda self, image: [Face(box, 1.0)])


def test_both_crop_sides_score_as_the_predictor_does_on_the_same_photos(
    tiny_checkpoint, fer_folder, tmp_path, fixed_face
):
    import crop_resolution
    from cpu_predict_vs_fer import make_photo

    from fermetric.data import load_dataset
    from fermetric.engine.checkpoint import load_weights, save_weights
    from fermetric.engine.evaluate import align_classes
    from fermetric.predict import Predictor

    tensors, meta = load_weights(tiny_checkpoint)
    meta["train_image_size"] = TRAINED_AT
    save_weights(tmp_path / "tiny8.safetensors", tensors, meta)
    out = tmp_path / "crop.json"
    argv = ["--checkpoint", str(tmp_path / "tiny8.safetensors"), "--data", f"fer2013={fer_folder}", "--out", str(out)]
    assert crop_resolution.main(argv) == 0
    result = json.loads(out.read_text())
    rows = result["splits"]["val"]
    assert [row["condition"] for row in rows] == list(crop_resolution.CONDITIONS)

    imageset = align_classes(load_dataset("fer2013", fer_folder, "val"), list(meta["classes"]))
    labels = np.asarray(imageset.labels)
    for number, row in enumerate(rows):
        rng = np.random.default_rng([0, number])
        photos = [crop_resolution.degrade(make_photo(face), row["condition"], rng) for face in imageset.images]
        assert row["faces_found"] == row["photos"] == len(labels)
        correct = {}
        for resolution in ("train", "input"):
            predictor = Predictor.load(tmp_path / "tiny8.safetensors", precision="fp32", crop_resolution=resolution)
            predicted = [predictor.classes.index(predictor.predict(photo)[0]["label"]) for photo in photos]
            correct[resolution] = np.asarray(predicted) == labels
            assert row[resolution]["crop_size"] == (TRAINED_AT if resolution == "train" else 32)
            assert row[resolution]["accuracy"] == pytest.approx(correct[resolution].mean())
        change = row["train_minus_input"]
        assert change["difference"] == pytest.approx(correct["train"].mean() - correct["input"].mean())
        assert change["ci95"][0] <= change["difference"] <= change["ci95"][1]
    assert result["versions"]["torch"] and result["train_image_size"] == TRAINED_AT


def test_the_table_has_one_row_per_split_and_condition(tmp_path, capsys):
    import crop_resolution

    row = {
        "condition": "noise",
        "photos": 10,
        "faces_found": 8,
        "train": {"crop_size": 48, "accuracy": 0.75},
        "input": {"crop_size": 96, "accuracy": 0.5},
        "train_minus_input": {"difference": 0.25, "ci95": [0.05, 0.45]},
    }
    result = {
        "checkpoint": "default",
        "dataset": "fer2013",
        "splits": {"val": [row], "test": [dict(row, train_minus_input={"difference": 0.1, "ci95": [-0.1, 0.3]})]},
        "machine": {"cpu_model": "cpu", "usable_cpus": 2},
        "versions": {"torch": "2"},
        "backend": "torch",
        "precision": "fp32",
        "detector": "haar",
        "seed": 0,
        "date": "today",
        "command": "python benchmarks/crop_resolution.py",
    }
    (tmp_path / "r.json").write_text(json.dumps(result))
    assert crop_resolution.main(["--render", str(tmp_path / "r.json")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert (
        "| `default` | fer2013 val | faces x4 | noise | 8 / 10 | 75.00% (48 px) | 50.00% (96 px) | **+25.00 [+5.00, +45.00]** |"
        in table
    )
    assert (
        "| `default` | fer2013 test | faces x4 | noise | 8 / 10 | 75.00% (48 px) | 50.00% (96 px) | +10.00 [-10.00, +30.00] |"
        in table
    )


def test_each_condition_changes_the_photo_as_described():
    import crop_resolution

    photo = np.random.default_rng(0).integers(60, 200, (64, 64), dtype=np.uint8)
    clean = crop_resolution.degrade(photo, "clean", np.random.default_rng(1))
    assert clean is photo
    noisy = crop_resolution.degrade(photo, "noise", np.random.default_rng(1)).astype(float)
    # sigma 4 grey levels, nothing clipped at these pixel values (rounding adds 1/12 to the variance)
    assert np.std(noisy - photo) == pytest.approx(np.sqrt(crop_resolution.NOISE_SIGMA**2 + 1 / 12), rel=0.05)
    np.testing.assert_array_equal(noisy, crop_resolution.degrade(photo, "noise", np.random.default_rng(1)))
    flat = np.full((32, 32), 128, np.uint8)
    assert (crop_resolution.degrade(flat, "sharpened", np.random.default_rng(1)) == 128).all()  # no edges
    jpeg = crop_resolution.degrade(photo, "noise+jpeg", np.random.default_rng(1))
    assert jpeg.shape == photo.shape and jpeg.dtype == np.uint8 and not np.array_equal(jpeg, noisy)
    with pytest.raises(ValueError, match="unknown condition"):
        crop_resolution.degrade(photo, "blur", np.random.default_rng(1))
