"""Evaluate a checkpoint on a dataset split and save the metrics with their provenance.

    python benchmarks/eval_checkpoint.py --checkpoint default --data fer2013=../shared/data/fer2013 \
        --split test --out benchmarks/results/default_model_fer2013_test.json

The JSON holds what ``fermetric eval --json`` prints plus the machine, versions, date and command,
so the model card's numbers can be re-run and compared (tests/predict/test_shipped_models.py does).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--data", required=True, metavar="DATASET=ROOT")
    parser.add_argument("--split", default="test")
    parser.add_argument("--tta", choices=["none", "flip"], default="none")
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16", "auto"],
        default="fp32",
        help="fp32 (default): the catalogue's figures are fp32 ones on every host; auto picks bf16 on AMX/AVX512-BF16 CPUs",
    )
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import torch

    import fermetric

    command = [
        sys.executable,
        "-m",
        "fermetric",
        "eval",
        "--checkpoint",
        args.checkpoint,
        "--data",
        args.data,
        "--split",
        args.split,
        "--tta",
        args.tta,
        "--device",
        "cpu",
        "--precision",
        args.precision,
        "--json",
    ]
    started = time.perf_counter()
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - started
    metrics = json.loads(output)
    from fermetric.engine.checkpoint import load_model

    _, meta = load_model(args.checkpoint)
    result = {
        "checkpoint": args.checkpoint,
        "recipe": meta["recipe"]["name"],
        "backbone": meta["recipe"]["model"]["backbone"],
        "trained_on": meta.get("dataset"),
        "seed": meta.get("seed"),
        "data": args.data.split("=", 1)[0],
        "split": args.split,
        "tta": args.tta,
        "metrics": metrics,
        "eval_seconds": round(seconds, 1),
        "machine": {"cpu": cpu_model(), "cpus": len(__import__("os").sched_getaffinity(0)), "device": "cpu"},
        "versions": {
            "fermetric": fermetric.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/eval_checkpoint.py " + " ".join(sys.argv[1:]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result["metrics"][k] for k in ("accuracy", "macro_f1", "n")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
