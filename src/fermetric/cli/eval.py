"""``fermetric eval``: the protocol metrics of a checkpoint on a dataset split."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..data import dataset_splits
from ..engine.evaluate import crop_side, evaluate, shown_as_trained
from ..engine.precision import resolve_precision
from ..engine.priors import logit_offset, prior_name
from ..engine.progress import progress_bar
from ..fileio import json_default
from ..losses.space import space_of_meta
from ..models import inference_model
from ..reports.plots import plot_confusion
from .common import load_model, load_split, preprocessing_of


def format_table(result: dict, title: str = "") -> str:
    """A plain-text report: headline metrics, per-class recall, confusion matrix."""

    def fmt(value):
        return "-" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))

    lines = [title] if title else []
    keys = (
        "n",
        "accuracy",
        "macro_f1",
        "knn_accuracy",
        "centroid_accuracy",
        "precision_at_1",
        "map_at_r",
        "nmi",
        "tta",
        "reference",
    )
    for key in keys:
        if key in result:
            label = f"knn_accuracy (k={result.get('knn_k')})" if key == "knn_accuracy" else key
            lines.append(f"  {label:<24} {fmt(result[key])}")
    classes = result.get("classes") or list(result.get("per_class_recall", {}))
    if classes:
        width = max(8, max(len(c) for c in classes) + 1)
        lines.append("  per-class recall / confusion (rows: true, columns: predicted)")
        lines.append("  " + " " * width + f"{'recall':>8} " + "".join(f"{c[:7]:>8}" for c in classes))
        for name, row in zip(classes, result.get("confusion", [])):
            lines.append(
                f"  {name:<{width}}{fmt(result['per_class_recall'].get(name)):>8} " + "".join(f"{v:>8}" for v in row)
            )
    return "\n".join(lines)


def run(args) -> int:
    """``fermetric eval --checkpoint PATH|default --data DATASET=ROOT --split S [--tta] [--prior]
    [--crop-resolution train|input] [--json] [--out DIR]``."""
    device, model, meta = load_model(args)
    model = inference_model(model)  # BatchNorm folded, channels_last: the same numbers, sooner
    offset = logit_offset(meta, args.prior)  # before any image is read: a file without a prior fails now
    imageset, name, root, left_out = load_split(args, meta, classes=args.classes)
    preprocessing = preprocessing_of(meta)
    # images larger than the training side are averaged down to it first, as prediction does
    imageset = shown_as_trained(imageset, meta, args.crop_resolution)
    reference = None
    choice = args.reference
    if choice == "train" or (choice == "auto" and args.split != "train" and "train" in dataset_splits(name, root)):
        reference = shown_as_trained(
            load_split(args, meta, split="train", classes=args.classes)[0], meta, args.crop_resolution
        )
    total = len(imageset) + (len(reference) if reference is not None else 0)
    with progress_bar(f"eval {name}/{args.split}", total=total, enabled=not args.json) as progress:
        result = evaluate(
            model,
            imageset,
            preprocessing,
            device=device,
            tta=args.tta,
            reference=reference,
            space=space_of_meta(meta),
            precision=args.precision,
            progress=progress,
            logit_offset=offset,
        )
    result.update(
        {
            "checkpoint": str(args.checkpoint),
            "dataset": name,
            "split": args.split,
            "precision": resolve_precision(args.precision, device),
            "recipe": meta["recipe"].get("name"),
            "model_classes": list(meta["classes"]),
            "prior": args.prior,
            "crop_size": crop_side(meta, args.crop_resolution),
        }
    )
    if left_out is not None:
        result["left_out"] = left_out
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(result, indent=2, default=json_default) + "\n")
        accuracy = "-" if result["accuracy"] is None else f"{result['accuracy']:.4f}"
        plot_confusion(
            result["confusion"],
            result["classes"],
            out / "confusion.png",
            title=f"{name}/{args.split}: accuracy {accuracy}",
        )
    if args.json:
        sys.stdout.write(json.dumps(result, default=json_default) + "\n")
    else:
        print(
            format_table(
                result,
                title=f"{args.checkpoint} on {name}/{args.split} (tta={args.tta}, prior={prior_name(args.prior)})",
            )
        )
        if left_out and left_out["images"]:
            print(
                f"  left out {left_out['images']} images of class(es) the model does not know: "
                f"{', '.join(left_out['classes'])} (--classes shared)"
            )
        if args.out:
            print(f"  wrote {Path(args.out) / 'metrics.json'} and {Path(args.out) / 'confusion.png'}")
    return 0
