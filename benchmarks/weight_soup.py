"""Average the weights of two checkpoints of one model (a two-ingredient "model soup").

    python benchmarks/weight_soup.py --a runs/candidates/default4.safetensors --b default \
        --alphas 0.25,0.5,0.75 --data fer2013=../shared/data/fer2013 --select-split val \
        --write soup.safetensors --out benchmarks/results/shipped_candidates/soup.json

A model fine-tuned from another stays in its basin, so ``alpha * a + (1 - alpha) * b`` is a model
too (Wortsman et al., "Model soups", 2022), often better than either on data neither was selected
on. Every floating tensor is averaged, BatchNorm running statistics included; integer buffers
(``num_batches_tracked``) are taken from ``b``. ``alpha`` is chosen on ``--select-split`` only
(largest accuracy, the smaller alpha on a tie); the chosen soup is written as float16 with both
ingredients' sources and digests in its metadata. Each alpha is scored as that float16 file (the
rounding alone moved a soup by six PublicTest images once), and the other splits are scored with
``benchmarks/paired_checkpoints.py`` afterwards, so no test split chooses.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_predict_vs_fer import provenance  # noqa: E402


def soup(a: dict, b: dict, alpha: float) -> dict:
    """``alpha * a + (1 - alpha) * b`` for floating tensors, ``b``'s value for the rest (in float32)."""
    if a.keys() != b.keys():
        raise SystemExit(f"the two checkpoints hold different tensors: {sorted(a.keys() ^ b.keys())[:5]}")
    mixed = {}
    for name, tb in b.items():
        ta = a[name]
        if ta.shape != tb.shape:
            raise SystemExit(f"{name} has shape {tuple(ta.shape)} in one checkpoint and {tuple(tb.shape)} in the other")
        mixed[name] = alpha * ta.float() + (1 - alpha) * tb.float() if tb.is_floating_point() else tb.clone()
    return mixed


def as_float16(state: dict) -> dict:
    """The tensors as the written file holds them: floating ones rounded to float16."""
    import torch

    return {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in state.items()}


def accuracy(state: dict, meta: dict, imageset) -> float:
    import numpy as np
    import torch

    from fermetric.engine.checkpoint import build_model
    from fermetric.engine.evaluate import embed, preprocessing_from_meta

    model = build_model(meta)
    model.load_state_dict(state)  # copies float16 tensors into the float32 parameters
    model.eval()
    with torch.inference_mode():
        logits, _ = embed(model, imageset, preprocessing_from_meta(meta), precision="fp32")
    labels = np.asarray(imageset.labels, np.int64)
    keep = labels >= 0
    return float(np.mean(logits[keep].argmax(1) == labels[keep]))


def run(args, argv=None) -> dict:

    from fermetric.data import load_dataset
    from fermetric.engine.checkpoint import read_source, save_weights, state_digest
    from fermetric.engine.evaluate import align_classes

    (a, meta_a, _), (b, meta_b, _) = read_source(args.a), read_source(args.b)
    for key, value in (
        ("classes", lambda m: m["classes"]),
        # the architecture: `pretrained` only says how training started, not what the tensors mean
        ("model", lambda m: {k: v for k, v in m["recipe"]["model"].items() if k != "pretrained"}),
        ("preprocessing", lambda m: m["preprocessing"]),
    ):
        if value(meta_a) != value(meta_b):
            raise SystemExit(f"{args.a} and {args.b} differ in {key}; a soup needs one architecture and input")
    dataset, root = args.data.split("=", 1)
    imageset = align_classes(load_dataset(dataset, root, args.select_split), meta_b["classes"])
    alphas = [float(x) for x in args.alphas.split(",")]
    soups = {alpha: as_float16(soup(a, b, alpha)) for alpha in alphas}
    rows = [{"alpha": alpha, "accuracy": accuracy(state, meta_b, imageset)} for alpha, state in soups.items()]
    best = max(rows, key=lambda r: (round(r["accuracy"], 9), -r["alpha"]))
    result = {
        "benchmark": "weight_soup",
        "a": args.a,
        "b": args.b,
        "digests": {"a": state_digest(a), "b": state_digest(b)},
        "rule": f"largest accuracy on {dataset}/{args.select_split} over alpha in {alphas} (each soup rounded to "
        "float16, as written), smaller alpha on a tie",
        "select_split": {"split": args.select_split, "n": len(imageset), "grid": rows},
        "selected_alpha": best["alpha"],
    }
    if args.write:
        meta = {**meta_b, "weights_dtype": "float16", "soup": {k: result[k] for k in ("a", "b", "digests")}}
        meta["soup"]["alpha"] = best["alpha"]
        result["written"] = str(save_weights(args.write, soups[best["alpha"]], meta))
    result.update(provenance("weight_soup.py", argv))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, help="checkpoint weighted by alpha (shipped name, run or file)")
    parser.add_argument("--b", required=True, help="checkpoint weighted by 1 - alpha; its metadata is kept")
    parser.add_argument("--alphas", default="0.25,0.5,0.75")
    parser.add_argument("--data", required=True, metavar="DATASET=ROOT")
    parser.add_argument("--select-split", default="val")
    parser.add_argument("--write", metavar="SAFETENSORS", help="save the chosen soup as float16")
    parser.add_argument("--out", required=True, help="result JSON")
    args = parser.parse_args(argv)
    from fermetric.fileio import atomic_write

    result = run(args, argv)
    atomic_write(args.out, (json.dumps(result, indent=1) + "\n").encode())
    grid = ", ".join(f"{r['alpha']:g}: {100 * r['accuracy']:.2f}%" for r in result["select_split"]["grid"])
    print(f"{args.select_split} accuracy by alpha: {grid}; chosen alpha {result['selected_alpha']:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
