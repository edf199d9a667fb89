"""Training speed on this CPU: a bare PyTorch step against ``fermetric train`` end to end.

    python benchmarks/cpu_train_speed.py --data fer2013=../shared/data/fer2013

For each backbone (``tiny``, ``resnet18`` width 0.5, ``resnet18``), side by side in one process:

(a) a bare training step of the same network (FERNet, forward + CE + backward + SGD) on random
    tensors, in fp32 and in the precision that ``--precision auto`` picks on this machine;
(b) ``fermetric train`` end to end (gather, augmentation, loss, step, logging) in fp32 with
    ``--deterministic`` (the engine's behaviour before the precision policy);
(c) ``fermetric train`` end to end with ``--precision auto`` (no determinism).

The engine runs count the images/s of their training steps only (``results.json``; no validation
or test evaluation: ``max_steps`` stops each run inside its first epoch). The ratios the CPU
speed issue asks for are (c)/(b) and (c)/(a in the same precision): the latter is the share of
the bare step's speed that the data path and bookkeeping leave. The JSON records the machine,
versions, precision and date.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_predict_vs_fer import git_commit, machine_info  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "cpu_train_speed.json"
MODELS = {"tiny": ("tiny", 1.0), "resnet18-w0.5": ("resnet18", 0.5), "resnet18": ("resnet18", 1.0)}


def log(message: str) -> None:
    print(f"[cpu_train_speed] {message}", file=sys.stderr, flush=True)


def bare_step_rate(backbone: str, width: float, precision: str, batch: int, steps: int, warmup: int) -> float:
    """Images/s of forward + CE + backward + SGD on random tensors (no data path at all)."""
    import torch
    import torch.nn.functional as F

    from fermetric.config import ModelConfig
    from fermetric.engine.precision import autocast
    from fermetric.models import create_model

    torch.manual_seed(0)
    model = create_model(ModelConfig(backbone=backbone, width=width), num_classes=7)
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 1, 48, 48).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 7, (batch,))
    device = torch.device("cpu")

    def step() -> None:
        with autocast(device, precision):
            out = model(x)
        loss = F.cross_entropy(out["logits"].float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - started)


def engine_rate(
    train_set, backbone: str, width: float, precision: str, deterministic: bool, batch: int, steps: int, warmup: int
) -> float:
    """Images/s of ``fermetric train``'s training steps (warm-up steps excluded)."""
    from fermetric.config import load_recipe
    from fermetric.engine.train import train

    overrides = [f"model.backbone={backbone}", f"model.width={width}", f"data.batch_size={batch}"]
    recipe = load_recipe("ce", overrides)
    rates = []
    for max_steps in (warmup, warmup + steps):  # the difference removes start-up costs
        with tempfile.TemporaryDirectory(prefix="fermetric-speed-") as out:
            started = time.perf_counter()
            result = train(
                recipe,
                train_set,
                None,
                Path(out) / "run",
                device="cpu",
                max_steps=max_steps,
                progress=False,
                precision=precision,
                deterministic=deterministic,
            )
            rates.append((time.perf_counter() - started, result["steps"]))
    (t0, s0), (t1, s1) = rates
    return batch * (s1 - s0) / (t1 - t0)


def run(args) -> dict:
    import torch

    import fermetric
    from fermetric.data import load_dataset, parse_data_arg
    from fermetric.engine.precision import cpu_has_native_bf16, resolve_precision

    torch.set_num_threads(args.threads)
    name, root = parse_data_arg(args.data)
    train_set = load_dataset(name, root, "train")
    auto = resolve_precision("auto", "cpu")
    started = time.perf_counter()
    rows = {}
    for label in args.models:
        backbone, width = MODELS[label]
        row = {"backbone": backbone, "width": width}
        log(f"{label}: bare step fp32")
        row["bare_fp32"] = bare_step_rate(backbone, width, "fp32", args.batch_size, args.steps, args.warmup)
        if auto != "fp32":
            log(f"{label}: bare step {auto}")
            row[f"bare_{auto}"] = bare_step_rate(backbone, width, auto, args.batch_size, args.steps, args.warmup)
        log(f"{label}: engine fp32 deterministic")
        row["engine_fp32_deterministic"] = engine_rate(
            train_set, backbone, width, "fp32", True, args.batch_size, args.steps, args.warmup
        )
        log(f"{label}: engine precision auto ({auto})")
        row["engine_auto"] = engine_rate(
            train_set, backbone, width, "auto", False, args.batch_size, args.steps, args.warmup
        )
        row["auto_over_deterministic_fp32"] = row["engine_auto"] / row["engine_fp32_deterministic"]
        row["engine_over_bare_same_precision"] = row["engine_auto"] / row[f"bare_{auto}"]
        rows[label] = row
        log(f"{label}: {json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})}")
    return {
        "benchmark": "cpu_train_speed",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {**machine_info(), "native_bf16": cpu_has_native_bf16()},
        "auto_precision": auto,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "timed_steps": args.steps,
        "warmup_steps": args.warmup,
        "data": name,
        "rows": rows,
        "torch_version": torch.__version__,
        "fermetric_version": fermetric.__version__,
        "python_version": platform.python_version(),
        "git_commit": git_commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": time.perf_counter() - started,
    }


def render(result: dict) -> str:
    auto = result["auto_precision"]
    machine = result["machine"]
    lines = [
        f"Machine: {machine['cpu_model']}, {machine['usable_cpus']} usable cores, native bf16: "
        f"{machine['native_bf16']} (so `--precision auto` = {auto}); torch {result['torch_version']}, "
        f"{result['threads']} threads, batch {result['batch_size']}, {result['timed_steps']} timed steps after "
        f"{result['warmup_steps']} warm-up; {result['date']}.",
        "",
    ]
    bare_columns = ["fp32"] + ([auto] if auto != "fp32" else [])
    header = [
        "model",
        *[f"(a) bare step {p}" for p in bare_columns],
        "(b) engine fp32 deterministic",
        f"(c) engine auto ({auto})",
        "(c)/(b)",
        f"(c)/(a, {auto})",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, row in result["rows"].items():
        cells = [
            f"`{label}`",
            *[f"{row[f'bare_{p}']:.0f} img/s" for p in bare_columns],
            f"{row['engine_fp32_deterministic']:.0f}",
            f"{row['engine_auto']:.0f}",
            f"{row['auto_over_deterministic_fp32']:.2f}",
            f"{row['engine_over_bare_same_precision']:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=f"fer2013={REPO.parent / 'shared' / 'data' / 'fer2013'}", metavar="DATASET=ROOT"
    )
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per measurement (8)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the available cores)")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--render", metavar="JSON", help="print the docs/RESULTS.md table of a result file and exit")
    args = parser.parse_args(argv)
    if args.threads is None:
        from fermetric.engine.precision import available_cores

        args.threads = available_cores()
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return 0
    result = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))
    log(f"wrote {out} ({result['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
