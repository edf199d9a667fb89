"""CPU benchmark (not a test): fermetric's photo -> expressions path against the ``fer`` package.

One run measures both libraries on the same inputs, alternately, on the same machine:

1. **Per-photo latency**, end to end (file -> decoded image -> face detection -> crop ->
   classifier -> labelled result): ``Predictor.predict(path)`` against ``FER.detect_emotions(path)``.
   Photos: the shipped astronaut photo (512x512, one face; ``--astronaut-repeats`` timings) and
   ``--photos`` FER2013 test faces turned into small photos (48 px face upscaled 4x with
   ``INTER_CUBIC`` and a 24 px grey border: 240x240 PNG, the setting ``data/faces.py`` was
   calibrated with, in which OpenCV's Haar cascade finds most faces and YuNet nearly all). Median and p90 after
   ``--warmup`` untimed photos; the photos' end-to-end accuracy (largest face's label, a photo
   without a face counts as wrong) and how many faces each side found are recorded too.
2. **Pre-cropped faces** (``--crops`` FER2013 test images, the same decoded pixels on both sides):
   faces/s of ``Predictor.run_crops`` in batches (``--batch-sizes``, 64 and 256) against fer's
   classifier as fer runs it (quantised TFLite, one face per call: fer has no batched TFLite
   path), fer's float Keras model in the same batches, and fer's public call for a known box
   (``detect_emotions(crop, face_rectangles=[(0, 0, w, h)])``); top-1 accuracy and macro-F1
   against the FER2013 label on those faces, fer's 7 labels mapped onto fermetric's canonical
   names, and a paired bootstrap 95% interval of the accuracy difference.
3. **A dataset neither model was trained on** (``--ckplus ROOT``, on by default when
   ``../shared/data/ckplus48`` exists): every CK+48 crop of the six classes both vocabularies
   share (contempt left out: 927 images), classified as a pre-cropped face by each side's default
   path (fermetric ``run_crops``, fer's TFLite model; what ``predict --no-detect`` does): top-1
   accuracy, macro-F1 over the six classes (a "neutral" answer is simply wrong) and the paired
   interval.

Design decisions (defaults stated; each is an option):

* **Separate processes**: fer (TensorFlow) runs in its own venv (``.venv-fer``, made by
  ``benchmarks/fer_peer/setup.sh``) as a worker (``benchmarks/fer_peer/run_fer.py``) that
  answers one JSON line per request; it times itself, so the pipe is never inside a timing.
  TensorFlow and PyTorch never share a process or its thread pools.
* **Same threads**: ``--threads 1`` for torch (intra- and inter-op), OpenCV (fer's Haar
  cascade, fermetric's YuNet), TensorFlow and the TFLite interpreter, so neither side wins by taking both cores of
  a shared 2-core machine. The JSON records every thread count. ``--fer-extra-threads N``
  also times fer's per-face paths at N threads in the same passes: with ``--threads 2`` (the whole
  machine for each side in turn) fer's best path is then the best of its thread counts.
* **Alternation**: photos and crop runs alternate between the two sides (which side goes first
  alternates too), so background load on a shared CPU falls on both alike; the load average
  before and after is recorded. Timings are ``time.perf_counter`` wall seconds.
* **Subset**: a seeded (``--seed 0``) permutation of FER2013's PrivateTest split (the standard
  reporting split) without the near-blank images listed in ``near_blank.csv``; photos are its
  first ``--photos`` items, crops its first ``--crops``. Images are read from ``--data`` and the
  upscaled photos live in a temporary folder: no research image is ever written into the repo.
* **Output**: ``--out`` (``benchmarks/results/cpu_predict_vs_fer.json``): machine, versions,
  thread settings, seed, date, command, git commit and every number; ``--render JSON`` prints the
  docs/RESULTS.md section from such a file. The file carries no ``schema`` key, so
  ``make_tables.py`` leaves it alone.

Known difference in detectors (recorded, not changed): ``fer`` runs OpenCV's
``frontalface_default`` Haar cascade at ``scaleFactor=1.1, minNeighbors=5, minSize=50``;
fermetric's default is the YuNet CNN through OpenCV's ``FaceDetectorYN`` (chosen, with the
numbers, by ``benchmarks/face_detector_settings.py``; the ``frontalface_alt2`` cascade at
``1.2 / 2 / 40`` with an edge-padded second search until 2026-12-07). Each side runs its own
library's defaults.

Run (about 3-5 minutes on the 2-core CPU with a ResNet-18 model)::

    bash benchmarks/fer_peer/setup.sh           # once: .venv-fer with fer 25.10.3 + tensorflow-cpu 2.21.0
    .venv/bin/python benchmarks/cpu_predict_vs_fer.py --checkpoint default --data ../shared/data/fer2013
    .venv/bin/python benchmarks/cpu_predict_vs_fer.py --render benchmarks/results/cpu_predict_vs_fer.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fermetric.engine.metrics import paired_bootstrap

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "cpu_predict_vs_fer.json"
DEFAULT_FER_PYTHON = REPO / ".venv-fer" / "bin" / "python"
PEER_SCRIPT = REPO / "benchmarks" / "fer_peer" / "run_fer.py"
#: photo construction from a 48 px FER2013 face (see the module notes)
UPSCALE, BORDER, BORDER_GREY = 4, 24, 128
BATCHNORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")  # state, not parameters
BOOTSTRAP_RESAMPLES = 2000


# ------------------------------------------------------------------------------------ helpers
def summary_ms(seconds) -> dict:
    """Median, p90, mean, min (milliseconds) and count of a list of durations in seconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if ms.size == 0:
        return {"n": 0}
    return {
        "median": float(np.median(ms)),
        "p90": float(np.percentile(ms, 90)),
        "mean": float(ms.mean()),
        "min": float(ms.min()),
        "n": int(ms.size),
    }


def classification_scores(truth: list[str], predicted: list[str], classes: tuple[str, ...]) -> dict:
    """Top-1 accuracy and macro-F1 (over ``classes``, scikit-learn) of predicted names vs true names."""
    from sklearn.metrics import f1_score

    truth_a, pred_a = np.asarray(truth), np.asarray(predicted)
    return {
        "accuracy": float((truth_a == pred_a).mean()) if truth_a.size else float("nan"),
        "macro_f1": float(f1_score(truth_a, pred_a, labels=list(classes), average="macro", zero_division=0)),
        "n": int(truth_a.size),
    }


def make_photo(face48: np.ndarray, upscale: int = UPSCALE) -> np.ndarray:
    """A small 'photo' from a FER2013 face: ``upscale``x bicubic, then a ``BORDER`` px grey frame."""
    import cv2

    big = cv2.resize(face48, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
    return cv2.copyMakeBorder(big, BORDER, BORDER, BORDER, BORDER, cv2.BORDER_CONSTANT, value=BORDER_GREY)


def largest(boxes_xyxy: list) -> int | None:
    """Index of the largest box ``(x0, y0, x1, y1)``; ``None`` for no box."""
    if not boxes_xyxy:
        return None
    return int(np.argmax([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes_xyxy]))


def machine_info() -> dict:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": affinity,
        "platform": platform.platform(),
    }


def provenance(script: str, argv=None) -> dict:
    """``machine``, ``date``, ``commit`` and the ``command`` that reruns ``benchmarks/<script>``:
    what every result file carries beside its numbers."""
    return {
        "machine": machine_info(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "command": f"python benchmarks/{script} " + " ".join(sys.argv[1:] if argv is None else argv),
    }


def library_versions() -> dict:
    """The versions behind fermetric's side of a benchmark (fermetric, torch, OpenCV, numpy, python)."""
    import cv2
    import torch

    import fermetric

    return {
        "fermetric": fermetric.__version__,
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def points_interval(change: dict) -> str:
    """``+d [low, high]``: a :func:`~fermetric.engine.metrics.paired_bootstrap` result in points."""
    low, high = (100 * v for v in change["ci95"])
    return f"{100 * change['difference']:+.2f} [{low:+.2f}, {high:+.2f}]"


def git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def near_blank_paths(root: Path) -> set[str]:
    """``near_blank.csv`` paths (relative to the dataset root), empty when the file is absent."""
    import csv

    listing = root / "near_blank.csv"
    if not listing.is_file():
        return set()
    with open(listing, newline="") as handle:
        return {row["path"] for row in csv.DictReader(handle)}


def fer2013_test_order(root: Path, seed: int, split: str = "test"):
    """``(FER2013 ImageSet of ``split`` (test: PrivateTest), its indices without near-blank images
    in a seeded random order)``."""
    from fermetric.data import load_dataset
    from fermetric.errors import ConfigError

    if not root.is_dir():
        raise ConfigError(
            f"--data {root} is not a folder; pass the FER2013 image-folder root (e.g. ../shared/data/fer2013)"
        )
    testset = load_dataset("fer2013", root, split=split)
    excluded = near_blank_paths(root)
    usable = np.array([i for i, p in enumerate(testset.paths) if p not in excluded])
    return testset, np.random.default_rng(seed).permutation(usable)


def cross_dataset_crops(root: Path, model_classes) -> dict:
    """CK+48's crops of the classes the model also has (for FER2013's seven: contempt left out)."""
    from fermetric.data import load_dataset

    ckplus = load_dataset("ckplus48", root, split="all")
    shared = set(model_classes)
    keep = np.array([i for i, y in enumerate(ckplus.labels) if ckplus.classes[y] in shared])
    return {
        "root": str(root),
        "images": np.ascontiguousarray(np.asarray(ckplus.images)[keep]),
        "truth": [ckplus.classes[ckplus.labels[i]] for i in keep],
        "classes": [c for c in ckplus.classes if c in shared],
        "left_out": sorted(set(ckplus.classes) - shared),
    }


def cross_dataset_scores(cross: dict, seed: int) -> dict:
    truth, classes = cross["truth"], tuple(cross["classes"])
    scores = {side: classification_scores(truth, labels, classes) for side, labels in cross["predicted"].items()}
    correct = {side: np.asarray(labels) == np.asarray(truth) for side, labels in cross["predicted"].items()}
    return {
        "dataset": "ckplus48",
        "root": cross["root"],
        "classes": list(classes),
        "left_out": cross["left_out"],
        "n": len(truth),
        "accuracy": scores,
        "fermetric_minus_fer": paired_bootstrap(correct["fermetric"], correct["fer"], seed, BOOTSTRAP_RESAMPLES),
    }


# ------------------------------------------------------------------------------------ the peer
class FerPeer:
    """The ``fer`` worker (``fer_peer/run_fer.py``) in its own venv; one JSON line per request."""

    def __init__(self, python: Path, threads: int, log_dir: Path) -> None:
        from fermetric.errors import ConfigError

        if not Path(python).is_file():
            raise ConfigError(
                f"fer peer interpreter {python} not found; create it with: bash benchmarks/fer_peer/setup.sh"
            )
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        self.log_path = log_dir / "fer_peer.log"
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [str(python), str(PEER_SCRIPT), "--threads", str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
            cwd=str(REPO),
        )
        self._read()  # {"ready": true} once fer and TensorFlow are loaded

    def _tail(self) -> str:
        self._log.flush()
        lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        return lines[-1] if lines else "no output"

    def _read(self) -> dict:
        from fermetric.errors import ConfigError

        line = self.process.stdout.readline()
        if not line:
            raise ConfigError(f"the fer peer exited ({self._tail()}); check it with: bash benchmarks/fer_peer/setup.sh")
        reply = json.loads(line)
        if "error" in reply:
            raise ConfigError(f"the fer peer failed: {reply['error']}")
        return reply

    def __call__(self, op: str, **request) -> dict:
        self.process.stdin.write(json.dumps({"op": op, **request}) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self("quit")
                self.process.wait(timeout=30)
            except Exception:
                self.process.kill()
        self._log.close()


# --------------------------------------------------------------------------------- benchmark
def set_torch_threads(threads: int) -> dict:
    import cv2
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already fixed once parallel work has run in this process
        pass
    cv2.setNumThreads(threads)
    return {
        "torch_intra_op": torch.get_num_threads(),
        "torch_interop": torch.get_num_interop_threads(),
        "opencv": cv2.getNumThreads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }


def run(args) -> dict:
    import cv2

    import fermetric
    from fermetric import vocab
    from fermetric.assets import example_photo
    from fermetric.engine.checkpoint import load_weights, resolve_source
    from fermetric.errors import ConfigError

    started = time.perf_counter()
    load_start = os.getloadavg()
    ours_threads = set_torch_threads(args.threads)
    # ---- inputs
    testset, order = fer2013_test_order(Path(args.data), args.seed)
    if args.photos > len(order) or args.crops > len(order):
        raise ConfigError(f"--photos/--crops must be at most {len(order)} (FER2013 test images kept)")
    photo_index, crop_index = order[: args.photos + args.warmup], order[: args.crops]
    names = lambda idx: [testset.classes[testset.labels[i]] for i in idx]  # noqa: E731
    crops = np.ascontiguousarray(testset.images[crop_index])
    crop_truth = names(crop_index)

    predictor = fermetric.load(args.checkpoint, device="cpu", backend=args.backend)
    parameters = None  # an exported .onnx graph (openvino-int8 runs one) has no weights file to count
    if not str(args.checkpoint).endswith(".onnx"):  # the parameter count, whatever runs it
        weights, _ = load_weights(resolve_source(args.checkpoint))
        parameters = int(sum(v.numel() for k, v in weights.items() if not k.endswith(BATCHNORM_BUFFERS)))
    recipe = predictor.meta.get("recipe", {})
    model_info = {
        "checkpoint": str(args.checkpoint),
        "recipe": recipe.get("name"),
        "backbone": recipe.get("model", {}).get("backbone"),
        "input_size": predictor.input_size,
        "crop_size": predictor.crop_size,  # photos' faces are cropped at this side, then enlarged
        "embedding_dim": predictor.embedding_dim,
        "classes": list(predictor.classes),
        "parameters": parameters,
        "backend": predictor.backend,
        # auto: bf16 on CPUs with native bf16 (AVX512-BF16/AMX), fp32 elsewhere and in onnxruntime
        "precision": "int8" if predictor.backend.endswith("-int8") else predictor.precision,
        "detector": repr(predictor.detector),
    }

    with tempfile.TemporaryDirectory(prefix="fermetric-vs-fer-") as tmp:
        tmp = Path(tmp)
        photo_paths = []
        for k, i in enumerate(photo_index):
            path = tmp / f"photo_{k:04d}.png"
            cv2.imwrite(str(path), make_photo(testset.images[i]))
            photo_paths.append(str(path))
        crops_npy = tmp / "crops.npy"
        np.save(crops_npy, crops)
        warm_npy = tmp / "warm.npy"
        np.save(warm_npy, crops[: min(len(crops), 64)])
        astronaut = str(example_photo())

        cross = cross_dataset_crops(Path(args.ckplus), predictor.classes) if args.ckplus else None
        if cross is not None:
            np.save(tmp / "cross.npy", cross["images"])

        peer = FerPeer(Path(args.fer_python), args.threads, tmp)
        # fer's per-face paths again at other thread counts: its best path may not use --threads
        extra_peers = {}
        try:
            for threads in sorted(set(args.fer_extra_threads) - {args.threads}):
                (tmp / f"threads{threads}").mkdir()
                extra_peers[threads] = FerPeer(Path(args.fer_python), threads, tmp / f"threads{threads}")
            peer_info = peer("info")
            fer_to_canonical = [vocab.canonical(name) for name in peer_info["labels"]]

            # ---- warm-up (untimed): model weights paged in, cascades loaded, allocators primed
            log(f"warm-up ({args.warmup} photos each)")
            for path in [astronaut, *photo_paths[: args.warmup]]:
                predictor.predict(path)
                peer("photo", path=path)
            for batch in args.batch_sizes:
                predictor.batch_size = batch
                # every crop once: the compiled backend compiles each chunk shape the timed run meets
                predictor.run_crops(crops)
                peer("crops", npy=str(warm_npy), mode="keras", batch=batch)
            for each_peer in (peer, *extra_peers.values()):
                each_peer("crops", npy=str(warm_npy), mode="tflite")
                each_peer("crops", npy=str(warm_npy), mode="api")

            # ---- per-photo latency, alternating sides and which side goes first
            def time_ours(path):
                start = time.perf_counter()
                records = predictor.predict(path)
                return time.perf_counter() - start, records

            log(f"astronaut photo x{args.astronaut_repeats}")
            astro = {"fermetric": [], "fer": []}
            astro_labels = {}
            for r in range(args.astronaut_repeats):
                for side in ("fermetric", "fer") if r % 2 == 0 else ("fer", "fermetric"):
                    if side == "fermetric":
                        seconds, records = time_ours(astronaut)
                        astro_labels["fermetric"] = [rec["label"] for rec in records]
                    else:
                        reply = peer("photo", path=astronaut)
                        seconds = reply["seconds"][0]
                        astro_labels["fer"] = [
                            fer_to_canonical[int(np.argmax(f["probabilities"]))] for f in reply["faces"]
                        ]
                    astro[side].append(seconds)

            log(f"{args.photos} FER2013 photos ({testset.images.shape[1] * UPSCALE + 2 * BORDER} px)")
            timed_paths, timed_truth = photo_paths[args.warmup :], names(photo_index[args.warmup :])
            latency = {"fermetric": [], "fer": []}
            predicted = {"fermetric": [], "fer": []}
            faces_found = {"fermetric": 0, "fer": 0}
            for k, path in enumerate(timed_paths):
                for side in ("fermetric", "fer") if k % 2 == 0 else ("fer", "fermetric"):
                    if side == "fermetric":
                        seconds, records = time_ours(path)
                        boxes = [r["box"] for r in records]
                        labels = [r["label"] for r in records]
                    else:
                        reply = peer("photo", path=path)
                        seconds = reply["seconds"][0]
                        boxes = [[x, y, x + w, y + h] for x, y, w, h in (f["box"] for f in reply["faces"])]
                        labels = [fer_to_canonical[int(np.argmax(f["probabilities"]))] for f in reply["faces"]]
                    latency[side].append(seconds)
                    faces_found[side] += len(boxes)
                    best = largest(boxes)
                    predicted[side].append(None if best is None else labels[best])

            # ---- pre-cropped faces, alternating sides, each configuration --repeats times
            log(f"{len(crops)} pre-cropped faces x{args.repeats}")
            throughput: dict[str, list[float]] = {}
            crop_predictions: dict[str, list[str]] = {}
            batch_agreement = []
            for _ in range(args.repeats):
                for batch in args.batch_sizes:
                    predictor.batch_size = batch
                    start = time.perf_counter()
                    probabilities, _ = predictor.run_crops(crops)
                    throughput.setdefault(f"fermetric_batch{batch}", []).append(time.perf_counter() - start)
                    labels = [predictor.classes[j] for j in probabilities.argmax(1)]
                    if "fermetric" in crop_predictions:
                        batch_agreement.append(
                            float(np.mean(np.asarray(labels) == np.asarray(crop_predictions["fermetric"])))
                        )
                    crop_predictions["fermetric"] = labels
                    reply = peer("crops", npy=str(crops_npy), mode="keras", batch=batch)
                    throughput.setdefault(f"fer_keras_batch{batch}", []).append(reply["seconds"])
                    crop_predictions["fer_keras"] = [fer_to_canonical[j] for j in np.argmax(reply["probabilities"], 1)]
                for mode in ("tflite", "api"):
                    reply = peer("crops", npy=str(crops_npy), mode=mode)
                    throughput.setdefault(f"fer_{mode}_per_face", []).append(reply["seconds"])
                    crop_predictions[f"fer_{mode}"] = [
                        fer_to_canonical[j] for j in np.argmax(reply["probabilities"], 1)
                    ]
                    for threads, extra in extra_peers.items():
                        reply = extra("crops", npy=str(crops_npy), mode=mode)
                        throughput.setdefault(f"fer_{mode}_per_face_threads{threads}", []).append(reply["seconds"])
            if cross is not None:
                log(f"{len(cross['images'])} CK+48 crops (a dataset neither side trained on)")
                probabilities, _ = predictor.run_crops(cross["images"])
                cross["predicted"] = {"fermetric": [predictor.classes[j] for j in probabilities.argmax(1)]}
                reply = peer("crops", npy=str(tmp / "cross.npy"), mode="tflite")
                cross["predicted"]["fer"] = [fer_to_canonical[j] for j in np.argmax(reply["probabilities"], 1)]
        finally:
            for each_peer in (peer, *extra_peers.values()):
                each_peer.close()

    # ---- numbers
    fer2013_classes = tuple(testset.classes)
    photo_scores = {}
    for side in ("fermetric", "fer"):
        scores = classification_scores(timed_truth, [p or "no face" for p in predicted[side]], fer2013_classes)
        scores["photos_with_a_face"] = int(sum(p is not None for p in predicted[side]))
        scores["faces_found"] = faces_found[side]
        photo_scores[side] = scores
    crop_scores = {
        name: classification_scores(crop_truth, labels, fer2013_classes) for name, labels in crop_predictions.items()
    }
    correct = {name: np.asarray(labels) == np.asarray(crop_truth) for name, labels in crop_predictions.items()}
    throughput_summary = {}
    for name, runs in throughput.items():
        seconds = float(np.median(runs))
        throughput_summary[name] = {
            "faces_per_second": len(crops) / seconds,
            "seconds_median": seconds,
            "seconds": runs,
            "faces": len(crops),
        }
    result = {
        "benchmark": "cpu_predict_vs_fer",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "git_commit": git_commit(),
        "seed": args.seed,
        "machine": {
            **machine_info(),
            "load_average_start": list(load_start),
            "load_average_end": list(os.getloadavg()),
        },
        "threads": {"fermetric": ours_threads, "fer": peer_info["threads"]},
        "versions": {
            **library_versions(),
            "fer_side": {k: peer_info[k] for k in ("fer", "tensorflow", "opencv", "numpy", "python")},
        },
        "model": model_info,
        "fer_settings": peer_info["settings"],
        "data": {
            "root": str(args.data),
            "split": "test (PrivateTest)",
            "near_blank_excluded": int(len(testset.labels) - len(order)),
            "photos": len(timed_paths),
            "warmup_photos": args.warmup,
            "crops": int(len(crops)),
            "photo_construction": f"48 px face x{UPSCALE} INTER_CUBIC + {BORDER} px border grey {BORDER_GREY}, PNG",
            "crop_size": list(crops.shape[1:]),
        },
        "photo_latency_ms": {
            "astronaut_512": {side: summary_ms(v) for side, v in astro.items()},
            "fer2013_photos": {side: summary_ms(v) for side, v in latency.items()},
        },
        "astronaut_labels": astro_labels,
        "photo_accuracy": photo_scores,
        "crop_throughput": throughput_summary,
        "crop_accuracy": crop_scores,
        "crop_batch_agreement": min(batch_agreement) if batch_agreement else None,
        "cross_dataset": None if cross is None else cross_dataset_scores(cross, args.seed),
        "crop_accuracy_difference": {
            f"fermetric_minus_{name}": paired_bootstrap(
                correct["fermetric"], correct[name], args.seed, BOOTSTRAP_RESAMPLES
            )
            for name in correct
            if name != "fermetric"
        },
        "settings": {
            "threads": args.threads,
            "fer_extra_threads": sorted(extra_peers),
            "repeats": args.repeats,
            "astronaut_repeats": args.astronaut_repeats,
            "batch_sizes": list(args.batch_sizes),
        },
        "wall_seconds": time.perf_counter() - started,
    }
    return result


# ------------------------------------------------------------------------------------ report
def _fmt(value, digits=1) -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def render(result: dict) -> str:
    """The docs/RESULTS.md section (markdown) for one result file."""
    lat, thr = result["photo_latency_ms"], result["crop_throughput"]
    acc, photo = result["crop_accuracy"], result["photo_accuracy"]
    model, machine, versions = result["model"], result["machine"], result["versions"]
    threads = result["settings"]["threads"]
    n_photos, n_crops = result["data"]["photos"], result["data"]["crops"]
    pct = lambda v: _fmt(100 * v) if v is not None else "-"  # noqa: E731

    def latency_cell(block, side):
        s = block[side]
        return f"{_fmt(s.get('median'))} / {_fmt(s.get('p90'))}" if s.get("n") else "-"

    lines = [
        "## CPU inference against `fer`",
        "",
        f"`benchmarks/cpu_predict_vs_fer.py`, one run, both libraries alternating on the same inputs, "
        f"{threads} thread(s) each (torch, OpenCV, TensorFlow/TFLite). Machine: {machine['cpu_model']}, "
        f"{machine['usable_cpus']} usable CPUs; load average {machine['load_average_start'][0]:.2f} at start. "
        f"Model: `{model['checkpoint']}` ({model['recipe']}, {model['backbone']}, {model['input_size']} px"
        + (
            f" (photos' faces cropped at {model['crop_size']} px)"
            if model.get("crop_size", 0) < model["input_size"]
            else ""
        )
        + ", "
        f"{model.get('backend', 'torch')} backend in {model.get('precision', 'fp32')}, "
        + (f"{model['parameters'] / 1e6:.2f} M parameters" if model.get("parameters") else "an exported graph")
        + f"); fer {versions['fer_side']['fer']} "
        f"(mini-Xception, quantised TFLite, TensorFlow {versions['fer_side']['tensorflow']}). "
        f"Faces: FER2013 PrivateTest, seed {result['seed']}.",
        "",
        "| | fermetric | fer |",
        "|---|---|---|",
        f"| Photo latency, astronaut 512x512, median / p90 (ms) | {latency_cell(lat['astronaut_512'], 'fermetric')} "
        f"| {latency_cell(lat['astronaut_512'], 'fer')} |",
        f"| Photo latency, {n_photos} FER2013 photos 240x240, median / p90 (ms) | "
        f"{latency_cell(lat['fer2013_photos'], 'fermetric')} | {latency_cell(lat['fer2013_photos'], 'fer')} |",
        f"| Photos with a face found (of {n_photos}) | {photo['fermetric']['photos_with_a_face']} | "
        f"{photo['fer']['photos_with_a_face']} |",
        f"| End-to-end accuracy on those photos (%; no face = wrong) | {pct(photo['fermetric']['accuracy'])} | "
        f"{pct(photo['fer']['accuracy'])} |",
    ]
    for batch in result["settings"]["batch_sizes"]:
        ours, theirs = thr.get(f"fermetric_batch{batch}"), thr.get(f"fer_keras_batch{batch}")
        lines.append(
            f"| Pre-cropped faces/s, batch {batch} (fer: float Keras model) | "
            f"{_fmt(ours and ours['faces_per_second'], 0)} | {_fmt(theirs and theirs['faces_per_second'], 0)} |"
        )
    tfl, api = thr.get("fer_tflite_per_face"), thr.get("fer_api_per_face")
    lines += [
        f"| Pre-cropped faces/s, fer's default TFLite model (one face per call) | - | "
        f"{_fmt(tfl and tfl['faces_per_second'], 0)} |",
        f"| Pre-cropped faces/s, `detect_emotions(crop, face_rectangles=...)` | - | {_fmt(api and api['faces_per_second'], 0)} |",
    ]
    for threads in result["settings"].get("fer_extra_threads", []):
        tfl, api = thr[f"fer_tflite_per_face_threads{threads}"], thr[f"fer_api_per_face_threads{threads}"]
        lines.append(
            f"| Pre-cropped faces/s, fer at {threads} thread(s): TFLite / `detect_emotions` (one face per call) | - | "
            f"{_fmt(tfl['faces_per_second'], 0)} / {_fmt(api['faces_per_second'], 0)} |"
        )
    lines += [
        f"| Top-1 accuracy on {n_crops} crops (%) | {pct(acc['fermetric']['accuracy'])} | "
        f"{pct(acc['fer_tflite']['accuracy'])} (Keras {pct(acc['fer_keras']['accuracy'])}, "
        f"API {pct(acc['fer_api']['accuracy'])}) |",
        f"| Macro-F1 on {n_crops} crops (%) | {pct(acc['fermetric']['macro_f1'])} | {pct(acc['fer_tflite']['macro_f1'])} |",
    ]
    cross = result.get("cross_dataset")
    if cross:
        ours, theirs = cross["accuracy"]["fermetric"], cross["accuracy"]["fer"]
        lines += [
            f"| CK+48 crops, {len(cross['classes'])} shared classes (n={cross['n']}, neither trained on it): "
            f"top-1 / macro-F1 (%) | {pct(ours['accuracy'])} / {pct(ours['macro_f1'])} | "
            f"{pct(theirs['accuracy'])} / {pct(theirs['macro_f1'])} |",
        ]
    diff = result["crop_accuracy_difference"].get("fermetric_minus_fer_tflite")
    if diff:
        lines += [
            "",
            f"Accuracy difference fermetric - fer (TFLite) on the same {n_crops} crops: "
            f"{100 * diff['difference']:+.1f} points (paired bootstrap 95% interval "
            f"{100 * diff['ci95'][0]:+.1f} to {100 * diff['ci95'][1]:+.1f}).",
        ]
    if cross:
        d = cross["fermetric_minus_fer"]
        lines.append(
            f"On the CK+48 crops: {100 * d['difference']:+.1f} points "
            f"({100 * d['ci95'][0]:+.1f} to {100 * d['ci95'][1]:+.1f}; {', '.join(cross['left_out'])} left out)."
        )
    lines += [
        "",
        f"Date {result['date']}, commit `{result['git_commit']}`, torch {versions['torch']}, "
        f"OpenCV {versions['opencv']}. Command: `{result['command']}`",
    ]
    return "\n".join(lines)


def log(message: str) -> None:
    print(f"[cpu_predict_vs_fer] {message}", file=sys.stderr, flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint",
        default="default",
        help="'default' (shipped model), a run directory, .pt or .safetensors (with --backend openvino-int8 "
        "also an int8 .onnx graph from fermetric export --int8-calibration)",
    )
    parser.add_argument(
        "--data",
        default=str(REPO.parent / "shared" / "data" / "fer2013"),
        help="FER2013 image-folder root (read only; default ../shared/data/fer2013)",
    )
    default_ckplus = REPO.parent / "shared" / "data" / "ckplus48"
    parser.add_argument(
        "--ckplus",
        default=str(default_ckplus) if default_ckplus.is_dir() else "",
        help="CK+48 root for the cross-dataset crops ('' to skip; default ../shared/data/ckplus48 when present)",
    )
    parser.add_argument(
        "--backend",
        # literal: importing fermetric.predict here would load OpenCV before its threads are fixed
        choices=["torch", "onnx", "openvino", "openvino-int8", "compiled", "compiled-int8", "auto"],
        default="torch",
        help="fermetric's model runtime: torch (PyTorch eager), onnx (onnxruntime: what `fermetric predict` "
        "and fermetric.load pick on a CPU), openvino (OpenVINO), openvino-int8 (OpenVINO, the model's "
        "int8 graph), compiled (TorchInductor), compiled-int8 (TorchInductor, int8 with the weights "
        "file's calibration) or auto",
    )
    parser.add_argument("--photos", type=int, default=100, help="timed FER2013 photos (100)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed photos first (5)")
    parser.add_argument(
        "--astronaut-repeats", type=int, default=20, help="timings of the astronaut photo per side (20)"
    )
    parser.add_argument("--crops", type=int, default=1000, help="pre-cropped faces (1000)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256], help="crop batch sizes (64 256)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="timed passes over the crops per configuration (1; median)"
    )
    parser.add_argument("--threads", type=int, default=1, help="threads for each side (1)")
    parser.add_argument(
        "--fer-extra-threads",
        type=int,
        nargs="*",
        default=[],
        metavar="N",
        help="also time fer's per-face paths (TFLite, detect_emotions) at these thread counts in the same "
        "passes, so that its best path is known whatever --threads is (e.g. --threads 2 --fer-extra-threads 1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="subset permutation and bootstrap seed (0)")
    parser.add_argument(
        "--fer-python", default=str(DEFAULT_FER_PYTHON), help="python of the fer venv (.venv-fer/bin/python)"
    )
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help="result JSON (benchmarks/results/cpu_predict_vs_fer.json)"
    )
    parser.add_argument("--render", metavar="JSON", help="print the docs/RESULTS.md section of a result file and exit")
    args = parser.parse_args(argv)
    for name in ("photos", "crops", "astronaut_repeats", "repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or min(args.batch_sizes) < 1 or min(args.fer_extra_threads, default=1) < 1:
        parser.error("--warmup must be >= 0, --batch-sizes and --fer-extra-threads >= 1")
    return args


def render_or_run(args, run, render, name: str) -> int:
    """The shared ``main`` of the CPU benchmarks: ``--render JSON`` prints a saved result;
    otherwise fix the thread pools, ``run(args)``, write ``args.out`` and print its section."""
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return 0
    # Thread pools size themselves when first used: fix them before torch/OpenCV start any work.
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = str(args.threads)
    from fermetric.errors import FermetricError

    try:
        result = run(args)
    except FermetricError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))
    print(f"[{name}] wrote {out} ({result['wall_seconds']:.0f} s)", file=sys.stderr, flush=True)
    return 0


def main(argv=None) -> int:
    return render_or_run(parse_args(argv), run, render, "cpu_predict_vs_fer")


if __name__ == "__main__":
    sys.exit(main())
