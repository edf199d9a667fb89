"""Face-crop throughput of the two prediction backends on this CPU: torch and onnxruntime.

    python benchmarks/predict_backends.py [--checkpoint default] [--threads 1]

Side by side in one process, alternating, on the same random 48-px crops: faces/s of
``Predictor.run_crops`` with ``backend="torch"`` (fp32 under ``--precision auto`` on a CPU
without native bf16) and ``backend="onnx"`` (the exported graph, cached), at batch sizes 1, 64
and 256; median of ``--repeats`` passes. Writes ``benchmarks/results/predict_backends.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_predict_vs_fer import git_commit, machine_info  # noqa: E402


def run(args) -> dict:
    import numpy as np
    import torch

    import fermetric

    torch.set_num_threads(args.threads)
    predictors = {name: fermetric.load(args.checkpoint, backend=name) for name in ("torch", "onnx")}
    size = predictors["torch"].input_size
    rows = {}
    for batch in args.batch_sizes:
        crops = np.random.default_rng(0).integers(0, 256, (max(batch, args.faces), size, size), dtype=np.uint8)
        rates = {name: [] for name in predictors}
        for _ in range(args.repeats):
            for name, predictor in predictors.items():  # alternate, so drift hits both alike
                predictor.batch_size = batch
                started = time.perf_counter()
                for start in range(0, len(crops), batch):
                    predictor.run_crops(crops[start : start + batch])
                rates[name].append(len(crops) / (time.perf_counter() - started))
        rows[str(batch)] = {name: statistics.median(values) for name, values in rates.items()}
        print(
            f"[predict_backends] batch {batch}: "
            + ", ".join(f"{n} {v:.0f} faces/s" for n, v in rows[str(batch)].items()),
            file=sys.stderr,
            flush=True,
        )
    import onnxruntime

    return {
        "benchmark": "predict_backends",
        "checkpoint": args.checkpoint,
        "threads": args.threads,
        "faces": args.faces,
        "repeats": args.repeats,
        "rows": rows,
        "machine": machine_info(),
        "torch_version": torch.__version__,
        "onnxruntime_version": onnxruntime.__version__,
        "fermetric_version": fermetric.__version__,
        "python_version": platform.python_version(),
        "git_commit": git_commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
    }


def render(result: dict) -> str:
    lines = [
        f"Machine {result['machine']['cpu_model']}, {result['threads']} thread(s); torch {result['torch_version']}, "
        f"onnxruntime {result['onnxruntime_version']}; model `{result['checkpoint']}`; {result['date']}.",
        "",
        "| batch | torch faces/s | onnx faces/s | onnx / torch |",
        "|---|---|---|---|",
    ]
    for batch, row in result["rows"].items():
        lines.append(f"| {batch} | {row['torch']:.0f} | {row['onnx']:.0f} | {row['onnx'] / row['torch']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="default")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 256])
    p.add_argument("--faces", type=int, default=512, help="crops per pass (at least one batch)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "predict_backends.json"))
    p.add_argument("--render", metavar="JSON")
    args = p.parse_args(argv)
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return 0
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = str(args.threads)
    result = run(args)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
