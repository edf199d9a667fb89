"""At which side should a photo's face be cropped: the training images' or the model's input?

    python benchmarks/crop_resolution.py --checkpoint default --data fer2013=../shared/data/fer2013 \
        --split val --split test --out benchmarks/results/crop_resolution_default.json
    python benchmarks/crop_resolution.py --render benchmarks/results/crop_resolution_*.json  # the table

The shipped models learned from 48 px faces enlarged to their 96 (or 72) px input, so they never
saw detail finer than 48 px carries. A real photo's face is larger and carries more: sensor noise,
JPEG blocks, the camera's sharpening. Each labelled face of ``--split`` becomes a photo the way
``cpu_predict_vs_fer.py`` makes one (``--upscale``, 4x by default, bicubic, 24 px grey border),
in four conditions drawn at the photo's own resolution:

* ``clean``: the photo as made;
* ``noise``: Gaussian sensor noise, sigma ``NOISE_SIGMA`` grey levels;
* ``sharpened``: an unsharp mask (amount ``SHARPEN_AMOUNT``, Gaussian sigma ``SHARPEN_SIGMA`` px);
* ``noise+jpeg``: the noise, then JPEG at quality ``JPEG_QUALITY``.

The face is detected once per photo (the predictor's detector, the largest face) and cropped both
ways exactly as ``Predictor`` crops it: at the side of the training images
(``crop_resolution="train"``, then enlarged by ``Preprocessing`` as in training) and at the input
size (``"input"``). Both crops of a photo are scored by the same network, so each condition gives
a paired bootstrap of ``train - input``. Photos without a detected face are left out of both.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_predict_vs_fer import UPSCALE, library_versions, make_photo, points_interval, provenance  # noqa: E402

NOISE_SIGMA = 4.0
SHARPEN_AMOUNT, SHARPEN_SIGMA = 1.0, 1.5
JPEG_QUALITY = 85
CONDITIONS = ("clean", "noise", "sharpened", "noise+jpeg")


def degrade(photo: np.ndarray, condition: str, rng: np.random.Generator) -> np.ndarray:
    """``photo`` (grey uint8) as a camera might have delivered it under ``condition``."""
    import cv2

    if condition == "clean":
        return photo
    pixels = photo.astype(np.float32)
    if condition in ("noise", "noise+jpeg"):
        pixels = pixels + rng.normal(0.0, NOISE_SIGMA, pixels.shape).astype(np.float32)
    elif condition == "sharpened":
        pixels = pixels + SHARPEN_AMOUNT * (pixels - cv2.GaussianBlur(pixels, (0, 0), SHARPEN_SIGMA))
    else:
        raise ValueError(f"unknown condition {condition!r}; one of {CONDITIONS}")
    out = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    if condition == "noise+jpeg":
        ok, encoded = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        out = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)
    return out


def paired_crops(predictors: dict, photos) -> tuple[list[int], dict[str, list[np.ndarray]]]:
    """``(indices of the photos with a face, {name: crops})``: the largest face of each photo,
    detected once and cropped as each predictor's ``_crops`` does (its ``crop_size``, the detector's
    margin)."""
    from fermetric.data.faces import align_face

    first = next(iter(predictors.values()))
    detector = first.detector
    kept, crops = [], {name: [] for name in predictors}
    for i, photo in enumerate(photos):
        faces = detector(photo)
        if not faces:
            continue
        face = max(faces, key=lambda f: f.area)
        kept.append(i)
        for name, predictor in predictors.items():
            crops[name].append(align_face(photo, face, predictor.crop_size, detector.crop_margin))
    return kept, crops


def score_split(
    predictors: dict, images: np.ndarray, labels: np.ndarray, seed: int, upscale: int = UPSCALE
) -> list[dict]:
    """One row per condition: each crop side's accuracy and macro-F1, and ``train - input``."""
    from sklearn.metrics import f1_score

    from fermetric.engine.metrics import paired_bootstrap

    rows = []
    for number, condition in enumerate(CONDITIONS):
        rng = np.random.default_rng([seed, number])
        photos = (degrade(make_photo(face, upscale), condition, rng) for face in images)
        kept, crops = paired_crops(predictors, photos)
        truth = labels[kept]
        row = {"condition": condition, "photos": int(len(images)), "faces_found": len(kept)}
        correct = {}
        for name, predictor in predictors.items():
            predicted = predictor.run_crops(np.stack(crops[name]))[0].argmax(1) if kept else np.zeros(0, int)
            correct[name] = predicted == truth
            row[name] = {
                "crop_size": predictor.crop_size,
                "accuracy": float(np.mean(correct[name])) if kept else float("nan"),
                "macro_f1": float(f1_score(truth, predicted, average="macro")) if kept else float("nan"),
            }
        if kept:
            row["train_minus_input"] = paired_bootstrap(correct["train"], correct["input"], seed=seed)
            row["agreement"] = float(np.mean(correct["train"] == correct["input"]))
        rows.append(row)
    return rows


def render(results: list[dict]) -> str:
    """The docs/RESULTS.md table of one or more result files (one row per model, split, condition)."""
    lines = [
        "| model | split | photo | condition | photos with a face | crops at the training side | at the input side "
        "| training - input side (points, paired 95% interval) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for split, rows in result["splits"].items():
            for row in rows:
                change = row.get("train_minus_input")
                cell = "n/a"
                if change:
                    cell = points_interval(change)
                    if change["ci95"][0] > 0:  # the whole interval above 0
                        cell = f"**{cell}**"
                lines.append(
                    f"| `{result['checkpoint']}` | {result['dataset']} {split} | faces x{result.get('upscale', UPSCALE)} "
                    f"| {row['condition']} "
                    f"| {row['faces_found']} / {row['photos']} "
                    f"| {100 * row['train']['accuracy']:.2f}% ({row['train']['crop_size']} px) "
                    f"| {100 * row['input']['accuracy']:.2f}% ({row['input']['crop_size']} px) | {cell} |"
                )
    first = results[0]
    machine = first["machine"]
    lines += [
        "",
        f"Machine {machine['cpu_model']}, {machine['usable_cpus']} usable CPUs; "
        + ", ".join(f"{k} {v}" for k, v in first["versions"].items())
        + f"; {first['backend']} in "
        f"{first['precision']}; detector {first['detector']}; seed {first['seed']}; "
        + "; ".join(f"{r['date']} (`{r['command']}`)" for r in results)
        + ".",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--render"]:
        print(render([json.loads(Path(path).read_text()) for path in argv[1:]]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="--render JSON...: print the table")
    p.add_argument("--checkpoint", default="default", help="shipped name, run or file")
    p.add_argument("--data", required=True, metavar="DATASET=ROOT")
    p.add_argument("--split", action="append", help="repeatable (default: val)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"], help="what runs the network (fp32)")
    p.add_argument("--limit", type=int, default=None, help="N labelled faces of each split, drawn with --seed")
    p.add_argument("--upscale", type=int, default=UPSCALE, help="photo scale of the 48 px faces")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="result JSON")
    args = p.parse_args(argv)

    from fermetric.data import load_dataset
    from fermetric.engine.evaluate import align_classes
    from fermetric.fileio import atomic_write
    from fermetric.predict import Predictor

    predictors = {
        resolution: Predictor.load(args.checkpoint, backend=args.backend, precision="fp32", crop_resolution=resolution)
        for resolution in ("train", "input")
    }
    classes = list(predictors["train"].classes)
    dataset, root = args.data.split("=", 1)
    splits = {}
    for split in args.split or ["val"]:
        imageset = align_classes(load_dataset(dataset, root, split), classes)
        labels = np.asarray(imageset.labels, np.int64)
        keep = np.flatnonzero(labels >= 0)
        if args.limit is not None and args.limit < len(keep):  # splits are stored class by class
            keep = np.sort(np.random.default_rng(args.seed).choice(keep, args.limit, replace=False))
        images = np.asarray(imageset.images)[keep]
        splits[split] = score_split(predictors, images, labels[keep], args.seed, args.upscale)
        for row in splits[split]:
            change = row.get("train_minus_input")
            interval = f"  train - input {points_interval(change)}" if change else ""
            print(
                f"{split} {row['condition']:<10} faces {row['faces_found']}/{row['photos']}  "
                f"train {100 * row['train']['accuracy']:.2f}%  input {100 * row['input']['accuracy']:.2f}%{interval}",
                flush=True,
            )
    result = {
        "benchmark": "crop_resolution",
        "checkpoint": args.checkpoint,
        "train_image_size": predictors["train"].meta.get("train_image_size"),
        "input_size": predictors["train"].input_size,
        "dataset": dataset,
        "classes": classes,
        "backend": args.backend,
        "precision": "fp32",
        "detector": repr(predictors["train"].detector),
        "photo": f"face x{args.upscale} INTER_CUBIC + 24 px border grey 128 (cpu_predict_vs_fer.make_photo), "
        "then the condition",
        "upscale": args.upscale,
        "conditions": {
            "noise_sigma": NOISE_SIGMA,
            "sharpen_amount": SHARPEN_AMOUNT,
            "sharpen_sigma": SHARPEN_SIGMA,
            "jpeg_quality": JPEG_QUALITY,
        },
        "seed": args.seed,
        "versions": library_versions(),
        "splits": splits,
        **provenance("crop_resolution.py", argv),
    }
    atomic_write(args.out, (json.dumps(result, indent=1) + "\n").encode())
    print(render([result]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
