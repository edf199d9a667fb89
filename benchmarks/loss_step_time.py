"""Training-step time of cross-entropy alone vs cross-entropy + each metric loss.

A GPU benchmark, not a test. It times full optimiser steps of the ``ce`` recipe's network
(ResNet-18 with the 48 px stem, embedding 512 unless --embedding-dim) on synthetic data kept on
the device: bf16 autocast and channels_last on CUDA (as the trainer does), fp32 on CPU. The model
is the same for every variant so that the difference is the loss alone; each variant also gets a
loss-only timing (forward + backward of the metric loss on a fixed embedding). The metric losses
use their recipes' options (``mtdml``, ``dmsl``, ``tcl-full``, ``tcl-semi``, ``tcl-pred``,
``pidml`` -> emlf). The CE baseline is timed first and again last; the spread of the two is a
noise estimate for the overhead figures.

    python benchmarks/loss_step_time.py --out benchmarks/results/loss_step_time_h100.json
    python benchmarks/loss_step_time.py --batch 32 --steps 2 --device cpu   # smoke run

Timing: CUDA events around each step after ``--warmup`` untimed steps (cuDNN autotuning,
torch.compile), synchronised before reading; CPU uses perf_counter. Reported: mean and median
ms/step, overhead % of the mean vs the first CE baseline, and loss-only ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

VARIANTS = {  # benchmark name -> recipe whose loss (name + options) it uses
    "ce": "ce",
    "mtdml": "mtdml",
    "dmsl": "dmsl",
    "tcl-full": "tcl-full",
    "tcl-semi": "tcl-semi",
    "tcl-pred": "tcl-pred",
    "emlf": "pidml",
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--size", type=int, default=48, help="input size in pixels")
    p.add_argument("--num-classes", type=int, default=7)
    p.add_argument("--embedding-dim", type=int, default=512, help="must be a multiple of mtdml's num_slices")
    p.add_argument("--steps", type=int, default=50, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per variant (default 10 on CUDA, 1 on CPU)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    p.add_argument("--compile-loss", action="store_true", help="torch.compile the metric loss (dynamic=False)")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument(
        "--model",
        choices=["auto", "fermetric", "torchvision"],
        default="auto",
        help="fermetric.models.create_model (auto when importable) or a plain torchvision ResNet-18",
    )
    p.add_argument("--backbone", default="resnet18", help="fermetric backbone name (tiny: fast CPU smoke runs)")
    p.add_argument("--width", type=float, default=None, help="channel multiplier of resnet18/34 and tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results JSON here")
    return p.parse_args(argv)


class TorchvisionNet(nn.Module):
    """Fallback network: torchvision ResNet-18 with a 3x3 stride-1 stem, no max-pool, Linear+BN embedding."""

    def __init__(self, num_classes: int, embedding_dim: int) -> None:
        super().__init__()
        import torchvision

        net = torchvision.models.resnet18(num_classes=num_classes)
        net.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        self.backbone = net
        self.embedding = nn.Sequential(nn.Linear(512, embedding_dim), nn.BatchNorm1d(embedding_dim))
        self.classifier = nn.Linear(embedding_dim, num_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        embedding = self.embedding(self.backbone(x))
        return {"embedding": embedding, "logits": self.classifier(embedding)}


def build_model(args) -> tuple[nn.Module, str]:
    if args.model in ("auto", "fermetric"):
        try:
            from fermetric.models import create_model
        except ImportError as error:
            if args.model == "fermetric":
                raise
            print(f"fermetric.models unavailable ({error}); using torchvision resnet18", file=sys.stderr)
        else:
            from fermetric.config import load_recipe, replace

            cfg = replace(load_recipe("ce").model, backbone=args.backbone, embedding_dim=args.embedding_dim)
            options = {} if args.width is None else {"width": args.width}
            name = f"fermetric:{cfg.backbone}" + ("" if args.width is None else f"@{args.width}")
            return create_model(cfg, num_classes=args.num_classes, **options), name
    if args.backbone != "resnet18" or args.width is not None:
        raise SystemExit("--backbone/--width need fermetric.models (--model fermetric)")
    return TorchvisionNet(args.num_classes, args.embedding_dim), "torchvision:resnet18"


def build_loss(variant: str, num_classes: int, embedding_dim: int) -> tuple[nn.Module | None, dict]:
    from fermetric.config import load_recipe
    from fermetric.losses import create_loss

    loss_cfg = load_recipe(VARIANTS[variant]).loss
    if loss_cfg.name is None:
        return None, {}
    options = dict(loss_cfg.options or {})
    return create_loss(loss_cfg.name, num_classes, embedding_dim, **options), {"loss": loss_cfg.name, **options}


class Timer:
    """Per-step wall time: CUDA events on CUDA (synchronised at the end), perf_counter on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def step_ms(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) for a, b in zip(self.marks[:-1], self.marks[1:], strict=True)]
        return [(b - a) * 1e3 for a, b in zip(self.marks[:-1], self.marks[1:], strict=True)]


def time_variant(variant: str, args, device: torch.device, amp: bool) -> dict:
    torch.manual_seed(args.seed)
    model, model_name = build_model(args)
    model = model.to(device)
    loss_fn, loss_info = build_loss(variant, args.num_classes, args.embedding_dim)
    if loss_fn is not None:
        loss_fn = loss_fn.to(device)
    takes_logits = loss_fn is not None and "logits" in inspect.signature(loss_fn.forward).parameters
    params = list(model.parameters()) + (list(loss_fn.parameters()) if loss_fn is not None else [])
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    metric = loss_fn
    if loss_fn is not None and args.compile_loss:
        metric = torch.compile(loss_fn, dynamic=False)

    g = torch.Generator(device="cpu").manual_seed(args.seed)
    x = torch.randn(args.batch, 1, args.size, args.size, generator=g).to(device)
    labels = (torch.arange(args.batch) % args.num_classes)[torch.randperm(args.batch, generator=g)].to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        logits, embedding = out["logits"].float(), out["embedding"].float()
        total = F.cross_entropy(logits, labels)
        if metric is not None:
            total = total + (metric(embedding, labels, logits=logits) if takes_logits else metric(embedding, labels))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    warmup = args.warmup if args.warmup is not None else (10 if device.type == "cuda" else 1)
    steps = timed(step, warmup, args.steps, device)
    result = {
        "ms_per_step": statistics.fmean(steps),
        "ms_per_step_median": statistics.median(steps),
        "model": model_name,
        **loss_info,
    }
    if loss_fn is not None:
        result["loss_only_ms"] = time_loss_only(metric, takes_logits, labels, args, device, warmup)
    return result


def time_loss_only(metric, takes_logits: bool, labels: torch.Tensor, args, device: torch.device, warmup: int) -> float:
    """Forward + backward of the metric loss alone on a fixed float32 embedding (and logits)."""
    g = torch.Generator(device="cpu").manual_seed(args.seed + 1)
    embedding = torch.randn(args.batch, args.embedding_dim, generator=g).to(device).requires_grad_()
    logits = torch.randn(args.batch, args.num_classes, generator=g).to(device)

    def run() -> None:
        value = metric(embedding, labels, logits=logits) if takes_logits else metric(embedding, labels)
        value.backward()
        embedding.grad = None

    return statistics.fmean(timed(run, max(warmup, 1), args.steps, device))


def timed(fn, warmup: int, steps: int, device: torch.device) -> list[float]:
    """Milliseconds of each of ``steps`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    timer = Timer(device)
    timer.mark()
    for _ in range(steps):
        fn()
        timer.mark()
    return timer.step_ms()


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp = device.type == "cuda" and not args.no_amp
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    if "ce" not in variants:
        variants.insert(0, "ce")
    variants = ["ce"] + [v for v in variants if v != "ce"]

    results = {}
    for variant in variants:
        results[variant] = time_variant(variant, args, device, amp)
        print(f"{variant:>9}: {results[variant]['ms_per_step']:8.2f} ms/step", file=sys.stderr, flush=True)
    ce_repeat = time_variant("ce", args, device, amp)["ms_per_step"]  # noise estimate
    base = results["ce"]["ms_per_step"]
    for result in results.values():
        result["overhead_pct"] = 100.0 * (result["ms_per_step"] - base) / base

    report = {
        "benchmark": "loss_step_time",
        "device": (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"cpu ({platform.processor() or platform.machine()})"
        ),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seed": args.seed,
        "batch": args.batch,
        "input_size": args.size,
        "embedding_dim": args.embedding_dim,
        "num_classes": args.num_classes,
        "steps": args.steps,
        "warmup": args.warmup if args.warmup is not None else (10 if device.type == "cuda" else 1),
        "bf16_autocast": amp,
        "channels_last": device.type == "cuda",
        "compile_loss": args.compile_loss,
        "ce_repeat_ms_per_step": ce_repeat,
        "ce_repeat_diff_pct": 100.0 * (ce_repeat - base) / base,
        "results": results,
    }
    print(f"{'variant':>9} {'ms/step':>9} {'median':>9} {'overhead':>9} {'loss-only':>10}")
    for variant, r in results.items():
        loss_only = f"{r['loss_only_ms']:9.3f}" if "loss_only_ms" in r else f"{'-':>9}"
        print(
            f"{variant:>9} {r['ms_per_step']:9.2f} {r['ms_per_step_median']:9.2f} "
            f"{r['overhead_pct']:8.1f}% {loss_only} ms"
        )
    print(f"CE repeated at the end: {ce_repeat:.2f} ms/step ({report['ce_repeat_diff_pct']:+.1f}%: run-to-run noise)")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
