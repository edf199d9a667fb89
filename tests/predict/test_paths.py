"""Files, folders, videos and the `fermetric predict` command (tiny random model)."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from fermetric.cli import main
from fermetric.predict import expand_paths

CLASSES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry")


@pytest.fixture
def photo_folder(tmp_path, astronaut_small, noise_image):
    """photos/face.png, photos/sub/noise.png, a broken JPEG, a hidden and a non-image file."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(astronaut_small).save(root / "face.png")
    Image.fromarray(noise_image).save(root / "sub" / "noise.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "._face.png").write_bytes(b"AppleDouble metadata, not an image")
    (root / "notes.txt").write_text("not an image")
    return root


def write_video(path, frames, fps=10.0):
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_expand_paths_walks_folders_sorted_and_reports_missing(photo_folder, tmp_path):
    files, skipped = expand_paths([photo_folder, tmp_path / "missing.jpg", photo_folder / "notes.txt"])
    names = [p.relative_to(photo_folder).as_posix() for p, _ in files]
    # folders: image/video extensions only, hidden files skipped, sorted; named files: always tried
    assert names == ["broken.jpg", "face.png", "sub/noise.png", "notes.txt"]
    assert [root for _, root in files] == [photo_folder] * 3 + [None]
    assert skipped == [(str(tmp_path / "missing.jpg"), "no such file or folder")]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert expand_paths([empty]) == ([], [(str(empty), "folder holds no image or video files")])


def test_folder_run_goes_on_past_bad_files(predictor, photo_folder):
    report = predictor.predict_paths([photo_folder])
    assert report.files == [str(photo_folder / "face.png"), str(photo_folder / "sub" / "noise.png")]
    ((path, reason),) = report.skipped
    assert path == str(photo_folder / "broken.jpg") and reason and not reason.startswith(path)
    assert report.no_face == [(str(photo_folder / "sub" / "noise.png"), None)]
    assert len(report.records) == 1
    record = report.records[0]
    assert record["path"] == str(photo_folder / "face.png") and record["frame"] is None
    # the same numbers as predicting the file alone
    alone = predictor.predict(photo_folder / "face.png")[0]
    assert {k: record[k] for k in alone} == alone
    assert report.class_counts() == {c: int(c == record["label"]) for c in CLASSES}


def test_video_is_sampled_every_n_frames(predictor, tmp_path, astronaut_small, noise_image):
    noise = cv2.resize(noise_image, (256, 256))
    frames = [astronaut_small if i % 4 == 0 else noise for i in range(9)]  # faces in frames 0, 4, 8
    video = write_video(tmp_path / "clip.avi", frames, fps=10.0)
    report = predictor.predict_paths([video], every=2)
    assert report.files == [str(video)] and report.frames == 5  # frames 0, 2, 4, 6, 8
    assert [r["frame"] for r in report.records] == [0, 4, 8]
    assert [r["time"] for r in report.records] == [0.0, 0.4, 0.8]
    assert report.no_face == [(str(video), 2), (str(video), 6)]
    assert len({r["label"] for r in report.records}) == 1  # the same face in every sampled frame
    every_frame = predictor.predict_paths([video], every=1)
    assert every_frame.frames == 9 and [r["frame"] for r in every_frame.records] == [0, 4, 8]


def test_unreadable_video_is_skipped(predictor, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    report = predictor.predict_paths([bad])
    assert report.files == [] and report.skipped[0][0] == str(bad)


def test_cli_json_lines(tiny_checkpoint, photo_folder, capsys):
    assert main(["predict", str(photo_folder), "--checkpoint", str(tiny_checkpoint), "--json"]) == 0
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    lines = [r for r in records if r["face"] is not None]
    assert len(lines) == 1 and len(records) == 2  # plus the no-face record of sub/noise.png
    assert [r["reason"] for r in records if r["face"] is None] == ["no face found"]
    assert lines[0]["path"] == str(photo_folder / "face.png") and lines[0]["label"] in CLASSES
    assert sum(lines[0]["probabilities"].values()) == pytest.approx(1.0)
    # the summary goes to stderr, so stdout stays machine-readable
    assert "faces found: 1" in err and "broken.jpg" in err and "no face found in 1" in err


def test_cli_min_face_reaches_the_detector(tiny_checkpoint, tmp_path, astronaut, capsys):
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    assert main(["predict", str(photo), "--checkpoint", str(tiny_checkpoint), "--json", "--min-face", "60"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert main(["predict", str(photo), "--checkpoint", str(tiny_checkpoint), "--json", "--min-face", "300"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["face"] is None and "no face found in 1" in err
    assert (
        main(
            ["predict", str(photo), "--checkpoint", str(tiny_checkpoint), "--detector", "mediapipe", "--min-face", "30"]
        )
        == 2
    )
    assert "min_face" in capsys.readouterr().err


def test_cli_prior_reaches_the_predictor(tiny_checkpoint, photo_folder, tmp_path, capsys):
    from fermetric.engine.checkpoint import load_weights, save_weights

    face = photo_folder / "face.png"
    argv = ["predict", str(face), "--json", "--no-detect", "--backend", "torch", "--precision", "fp32"]
    assert main([*argv, "--checkpoint", str(tiny_checkpoint), "--prior", "uniform"]) == 2
    assert "class_prior" in capsys.readouterr().err  # refused before any image is read
    tensors, meta = load_weights(tiny_checkpoint)
    trained = np.array([0.3, 0.3, 0.1, 0.1, 0.1, 0.05, 0.05])
    with_prior = save_weights(tmp_path / "p.safetensors", tensors, {**meta, "class_prior": list(trained)})
    records = {}
    for prior in ("train", "uniform"):
        assert main([*argv, "--checkpoint", str(with_prior), "--prior", prior]) == 0
        records[prior] = json.loads(capsys.readouterr().out.splitlines()[0])["probabilities"]
    plain, uniform = (np.array([records[p][c] for c in CLASSES]) for p in ("train", "uniform"))
    np.testing.assert_allclose(uniform, (plain / trained) / (plain / trained).sum(), rtol=1e-4, atol=1e-6)


def test_cli_csv_rows(tiny_checkpoint, photo_folder, tmp_path, astronaut_small):
    clip = write_video(tmp_path / "clip.avi", [astronaut_small] * 4)
    out = tmp_path / "out" / "faces.csv"
    code = main(
        [
            "predict",
            str(photo_folder / "face.png"),
            str(clip),
            "--checkpoint",
            str(tiny_checkpoint),
            "--csv",
            str(out),
            "--every",
            "2",
        ]
    )
    assert code == 0
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "path",
        "frame",
        "time",
        "face",
        "x0",
        "y0",
        "x1",
        "y1",
        "score",
        "label",
        *[f"p_{c}" for c in CLASSES],
        "embedding_norm",
    ]
    assert [(r["path"].endswith("face.png"), r["frame"]) for r in rows] == [(True, ""), (False, "0"), (False, "2")]
    for row in rows:
        assert sum(float(row[f"p_{c}"]) for c in CLASSES) == pytest.approx(1.0, abs=1e-5)
        assert max(CLASSES, key=lambda c: float(row[f"p_{c}"])) == row["label"]
        assert float(row["x0"]) < float(row["x1"]) and float(row["y0"]) < float(row["y1"])


def test_cli_annotate_draws_boxes(tiny_checkpoint, predictor, photo_folder, tmp_path, capsys):
    out = tmp_path / "annotated"
    assert main(["predict", str(photo_folder), "--checkpoint", str(tiny_checkpoint), "--annotate", str(out)]) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["photos/face.png", "photos/sub/noise.png"]
    original = np.asarray(Image.open(photo_folder / "face.png").convert("RGB"))
    drawn = np.asarray(Image.open(out / "photos" / "face.png").convert("RGB"))
    x0, y0, x1, y1 = (int(round(v)) for v in predictor.predict(photo_folder / "face.png")[0]["box"])
    green = [0, 255, 0]
    assert (drawn[(y0 + y1) // 2, x0] == green).all() and (drawn[(y0 + y1) // 2, x1 - 1] == green).all()
    changed = np.any(drawn != original, axis=2)
    ys, xs = np.nonzero(changed)
    assert xs.min() >= x0 - 2 and ys.max() <= y1 + 2  # box and label only, nothing elsewhere
    # nothing drawn on the face-less image
    np.testing.assert_array_equal(
        np.asarray(Image.open(out / "photos" / "sub" / "noise.png")),
        np.asarray(Image.open(photo_folder / "sub" / "noise.png")),
    )
    table = capsys.readouterr().out
    assert "no face found" in table and "faces found: 1" in table


def test_cli_fails_in_one_line_when_nothing_is_readable(tiny_checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    code = main(["predict", str(bad), str(tmp_path / "missing.png"), "--checkpoint", str(tiny_checkpoint)])
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and "nothing could be read" in err
    assert "bad.jpg" in err and "missing.png" in err


def test_cli_no_detect_takes_whole_images(tiny_checkpoint, tmp_path, capsys):
    crop = np.random.default_rng(5).integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(crop).save(tmp_path / "crop.png")
    assert (
        main(["predict", str(tmp_path / "crop.png"), "--checkpoint", str(tiny_checkpoint), "--no-detect", "--json"])
        == 0
    )
    record = json.loads(capsys.readouterr().out)
    assert record["box"] == [0.0, 0.0, 32.0, 32.0] and record["score"] is None
