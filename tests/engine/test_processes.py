"""Real processes: a training killed with SIGKILL resumes exactly; 2-process DDP (gloo) on the CPU."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fermetric import cli

from .engine_helpers import assert_same_run

HERE = Path(__file__).resolve().parent
TINY = [
    "--set",
    "model.backbone=tiny",
    "--set",
    "model.embedding_dim=32",
    "--set",
    "data.input_size=16",
    "--set",
    "data.batch_size=16",
    "--device",
    "cpu",
    "--quiet",
    "--deterministic",
    # in-process runs resolve auto to fp32 (tests/conftest.py); the subprocesses must agree
    "--precision",
    "fp32",
]


def _env() -> dict:
    # One torch thread in every process (the in-process runs use one too: exact comparisons).
    return {**os.environ, "OMP_NUM_THREADS": "1", "FERMETRIC_CACHE": "off", "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_resume_gives_the_same_run(folder_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("FERMETRIC_CACHE", "off")
    # Room for the kill: it lands within 3 measured epoch times after epoch 2, so even if the
    # machine's load drops and epochs get 5x faster meanwhile, the run cannot finish first.
    epochs = 20
    args = [
        "train",
        "--recipe",
        "tcl-full",
        "--data",
        f"folder={folder_dataset}",
        "--epochs",
        str(epochs),
        "--seed",
        "1",
        "--set",
        "ema=0.9",
        *TINY,
    ]
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    process = subprocess.Popen(
        [sys.executable, "-m", "fermetric", *args, "--out", str(killed)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def wait_for_epochs(count: int) -> float:
        deadline = time.monotonic() + 240
        while not (
            (killed / "metrics.jsonl").exists() and len((killed / "metrics.jsonl").read_text().splitlines()) >= count
        ):
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, f"the training never finished epoch {count}"
            time.sleep(0.01)
        return time.monotonic()

    try:
        # The kill lands anywhere in the next few epochs (checkpoint writes included), scaled by
        # this machine's measured epoch time so that a fast machine does not finish first.
        epoch_seconds = -wait_for_epochs(1) + wait_for_epochs(2)
        delay = random.uniform(0.0, 3.0 * epoch_seconds)
        time.sleep(delay)
        assert process.poll() is None and not (killed / "results.json").exists(), (
            f"finished before the kill ({delay=:.2f}s)"
        )
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    epochs_done = len((killed / "metrics.jsonl").read_text().splitlines())
    assert cli.main([*args, "--out", str(killed), "--resume"]) == 0, f"resume after kill at {delay=:.2f}s failed"
    assert cli.main([*args, "--out", str(reference)]) == 0
    assert 2 <= epochs_done < epochs
    assert_same_run(reference, killed)


@pytest.mark.slow
def test_ddp_two_processes_gloo(folder_dataset, tmp_path):
    out, probe = tmp_path / "run", tmp_path / "probe"
    probe.mkdir()
    # --standalone: torchrun picks a free local port itself (no window for another process to take it)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(HERE / "ddp_probe.py"),
        "train",
        "--recipe",
        "tcl-full",
        "--data",
        f"folder={folder_dataset}",
        "--out",
        str(out),
        "--epochs",
        "2",
        *TINY,
    ]
    done = subprocess.run(command, env={**_env(), "PROBE_DIR": str(probe)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    for epoch in ("0", "1"):  # every epoch, the ranks trained on disjoint, equally sized shards
        a, b = (set(r["seen"][epoch]) for r in ranks)
        assert a and len(a) == len(b) and not a & b
    assert ranks[0]["parameters"] == ranks[1]["parameters"]  # DDP kept the replicas identical
    assert ranks[0]["loss_parameters"] == ranks[1]["loss_parameters"]  # ...and the learnable centres
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2 and results["epochs_completed"] == 2
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # 96 training images, 16 per rank-batch, 2 ranks: 3 steps per epoch, 96 images counted per epoch.
    assert [h["step"] for h in history] == [3, 6]
    assert all(h["images_per_second"] * h["seconds"] == pytest.approx(96) for h in history)
