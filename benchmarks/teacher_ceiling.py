"""How good is a distillation teacher before a student is distilled from it?

    python benchmarks/teacher_ceiling.py --teacher default --teacher runs/candidates/soup12.safetensors \
        --tta flip --data fer2013=../shared/data/fer2013 --split val \
        --out benchmarks/results/shipped_candidates/teacher_ceiling.json

A distilled student rarely passes its teacher, so the teacher's accuracy on the selection split
bounds what a cycle can reach. This scores each ``--teacher`` and every ensemble of two or more of
them exactly as ``distill.teacher`` builds it (``fermetric.engine.distill.EnsembleTeacher``: each
member with its own preprocessing and ``--tta``, the ensemble the mean of the members' logits), in
fp32, and the paired bootstrap of each ensemble against the first teacher (normally the model a
candidate must beat). Only the selection split is meant here: a teacher chosen on it is a
choice like any other.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_predict_vs_fer import points_interval, provenance  # noqa: E402

MAX_MEMBERS = 6  # every subset is scored: 57 ensembles at six members


def member_logits(sources: list[str], dataset: str, root: str, split: str, tta: str):
    """``(logits [members, N, C], labels [N], classes)``: each teacher's logits on the labelled images."""
    import numpy as np
    import torch

    from fermetric.data import load_dataset
    from fermetric.engine.checkpoint import read_source
    from fermetric.engine.distill import EnsembleTeacher
    from fermetric.engine.evaluate import align_classes, preprocessing_from_meta

    _, meta, _ = read_source(sources[0])
    classes = list(meta["classes"])
    student = preprocessing_from_meta(meta)  # the batch the teachers see, as a student of the first would
    members = EnsembleTeacher(sources, classes, student, "cpu", tta).members
    imageset = align_classes(load_dataset(dataset, root, split), classes)
    labels = np.asarray(imageset.labels, np.int64)
    keep = np.flatnonzero(labels >= 0)
    out = [[] for _ in members]
    with torch.inference_mode():
        for start in range(0, len(keep), 256):
            index = keep[start : start + 256]
            x = student.apply(torch.from_numpy(np.ascontiguousarray(imageset.images[index])))
            for logits, member in zip(out, members):
                logits.append(member(x))
    return np.stack([torch.cat(chunks).numpy() for chunks in out]), labels[keep], classes


def score(logits, labels, sources: list[str]) -> list[dict]:
    """One row per teacher and per ensemble of two or more: accuracy, and the paired change
    against the first teacher alone."""
    import numpy as np

    from fermetric.engine.metrics import paired_bootstrap

    first_correct = logits[0].argmax(1) == labels
    rows = []
    for size in range(1, len(sources) + 1):
        for members in itertools.combinations(range(len(sources)), size):
            correct = logits[list(members)].mean(0).argmax(1) == labels
            row = {"members": [sources[i] for i in members], "accuracy": float(np.mean(correct))}
            if members != (0,):
                row["change_vs_first"] = paired_bootstrap(correct, first_correct)
            rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", action="append", required=True, help="repeatable: shipped name, run or file")
    p.add_argument("--tta", choices=["none", "flip"], default="flip", help="how each teacher scores a face")
    p.add_argument("--data", required=True, metavar="DATASET=ROOT")
    p.add_argument("--split", default="val", help="the selection split (FER2013: val = PublicTest)")
    p.add_argument("--out", required=True, help="result JSON")
    args = p.parse_args(argv)
    if len(args.teacher) > MAX_MEMBERS:
        p.error(f"at most {MAX_MEMBERS} teachers: every subset of them is scored")
    from fermetric.fileio import atomic_write

    dataset, root = args.data.split("=", 1)
    logits, labels, classes = member_logits(args.teacher, dataset, root, args.split, args.tta)
    rows = score(logits, labels, args.teacher)
    result = {
        "benchmark": "teacher_ceiling",
        "dataset": dataset,
        "split": args.split,
        "n": int(len(labels)),
        "classes": classes,
        "tta": args.tta,
        "precision": "fp32",
        "ensemble": "mean of the members' logits, as distill.teacher",
        "rows": rows,
        **provenance("teacher_ceiling.py", argv),
    }
    atomic_write(args.out, (json.dumps(result, indent=1) + "\n").encode())
    for row in rows:
        change = row.get("change_vs_first")
        versus = f"  {points_interval(change)} vs the first" if change else ""
        print(f"{100 * row['accuracy']:.2f}%  {' + '.join(row['members'])}{versus}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
