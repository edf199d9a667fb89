"""Record a weights file's training class prior, and score it under the training and a uniform prior.

    python benchmarks/class_prior.py --checkpoint default --train fer2013=../shared/data/fer2013 \
        --report fer2013/val,test=../shared/data/fer2013 --report ckplus48/all=../shared/data/ckplus48 \
        --write src/fermetric/weights/default.safetensors --out benchmarks/results/class_prior_default.json

Training writes ``class_prior`` (the training labels' frequencies) into every checkpoint since
``fermetric.engine.priors`` exists; files trained before lack it. ``--write`` adds it to such a file
(computed from ``--train``'s train split, the data the file's meta names), leaving every tensor as it
is. ``--report`` scores the model on each split twice, as trained (``prior=train``) and with every
expression equally likely (``prior=uniform``: the logits plus ``-log`` of the training frequencies),
with the paired bootstrap 95% interval of the difference. Nothing is chosen on any split: the
uniform offset follows from the training frequencies alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_predict_vs_fer import provenance  # noqa: E402


def report(model, meta: dict, dataset: str, root: str, split: str) -> dict:
    import numpy as np
    import torch

    from fermetric.data import load_dataset
    from fermetric.engine.evaluate import (
        align_classes,
        embed,
        preprocessing_from_meta,
        restrict_to_classes,
        shown_as_trained,
    )
    from fermetric.engine.metrics import paired_bootstrap
    from fermetric.engine.priors import logit_offset

    imageset, _ = restrict_to_classes(load_dataset(dataset, root, split), meta["classes"])
    imageset = shown_as_trained(align_classes(imageset, meta["classes"]), meta)  # as fermetric eval shows it
    with torch.inference_mode():
        logits, _ = embed(model, imageset, preprocessing_from_meta(meta), precision="fp32")
    labels = np.asarray(imageset.labels, np.int64)
    keep = labels >= 0
    logits, labels = logits[keep], labels[keep]
    trained = logits.argmax(1) == labels
    uniform = (logits + logit_offset(meta, "uniform")).argmax(1) == labels
    return {
        "dataset": dataset,
        "split": split,
        "n": int(len(labels)),
        "train_prior": float(trained.mean()),
        "uniform_prior": float(uniform.mean()),
        "uniform_minus_train": paired_bootstrap(uniform, trained),
    }


def run(args, argv=None) -> dict:
    from fermetric.data import load_dataset
    from fermetric.engine.checkpoint import build_model, read_source, save_weights
    from fermetric.engine.evaluate import align_classes
    from fermetric.engine.priors import class_frequencies

    tensors, meta, path = read_source(args.checkpoint)
    result = {"benchmark": "class_prior", "checkpoint": args.checkpoint}
    if args.train:
        dataset, root = args.train.split("=", 1)
        if not str(meta.get("dataset", "")).startswith(dataset):
            raise SystemExit(f"{path} was trained on {meta.get('dataset')!r}, not {dataset!r}")
        train = align_classes(load_dataset(dataset, root, "train"), meta["classes"])
        meta = {**meta, "class_prior": class_frequencies(train, len(meta["classes"]))}
        result["train"] = {"dataset": dataset, "split": "train", "n": len(train)}
    if "class_prior" not in meta:
        raise SystemExit(f"{path} records no class_prior; pass --train DATASET=ROOT (its training data)")
    result["class_prior"] = dict(zip(meta["classes"], meta["class_prior"]))
    if args.write:
        result["written"] = str(save_weights(args.write, tensors, meta))
    model = build_model(meta)
    model.load_state_dict(tensors)
    model.eval()
    rows = []
    for spec in args.report:
        where, root = spec.split("=", 1)
        dataset, splits = where.split("/", 1)
        rows += [report(model, meta, dataset, root, split) for split in splits.split(",")]
    result["results"] = rows
    result.update(provenance("class_prior.py", argv))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--train", metavar="DATASET=ROOT", help="the training data: record its class prior")
    parser.add_argument("--report", action="append", default=[], metavar="DATASET/SPLIT[,SPLIT]=ROOT")
    parser.add_argument("--write", metavar="SAFETENSORS", help="save the file with class_prior in its metadata")
    parser.add_argument("--out", required=True, help="result JSON")
    args = parser.parse_args(argv)
    from fermetric.fileio import atomic_write

    result = run(args, argv)
    atomic_write(args.out, (json.dumps(result, indent=1) + "\n").encode())
    for row in result["results"]:
        change = row["uniform_minus_train"]
        low, high = change["ci95"]
        print(
            f"{row['dataset']} {row['split']} (n = {row['n']}): prior train {100 * row['train_prior']:.2f}%, "
            f"uniform {100 * row['uniform_prior']:.2f}% ({100 * change['difference']:+.2f} [{100 * low:+.2f}, "
            f"{100 * high:+.2f}])"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
