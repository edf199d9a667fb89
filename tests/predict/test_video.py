"""Videos, streams and cameras: frame budgets, container timestamps, annotated video out,
per-video summaries and the batched ``predict_frames`` API. Videos are generated with OpenCV."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from fermetric.cli import main


def write_video(path, frames, fps: float = 10.0):
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def face_video(tmp_path_factory, astronaut_small):
    """12 frames at 10 fps: 8 with the astronaut, then 4 blank frames (no face)."""
    blank = np.full_like(astronaut_small, 127)
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", [astronaut_small] * 8 + [blank] * 4)


def test_video_frames_are_timed_budgeted_and_summarised(tiny_checkpoint, face_video, capsys):
    assert main(["predict", str(face_video), "--checkpoint", str(tiny_checkpoint), "--json", "--every", "2"]) == 0
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["frame"] for r in records] == [0, 2, 4, 6, 8, 10]
    assert [r["time"] for r in records] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])  # container times
    assert [r["face"] is None for r in records] == [False] * 4 + [True] * 2
    label = records[0]["label"]
    assert f"{face_video}: 6 frames analysed; {label} 67%, no face 33%" in err.splitlines()
    assert (
        main(
            [
                "predict",
                str(face_video),
                "--checkpoint",
                str(tiny_checkpoint),
                "--json",
                "--every",
                "1",
                "--max-frames",
                "3",
            ]
        )
        == 0
    )
    assert [json.loads(line)["frame"] for line in capsys.readouterr().out.splitlines()] == [0, 1, 2]


def test_annotated_video_out(tiny_checkpoint, face_video, tmp_path, capsys):
    out = tmp_path / "annotated.mp4"
    assert (
        main(["predict", str(face_video), "--checkpoint", str(tiny_checkpoint), "--every", "3", "--annotate", str(out)])
        == 0
    )
    capture = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 4  # frames 0, 3, 6, 9
    assert frames[0].shape[:2] == (256, 256)
    green = (frames[0][:, :, 1] > 200) & (frames[0][:, :, 0] < 80) & (frames[0][:, :, 2] < 80)
    assert green.sum() > 100  # the drawn box
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), frames[0])
    capsys.readouterr()
    assert main(["predict", str(photo), "--checkpoint", str(tiny_checkpoint), "--annotate", str(out)]) == 2
    assert "pass only videos or streams" in capsys.readouterr().err


def test_a_camera_index_is_read_like_a_video(tiny_checkpoint, face_video, monkeypatch, capsys):
    opened = []
    real = cv2.VideoCapture

    def fake_camera(source, *args):
        opened.append(source)
        return real(str(face_video)) if source == 0 else real(source, *args)

    monkeypatch.setattr(cv2, "VideoCapture", fake_camera)
    assert (
        main(["predict", "0", "--checkpoint", str(tiny_checkpoint), "--json", "--every", "1", "--max-frames", "2"]) == 0
    )
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert opened == [0] and [r["frame"] for r in records] == [0, 1] and records[0]["path"] == "0"
    assert main(["predict", "rtsp://127.0.0.1:9/none", "--checkpoint", str(tiny_checkpoint)]) == 2
    assert "not a readable stream or camera" in capsys.readouterr().err


def test_predict_frames_batches_across_frames_and_keeps_order(predictor, astronaut_small, monkeypatch):
    blank = np.full_like(astronaut_small, 127)
    frames = [astronaut_small, blank, astronaut_small, astronaut_small, blank]
    calls = []
    real = predictor.run_crops

    def counting(crops):
        calls.append(len(crops))
        return real(crops)

    monkeypatch.setattr(predictor, "run_crops", counting)
    results = list(predictor.predict_frames(iter(frames), batch_frames=4))
    assert [len(r) for r in results] == [1, 0, 1, 1, 0]
    assert calls == [3, 0]  # frames 1-4 in one call, frame 5 (no face) in the second
    single = predictor.predict(astronaut_small)
    assert results[0][0]["label"] == single[0]["label"] and results[0][0]["box"] == single[0]["box"]
    assert results[0][0]["probabilities"] == pytest.approx(single[0]["probabilities"], abs=1e-6)


def test_on_frame_gets_every_analysed_image_annotated(predictor, face_video, tmp_path, astronaut_small):
    from PIL import Image

    photo = tmp_path / "face.png"
    Image.fromarray(astronaut_small).save(photo)
    shown = []
    report = predictor.predict_paths(
        [photo, face_video], every=3, on_frame=lambda canvas, path, frame: shown.append((canvas, path, frame))
    )
    assert [frame for _, _, frame in shown] == [None] + [r for r in range(0, 3 * len(shown) - 3, 3)]
    assert len(shown) == report.frames  # one call per analysed photo or frame, in order
    canvas, path, _ = shown[0]
    assert path == str(photo) and canvas.dtype == np.uint8 and canvas.shape == (*astronaut_small.shape[:2], 3)
    if report.records and report.records[0]["path"] == str(photo):
        assert not np.array_equal(canvas, np.asarray(Image.open(photo).convert("RGB")))  # boxes drawn


def test_show_is_refused_without_a_window_and_shows_frames_with_one(tiny_checkpoint, face_video, monkeypatch, capsys):
    import cv2

    from fermetric.cli import predict as cli_predict

    argv = ["predict", str(face_video), "--checkpoint", str(tiny_checkpoint), "--every", "3", "--show"]
    monkeypatch.setattr(cli_predict, "has_gui", lambda cv2: False)
    monkeypatch.setenv("DISPLAY", ":0")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install opencv-python" in err[0] and "--annotate out.mp4" in err[0]

    calls = []
    monkeypatch.setattr(cli_predict, "has_gui", lambda cv2: True)
    monkeypatch.setattr(cv2, "imshow", lambda title, image: calls.append(("show", image.shape)))
    keys = iter([-1, ord("q")])  # the second frame's key press closes the window
    monkeypatch.setattr(cv2, "waitKey", lambda delay: next(keys, -1))
    monkeypatch.setattr(cv2, "destroyWindow", lambda title: calls.append(("close", title)))
    assert main(argv) == 0
    assert [c[0] for c in calls] == ["show", "show", "close"]  # closed by q; the analysis went on
    assert "frames analysed" in capsys.readouterr().out


def test_a_frame_bar_counts_video_frames_and_stays_hidden_for_photos(
    tiny_checkpoint, face_video, tmp_path, monkeypatch
):
    import io
    import sys

    from PIL import Image

    from fermetric.engine.progress import progress_bar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    photo = tmp_path / "face.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(photo)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress_bar("frames", unit="frame", lazy=True) as callback:
        pass
    assert terminal.getvalue() == ""  # lazy: nothing drawn without an update
    assert main(["predict", str(photo), "--checkpoint", str(tiny_checkpoint), "--no-detect"]) == 0
    assert "frames" not in terminal.getvalue()  # photos only: the frame bar never appears
    assert main(["predict", str(face_video), "--checkpoint", str(tiny_checkpoint), "--every", "3"]) == 0
    drawn = terminal.getvalue()
    assert "frames" in drawn and "frame/s" in drawn  # the rate of a video job
    assert callback is not None


def test_frame_progress_is_called_once_per_analysed_frame(predictor, face_video):
    counted = []
    report = predictor.predict_paths([face_video], every=2, frame_progress=counted.append)
    assert counted == [1] * 6 and report.frames == 6
