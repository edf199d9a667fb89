"""Engine test helpers: tiny synthetic ImageSets, a tiny recipe, run comparisons.

The images are class-dependent patterns (a bright bar whose position and orientation encode the
class, plus a class-specific blob) under noise and random shifts, so a tiny CNN learns them in a
few dozen steps but not trivially from the first batch.
"""

from __future__ import annotations

import contextlib
import json

import numpy as np
import torch

from fermetric.config import load_recipe
from fermetric.data.base import ImageSet

CLASSES = ("neutral", "happy", "sad", "surprise")


@contextlib.contextmanager
def single_thread():
    """Run torch single-threaded: tiny models gain nothing from a second thread, and on a busy
    2-core machine OpenMP's spinning threads make each step many times slower. Runs compared for
    exact equality must also share one thread count (float reductions depend on it)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def make_imageset(
    n_per_class: int = 24, classes=CLASSES, size: int = 16, seed: int = 0, split: str = "train", soft: bool = False
) -> ImageSet:
    rng = np.random.default_rng(seed)
    num_classes = len(classes)
    labels = np.repeat(np.arange(num_classes), n_per_class)
    rng.shuffle(labels)
    images = rng.normal(110, 30, size=(len(labels), size, size))
    yy, xx = np.mgrid[0:size, 0:size]
    for i, c in enumerate(labels):
        shift = rng.integers(-2, 3, size=2)
        position = (c % 2) * size // 2 + size // 4 + shift[0]
        bar = (np.abs(yy - position) <= 1) if c < 2 else (np.abs(xx - position) <= 1)
        cy, cx = (size // 4 + (c * size // 3) % (size // 2)) + shift[1], size // 2 + shift[0]
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 8) ** 2
        images[i][bar] += 90
        images[i][blob] -= 70
    images = np.clip(images, 0, 255).astype(np.uint8)
    soft_labels = None
    info = {}
    if soft:
        soft_labels = np.full((len(labels), num_classes), 0.1 / (num_classes - 1), np.float32)
        soft_labels[np.arange(len(labels)), labels] = 0.9
        info["label_mode"] = "probability"
    return ImageSet(
        images=images,
        labels=labels.astype(np.int64),
        classes=tuple(classes),
        paths=[f"synthetic/{split}/{i}.png" for i in range(len(labels))],
        soft_labels=soft_labels,
        name="synthetic",
        split=split,
        info=info,
    )


def tiny_recipe(name: str = "ce", epochs: int = 2, **overrides):
    """A recipe shrunk for CPU tests: tiny backbone, 16 px, small batches."""
    sets = [
        "model.backbone=tiny",
        "model.embedding_dim=32",
        f"epochs={epochs}",
        "data.input_size=16",
        "data.batch_size=32",
        "data.samples_per_class=8",
        "optim.lr=0.05",
    ]
    if name == "mtdml":
        sets.append("loss.options={num_slices: 4, margin_range: [0.1, 0.8], dual: true}")
    sets += [f"{k}={v}" for k, v in overrides.items()]
    return load_recipe(name, sets)


def write_folder_dataset(root, splits: dict) -> None:
    """Write ImageSets as a ``folder`` dataset: ``root/<split>/<class>/<i>.png`` (lossless)."""
    import cv2

    for split, imageset in splits.items():
        for i, (image, label) in enumerate(zip(imageset.images, imageset.labels)):
            folder = root / split / imageset.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{i:04d}.png"), image)


# ------------------------------------------------------------------------- comparing two runs
TIMING = {"seconds", "eval_seconds", "images_per_second"}


def history(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def final_weights(run_dir):
    from fermetric.engine import checkpoint as ckpt

    tensors, _ = ckpt.load_weights(run_dir / "model.safetensors")
    return tensors


def assert_same_run(a, b):
    assert history(a) == history(b)
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    assert ra["metrics"] == rb["metrics"] and ra["steps"] == rb["steps"]
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
