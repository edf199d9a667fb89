"""Two checkpoints on the same images: accuracy of each and the paired bootstrap of the difference.

    python benchmarks/paired_checkpoints.py --new default --old previous-default.safetensors \
        --data fer2013/val,test=../shared/data/fer2013 --data ckplus48/all=../shared/data/ckplus48 \
        --out benchmarks/results/default_vs_previous.json

Answers "is the new model better than the one it replaces, on the same test images?" with the
number that question needs: the accuracy difference ``new - old`` per split, with its paired
bootstrap 95% interval (the same resample scores both models). Both models run in fp32, one
crop, no TTA, as ``fermetric eval`` scores them (``--new-tta flip``: the new side also averages
with the mirrored face). A dataset whose classes the models do not all know (CK+ or FER+ against
a 7-class model) is scored on the classes they share.

``--new-backend compiled-int8`` runs the new side as ``fermetric predict --backend compiled-int8``
runs it (int8 with the file's calibration): with ``--old`` the same file, it measures what int8
costs in accuracy. ``--new-backend openvino-int8`` does the same for an int8 ONNX graph (a shipped
model's, or a ``.onnx`` file from ``fermetric export --format onnx --int8-calibration``) in OpenVINO.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_predict_vs_fer import points_interval, provenance  # noqa: E402


def split_predictions(model, meta: dict, imageset, tta: str = "none"):
    """``(predictions, labels)`` of a loaded model on the labelled images of ``imageset``."""
    import numpy as np
    import torch

    from fermetric.engine.evaluate import (
        align_classes,
        embed,
        preprocessing_from_meta,
        restrict_to_classes,
        shown_as_trained,
    )

    imageset, _ = restrict_to_classes(imageset, meta["classes"])
    imageset = shown_as_trained(align_classes(imageset, meta["classes"]), meta)  # as fermetric eval shows it
    with torch.inference_mode():
        logits, _ = embed(model, imageset, preprocessing_from_meta(meta), precision="fp32", tta=tta)
    labels = np.asarray(imageset.labels, np.int64)
    keep = labels >= 0
    return logits[keep].argmax(1), labels[keep]


def compare(
    new: str, old: str, dataset: str, root: str, split: str, new_backend: str = "torch", new_tta: str = "none"
) -> dict:
    import numpy as np
    from sklearn.metrics import f1_score

    from fermetric.data import load_dataset
    from fermetric.engine.checkpoint import load_model
    from fermetric.engine.metrics import paired_bootstrap

    if new_backend == "openvino-int8":  # a shipped name with an int8 graph, or an int8 .onnx graph
        from fermetric.engine.precision import resolve_precision
        from fermetric.export import openvino_model_for

        new_model, new_meta = openvino_model_for(new, int8=True, precision=resolve_precision("auto", "cpu"))
    else:
        new_model, new_meta = load_model(new)
    old_model, old_meta = load_model(old)
    if new_meta["classes"] != old_meta["classes"]:
        raise SystemExit(f"{new} and {old} do not predict the same class list; compare models of one vocabulary")
    if new_backend == "compiled-int8":
        from fermetric.models import CompiledInference

        new_model = CompiledInference(new_model, "int8", int8_calibration=new_meta.get("int8_calibration"))
    imageset = load_dataset(dataset, root, split)  # read once, scored by both
    new_pred, labels = split_predictions(new_model, new_meta, imageset, new_tta)
    old_pred, _ = split_predictions(old_model, old_meta, imageset)
    present = sorted(set(labels.tolist()))
    scores = {
        name: {
            "accuracy": float(np.mean(pred == labels)),
            "macro_f1": float(f1_score(labels, pred, labels=present, average="macro", zero_division=0)),
        }
        for name, pred in (("new", new_pred), ("old", old_pred))
    }
    return {
        "split": split,
        "n": int(len(labels)),
        **scores,
        "accuracy_change": paired_bootstrap(new_pred == labels, old_pred == labels),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--new", required=True, help="checkpoint: shipped name, run directory or file")
    p.add_argument("--old", required=True, help="the checkpoint it is compared with")
    p.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="DATASET[/SPLIT,...]=ROOT",
        help="repeatable; the splits default to test",
    )
    p.add_argument(
        "--new-backend",
        choices=["torch", "compiled-int8", "openvino-int8"],
        default="torch",
        help="how the new side runs: torch (fp32), compiled-int8 (the file's int8 calibration) or "
        "openvino-int8 (--new: a shipped model's int8 graph or an int8 .onnx file; float ops in bf16 "
        "where the CPU has it, as fermetric predict --backend openvino-int8 runs it)",
    )
    p.add_argument(
        "--new-tta",
        choices=["none", "flip"],
        default="none",
        help="test-time augmentation of the new side (flip: logits averaged with the mirrored face, "
        "as predict --tta flip); with --old the same file, it measures what flip TTA buys",
    )
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    from fermetric.fileio import atomic_write

    rows = []
    for spec in args.data:
        name, root = spec.split("=", 1)
        dataset, _, splits = name.partition("/")
        for split in (splits or "test").split(","):
            row = compare(args.new, args.old, dataset, root, split, args.new_backend, args.new_tta)
            rows.append({"dataset": dataset, **row})
    result = {
        "benchmark": "paired_checkpoints",
        "new": args.new,
        "old": args.old,
        "precision": "fp32",
        "new_backend": args.new_backend,  # compiled-int8, openvino-int8: the new side in int8, the old in fp32
        "tta": {"new": args.new_tta, "old": "none"},
        "results": rows,
        **provenance("paired_checkpoints.py", argv),
    }
    atomic_write(args.out, (json.dumps(result, indent=1) + "\n").encode())
    for row in rows:
        change = row["accuracy_change"]
        print(
            f"{row['dataset']} {row['split']} (n = {row['n']}): {100 * row['new']['accuracy']:.2f} vs "
            f"{100 * row['old']['accuracy']:.2f}%, {points_interval(change)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
