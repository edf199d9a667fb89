"""Choose a logit bias for one rare class on the validation split, and fold it into a checkpoint.

    python benchmarks/class_bias.py --checkpoint ferplus --data ferplus=../shared/data/ferplus \
        --class contempt --write src/fermetric/weights/ferplus.safetensors

A class with few training images (FER+ contempt: 0.5% of Training) can end up never the top
logit although the model ranks it second for most of its faces. Adding a constant to that one
logit is the classic prior correction. The constant is chosen on ``--select-split`` only (the
largest macro-F1 over the grid; the smaller bias on a tie) and then reported on ``--report-split``
with the paired bootstrap interval of the accuracy change, so the test split never chooses.

``--write`` saves the checkpoint with the bias added to its classifier's bias and records it in
the metadata (``logit_bias``). A checkpoint that already carries one is searched from its
unbiased logits (the recorded bias is taken off first), so a rerun chooses the same way.
Writes ``benchmarks/results/class_bias_<checkpoint>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_predict_vs_fer import provenance  # noqa: E402

CLASSIFIER_BIAS = "classifier.linear.bias"


def scores(logits, labels, column: int, bias: float) -> dict:
    import numpy as np
    from sklearn.metrics import f1_score

    shifted = logits.copy()
    shifted[:, column] += bias
    predictions = shifted.argmax(1)
    of_class = labels == column
    return {
        "bias": float(bias),
        "accuracy": float(np.mean(predictions == labels)),
        "macro_f1": float(
            f1_score(labels, predictions, labels=range(logits.shape[1]), average="macro", zero_division=0)
        ),
        "recall": float(np.mean(predictions[of_class] == column)) if of_class.any() else None,
        "predicted": int(np.sum(predictions == column)),
        "correct": predictions == labels,
    }


def trained_bias(tensors: dict, meta: dict):
    """The classifier's float32 bias as trained: any bias recorded in ``meta`` taken off."""
    bias = tensors[CLASSIFIER_BIAS].float().clone()
    for name, added in meta.get("logit_bias", {}).get("biases", {}).items():
        bias[meta["classes"].index(name)] -= added
    return bias


def public(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "correct"}


def unbiased_logits(checkpoint: str, dataset: str, root: str, split: str):
    """``(logits, labels, tensors, meta, path)``: the checkpoint's logits without any recorded bias."""
    import numpy as np
    import torch

    from fermetric.data import load_dataset
    from fermetric.engine.checkpoint import build_model, read_source
    from fermetric.engine.evaluate import align_classes, embed, preprocessing_from_meta

    tensors, meta, path = read_source(checkpoint)
    state = {**tensors, CLASSIFIER_BIAS: trained_bias(tensors, meta)}  # load_state_dict casts the rest
    model = build_model(meta)
    model.load_state_dict(state)
    model.eval()
    imageset = align_classes(load_dataset(dataset, root, split), meta["classes"])
    with torch.inference_mode():
        logits, _ = embed(model, imageset, preprocessing_from_meta(meta), precision="fp32")
    labels = np.asarray(imageset.labels, np.int64)
    keep = labels >= 0
    return logits[keep], labels[keep], tensors, meta, path


def run(args) -> dict:
    import numpy as np

    from fermetric.engine.metrics import paired_bootstrap

    dataset, root = args.data.split("=", 1)
    select_logits, select_labels, tensors, meta, path = unbiased_logits(
        args.checkpoint, dataset, root, args.select_split
    )
    if args.class_name not in meta["classes"]:
        raise SystemExit(f"{path} has no class {args.class_name!r}; its classes are {meta['classes']}")
    column = meta["classes"].index(args.class_name)
    grid = np.round(np.arange(0.0, args.max_bias + 1e-9, args.step), 6)
    rows = [scores(select_logits, select_labels, column, b) for b in grid]
    best = max(rows, key=lambda r: (round(r["macro_f1"], 9), -r["bias"]))
    report_logits, report_labels, *_ = unbiased_logits(args.checkpoint, dataset, root, args.report_split)
    before = scores(report_logits, report_labels, column, 0.0)
    after = scores(report_logits, report_labels, column, best["bias"])
    result = {
        "benchmark": "class_bias",
        "checkpoint": args.checkpoint,
        "weights": str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path),
        "dataset": dataset,
        "class": args.class_name,
        "rule": f"largest macro-F1 on {args.select_split} over biases 0..{args.max_bias} step {args.step}, "
        "smaller bias on a tie",
        "selected_bias": best["bias"],
        "select_split": {"split": args.select_split, "n": len(select_labels), "grid": [public(r) for r in rows]},
        "report_split": {
            "split": args.report_split,
            "n": len(report_labels),
            "unbiased": public(before),
            "biased": public(after),
            "accuracy_change": paired_bootstrap(after["correct"], before["correct"]),
        },
        **provenance("class_bias.py"),
    }
    if args.write:
        write(args.write, tensors, meta, column, best["bias"], result)
    return result


def write(target: str, tensors: dict, meta: dict, column: int, bias: float, result: dict) -> None:
    """Save ``tensors`` with the classifier bias set to trained + ``bias`` on ``column``."""
    from fermetric.engine.checkpoint import save_weights

    trained = trained_bias(tensors, meta)
    trained[column] += bias
    tensors = {**tensors, CLASSIFIER_BIAS: trained.to(tensors[CLASSIFIER_BIAS].dtype)}
    meta = {
        **meta,
        "logit_bias": {
            "biases": {meta["classes"][column]: bias},
            "chosen_on": f"{result['dataset']} {result['select_split']['split']}",
            "rule": result["rule"],
            "by": "benchmarks/class_bias.py",
        },
    }
    save_weights(target, tensors, meta)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="ferplus")
    p.add_argument("--data", default=f"ferplus={REPO.parent / 'shared' / 'data' / 'ferplus'}", metavar="DATASET=ROOT")
    p.add_argument("--class", dest="class_name", default="contempt")
    p.add_argument("--select-split", default="val")
    p.add_argument("--report-split", default="test")
    p.add_argument("--max-bias", type=float, default=4.0)
    p.add_argument("--step", type=float, default=0.25)
    p.add_argument("--write", metavar="SAFETENSORS", help="save the checkpoint with the chosen bias folded in")
    p.add_argument("--out", help="result JSON (default benchmarks/results/class_bias_<checkpoint>.json)")
    args = p.parse_args(argv)
    from fermetric.fileio import atomic_write

    result = run(args)
    out = args.out or REPO / "benchmarks" / "results" / f"class_bias_{Path(args.checkpoint).stem}.json"
    atomic_write(out, (json.dumps(result, indent=1) + "\n").encode())
    report = result["report_split"]
    print(
        f"{result['class']} bias {result['selected_bias']:+.2f} (chosen on {result['select_split']['split']}); "
        f"{report['split']}: accuracy {100 * report['unbiased']['accuracy']:.2f} -> {100 * report['biased']['accuracy']:.2f}, "
        f"{result['class']} recall {report['unbiased']['recall']:.2f} -> {report['biased']['recall']:.2f}, "
        f"macro-F1 {report['unbiased']['macro_f1']:.4f} -> {report['biased']['macro_f1']:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
