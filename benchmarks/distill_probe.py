"""Does distillation from a shipped model make a small, fast student better? Side by side, one seed.

    python benchmarks/distill_probe.py --data fer2013=../shared/data/fer2013 --teacher default \
        --set model.backbone=tiny --epochs 10

Trains the same student recipe (``ce`` with the ``--set`` overrides) twice with the same seed,
once on the labels alone and once with ``distill.teacher`` (soft targets at ``--temperature``,
weight ``--weight``), selects each on PublicTest (val) and reports PrivateTest (test): accuracy,
macro-F1, the paired bootstrap interval of the difference (distilled - plain) on the same test
images, the teacher's own test accuracy, and each student's ONNX faces/s on ``--crops`` test
crops at batch 64 with one thread (the two graphs alternate, best of 3 passes). Runs live under
``--work`` and resume when killed; a finished run is not retrained. Writes
``benchmarks/results/distill_probe_<student>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_predict_vs_fer import git_commit, machine_info  # noqa: E402

VARIANTS = ("plain", "distilled")


def student_overrides(args, variant: str) -> list[str]:
    sets = [f"epochs={args.epochs}", *args.set]
    if variant == "distilled":
        sets += [f"distill.teacher={args.teacher}", f"distill.temperature={args.temperature}"]
        sets += [f"distill.weight={args.weight}"]
    return sets


def faces_per_second(run_dirs: dict, images, repeats: int = 3, batch: int = 64) -> dict:
    """ONNX faces/s of each run's model on the same crops, one thread, graphs alternating."""
    import numpy as np
    import torch

    from fermetric.engine.evaluate import preprocessing_from_meta
    from fermetric.export import OnnxRuntimeModel, export_onnx

    rates = {name: 0.0 for name in run_dirs}
    with tempfile.TemporaryDirectory() as folder:
        sessions, inputs = {}, {}
        for name, run_dir in run_dirs.items():
            path = Path(folder) / f"{name}.onnx"
            export_onnx(str(run_dir), path)
            graph = OnnxRuntimeModel(path, threads=1)  # the predict backend's session; meta from the graph
            sessions[name] = graph.session
            inputs[name] = preprocessing_from_meta(graph.meta).apply(torch.as_tensor(np.asarray(images))).numpy()
        for _ in range(repeats):
            for name, session in sessions.items():
                x = inputs[name]
                start = time.perf_counter()
                for i in range(0, len(x), batch):
                    session.run(["logits"], {"image": x[i : i + batch]})
                rates[name] = max(rates[name], len(x) / (time.perf_counter() - start))
    return rates


def run(args) -> dict:
    import numpy as np

    from fermetric.config import load_recipe
    from fermetric.data import load_dataset
    from fermetric.engine.checkpoint import load_model
    from fermetric.engine.evaluate import align_classes, embed, preprocessing_from_meta
    from fermetric.engine.metrics import paired_bootstrap
    from fermetric.engine.train import train

    dataset, root = args.data.split("=", 1)
    splits = {s: load_dataset(dataset, root, s) for s in ("train", "val", "test")}
    work = Path(args.work)
    results, run_dirs = {}, {}
    for variant in VARIANTS:
        run_dir = work / variant
        run_dirs[variant] = run_dir
        done = run_dir / "results.json"
        if done.exists():
            results[variant] = json.loads(done.read_text())
            continue
        recipe = load_recipe("ce", student_overrides(args, variant))
        results[variant] = train(
            recipe,
            splits["train"],
            splits["val"],
            run_dir,
            device="cpu",
            seed=args.seed,
            resume=True,
            progress=False,
            test_set=splits["test"],
            dataset=dataset,
            precision=args.precision,
        )
    tests = {v: results[v]["metrics"]["test"] for v in VARIANTS}
    teacher, meta = load_model(args.teacher)
    test = align_classes(splits["test"], meta["classes"])
    labels = np.asarray(test.labels)
    teacher_logits, _ = embed(teacher, test, preprocessing_from_meta(meta), precision="fp32")
    correct = {v: np.asarray(tests[v]["predictions"]) == labels for v in VARIANTS}
    crops = np.asarray(test.images)[np.random.default_rng(args.seed).permutation(len(test))[: args.crops]]
    return {
        "benchmark": "distill_probe",
        "data": dataset,
        "teacher": {"source": args.teacher, "test_accuracy": float(np.mean(teacher_logits.argmax(1) == labels))},
        "student_overrides": list(args.set),
        "epochs": args.epochs,
        "seed": args.seed,
        "distill": {"temperature": args.temperature, "weight": args.weight},
        "precision": args.precision,
        "students": {
            v: {
                "accuracy": tests[v]["accuracy"],
                "macro_f1": tests[v]["macro_f1"],
                "val_accuracy": results[v]["metrics"]["val"]["accuracy"],
                "train_seconds": results[v].get("train_seconds"),
                "run": str(run_dirs[v]),
            }
            for v in VARIANTS
        },
        "difference_distilled_minus_plain": paired_bootstrap(correct["distilled"], correct["plain"]),
        "onnx_faces_per_second_batch64": faces_per_second(run_dirs, crops),
        "machine": machine_info(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "command": "python benchmarks/distill_probe.py " + " ".join(sys.argv[1:]),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=f"fer2013={REPO.parent / 'shared' / 'data' / 'fer2013'}", metavar="DATASET=ROOT")
    p.add_argument("--teacher", default="default", help="a shipped model's name, a run directory or weights file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="student recipe overrides")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--weight", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="auto")
    p.add_argument("--crops", type=int, default=1000)
    p.add_argument("--work", default=str(REPO / "runs" / "distill_probe"))
    p.add_argument("--out")
    args = p.parse_args(argv)
    from fermetric.fileio import atomic_write

    result = run(args)
    backbone = next((s.split("=", 1)[1] for s in args.set if s.startswith("model.backbone=")), "ce")
    out = args.out or REPO / "benchmarks" / "results" / f"distill_probe_{backbone}.json"
    atomic_write(out, (json.dumps(result, indent=1) + "\n").encode())
    s, d = result["students"], result["difference_distilled_minus_plain"]
    rates = result["onnx_faces_per_second_batch64"]
    print(
        f"teacher {100 * result['teacher']['test_accuracy']:.2f}%; plain {100 * s['plain']['accuracy']:.2f}%, "
        f"distilled {100 * s['distilled']['accuracy']:.2f}% ({100 * d['difference']:+.2f} points "
        f"[{100 * d['ci95'][0]:+.2f}, {100 * d['ci95'][1]:+.2f}]); ONNX faces/s {rates['plain']:.0f} / "
        f"{rates['distilled']:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
