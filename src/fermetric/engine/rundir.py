"""A training run's directory: its file names, the checks before a run starts, and cleanup.

Everything the engine writes lives in one ``--out`` folder: ``last.pt`` / ``last.prev.pt`` /
``best.pt`` (checkpoints, ``checkpoint.py``), ``metrics.jsonl`` (one line per epoch),
``results.json`` (the final evaluation) and ``model.safetensors`` (the selected weights).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..errors import TrainingError
from . import checkpoint as ckpt

METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
WEIGHTS_FILE = "model.safetensors"
#: Free space always required in the output directory, whatever the model size.
MIN_FREE_BYTES = 200 * 1024 * 1024


def check_output_dir(out_dir: Path, need_bytes: int = MIN_FREE_BYTES) -> None:
    """TrainingError unless ``out_dir`` can be created, written, and has ``need_bytes`` free."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise TrainingError(
            f"output directory {out_dir} is not writable ({err.strerror or err}); choose another --out"
        ) from None
    free = shutil.disk_usage(out_dir).free
    if free < need_bytes:
        raise TrainingError(
            f"output directory {out_dir} has {free / 2**20:.0f} MiB free but checkpoints need about "
            f"{need_bytes / 2**20:.0f} MiB; free space or choose another --out"
        )


def remove_stale_temp_files(out_dir: Path) -> list[Path]:
    """Delete the hidden temp files that a run killed during an atomic write leaves behind
    (``.last.pt.<random>.tmp``: up to a checkpoint's size each); only this module's own names."""
    names = (ckpt.LAST, ckpt.LAST_PREV, ckpt.BEST, WEIGHTS_FILE, METRICS_FILE, RESULTS_FILE)
    removed = []
    for name in names:
        for path in out_dir.glob(f".{name}.*.tmp"):
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed


def checkpoint_bytes_estimate(model: torch.nn.Module, optimizer_name: str, ema: bool) -> int:
    """Bytes needed for last, last.prev, best and model.safetensors, plus the minimum margin."""
    param_bytes = sum(p.numel() * 4 for p in model.parameters()) + sum(b.numel() * 4 for b in model.buffers())
    copies = 1 + (2 if optimizer_name == "adamw" else 1) + (1 if ema else 0)  # weights, optimizer state, EMA
    return 3 * copies * param_bytes + 2 * param_bytes + MIN_FREE_BYTES


def recipe_diff(saved: dict, current: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += recipe_diff(a, b, f"{prefix}{key}.")
        elif json.dumps(a, default=str) != json.dumps(b, default=str):
            keys.append(f"{prefix}{key}")
    return keys
