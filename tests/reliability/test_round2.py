"""What a new user hit on a fresh clone (reliability, round two): each case failed before its fix.

FIFOs and symlink loops, symlinked dataset folders, progress on long steps, file modes, scoring
a model on a dataset with an extra class, no-face records in JSON, and the smaller points.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from .reliability_helpers import CLASSES, TINY_TRAIN, assert_one_line_error, json_records


@contextlib.contextmanager
def fails_instead_of_hanging(seconds: int = 60):
    """A blocking open() (a FIFO without writer) becomes a test failure, not a hung suite."""

    def alarm(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo") or sys.platform == "win32", reason="needs POSIX FIFOs")


# ------------------------------------------------------------------------- non-regular files
@needs_fifo
def test_a_fifo_in_a_folder_is_skipped_with_its_reason(tmp_path, astronaut, tiny_checkpoint, run_cli):
    folder = tmp_path / "in"
    folder.mkdir()
    astronaut.save(folder / "a_face.png")
    os.mkfifo(folder / "fifo.jpg")
    with fails_instead_of_hanging():
        for extra in ([], ["--no-detect"], ["--json"]):
            result = run_cli("predict", folder, "--checkpoint", tiny_checkpoint, *extra)
            assert result.code == 0, result.err
            text = result.out + result.err
            assert f"  {folder / 'fifo.jpg'}: is a FIFO, not a regular file" in text.splitlines()
        index = run_cli(
            "index",
            "build",
            "--checkpoint",
            tiny_checkpoint,
            "--data",
            folder,
            "--out",
            tmp_path / "index",
            "--device",
            "cpu",
        )
        assert index.code == 0, index.err
        assert "indexed 1 faces" in index.out


@needs_fifo
def test_read_image_refuses_a_fifo_at_once(tmp_path):
    from fermetric.data import read_image
    from fermetric.errors import ImageError

    os.mkfifo(tmp_path / "pipe.png")
    with fails_instead_of_hanging(), pytest.raises(ImageError, match="is a FIFO, not a regular file"):
        read_image(tmp_path / "pipe.png")


def test_symlinked_class_folders_are_followed_and_loops_reported(tmp_path, astronaut, tiny_checkpoint, run_cli):
    from fermetric.data import load_dataset
    from fermetric.data.synthetic import make_synthetic_faces
    from fermetric.predict import expand_paths

    real = make_synthetic_faces(
        tmp_path / "real", layout="fer2013", n_per_class=2, size=48, seed=0, classes=("happy", "sad")
    )
    linked = tmp_path / "linked"
    (linked / "train").mkdir(parents=True)
    for class_folder in (real / "train").iterdir():
        (linked / "train" / class_folder.name).symlink_to(class_folder.resolve(), target_is_directory=True)
    (real / "train" / "happy" / "loop").symlink_to(real / "train" / "happy", target_is_directory=True)  # to itself
    direct = load_dataset("fer2013", real, "train")
    through_links = load_dataset("fer2013", linked, "train")
    assert len(through_links) == len(direct) == 4
    np.testing.assert_array_equal(np.sort(through_links.labels), np.sort(direct.labels))

    files, skipped = expand_paths([linked])
    assert len(files) == 4
    assert any("symlink loop" in reason for _, reason in skipped)
    loop = tmp_path / "self"
    loop.symlink_to(loop)
    files, skipped = expand_paths([loop])
    assert files == [] and skipped == [(str(loop), "symlink loop")]


# ---------------------------------------------------------------------------------- progress
def test_embedding_reports_progress_and_bars_only_on_a_terminal(monkeypatch):
    from fermetric.config import load_recipe
    from fermetric.data.transforms import Preprocessing
    from fermetric.engine.evaluate import embed
    from fermetric.engine.progress import progress_bar
    from fermetric.models import create_model

    model = create_model(load_recipe("ce", ["model.backbone=tiny", "model.embedding_dim=8"]).model, num_classes=3)
    done = []
    images = np.zeros((70, 16, 16), np.uint8)
    embed(model, images, Preprocessing(16, 0.5, 0.25), batch_size=32, progress=done.append)
    assert done == [32, 32, 6]

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    with progress_bar("x") as callback:
        assert callback is None  # piped or logged: no bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    with progress_bar("x", enabled=False) as callback:
        assert callback is None  # --json / --quiet
    with progress_bar("x", total=3) as callback:
        assert callable(callback)
        callback(3)


# -------------------------------------------------------------------------------- file modes
@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_umask_mode(tmp_path, umask, expected):
    from fermetric.engine import checkpoint as ckpt
    from fermetric.fileio import atomic_write

    previous = os.umask(umask)
    try:
        atomic_write(tmp_path / "results.json", b"{}\n")
        ckpt.save_training(tmp_path, {"step": 1}, is_best=True)
    finally:
        os.umask(previous)
    for name in ("results.json", "last.pt", "best.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_a_training_run_writes_files_with_the_normal_mode(trained_run):
    from fermetric.fileio import current_umask

    expected = 0o666 & ~current_umask()
    for name in ("last.pt", "best.pt", "model.safetensors", "results.json", "metrics.jsonl"):
        assert stat.S_IMODE((trained_run / name).stat().st_mode) == expected, name


# ------------------------------------------------------------------ models across datasets
def test_eval_classes_shared_scores_the_common_classes(tmp_path, tiny_checkpoint, run_cli):
    from fermetric.data.synthetic import make_synthetic_faces

    root = make_synthetic_faces(tmp_path / "ferplus", layout="ferplus", n_per_class=4, size=48, seed=0)
    argv = ["eval", "--checkpoint", tiny_checkpoint, "--data", f"ferplus={root}", "--device", "cpu", "--json"]
    refused = run_cli(*argv)
    assert_one_line_error(refused, "contempt", "--classes shared")
    result = run_cli(*argv, "--classes", "shared")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["left_out"]["classes"] == ["contempt"] and report["left_out"]["images"] > 0
    from fermetric.data import load_dataset

    total = len(load_dataset("ferplus", root, "test"))
    assert report["n"] + report["left_out"]["images"] == total
    assert set(report["classes"]) <= set(CLASSES)


def test_json_keeps_a_record_for_an_image_without_a_face(tmp_path, astronaut, tiny_checkpoint, run_cli):
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(noise)
    astronaut.save(tmp_path / "face.png")
    result = run_cli("predict", tmp_path / "face.png", noise, "--checkpoint", tiny_checkpoint, "--json")
    assert result.code == 0
    records = [json.loads(line) for line in result.out.splitlines()]
    assert len(records) == 2
    (empty,) = [r for r in records if r["path"] == str(noise)]
    assert empty["face"] is None and empty["label"] is None and empty["reason"] == "no face found"


# ----------------------------------------------------------------------------------- smaller
def test_json_and_csv_together(tmp_path, astronaut, tiny_checkpoint, run_cli):
    astronaut.save(tmp_path / "face.png")
    result = run_cli(
        "predict", tmp_path / "face.png", "--checkpoint", tiny_checkpoint, "--json", "--csv", tmp_path / "faces.csv"
    )
    assert result.code == 0, result.err
    assert len(json_records(result.out)) == 1
    assert len((tmp_path / "faces.csv").read_text().splitlines()) == 2  # header + the face


def test_an_animated_gif_says_only_its_first_frame_is_read(tmp_path):
    from fermetric.data import read_image
    from fermetric.data.imageio import ImageWarning

    frames = [Image.fromarray(np.full((20, 20), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.warns(ImageWarning, match="2 frames"):
        image = read_image(tmp_path / "anim.gif")
    assert int(image.mean()) == 10


def test_a_failed_run_leaves_no_empty_output_folder(tmp_path, dataset_root, run_cli):
    out = tmp_path / "never"
    result = run_cli(
        "train",
        "--recipe",
        "ce",
        "--data",
        f"fer2013={dataset_root}",
        "--out",
        out,
        *TINY_TRAIN,
        "--set",
        "model.backbone=nosuchnet",
    )
    assert_one_line_error(result, "nosuchnet")
    assert not out.exists()


def test_the_ck_fold_error_names_the_train_option(tmp_path, run_cli):
    from fermetric.data.synthetic import make_synthetic_faces

    root = make_synthetic_faces(tmp_path / "ck", layout="ckplus48", n_per_class=3, size=48, seed=0)
    line = assert_one_line_error(
        run_cli("train", "--recipe", "ce", "--data", f"ckplus48={root}", "--out", tmp_path / "run", *TINY_TRAIN)
    )
    assert "--fold" in line and "split 'all'" not in line


def test_recipe_descriptions_do_not_name_a_backbone():
    from fermetric.config import load_recipe

    recipe = load_recipe("ce", ["model.backbone=tiny"])
    assert "ResNet" not in recipe.description


def test_threads_option_is_applied_and_restored(tmp_path, dataset_root, monkeypatch):
    from fermetric.cli import main
    from fermetric.engine import train as train_module

    torch.set_num_threads(2)
    seen = []
    real = train_module.Trainer.run

    def spy(self):
        seen.append(torch.get_num_threads())
        return real(self)

    monkeypatch.setattr(train_module.Trainer, "run", spy)
    assert (
        main(
            [
                "train",
                "--recipe",
                "ce",
                "--data",
                f"fer2013={dataset_root}",
                "--out",
                str(tmp_path / "r"),
                "--epochs",
                "1",
                "--max-steps",
                "1",
                "--quiet",
                *TINY_TRAIN,
            ]
        )
        == 0
    )  # TINY_TRAIN: --threads 1
    assert seen == [1] and torch.get_num_threads() == 2


def test_every_cli_option_has_help_with_its_default():
    import argparse

    from fermetric.cli import build_parser

    def walk(parser, where):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{where} {name}")
            elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                yield where, action

    checked = 0
    for where, action in walk(build_parser(), "fermetric"):
        assert action.help, (where, action.option_strings or action.dest)
        if action.default not in (None, False, []) and not action.required:
            assert "default" in action.help, (where, action.option_strings, action.help)
        checked += 1
    assert checked > 80
