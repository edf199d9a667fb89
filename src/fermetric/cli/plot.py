"""``fermetric plot``: embedding maps, confusion matrices and training curves as PNG."""

from __future__ import annotations

import json
from pathlib import Path

from ..engine.evaluate import embed, evaluate, shown_as_trained
from ..errors import ConfigError, DataError
from ..losses.space import space_of_meta
from ..reports.plots import find_confusion, plot_confusion, plot_curves, plot_embeddings, subsample
from .common import load_model, load_split, preprocessing_of


def _run_file(run: str, name: str) -> Path:
    path = Path(run)
    return path / name if path.is_dir() else path


def run(args) -> int:
    """``fermetric plot embeddings|confusion|curves --out PNG [--run DIR] [--checkpoint C --data D]``."""
    if args.kind == "curves":
        if not args.run:
            raise ConfigError("plot curves needs --run RUN_DIR (the folder with metrics.jsonl)")
        out = plot_curves(_run_file(args.run, "metrics.jsonl"), args.out)
    elif args.kind == "confusion" and args.run:
        path = _run_file(args.run, "results.json")
        if path.is_dir() or not path.is_file():
            raise DataError(f"{path} does not exist; pass --run RUN_DIR with results.json, or --checkpoint and --data")
        found = find_confusion(json.loads(path.read_text()))
        if not found:
            raise DataError(f"{path} holds no confusion matrix; evaluate with --checkpoint and --data instead")
        out = plot_confusion(found[0], found[1], args.out)
    else:
        if not args.data:
            raise ConfigError(f"plot {args.kind} needs --data DATASET=ROOT (and --checkpoint)")
        device, model, meta = load_model(args)
        imageset, name, _, _ = load_split(args, meta)
        imageset = shown_as_trained(imageset, meta)  # as fermetric eval shows it
        preprocessing = preprocessing_of(meta)
        if args.kind == "confusion":
            result = evaluate(model, imageset, preprocessing, device=device, embedding_metrics=False)
            out = plot_confusion(
                result["confusion"],
                result["classes"],
                args.out,
                title=f"{name}/{args.split}: accuracy {result['accuracy']:.4f}",
            )
        else:
            keep = subsample(len(imageset), args.max_points)  # embed only what is plotted
            subset = imageset.subset(keep)
            space = space_of_meta(meta)
            _, embeddings = embed(model, subset, preprocessing, device)
            embeddings = space(embeddings)
            out = plot_embeddings(
                embeddings,
                subset.labels,
                subset.classes,
                args.method,
                args.out,
                max_points=args.max_points,
                title=f"{args.method} of {name}/{args.split} ({len(subset)} faces, {space.kind} space)",
            )
    print(f"wrote {out}")
    return 0
