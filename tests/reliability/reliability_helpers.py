"""Reliability test helpers (a unique module name: conftest.py files of other folders collide)."""

from __future__ import annotations

import json
from dataclasses import dataclass

INPUT_SIZE = 32
CLASSES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry")
# A tiny recipe for CLI training runs (4 classes of 48 px synthetic faces, 16 px inputs).
TINY_TRAIN = [
    "--set",
    "model.backbone=tiny",
    "--set",
    "model.embedding_dim=16",
    "--set",
    "data.input_size=16",
    "--set",
    "data.batch_size=8",
    "--device",
    "cpu",
    "--threads",
    "1",
    "--deterministic",
]
RUN_CLASSES = ("neutral", "happy", "sad", "surprise")


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.strip().splitlines()


def assert_one_line_error(result: CliResult, *needles: str, code: int = 2) -> str:
    """The command failed with ``code`` and printed exactly one stderr line holding every needle."""
    assert result.code == code, (result.code, result.err)
    assert len(result.err_lines) == 1, result.err
    line = result.err_lines[0]
    assert line.startswith("fermetric ") and ": error: " in line, line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def json_records(out: str) -> list[dict]:
    """``predict --json`` face records: one per line, without the path/frame/time keys (the
    no-face records, ``"face": null``, are left out)."""
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    records = [r for r in records if r.get("face") is not None]
    return [{k: v for k, v in r.items() if k not in ("path", "frame", "time")} for r in records]
