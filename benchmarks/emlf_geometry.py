"""Where a trained PI&DML model's classes lie in its EMLF space: is the separation margin met?

    python benchmarks/emlf_geometry.py --checkpoint runs/benchmarks/cpu/fer2013/pidml-seed0

Embeds ``--images`` FER2013 Training faces (a seeded subset), L2-normalises the embeddings as
EMLF does, and reports the class means' norms, their pairwise distances, the two EMLF terms at
the checkpoint's margin and separation weight (compactness ``mean ||z - c_y||^2`` and
``weight * sum_{j<k} [margin - ||c_j - c_k||]_+^2`` with c the class means) and how many of
the pairs meet the margin. A diagnostic, not a table input: it writes
``benchmarks/results/emlf_geometry_<run>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_predict_vs_fer import git_commit, machine_info  # noqa: E402


def geometry(embeddings, labels, num_classes: int, margin: float, separation_weight: float) -> dict:
    import numpy as np

    z = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    means = np.stack([z[labels == c].mean(0) for c in range(num_classes)])
    distances = np.linalg.norm(means[:, None] - means[None], axis=-1)[np.triu_indices(num_classes, 1)]
    shortfall = np.clip(margin - distances, 0, None)
    return {
        "mean_norms": [float(v) for v in np.linalg.norm(means, axis=1)],
        "pair_distances": {
            "min": float(distances.min()),
            "median": float(np.median(distances)),
            "max": float(distances.max()),
        },
        "pairs": int(len(distances)),
        "pairs_meeting_margin": int(np.sum(distances >= margin)),
        "compactness": float(np.mean(np.sum((z - means[labels]) ** 2, axis=1))),
        "separation": float(separation_weight * np.sum(shortfall**2)),
    }


def run(args) -> dict:
    import numpy as np
    import torch

    from fermetric.data import load_dataset
    from fermetric.engine.checkpoint import load_model
    from fermetric.engine.evaluate import align_classes, embed, preprocessing_from_meta

    model, meta = load_model(args.checkpoint)
    loss = meta["recipe"]["loss"]
    if loss.get("name") != "emlf":
        raise SystemExit(f"{args.checkpoint} was trained with loss {loss.get('name')!r}, not emlf")
    options = {"margin": 1.0, "separation_weight": 0.5, **(loss.get("options") or {})}
    train = align_classes(load_dataset("fer2013", args.data, "train"), meta["classes"])
    order = np.random.default_rng(args.seed).permutation(len(train))[: args.images]
    with torch.inference_mode():
        _, embeddings = embed(model, np.asarray(train.images)[order], preprocessing_from_meta(meta), precision="fp32")
    labels = np.asarray(train.labels)[order]
    return {
        "benchmark": "emlf_geometry",
        "checkpoint": str(args.checkpoint),
        "images": int(len(order)),
        "margin": float(options["margin"]),
        "separation_weight": float(options["separation_weight"]),
        "centers": options.get("centers"),
        **geometry(embeddings, labels, len(meta["classes"]), options["margin"], options["separation_weight"]),
        "machine": machine_info(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "command": "python benchmarks/emlf_geometry.py " + " ".join(sys.argv[1:]),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a PI&DML run directory or weights file")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "fer2013"), help="FER2013 folder root")
    p.add_argument("--images", type=int, default=6000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    args = p.parse_args(argv)
    from fermetric.fileio import atomic_write

    result = run(args)
    name = Path(args.checkpoint).name.removesuffix(".safetensors")
    out = args.out or REPO / "benchmarks" / "results" / f"emlf_geometry_{name}.json"
    atomic_write(out, (json.dumps(result, indent=1) + "\n").encode())
    d = result["pair_distances"]
    print(
        f"class-mean norms {min(result['mean_norms']):.2f}-{max(result['mean_norms']):.2f}; pair distances "
        f"{d['min']:.2f} / {d['median']:.2f} / {d['max']:.2f} (min / median / max); "
        f"{result['pairs_meeting_margin']} of {result['pairs']} pairs meet margin {result['margin']}; "
        f"compactness {result['compactness']:.3f}, separation {result['separation']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
