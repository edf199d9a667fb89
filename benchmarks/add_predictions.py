"""Add per-image test predictions to protocol result files written before they were stored.

    python benchmarks/add_predictions.py --results benchmarks/results/cpu --work runs/benchmarks/cpu

``protocol.py`` now stores each run's test predictions and labels, which ``make_tables.py`` pairs
with ``ce`` on the same images (paired bootstrap interval). For an older result file this script
evaluates the run's saved weights (``<work>/<dataset>/<run>/model.safetensors``) on the same test
split, checks that the recomputed accuracy equals the recorded one (the same weights and data must
give the same predictions, up to float ties), and writes ``predictions`` / ``labels`` into the file.
Files that already have predictions, or whose weights are gone, are left as they are and listed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from protocol import _atomic_write_json  # same writer as the protocol (atomic, normal file mode)

#: largest accuracy change accepted between the recorded and the recomputed evaluation
TOLERANCE = 1e-3


def test_split(record: dict):
    from fermetric.data import load_dataset, parse_data_arg

    name, root = parse_data_arg(record["data"])
    options = {"label_mode": record["label_mode"]} if record.get("label_mode") else {}
    if record.get("fold") is not None:
        options["fold"] = record["fold"]
    return load_dataset(name, root, "test", **options)


def backfill(path: Path, results: Path, work: Path) -> str:
    import fermetric.engine.evaluate as E
    from fermetric.engine.checkpoint import load_model

    record = json.loads(path.read_text())
    if record.get("predictions") is not None:
        return "has predictions"
    if record.get("split") != "test":
        return f"split {record.get('split')!r}, not test"
    weights = work / path.relative_to(results).with_suffix("") / "model.safetensors"
    if not weights.is_file():
        return f"no weights at {weights}"
    model, meta = load_model(str(weights), device="cpu")
    imageset = E.align_classes(test_split(record), meta["classes"])
    result = E.evaluate(
        model,
        imageset,
        E.preprocessing_from_meta(meta),
        device="cpu",
        tta=record.get("tta") or "none",
        embedding_metrics=False,
        precision=record.get("precision") or "fp32",
        keep_predictions=True,
    )
    recorded = record["metrics"]["accuracy"]
    if result["n"] != record["metrics"]["n"] or abs(result["accuracy"] - recorded) > TOLERANCE:
        return (
            f"NOT written: recomputed accuracy {result['accuracy']:.4f} (n={result['n']}) differs from the "
            f"recorded {recorded:.4f} (n={record['metrics']['n']})"
        )
    record["predictions"], record["labels"] = result["predictions"], result["labels"]
    record["predictions_added"] = {"by": "benchmarks/add_predictions.py", "accuracy": result["accuracy"]}
    _atomic_write_json(path, record)
    return f"added ({result['n']} images, accuracy {result['accuracy']:.4f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="benchmarks/results/cpu", help="results folder (benchmarks/results/cpu)")
    parser.add_argument(
        "--work", default="runs/benchmarks/cpu", help="the protocol's --work folder (runs/benchmarks/cpu)"
    )
    args = parser.parse_args()
    results, work = Path(args.results), Path(args.work)
    for path in sorted(results.rglob("*.json")):
        print(f"{path}: {backfill(path, results, work)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
