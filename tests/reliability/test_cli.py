"""Every command on wrong roots, broken label files, broken or foreign checkpoints, bad recipes.

Each case must end in one stderr line that names the file or value and the reason, exit code 2,
no traceback (``run_cli`` checks that), and nothing half-written.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from .reliability_helpers import TINY_TRAIN, assert_one_line_error


# ----------------------------------------------------------------------------- dataset roots
def data_commands(checkpoint, data, out):
    """Every command that reads a dataset, with ``--data``/positional ``data``."""
    return {
        "train": ["train", "--recipe", "ce", "--data", data, "--out", out / "run", *TINY_TRAIN],
        "eval": ["eval", "--checkpoint", checkpoint, "--data", data, "--device", "cpu"],
        "audit-data": ["audit-data", data],
        "index build": [
            "index",
            "build",
            "--checkpoint",
            checkpoint,
            "--data",
            data,
            "--out",
            out / "index",
            "--device",
            "cpu",
        ],
        "subclasses": [
            "subclasses",
            "--checkpoint",
            checkpoint,
            "--data",
            data,
            "--out",
            out / "sub",
            "--device",
            "cpu",
        ],
        "plot": [
            "plot",
            "embeddings",
            "--checkpoint",
            checkpoint,
            "--data",
            data,
            "--out",
            out / "e.png",
            "--device",
            "cpu",
        ],
    }


@pytest.mark.parametrize(
    "dataset, hint",
    [("fer2013", "fer2013.csv"), ("ferplus", "FER2013Train"), ("ckplus48", "S<subject>_<sequence>_<frame>.png")],
)
def test_a_wrong_dataset_root_is_one_line_with_the_layout(dataset, hint, tmp_path, tiny_checkpoint, run_cli):
    wrong = tmp_path / "photos from the holidays"  # exists, holds images, but not in the dataset's layout
    (wrong / "2023").mkdir(parents=True)
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(wrong / "2023" / "beach.png")
    missing = tmp_path / "no such root"
    for root in (wrong, missing):
        for _command, argv in data_commands(tiny_checkpoint, f"{dataset}={root}", tmp_path / "out").items():
            assert_one_line_error(run_cli(*argv), str(root), hint)
    assert not (tmp_path / "out").exists()  # nothing written by any refused command


def test_malformed_data_arguments(tmp_path, tiny_checkpoint, run_cli):
    commands = data_commands(tiny_checkpoint, "fer2013", tmp_path / "out")
    for command in ("train", "eval", "audit-data", "subclasses"):
        assert_one_line_error(run_cli(*commands[command]), "'fer2013'", "DATASET=ROOT")
    for command in ("train", "eval", "audit-data"):
        argv = data_commands(tiny_checkpoint, f"imagenet={tmp_path}", tmp_path / "out")[command]
        assert_one_line_error(run_cli(*argv), "unknown dataset 'imagenet'", "fer2013")


# ------------------------------------------------------------------------------ FER+ labels
def write_ferplus(root, rows) -> None:
    folder = root / "FER2013Test"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for row in rows:
        if row and row[0]:
            Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(folder / row[0])
    with open(folder / "label.csv", "w", newline="") as handle:
        csv.writer(handle, lineterminator="\r\n").writerows(rows)


GOOD_ROWS = [[f"fer{i:07d}.png", "(0, 0, 48, 48)", *[10 if c == i else 0 for c in range(10)]] for i in range(4)]


@pytest.mark.parametrize("change", ["one vote missing", "extra column", "no box column", "empty file"])
def test_a_ferplus_label_file_with_wrong_columns_is_named(change, tmp_path, run_cli):
    rows = {
        "one vote missing": [row[:-1] for row in GOOD_ROWS],
        "extra column": [[*row, 0] for row in GOOD_ROWS],
        "no box column": [[row[0], *row[2:]] for row in GOOD_ROWS],
        "empty file": [],
    }[change]
    write_ferplus(tmp_path, rows)
    if not rows:
        Image.fromarray(np.zeros((48, 48), np.uint8)).save(tmp_path / "FER2013Test" / "fer0000000.png")
    label_file = tmp_path / "FER2013Test" / "label.csv"
    line = assert_one_line_error(run_cli("audit-data", f"ferplus={tmp_path}"), str(label_file))
    assert ("12 columns" in line and "lines 1, 2, 3, 4" in line) if rows else "no test label rows" in line


def test_a_few_bad_ferplus_rows_are_skipped_with_a_warning(tmp_path, run_cli):
    rows = [*GOOD_ROWS[:3], [*GOOD_ROWS[3], 7]]  # the last row has an 13th column
    write_ferplus(tmp_path, rows)
    result = run_cli("audit-data", f"ferplus={tmp_path}", "--json")
    assert result.code == 0
    report = json.loads(result.out)
    assert report["total"] == 3  # the three good rows: neutral, happy, surprise votes
    counts = report["splits"]["test"]["classes"]
    assert {c: n for c, n in counts.items() if n} == {"neutral": 1, "happy": 1, "surprise": 1}
    (warning,) = [w for w in report["warnings"] if "malformed" in w]
    assert str(tmp_path / "FER2013Test" / "label.csv") in warning and "lines 4" in warning


# ------------------------------------------------------------------------------ checkpoints
def checkpoint_commands(checkpoint, data, folder, out):
    return {
        "eval": ["eval", "--checkpoint", checkpoint, "--data", data, "--device", "cpu"],
        "predict": ["predict", folder, "--checkpoint", checkpoint],
        "index build": [
            "index",
            "build",
            "--checkpoint",
            checkpoint,
            "--data",
            data,
            "--out",
            out / "index",
            "--device",
            "cpu",
        ],
        "export": ["export", "--checkpoint", checkpoint, "--out", out / "model.onnx"],
        "subclasses": [
            "subclasses",
            "--checkpoint",
            checkpoint,
            "--data",
            data,
            "--out",
            out / "sub",
            "--device",
            "cpu",
        ],
        "plot": [
            "plot",
            "embeddings",
            "--checkpoint",
            checkpoint,
            "--data",
            data,
            "--out",
            out / "e.png",
            "--device",
            "cpu",
        ],
    }


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("missing", "does not exist"),
        ("truncated", "truncated or corrupt"),
        ("empty", "empty"),
        ("not a checkpoint", "truncated or corrupt"),
        ("empty run directory", "holds no best.pt"),
    ],
)
def test_a_missing_or_broken_checkpoint_is_one_line(
    damage, reason, tmp_path, tiny_checkpoint, dataset_root, astronaut, run_cli
):
    data = tiny_checkpoint.read_bytes()
    path = {
        "missing": tmp_path / "gone.safetensors",
        "truncated": tmp_path / "half.safetensors",
        "empty": tmp_path / "best.pt",
        "not a checkpoint": tmp_path / "notes.pt",
        "empty run directory": tmp_path / "run",
    }[damage]
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "not a checkpoint":
        path.write_text("these are my notes, not a model\n")
    elif damage == "empty run directory":
        path.mkdir()
    photos = tmp_path / "photos"
    photos.mkdir()
    astronaut.save(photos / "face.png")
    for _command, argv in checkpoint_commands(path, f"fer2013={dataset_root}", photos, tmp_path / "out").items():
        assert_one_line_error(run_cli(*argv), str(path), reason)
    assert not (tmp_path / "out").exists()


def test_a_foreign_class_vocabulary_is_refused(tmp_path, tiny_checkpoint, run_cli):
    from fermetric.data.synthetic import make_synthetic_faces

    ck_root = make_synthetic_faces(tmp_path / "ck", layout="ckplus48", n_per_class=2, size=48, seed=0)
    # the 7-class FER2013 model was never trained on CK+'s "contempt": its accuracy would be meaningless
    result = run_cli(
        "eval",
        "--checkpoint",
        tiny_checkpoint,
        "--data",
        f"ckplus48={ck_root}",
        "--split",
        "all",
        "--out",
        tmp_path / "report",
    )
    assert_one_line_error(result, "['contempt']", "not trained on")
    assert not (tmp_path / "report").exists()


def test_an_index_refuses_a_model_with_other_preprocessing(tmp_path, tiny_checkpoint, astronaut, run_cli):
    """Same weights, other mean/std: the queries would be embedded differently from the index."""
    from fermetric.engine.checkpoint import load_weights, save_weights

    model_file = tmp_path / "model.safetensors"
    model_file.write_bytes(tiny_checkpoint.read_bytes())
    crops = tmp_path / "crops" / "happy"
    crops.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(crops / f"{i}.png")
    index = tmp_path / "faces.index"
    assert (
        run_cli(
            "index", "build", "--checkpoint", model_file, "--data", crops.parent, "--out", index, "--device", "cpu"
        ).code
        == 0
    )
    query = ["index", "query", index, crops / "0.png", "-k", "2", "--no-detect", "--json"]
    assert run_cli(*query).code == 0
    tensors, meta = load_weights(model_file)
    save_weights(model_file, tensors, {**meta, "preprocessing": {**meta["preprocessing"], "mean": 0.4}})
    assert_one_line_error(run_cli(*query), "preprocessing", "rebuild the index")
    save_weights(model_file, {k: v + 0.01 if v.is_floating_point() else v for k, v in tensors.items()}, meta)
    assert_one_line_error(run_cli(*query), "not the one this index was built with")


def test_index_on_empty_folders_and_unreadable_queries(tmp_path, tiny_checkpoint, run_cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    build = ["index", "build", "--checkpoint", tiny_checkpoint, "--out", tmp_path / "faces.index", "--device", "cpu"]
    assert_one_line_error(run_cli(*build, "--data", empty), f"nothing to index in {empty}")
    crops = tmp_path / "crops" / "happy"
    crops.mkdir(parents=True)
    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(crops / "0.png")
    (tmp_path / "zero.png").write_bytes(b"")
    assert run_cli(*build, "--data", crops.parent).code == 0
    query = ["index", "query", tmp_path / "faces.index"]
    assert_one_line_error(run_cli(*query, tmp_path / "zero.png", "--no-detect"), str(tmp_path / "zero.png"), "empty")
    assert_one_line_error(run_cli(*query, crops / "0.png"), str(crops / "0.png"), "no face found", "--no-detect")
    assert_one_line_error(run_cli("index", "query", empty, crops / "0.png"), str(empty), "not a fermetric index")


# ---------------------------------------------------------------------------------- recipes
@pytest.mark.parametrize(
    "argv, needles",
    [
        (["--recipe", "resnet-magic"], ["unknown recipe 'resnet-magic'", "tcl-full"]),
        (["--recipe", "ce", "--set", "optim.lr"], ["'optim.lr'", "key.sub=value"]),
        (["--recipe", "ce", "--set", "optim.lr=fast"], ["recipe.optim.lr", "number", "'fast'"]),
        (["--recipe", "ce", "--set", "optim.momentun=0.9"], ["'momentun'", "momentum"]),
        (["--recipe", "ce", "--set", "data.input_size=[48"], ["'data.input_size=[48'", "YAML"]),
        (["--recipe", "ce", "--set", "data.input_size=4.5"], ["recipe.data.input_size", "integer"]),
        (["--recipe", "ce", "--set", "optim=5"], ["recipe.optim", "mapping"]),
        (["--recipe", "ce", "--set", "optim.lr.warmup=1"], ["optim.lr is not a group"]),
        (["--recipe", "ce", "--set", "data.augment.scale=[0.9]"], ["recipe.data.augment.scale", "2 values"]),
        (["--recipe", "ce", "--set", "amp=sometimes"], ["recipe.amp", "true or false"]),
        (["--recipe", "ce", "--set", "model.backbone=resnet9000"], ["unknown backbone 'resnet9000'"]),
        (["--recipe", "ce", "--set", "loss.name=magic"], ["magic"]),
        (["--recipe", "ce", "--epochs", "0"], ["epochs", ">= 1"]),
    ],
)
def test_bad_recipes_and_overrides_are_refused_before_any_work(argv, needles, tmp_path, dataset_root, run_cli):
    out = tmp_path / "run"
    result = run_cli("train", *argv, "--data", f"fer2013={dataset_root}", "--out", out, "--device", "cpu", "--quiet")
    assert_one_line_error(result, *needles)
    assert not out.exists() or not any(out.iterdir())


def test_a_broken_recipe_file_is_one_line(tmp_path, dataset_root, run_cli):
    cases = {
        "syntax.yaml": "epochs: [60\n",
        "list.yaml": "- ce\n- mtdml\n",
        "loop.yaml": f"base: {tmp_path / 'loop.yaml'}\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    for name, needle in {"syntax.yaml": "not valid YAML", "list.yaml": "mapping", "loop.yaml": "inherits"}.items():
        result = run_cli(
            "train",
            "--recipe",
            tmp_path / name,
            "--data",
            f"fer2013={dataset_root}",
            "--out",
            tmp_path / "run",
            "--quiet",
        )
        assert_one_line_error(result, name, needle)


# --------------------------------------------------------------------------- the last resort
def test_unexpected_failures_are_one_line_unless_debug(tmp_path, run_cli, monkeypatch):
    from fermetric.cli import info, main

    def broken(args):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'\n(second line)")

    monkeypatch.setattr(info, "run", broken)
    result = run_cli("info")
    assert result.code == 1 and len(result.err_lines) == 1
    assert "internal error: TypeError: unsupported operand" in result.err and "--debug" in result.err
    with pytest.raises(TypeError):  # --debug: the real exception and its traceback
        main(["--debug", "info"])

    def disk_full(args):
        raise OSError(28, "No space left on device", str(tmp_path / "out.json"))

    monkeypatch.setattr(info, "run", disk_full)
    assert_one_line_error(run_cli("info"), "No space left on device", "out.json")


@pytest.mark.slow
def test_a_real_process_prints_no_traceback_and_no_stray_warning(tmp_path, tiny_checkpoint, astronaut):
    """The installed entry point in a fresh process: stdout pure JSON lines, stderr the summary."""
    folder = tmp_path / "photos"
    folder.mkdir()
    astronaut.save(folder / "face.jpg")
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a photo")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
    done = subprocess.run(
        [sys.executable, "-m", "fermetric", "predict", str(folder), "--checkpoint", str(tiny_checkpoint), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["path"] for r in records] == [str(folder / "face.jpg")]
    assert done.stderr.splitlines()[-3:] == [
        "skipped 2:",
        f"  {folder / 'notes.jpg'}: not an image file (unknown or damaged format)",
        f"  {folder / 'zero.jpg'}: empty file (0 bytes)",
    ]


# ------------------------------------------------------------------ datasets with bad images
def test_a_broken_image_in_a_dataset_is_named_and_can_be_skipped(tmp_path, tiny_checkpoint, run_cli):
    from fermetric.data.base import DataWarning
    from fermetric.data.synthetic import make_synthetic_faces

    root = make_synthetic_faces(
        tmp_path / "fer", layout="fer2013", n_per_class=2, size=48, seed=0, classes=("happy", "sad")
    )
    broken = root / "test" / "happy" / "zz_cut.jpg"
    good = next((root / "test" / "happy").iterdir()).read_bytes()
    broken.write_bytes(good[: len(good) // 2])
    argv = ["eval", "--checkpoint", tiny_checkpoint, "--data", f"fer2013={root}", "--device", "cpu", "--json"]
    assert_one_line_error(run_cli(*argv), str(broken), "truncated", "--skip-bad")
    with pytest.warns(DataWarning, match="skipped 1 unreadable image.*zz_cut.jpg"):
        result = run_cli(*argv, "--skip-bad")
    assert result.code == 0 and json.loads(result.out)["n"] == 2  # the two intact test images


def test_warnings_are_one_line_too(run_cli, monkeypatch):
    """Python prints a warning as "file:line: Category: message" plus the source line; the CLI as one line."""
    import warnings

    from fermetric.cli import info
    from fermetric.data.base import DataWarning

    def warns(args):
        print(
            warnings.formatwarning("3 images\nskipped", DataWarning, "/x/loader.py", 142, "warn(...)"),
            end="",
            file=sys.stderr,
        )
        return 0

    monkeypatch.setattr(info, "run", warns)
    assert run_cli("info").err == "fermetric info: warning: 3 images skipped\n"
    assert "loader.py:142: DataWarning" in run_cli("--debug", "info").err  # --debug: Python's own form


def test_train_init_from_fine_tunes_a_model_on_other_classes(tmp_path, tiny_checkpoint, dataset_root, run_cli):
    """--init-from: the source's network and preprocessing, a new classifier, TCL's attention fresh."""
    import json

    from fermetric.data.synthetic import make_synthetic_faces
    from fermetric.engine import checkpoint as ckpt

    three = make_synthetic_faces(tmp_path / "three", layout="folder-split", n_per_class=4, size=48, seed=1,
                                 classes=("happy", "sad", "angry"))  # fmt: skip
    out = tmp_path / "tuned"
    result = run_cli(
        "train", "--recipe", "tcl-full", "--data", f"folder={three}", "--init-from", tiny_checkpoint,
        "--out", out, "--epochs", "1", "--max-steps", "1", "--quiet", "--set", "optim.lr=1e-12", "--set", "data.batch_size=8",
    )  # fmt: skip
    assert result.code == 0, result.err
    meta = json.loads((out / "results.json").read_text()).get("meta") or ckpt.read_source(out)[1]
    source_weights, source_meta, _ = ckpt.read_source(tiny_checkpoint)
    assert meta["recipe"]["model"]["backbone"] == "tiny" and meta["recipe"]["model"]["attention"] is True
    assert meta["recipe"]["data"]["input_size"] == source_meta["recipe"]["data"]["input_size"]
    assert meta["init_from"] == str(tiny_checkpoint)
    assert meta["init_new_modules"] == ["attention", "classifier"]
    tuned, _, _ = ckpt.read_source(out)
    name = next(k for k in source_weights if k.startswith("backbone.") and source_weights[k].is_floating_point())
    torch.testing.assert_close(tuned[name], source_weights[name], rtol=0, atol=1e-6)  # lr ~ 0: kept
    assert tuned["classifier.linear.weight"].shape[0] == 3 != source_weights["classifier.linear.weight"].shape[0]
    bad = run_cli(
        "train", "--recipe", "ce", "--data", f"fer2013={dataset_root}", "--init-from", tmp_path / "nothing",
        "--out", tmp_path / "x", "--epochs", "1",
    )  # fmt: skip
    assert bad.code != 0 and "nothing" in bad.err and len(bad.err.strip().splitlines()) == 1
