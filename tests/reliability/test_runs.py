"""Killed and broken training runs through `fermetric train`/`eval`: nothing lost, clear refusals.

Already covered elsewhere (not repeated here): SIGKILL at a random moment then ``--resume`` gives
the uninterrupted run bit for bit, and two same-seed CPU runs are identical
(tests/engine/test_processes.py, test_train.py); a corrupt ``last.pt`` falls back
to ``last.prev.pt``; damaged cache entries are rebuilt (tests/data/test_cache.py). These
tests add the command-line view of the remaining cases.
"""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

from fermetric import __version__
from fermetric.config import load_recipe
from fermetric.engine import checkpoint as ckpt
from fermetric.engine import rundir
from fermetric.engine import train as train_module
from tests.training_faults import nan_losses_at

from .reliability_helpers import RUN_CLASSES, TINY_TRAIN, assert_one_line_error

SETS = [value for flag, value in zip(TINY_TRAIN, TINY_TRAIN[1:]) if flag == "--set"]


def train_args(root, out, *extra):
    return ["train", "--recipe", "ce", "--data", f"fer2013={root}", "--out", out, "--epochs", "2", *TINY_TRAIN, *extra]


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A private copy of the finished run, free to damage."""
    return shutil.copytree(trained_run, tmp_path / "run")


def test_every_checkpoint_records_version_recipe_classes_and_preprocessing(trained_run, dataset_root):
    from fermetric.data import load_dataset

    classes = list(load_dataset("fer2013", dataset_root, "train").classes)  # FER2013's vocabulary
    recipe = load_recipe("ce", [*SETS, "epochs=2"]).to_dict()
    preprocessing = {"size": 16, "mean": recipe["data"]["mean"], "std": recipe["data"]["std"]}
    metas = {name: ckpt.load(trained_run / name)["meta"] for name in ("best.pt", "last.pt", "last.prev.pt")}
    metas["model.safetensors"] = ckpt.load_weights(trained_run / "model.safetensors")[1]
    for name, meta in metas.items():
        assert meta["fermetric_version"] == __version__ and meta["format"] == ckpt.FORMAT_VERSION, name
        assert json.loads(json.dumps(meta["recipe"])) == json.loads(json.dumps(recipe)), name  # tuples as lists
        assert meta["classes"] == classes, name
        assert meta["preprocessing"] == preprocessing, name
        assert meta["dataset"] == "fer2013" and meta["seed"] == 0, name
    results = json.loads((trained_run / "results.json").read_text())
    assert results["fermetric_version"] == __version__ and results["classes"] == classes
    assert results["recipe_config"] == json.loads(json.dumps(recipe))
    # the weights file alone rebuilds the model: one logit per recorded class
    import torch

    model, meta = ckpt.load_model(trained_run / "model.safetensors")
    with torch.no_grad():
        logits = model(torch.zeros(2, 1, 16, 16))["logits"]
    assert logits.shape == (2, len(classes))


def test_a_truncated_best_checkpoint_is_a_clear_error_for_eval(run_copy, dataset_root, run_cli):
    best = run_copy / "best.pt"
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    for source in (best, run_copy):  # the file itself, or the run directory that selects it
        result = run_cli("eval", "--checkpoint", source, "--data", f"fer2013={dataset_root}", "--device", "cpu")
        assert_one_line_error(result, str(best), "truncated or corrupt", "use another checkpoint")
    # the intact last.pt of the same run still evaluates
    result = run_cli(
        "eval", "--checkpoint", run_copy / "last.pt", "--data", f"fer2013={dataset_root}", "--device", "cpu", "--json"
    )
    assert result.code == 0 and json.loads(result.out)["n"] == len(RUN_CLASSES) * 2


def test_resume_with_every_checkpoint_damaged_is_refused(run_copy, dataset_root, run_cli):
    (run_copy / "results.json").unlink()
    for name in ("last.pt", "last.prev.pt"):
        data = (run_copy / name).read_bytes()
        (run_copy / name).write_bytes(data[: len(data) // 3])
    before = {p.name: p.read_bytes() for p in run_copy.iterdir()}
    result = run_cli(*train_args(dataset_root, run_copy, "--quiet", "--resume"))
    assert_one_line_error(result, f"no readable checkpoint in {run_copy}", "last.pt", "last.prev.pt")
    assert {p.name: p.read_bytes() for p in run_copy.iterdir()} == before  # nothing overwritten


@pytest.mark.parametrize(
    "change, needle",
    [
        (["--set", "data.input_size=24"], "data.input_size"),
        (["--set", "data.mean=0.4"], "data.mean"),
        (["--seed", "1"], "seed 0"),
    ],
)
def test_resume_with_other_preprocessing_or_seed_is_refused(change, needle, run_copy, dataset_root, run_cli):
    before = (run_copy / "last.pt").read_bytes()
    result = run_cli(*train_args(dataset_root, run_copy, "--quiet", "--resume", *change))
    assert_one_line_error(result, str(run_copy / "last.pt"), needle, "choose another --out")
    assert (run_copy / "last.pt").read_bytes() == before


def test_resume_removes_temp_files_left_by_a_kill(run_copy, dataset_root, run_cli):
    """A kill during an atomic write leaves a hidden temp file; the resumed run cleans it up."""
    (run_copy / "results.json").unlink()
    leftovers = [
        run_copy / ".last.pt.k1ll3d.tmp",
        run_copy / ".best.pt.x7y8z9.tmp",
        run_copy / ".model.safetensors.abc123.tmp",
        run_copy / ".metrics.jsonl.q1w2e3.tmp",
    ]
    for path in leftovers:
        path.write_bytes(b"\0" * 1000)
    keep = run_copy / "notes.txt"  # anything else in the folder is the user's
    keep.write_text("mine")
    assert run_cli(*train_args(dataset_root, run_copy, "--quiet", "--resume")).code == 0
    assert not any(path.exists() for path in leftovers) and keep.read_text() == "mine"


def test_on_nan_skip_continues_and_reports_the_skipped_batches(tmp_path, dataset_root, run_cli, monkeypatch):
    monkeypatch.setattr(train_module.Trainer, "_losses", nan_losses_at({2}))  # epoch 1, batch 2 of 2
    out = tmp_path / "run"
    result = run_cli(*train_args(dataset_root, out, "--on-nan", "skip"))
    assert result.code == 0
    epoch_lines = [line for line in result.err.splitlines() if line.startswith("epoch ") and "| loss" in line]
    assert len(epoch_lines) == 2 and "skipped 1" in epoch_lines[0] and "skipped" not in epoch_lines[1]
    results = json.loads((out / "results.json").read_text())
    assert results["skipped_batches"] == 1 and results["epochs_completed"] == 2
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["skipped_batches"] for h in history] == [1, 0]
    assert [h["step"] for h in history] == [1, 3]  # a skipped batch takes no optimizer step


def test_on_nan_stop_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path, dataset_root, run_cli, monkeypatch):
    monkeypatch.setattr(train_module.Trainer, "_losses", nan_losses_at({3}))  # epoch 2, batch 1
    out = tmp_path / "run"
    result = run_cli(*train_args(dataset_root, out, "--quiet"))
    assert_one_line_error(result, "epoch 2, step 3", str(out / "last.pt"), "--on-nan skip")
    assert ckpt.load(out / "last.pt")["epoch"] == 1 and not (out / "results.json").exists()


def test_a_full_disk_is_reported_before_training_starts(tmp_path, dataset_root, run_cli, monkeypatch):
    class Usage:
        total, used, free = 100 * 2**30, 100 * 2**30 - 50 * 2**20, 50 * 2**20

    monkeypatch.setattr(rundir.shutil, "disk_usage", lambda path: Usage())
    steps = []
    monkeypatch.setattr(train_module.Trainer, "_train_epoch", lambda *a: steps.append(a))
    out = tmp_path / "run"
    result = run_cli(*train_args(dataset_root, out, "--quiet"))
    assert_one_line_error(result, str(out), "50 MiB free", "choose another --out")
    assert steps == [] and not out.exists()  # no epoch ran, nothing was written, no empty folder left


def test_a_truncated_dataset_cache_is_rebuilt_not_loaded(trained_run, dataset_root, tmp_path, run_cli, monkeypatch):
    from fermetric.data.base import DataWarning

    cache = tmp_path / "cache"
    monkeypatch.setenv("FERMETRIC_CACHE", str(cache))
    argv = ["eval", "--checkpoint", trained_run, "--data", f"fer2013={dataset_root}", "--device", "cpu", "--json"]
    first = run_cli(*argv)
    entries = sorted(cache.rglob("*.npy"))
    assert first.code == 0 and entries
    sizes = {path: path.stat().st_size for path in entries}
    for path in entries:  # an interrupted copy, a full disk...: half of every cached array is gone
        path.write_bytes(path.read_bytes()[: sizes[path] // 2])
    with pytest.warns(DataWarning, match="corrupt cache entry"):
        again = run_cli(*argv)
    assert again.code == 0
    assert json.loads(again.out)["accuracy"] == json.loads(first.out)["accuracy"]
    assert json.loads(again.out)["confusion"] == json.loads(first.out)["confusion"]
    for path in entries:  # rebuilt in full
        assert path.stat().st_size == sizes[path]
        assert np.load(path, mmap_mode="r").dtype == np.uint8
    # The healthy cache is memory-mapped read-only: no such array may reach torch.from_numpy (torch
    # prints a warning once per process for it, and a CPU tensor would alias read-only memory).
    import torch

    real_from_numpy = torch.from_numpy

    def from_writable_numpy(array):
        if isinstance(array, np.ndarray):
            assert array.flags.writeable, f"read-only array {array.shape} {array.dtype} handed to torch"
        return real_from_numpy(array)

    monkeypatch.setattr(torch, "from_numpy", from_writable_numpy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = run_cli(*argv)
        assert third.code == 0, third.err
        assert json.loads(third.out)["confusion"] == json.loads(first.out)["confusion"]
        assert run_cli(*train_args(dataset_root, tmp_path / "run", "--quiet", "--max-steps", "1")).code == 0
