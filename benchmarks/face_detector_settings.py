"""CPU benchmark (not a test): which detector and settings fermetric's default face detection uses.

Each candidate, an OpenCV Haar cascade (cascade file, ``scaleFactor``, ``minNeighbors``, smallest
face, edge padding) or the shipped YuNet CNN (model, score threshold), is run on the same inputs,
one thread, on this machine:

* **Faces found**: ``--faces`` FER2013 faces of ``--split`` (PrivateTest by default; seeded
  permutation, near-blank images left out) made into small photos as ``cpu_predict_vs_fer.py``
  does (bicubic upscale, 24 px grey border), at three face sizes: 72, 96 and 192 px (x1.5, x2,
  x4), and the x4 faces framed tightly (no border: the face fills the photo, as in a close
  portrait). A photo counts when at least one face is found.
* **False detections**: faces reported on scikit-image's face-free example images
  (``FACE_FREE``: a cup, a cat, a rocket, coins, text, ...). Lower is better.
* **Time**: median ms per image of the astronaut photo (512x512) and of the x4 photos (240x240).
* **End-to-end accuracy** with ``--checkpoint`` (the shipped model by default): the largest
  face's label on the x2, x4 and tight x4 photos, among photos with a face and overall (no face =
  wrong). Detectors with eye landmarks (YuNet) rotate crops to level the eyes; their accuracy
  with unrotated crops is recorded too.
* **Box calibration**: the median ratio of the largest box's longer side to the true face side
  on the x4 photos, and the median offset of its centre (x, y; fraction of the face side), and for the chosen default the end-to-end accuracy at crop margins 0, 0.04 and 0.08
  (does widening the crop to the FER2013 side help?).

Output: ``--out`` (``benchmarks/results/face_detector_settings.json``) with machine, versions,
seed, date, command and every number; ``--render JSON`` prints the docs/RESULTS.md section.

Run (about 5 minutes on the 2-core CPU)::

    .venv/bin/python benchmarks/face_detector_settings.py --data ../shared/data/fer2013
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from cpu_predict_vs_fer import (
    BORDER,
    BORDER_GREY,
    fer2013_test_order,
    git_commit,
    machine_info,
    render_or_run,
    set_torch_threads,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "face_detector_settings.json"
UPSCALES = (1.5, 2.0, 4.0)
ACCURACY_UPSCALES = (2.0, 4.0)
MARGINS = (0.0, 0.04, 0.08)
#: scikit-image example images without a (frontal human) face
FACE_FREE = (
    "coffee",
    "chelsea",
    "rocket",
    "coins",
    "page",
    "text",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "horse",
    "moon",
    "logo",
    "brick",
    "grass",
    "gravel",
    "colorwheel",
    "clock",
)


def haar_candidate(cascade: str, scale_factor: float, min_neighbors: int, min_face: int, edge_pad: float = 0.0):
    """``(name, ("haar", HaarDetector options))``; the name spells the options: ``alt2 1.2/2/40 pad 0.2``."""
    name = f"{cascade} {scale_factor:g}/{min_neighbors}/{min_face}" + (f" pad {edge_pad:g}" if edge_pad else "")
    options = dict(
        cascade=f"haarcascade_frontalface_{cascade}.xml",
        scale_factor=scale_factor,
        min_neighbors=min_neighbors,
        min_face=min_face,
        edge_pad=edge_pad,
    )
    return name, ("haar", options)


def yunet_candidate(model: str, min_score: float):
    """``(name, ("yunet", YuNetDetector options))``: ``yunet n 0.7`` is model n, faces scoring >= 0.7."""
    return f"yunet {model} {min_score:g}", ("yunet", dict(model=model, min_score=min_score))


#: name -> (detector, options); "default 1.1/5/50" is fer's settings, DEFAULT_NAME fermetric's default
CANDIDATES = dict(
    [
        haar_candidate(*settings)
        for settings in (
            ("default", 1.1, 5, 24),
            ("default", 1.1, 5, 50),
            ("default", 1.2, 3, 40),
            ("default", 1.2, 2, 40),
            ("alt2", 1.1, 5, 50),
            ("alt2", 1.2, 2, 40),
            ("alt2", 1.3, 2, 40),
            # the default, searching again in an edge-replicated copy when it finds nothing (edge_pad)
            ("alt2", 1.2, 2, 40, 0.1),
            ("alt2", 1.2, 2, 40, 0.2),
        )
    ]
    + [yunet_candidate(model, min_score) for model in ("n", "s") for min_score in (0.5, 0.6, 0.7, 0.8)]
)
DEFAULT_NAME = "yunet s 0.5"  # alt2 1.2/2/40 pad 0.2 until 2026-12-07 15:15 (Haar's best)
TIGHT = "x4 tight"  # the x4 faces without the grey border


def face_free_images() -> dict[str, np.ndarray]:
    """scikit-image's face-free example images as grey uint8 arrays."""
    import cv2
    from skimage import data

    images = {}
    for name in FACE_FREE:
        image = np.asarray(getattr(data, name)())
        if image.dtype != np.uint8:  # float or boolean images: stretch to 0..255
            image = image.astype(np.float64)
            image = np.uint8(255 * (image - image.min()) / max(float(np.ptp(image)), 1e-9))
        images[name] = cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    return images


def make_photo(face48: np.ndarray, upscale: float) -> np.ndarray:
    import cv2

    big = cv2.resize(face48, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
    return cv2.copyMakeBorder(big, BORDER, BORDER, BORDER, BORDER, cv2.BORDER_CONSTANT, value=BORDER_GREY)


def median_ms(function, images, repeats: int = 1) -> float:
    times = []
    for _ in range(repeats):
        for image in images:
            start = time.perf_counter()
            function(image)
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def largest(faces):
    return max(faces, key=lambda face: face.area) if faces else None


def run(args) -> dict:
    import cv2
    import torch
    from PIL import Image

    import fermetric
    from fermetric.assets import example_photo
    from fermetric.data.faces import align_face, create_detector, to_grey

    started = time.perf_counter()
    load_start = os.getloadavg()
    threads = set_torch_threads(args.threads)
    testset, order = fer2013_test_order(Path(args.data), args.seed, args.split)
    chosen = order[: args.faces]
    faces48 = np.ascontiguousarray(testset.images[chosen])
    truth = np.array([testset.classes[testset.labels[i]] for i in chosen])
    photos = {up: [make_photo(face, up) for face in faces48] for up in UPSCALES}
    photos[TIGHT] = [photo[BORDER:-BORDER, BORDER:-BORDER] for photo in photos[4.0]]
    face_free = face_free_images()
    with Image.open(example_photo()) as photo:
        astronaut = to_grey(np.asarray(photo.convert("RGB")))
    predictor = fermetric.load(args.checkpoint, device="cpu", backend="torch")  # the recorded runs' backend

    def largest_faces(detector) -> dict:
        """The largest face (or ``None``) of every photo, per face size: each detection runs once."""
        return {up: [largest(detector(photo)) for photo in photos[up]] for up in photos}

    def classify(found: list, up, margin) -> dict:
        """Largest-face labels of the photos at ``up``, given their detected ``found`` faces
        (cropped as ``align_face`` does: eyes levelled where the faces carry landmarks)."""
        crops = [align_face(photo, face, predictor.crop_size, margin) for photo, face in zip(photos[up], found) if face]
        hit = np.array([face is not None for face in found])
        labels = np.array([None] * len(found), dtype=object)
        if crops:
            probabilities, _ = predictor.run_crops(crops)
            labels[hit] = [predictor.classes[k] for k in probabilities.argmax(1)]
        correct = (labels == truth) & hit
        return {
            "photos_with_a_face": int(hit.sum()),
            "accuracy": float(correct.mean()),
            "accuracy_among_found": float(correct.sum() / max(hit.sum(), 1)),
        }

    candidates = {}
    for name, (detector_name, options) in CANDIDATES.items():
        detector = create_detector(detector_name, **options)
        faces = largest_faces(detector)
        found = {(up if up == TIGHT else f"x{up:g}"): sum(face is not None for face in faces[up]) for up in photos}
        false = {image_name: len(detector(image)) for image_name, image in face_free.items()}
        # the crop is a square on the box's longer side, centred on the box: both against the true face
        true_side, true_centre = 48 * 4.0, BORDER + 48 * 2.0
        found_x4 = [face for face in faces[4.0] if face is not None]
        sides = [max(face.width, face.height) / true_side for face in found_x4]
        offsets = [np.subtract(face.center, true_centre) / true_side for face in found_x4]
        candidates[name] = {
            "detector": detector_name,
            "options": options,
            "photos_with_a_face": found,
            "false_detections": int(sum(false.values())),
            "false_detections_per_image": false,
            "ms_astronaut_512": median_ms(detector, [astronaut], repeats=args.repeats),
            "ms_photo_240": median_ms(detector, photos[4.0][: args.timed_photos]),
            "box_side_over_face_side_x4": float(np.median(sides)) if sides else None,
            "box_centre_offset_x4": np.median(offsets, axis=0).tolist() if offsets else None,
            "end_to_end": {
                **{f"x{up:g}": classify(faces[up], up, 0.0) for up in ACCURACY_UPSCALES},
                TIGHT: classify(faces[TIGHT], TIGHT, 0.0),
            },
        }
        if any(face is not None and face.landmarks is not None for face in faces[4.0]):
            unrotated = {up: [face and replace(face, landmarks=None) for face in faces[up]] for up in faces}
            candidates[name]["end_to_end_unrotated"] = {
                **{f"x{up:g}": classify(unrotated[up], up, 0.0) for up in ACCURACY_UPSCALES},
                TIGHT: classify(unrotated[TIGHT], TIGHT, 0.0),
            }
        print(
            f"[face_detector_settings] {name}: {json.dumps({k: candidates[name][k] for k in ('photos_with_a_face', 'false_detections', 'ms_astronaut_512')})}",
            file=sys.stderr,
            flush=True,
        )
    default_detector, default_options = CANDIDATES[DEFAULT_NAME]
    default_faces = largest_faces(create_detector(default_detector, **default_options))
    margins = {f"{m:g}": {f"x{up:g}": classify(default_faces[up], up, m) for up in ACCURACY_UPSCALES} for m in MARGINS}
    import PIL
    import sklearn

    return {
        "benchmark": "face_detector_settings",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
        "git_commit": git_commit(),
        "machine": {
            **machine_info(),
            "load_average_start": list(load_start),
            "load_average_end": list(os.getloadavg()),
        },
        "versions": {
            "python": sys.version.split()[0],
            "fermetric": fermetric.__version__,
            "torch": torch.__version__,
            "opencv": cv2.__version__,
            "pillow": PIL.__version__,
            "scikit-learn": sklearn.__version__,
        },
        "threads": threads,
        "seed": args.seed,
        "data": {
            "dataset": "fer2013",
            "split": args.split,
            "faces": int(len(chosen)),
            "upscales": list(UPSCALES),
            "face_free_images": list(FACE_FREE),
        },
        "model": {"checkpoint": str(args.checkpoint), "recipe": predictor.meta.get("recipe", {}).get("name")},
        "default": DEFAULT_NAME,
        "candidates": candidates,
        "default_margins": margins,
        "wall_seconds": time.perf_counter() - started,
    }


def render(result: dict) -> str:
    """The docs/RESULTS.md section (markdown) for one result file."""
    n = result["data"]["faces"]
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    split = {"test": "PrivateTest", "val": "PublicTest"}.get(
        result["data"]["split"].split()[0], result["data"]["split"]
    )
    first = next(iter(result["candidates"].values()))
    # files written before the centre offset was recorded have no such column
    with_centre = all("box_centre_offset_x4" in c for c in result["candidates"].values())
    centre_head = " (centre offset x, y)" if with_centre else ""
    found_keys, e2e_keys = " / ".join(first["photos_with_a_face"]), " / ".join(first["end_to_end"])
    lines = [
        "## Face detector settings (CPU)",
        "",
        f"`benchmarks/face_detector_settings.py`: face detector candidates on the same {n} FER2013 {split} faces "
        f"made into photos (faces of 72 / 96 / 192 px; `x4 tight`: the 192 px faces without the grey border), "
        f"{len(result['data']['face_free_images'])} face-free "
        f"scikit-image images and the astronaut photo; one thread; model `{result['model']['checkpoint']}` for the "
        f"end-to-end columns (largest face's label; no face counts as wrong). Haar settings: cascade "
        f"scaleFactor/minNeighbors/smallest face (px), `pad`: a second search with the edges replicated "
        f"outward when the first finds nothing (`edge_pad`); YuNet: model, smallest score (its crops are "
        f"rotated to level the eyes); **{result['default']}** is fermetric's default, "
        f"`default 1.1/5/50` is `fer`'s.",
        "",
        f"| settings | photos with a face {found_keys} (of {n}) | false detections | ms astronaut 512 | "
        f"ms photo 240 | box side / face side{centre_head} | end-to-end accuracy {e2e_keys} (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in result["candidates"].items():
        found = " / ".join(str(v) for v in c["photos_with_a_face"].values())
        e2e = " / ".join(pct(v["accuracy"]) for v in c["end_to_end"].values())
        side = c["box_side_over_face_side_x4"]
        side = "-" if side is None else f"{side:.2f}"
        if with_centre and c["box_centre_offset_x4"] is not None:
            side += " ({:+.2f}, {:+.2f})".format(*c["box_centre_offset_x4"])
        bold = "**" if name == result["default"] else ""
        lines.append(
            f"| {bold}{name}{bold} | {found} | {c['false_detections']} | {c['ms_astronaut_512']:.1f} | "
            f"{c['ms_photo_240']:.1f} | {side} | {e2e} |"
        )
    margins = "; ".join(
        f"margin {m}: " + " / ".join(pct(v["accuracy_among_found"]) for v in block.values())
        for m, block in result["default_margins"].items()
    )
    unrotated = "; ".join(
        f"{name}: " + " / ".join(pct(v["accuracy"]) for v in c["end_to_end_unrotated"].values())
        for name, c in result["candidates"].items()
        if "end_to_end_unrotated" in c
    )
    machine, versions = result["machine"], result["versions"]
    if unrotated:
        lines += ["", f"End-to-end accuracy with unrotated crops ({e2e_keys}, %): {unrotated}."]
    lines += [
        "",
        f"Crop margin of the default (accuracy among photos with a face, x2 / x4, %): {margins}.",
        "",
        f"Machine {machine['cpu_model']}, {machine['usable_cpus']} usable CPUs, load average "
        f"{machine['load_average_start'][0]:.2f} at start; OpenCV {versions['opencv']}, torch {versions['torch']}; "
        f"seed {result['seed']}; {result['date']}; commit `{result['git_commit']}`. Command: `{result['command']}`",
    ]
    return "\n".join(lines)


def detector_benchmark_parser(doc: str, out: Path, seed_help: str) -> argparse.ArgumentParser:
    """The options both face-detector benchmarks share (data, model, threads, seed, output)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(
        "--data",
        default=str(REPO.parent / "shared" / "data" / "fer2013"),
        help="FER2013 image-folder root (read only; default ../shared/data/fer2013)",
    )
    parser.add_argument("--checkpoint", default="default", help="model for the end-to-end columns (default: shipped)")
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads (1)")
    parser.add_argument("--seed", type=int, default=0, help=f"{seed_help} (0)")
    parser.add_argument("--out", default=str(out), help=f"result JSON ({out.relative_to(REPO)})")
    parser.add_argument("--render", metavar="JSON", help="print the docs/RESULTS.md section of a result file and exit")
    return parser


def parse_positive(parser: argparse.ArgumentParser, argv, names: tuple[str, ...]) -> argparse.Namespace:
    """``parser``'s arguments, with each count in ``names`` at least 1."""
    args = parser.parse_args(argv)
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def parse_args(argv=None):
    parser = detector_benchmark_parser(__doc__, DEFAULT_OUT, "subset permutation seed")
    parser.add_argument("--faces", type=int, default=300, help="FER2013 faces of --split (300)")
    parser.add_argument("--split", default="test", help="FER2013 split: test (PrivateTest, default) or val")
    parser.add_argument("--timed-photos", type=int, default=50, help="x4 photos timed per candidate (50)")
    parser.add_argument("--repeats", type=int, default=10, help="timings of the astronaut photo per candidate (10)")
    return parse_positive(parser, argv, ("faces", "timed_photos", "repeats", "threads"))


def main(argv=None) -> int:
    return render_or_run(parse_args(argv), run, render, "face_detector_settings")


if __name__ == "__main__":
    sys.exit(main())
