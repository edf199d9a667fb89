"""CPU benchmark (not a test): which offline face detector finds the faces fermetric classifies.

Every registered detector that can be created here (``haar``, ``yunet``; ``mtcnn`` with facenet-pytorch;
``mediapipe`` with mediapipe 0.10.21) runs on the same inputs, one thread, on this machine:

* **Single faces**: ``--faces`` FER2013 PrivateTest faces made into small photos as
  ``face_detector_settings.py`` does (faces of 72, 96 and 192 px). A photo counts when at least
  one face is found.
* **Group photos**: ``--groups`` 640x480 composites, each of 2-6 other PrivateTest faces pasted
  onto a face-free scikit-image background at sides of 40-160 px, turned in-plane by up to
  +-25 degrees and lit darker or brighter (gain 0.5-1.4, offset -30..30 grey levels), faces never
  overlapping. No real group photo with labelled boxes ships offline, so these composites of real
  faces stand in for one; their faces are tight 48-px crops, so they test size, roll and light,
  not profile poses. A true face is found when a detection overlaps it with IoU >= 0.3 (detectors
  draw boxes of different extents: Haar includes the forehead, MTCNN stops at the brows);
  detections that match no face are false positives. Recall is reported per face-size band too.
* **False detections** on scikit-image's face-free example images (a cup, a cat, text...).
* **Time**: median ms per image of the astronaut photo (512x512) and of the group photos.
* **End-to-end accuracy** with ``--checkpoint`` (the shipped model by default): the largest
  face's label on the x2 and x4 single-face photos, cropped the way ``predict`` crops for that
  detector (no face counts as wrong).

Output: ``--out`` (``benchmarks/results/face_detectors.json``) with machine, versions, seed,
date, command and every number; ``--render JSON`` prints the docs/RESULTS.md section.

MediaPipe 0.10.21 (the last with bundled models) needs numpy<2, so the three detectors run side
by side in one process from a small second environment layered over the project's::

    python3 -m venv ../mpenv && ../mpenv/bin/pip install --no-deps mediapipe==0.10.21 && \\
        ../mpenv/bin/pip install "numpy<2" absl-py attrs flatbuffers "protobuf>=4.25.3,<5" && \\
        .venv/bin/pip install --no-deps facenet-pytorch && .venv/bin/pip install requests && \\
        echo $PWD/.venv/lib/python3.11/site-packages > ../mpenv/lib/python3.11/site-packages/zz.pth
    PYTHONPATH=src ../mpenv/bin/python benchmarks/face_detectors.py --data ../shared/data/fer2013

(about 15 minutes on the 2-core CPU, most of it MTCNN).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from cpu_predict_vs_fer import fer2013_test_order, git_commit, machine_info, render_or_run, set_torch_threads
from face_detector_settings import (
    ACCURACY_UPSCALES,
    UPSCALES,
    detector_benchmark_parser,
    face_free_images,
    largest,
    make_photo,
    median_ms,
    parse_positive,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "face_detectors.json"
DETECTORS = ("haar", "yunet", "mtcnn", "mediapipe")
GROUP_SIZE = (640, 480)
FACE_SIDES = (40, 160)
MAX_ROLL = 25.0
BANDS = {"40-63 px": (40, 64), "64-111 px": (64, 112), "112-160 px": (112, 161)}
IOU_MATCH = 0.3


def iou(a, b) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def group_photo(faces48: list[np.ndarray], background: np.ndarray, rng: np.random.Generator):
    """``(grey 640x480 photo, [true boxes x0 y0 x1 y1])``: the faces pasted without overlap."""
    import cv2

    width, height = GROUP_SIZE
    photo = cv2.resize(background, (width, height), interpolation=cv2.INTER_AREA).astype(np.float64)
    boxes = []
    for face in faces48:
        side = int(rng.integers(FACE_SIDES[0], FACE_SIDES[1] + 1))
        for _ in range(100):  # a free spot, else the face is left out
            x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
            box = (x, y, x + side, y + side)
            if all(iou(box, other) == 0.0 and not _touching(box, other) for other in boxes):
                break
        else:
            continue
        big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC).astype(np.float64)
        turn = cv2.getRotationMatrix2D((side / 2, side / 2), float(rng.uniform(-MAX_ROLL, MAX_ROLL)), 1.0)
        region = photo[y : y + side, x : x + side]
        turned = cv2.warpAffine(big, turn, (side, side), flags=cv2.INTER_LINEAR, borderValue=-1.0)
        inside = turned >= 0  # the turned square's corners keep the background
        lit = np.clip(turned * rng.uniform(0.5, 1.4) + rng.uniform(-30, 30), 0, 255)
        region[inside] = lit[inside]
        boxes.append(box)
    return np.uint8(np.clip(photo, 0, 255)), boxes


def _touching(a, b, gap: int = 8) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def match(detections, truths) -> tuple[list[bool], int]:
    """Greedy IoU matching (strongest detection first): which true faces are found, and how many
    detections match none (false positives)."""
    order = sorted(range(len(detections)), key=lambda k: -(detections[k].score or 0.0))
    found = [False] * len(truths)
    false = 0
    for k in order:
        box = detections[k].box
        scores = [(iou(box, t), j) for j, t in enumerate(truths) if not found[j]]
        best = max(scores, default=(0.0, -1))
        if best[0] >= IOU_MATCH:
            found[best[1]] = True
        else:
            false += 1
    return found, false


def run(args) -> dict:
    import cv2
    import torch
    from PIL import Image

    import fermetric
    from fermetric.assets import example_photo
    from fermetric.data.faces import align_face, create_detector
    from fermetric.errors import ConfigError

    started = time.perf_counter()
    load_start = os.getloadavg()
    threads = set_torch_threads(args.threads)
    testset, order = fer2013_test_order(Path(args.data), args.seed)
    singles = np.ascontiguousarray(testset.images[order[: args.faces]])
    truth = np.array([testset.classes[testset.labels[i]] for i in order[: args.faces]])
    photos = {up: [make_photo(face, up) for face in singles] for up in UPSCALES}
    rng = np.random.default_rng(args.seed)
    backgrounds = list(face_free_images().values())
    pool = iter(order[args.faces :])
    groups = []
    for g in range(args.groups):
        faces = [testset.images[next(pool)] for _ in range(int(rng.integers(2, 7)))]
        groups.append(group_photo(faces, backgrounds[g % len(backgrounds)], rng))
    face_free = face_free_images()
    with Image.open(example_photo()) as photo:
        astronaut = np.asarray(photo.convert("RGB"))
    predictor = fermetric.load(args.checkpoint, device="cpu", backend="torch")  # the recorded runs' backend
    rgb = lambda grey: cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)  # noqa: E731 - every detector gets RGB

    results, missing = {}, {}
    for name in args.detectors:
        try:
            detector = create_detector(name)
        except ConfigError as err:
            missing[name] = str(err)
            print(f"[face_detectors] {name}: not available ({err})", file=sys.stderr, flush=True)
            continue
        detect = lambda grey: detector(rgb(grey))  # noqa: E731, B023 - used within this iteration
        largest_faces = {up: [largest(detect(p)) for p in photos[up]] for up in UPSCALES}
        per_band = {band: [0, 0] for band in BANDS}
        found_total = faces_total = false_total = 0
        for photo, boxes in groups:
            found, false = match(detect(photo), boxes)
            found_total += sum(found)
            faces_total += len(boxes)
            false_total += false
            for box, hit in zip(boxes, found):
                side = box[2] - box[0]
                band = next(b for b, (low, high) in BANDS.items() if low <= side < high)
                per_band[band][0] += int(hit)
                per_band[band][1] += 1
        end_to_end = {}
        for up in ACCURACY_UPSCALES:
            found = largest_faces[up]
            crops = [
                align_face(p, f, predictor.crop_size, detector.crop_margin) for p, f in zip(photos[up], found) if f
            ]
            hit = np.array([f is not None for f in found])
            labels = np.array([None] * len(found), dtype=object)
            if crops:
                probabilities, _ = predictor.run_crops(crops)
                labels[hit] = [predictor.classes[k] for k in probabilities.argmax(1)]
            end_to_end[f"x{up:g}"] = float(((labels == truth) & hit).mean())
        results[name] = {
            "detector": repr(detector),
            "single_photos_with_a_face": {f"x{up:g}": sum(f is not None for f in largest_faces[up]) for up in UPSCALES},
            "group_recall": found_total / max(faces_total, 1),
            "group_faces": faces_total,
            "group_recall_by_size": {band: hit / max(n, 1) for band, (hit, n) in per_band.items()},
            "group_false_positives": false_total,
            "face_free_false_detections": int(sum(len(detect(image)) for image in face_free.values())),
            "ms_astronaut_512": median_ms(detector, [astronaut], repeats=args.repeats),
            "ms_group_640x480": median_ms(detect, [photo for photo, _ in groups]),
            "end_to_end_accuracy": end_to_end,
        }
        print(f"[face_detectors] {name}: {json.dumps(results[name])}", file=sys.stderr, flush=True)
    import PIL

    versions = {
        "python": sys.version.split()[0],
        "fermetric": fermetric.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "pillow": PIL.__version__,
    }
    from importlib.metadata import PackageNotFoundError, version

    for package in ("facenet-pytorch", "mediapipe"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:  # not installed: recorded as absent
            versions[package] = None
    return {
        "benchmark": "face_detectors",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
        "git_commit": git_commit(),
        "machine": {
            **machine_info(),
            "load_average_start": list(load_start),
            "load_average_end": list(os.getloadavg()),
        },
        "versions": versions,
        "threads": threads,
        "seed": args.seed,
        "data": {
            "dataset": "fer2013",
            "split": "test (PrivateTest)",
            "single_faces": int(args.faces),
            "upscales": list(UPSCALES),
            "group_photos": int(args.groups),
            "group_faces": int(sum(len(b) for _, b in groups)),
            "face_sides": list(FACE_SIDES),
            "max_roll_degrees": MAX_ROLL,
            "iou_match": IOU_MATCH,
            "face_free_images": len(face_free),
        },
        "model": {"checkpoint": str(args.checkpoint), "recipe": predictor.meta.get("recipe", {}).get("name")},
        "detectors": results,
        "not_available": missing,
        "wall_seconds": time.perf_counter() - started,
    }


def render(result: dict) -> str:
    """The docs/RESULTS.md section (markdown) for one result file."""
    data = result["data"]
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    lines = [
        "## Face detectors (CPU)",
        "",
        f"`benchmarks/face_detectors.py`: every offline detector on the same inputs, one thread: "
        f"{data['single_faces']} FER2013 PrivateTest faces made into single-face photos (faces of 72 / 96 / 192 px); "
        f"{data['group_photos']} group composites (640x480, {data['group_faces']} other PrivateTest faces of "
        f"{data['face_sides'][0]}-{data['face_sides'][1]} px, rolled up to +-{data['max_roll_degrees']:g} degrees, "
        f"darker and brighter, on face-free backgrounds; found = IoU >= {data['iou_match']}); "
        f"{data['face_free_images']} face-free scikit-image images; the astronaut photo. "
        f"End-to-end: model `{result['model']['checkpoint']}`, largest face's label, no face = wrong.",
        "",
        "| detector | single photos with a face x1.5 / x2 / x4 (of "
        f"{data['single_faces']}) | group recall (%) | by face side {' / '.join(BANDS)} (%) | group false positives "
        "| face-free false detections | ms astronaut 512 | ms group 640x480 | end-to-end accuracy x2 / x4 (%) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["detectors"].items():
        singles = " / ".join(str(v) for v in r["single_photos_with_a_face"].values())
        bands = " / ".join(pct(v) for v in r["group_recall_by_size"].values())
        e2e = " / ".join(pct(v) for v in r["end_to_end_accuracy"].values())
        lines.append(
            f"| {name} | {singles} | {pct(r['group_recall'])} | {bands} | {r['group_false_positives']} | "
            f"{r['face_free_false_detections']} | {r['ms_astronaut_512']:.1f} | {r['ms_group_640x480']:.1f} | {e2e} |"
        )
    for name, why in result.get("not_available", {}).items():
        lines.append(f"| {name} | not available here: {why} | | | | | | | |")
    machine, versions = result["machine"], result["versions"]
    extra = ", ".join(f"{k} {v}" for k, v in versions.items() if k in ("facenet-pytorch", "mediapipe") and v)
    lines += [
        "",
        f"Machine {machine['cpu_model']}, {machine['usable_cpus']} usable CPUs, load average "
        f"{machine['load_average_start'][0]:.2f} at start; OpenCV {versions['opencv']}, torch {versions['torch']}, "
        f"numpy {versions['numpy']}{', ' + extra if extra else ''}; seed {result['seed']}; {result['date']}; "
        f"commit `{result['git_commit']}`. Command: `{result['command']}`",
    ]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = detector_benchmark_parser(__doc__, DEFAULT_OUT, "subset and composite seed")
    parser.add_argument("--detectors", nargs="+", default=list(DETECTORS), help="detectors to compare (all)")
    parser.add_argument("--faces", type=int, default=200, help="single-face photos per size (200)")
    parser.add_argument("--groups", type=int, default=40, help="group composites (40)")
    parser.add_argument("--repeats", type=int, default=10, help="timings of the astronaut photo per detector (10)")
    return parse_positive(parser, argv, ("faces", "groups", "repeats", "threads"))


def main(argv=None) -> int:
    return render_or_run(parse_args(argv), run, render, "face_detectors")


if __name__ == "__main__":
    sys.exit(main())
