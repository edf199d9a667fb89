"""Tiny synthetic FER datasets written in the real on-disk layouts (tests, demos, CI).

Real FER datasets carry research licences and cannot ship or run in CI, so tests and the README
demo use procedurally drawn cartoon faces whose expression is visible and learnable within a few
CPU steps, saved exactly as the real datasets are laid out so the same readers load them.

Each face is drawn at 4x the output size with PIL and downsampled (antialiased). The class
shows in the geometry, the way expressions differ in real faces:

========== ================== ============== ==============================
class      mouth              eyes           brows
========== ================== ============== ==============================
neutral    flat, closed       normal         level
happy      smile, slightly    narrowed       level
           open
sad        frown              slightly       inner ends raised
                              narrowed
surprise   round, wide open   wide           raised high
fear       wide, open, flat   wide           raised, inner ends up
disgust    one side raised    narrowed       lowered, inner ends down
angry      tight, slight      narrowed       strongly lowered inner ends
           frown                             (a V)
contempt   one corner up      normal         level
========== ================== ============== ==============================

Nuisance variation: a per-subject face shape, size, skin and background tone; per image an
expression intensity in [0.8, 1.2], a shift of up to ``size/24`` px, brightness and contrast
jitter and Gaussian pixel noise (sigma 5 grey levels). Everything derives from ``seed``.

Layouts (``layout=``): ``fer2013`` (Kaggle folders), ``fer2013-csv``, ``ferplus``,
``ckplus48``, ``jaffe``, ``rafdb`` (official ``basic``), ``rafdb-kaggle`` (``DATASET/``),
``folder`` (flat ``<class>/``) and ``folder-split`` (``{train,val,test}/<class>/``).
``n_per_class`` is the number of training images per class; val and test get half as many
(at least 1); fold-based sets (``ckplus48``, ``jaffe``) get ``n_per_class`` images per class in
total.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .. import vocab
from ..errors import ConfigError
from .fer2013 import FER2013_CSV_EMOTIONS
from .ferplus import VOTE_COLUMNS
from .jaffe import EXPRESSION_CODES
from .rafdb import RAF_LABELS

LAYOUTS = ("fer2013", "fer2013-csv", "ferplus", "ckplus48", "jaffe", "rafdb", "rafdb-kaggle", "folder", "folder-split")

# expression geometry per class: mouth curvature (+ = corners up), mouth opening, mouth width,
# asymmetry (+ = right corner up), eye openness, brow slant (+ = inner ends up), brow height
EXPRESSIONS: dict[str, dict[str, float]] = {
    "neutral": dict(curve=0.0, open=0.0, width=1.0, asym=0.0, eye=1.0, slant=0.0, lift=0.0),
    "happy": dict(curve=0.9, open=0.25, width=1.15, asym=0.0, eye=0.65, slant=0.0, lift=0.0),
    "sad": dict(curve=-0.8, open=0.0, width=0.9, asym=0.0, eye=0.8, slant=0.8, lift=0.05),
    "surprise": dict(curve=0.0, open=1.0, width=0.55, asym=0.0, eye=1.6, slant=0.0, lift=0.35),
    "fear": dict(curve=-0.3, open=0.55, width=1.2, asym=0.0, eye=1.45, slant=0.7, lift=0.25),
    "disgust": dict(curve=-0.2, open=0.1, width=0.9, asym=0.8, eye=0.55, slant=-0.5, lift=-0.15),
    "angry": dict(curve=-0.35, open=0.0, width=0.8, asym=0.0, eye=0.7, slant=-1.2, lift=-0.25),
    "contempt": dict(curve=0.0, open=0.0, width=1.0, asym=0.9, eye=1.0, slant=0.0, lift=0.0),
}

FER2013_FOLDERS = {vocab.canonical(c): c for c in FER2013_CSV_EMOTIONS}  # canonical -> Kaggle name
CK_FOLDERS = {
    "angry": "anger",
    "contempt": "contempt",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happy",
    "sad": "sadness",
    "surprise": "surprise",
}
JAFFE_SUBJECTS = ("KA", "KL", "KM", "KR", "MK", "NA", "NM", "TM", "UY", "YM")


def draw_face(
    emotion: str, rng: np.random.Generator, size: int = 48, subject: dict | None = None, intensity: float | None = None
) -> np.ndarray:
    """One uint8 ``[size, size]`` cartoon face showing ``emotion`` (a canonical name)."""
    e = EXPRESSIONS[emotion]
    s = subject or random_subject(rng)
    k = float(intensity if intensity is not None else rng.uniform(0.8, 1.2))
    scale = 4
    big = size * scale
    img = Image.new("L", (big, big), int(s["background"]))
    d = ImageDraw.Draw(img)
    shift = rng.uniform(-1, 1, 2) * big / 24
    cx, cy = big / 2 + shift[0], big / 2 + shift[1]
    fw, fh = big * 0.36 * s["width"], big * 0.44 * s["height"]
    d.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=int(s["skin"]))
    dark = int(max(0, s["skin"] - 130))

    # eyes
    eye_dx, eye_y = fw * 0.45 * s["eye_spacing"], cy - fh * 0.18
    eye_w = fw * 0.2
    eye_h = max(big * 0.006, eye_w * 0.55 * (1 + (e["eye"] - 1) * k))
    for side in (-1, 1):
        ex = cx + side * eye_dx
        d.ellipse([ex - eye_w, eye_y - eye_h, ex + eye_w, eye_y + eye_h], fill=dark)

    # brows: the inner end moves with slant, both ends with lift
    brow_y = eye_y - fh * 0.22 - e["lift"] * k * fh * 0.3
    for side in (-1, 1):
        inner = (cx + side * eye_dx * 0.35, brow_y - e["slant"] * k * fh * 0.14)
        outer = (cx + side * eye_dx * 1.45, brow_y + e["slant"] * k * fh * 0.06)
        d.line([inner, outer], fill=dark, width=max(1, int(big * 0.05)))

    # mouth: upper lip curve y(t) and lower lip opened by `open`
    mouth_y, half_w = cy + fh * 0.5, fw * 0.42 * (1 + (e["width"] - 1) * k)
    ts = np.linspace(-1, 1, 25)
    upper = [
        (cx + t * half_w, mouth_y - e["curve"] * k * fh * 0.24 * t * t - e["asym"] * k * fh * 0.22 * max(t, 0.0) ** 2)
        for t in ts
    ]
    opening = e["open"] * k * fh * 0.28
    if opening > big * 0.01:  # lips part around the lip line: a third up, two thirds down
        top = [(x, y - opening * 0.35 * (1 - t * t)) for (x, y), t in zip(upper, ts)]
        lower = [(x, y + opening * 0.65 * (1 - t * t)) for (x, y), t in zip(upper, ts)]
        d.polygon(top + lower[::-1], fill=dark)
    else:
        d.line(upper, fill=dark, width=max(1, int(big * 0.045)), joint="curve")

    face = np.asarray(img.resize((size, size), Image.Resampling.LANCZOS), dtype=np.float64)
    face = (face - 128) * rng.uniform(0.8, 1.2) + 128 + rng.uniform(-20, 20)
    face += rng.normal(0, 5, face.shape)
    return np.clip(np.rint(face), 0, 255).astype(np.uint8)


def random_subject(rng: np.random.Generator) -> dict:
    """Identity parameters: face shape, eye spacing, skin and background tone."""
    return {
        "width": rng.uniform(0.88, 1.12),
        "height": rng.uniform(0.9, 1.1),
        "eye_spacing": rng.uniform(0.9, 1.1),
        "skin": rng.uniform(150, 215),
        "background": rng.uniform(20, 110),
    }


def _save(array: np.ndarray, path: Path, rgb_tint: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if rgb_tint is not None:  # colour copies for RGB datasets (RAF-DB); grey is recovered on load
        array = np.clip(array[:, :, None] * rgb_tint[None, None, :], 0, 255).astype(np.uint8)
    kwargs = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(array).save(path, **kwargs)


def make_synthetic_faces(
    root: str | Path,
    layout: str = "fer2013",
    n_per_class: int = 20,
    size: int = 48,
    seed: int = 0,
    classes: tuple[str, ...] | None = None,
) -> Path:
    """Write a synthetic dataset under ``root`` in ``layout``; returns the path to load it from.

    ``classes`` (canonical names) defaults to the real dataset's classes. Returns ``root``, or
    for ``fer2013-csv`` the csv file.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown synthetic layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if n_per_class < 1 or size < 8:
        raise ConfigError(f"need n_per_class >= 1 and size >= 8, got {n_per_class}, {size}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    default_classes = {
        "ferplus": tuple(vocab.EMOTIONS),
        "ckplus48": tuple(c for c in vocab.EMOTIONS if c != "neutral"),
    }.get(layout, tuple(c for c in vocab.EMOTIONS if c != "contempt"))
    classes = vocab.ordered(classes or default_classes)
    n_eval = max(1, n_per_class // 2)
    counts = {"train": n_per_class, "val": n_eval, "test": n_eval}
    writer = globals()[f"_write_{layout.replace('-', '_')}"]
    return writer(root, classes, counts, size, rng)


def _faces(classes, n: int, size: int, rng) -> list[tuple[str, np.ndarray]]:
    return [(c, draw_face(c, rng, size)) for c in classes for _ in range(n)]


def _write_fer2013(root, classes, counts, size, rng) -> Path:
    unsupported = set(classes) - set(FER2013_FOLDERS)
    if unsupported:
        raise ConfigError(f"fer2013 has no class {sorted(unsupported)}")
    usage = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
    serial = 0
    for split, n in counts.items():
        for c, face in _faces(classes, n, size, rng):
            serial += 1
            _save(face, root / split / FER2013_FOLDERS[c] / f"{usage[split]}_{serial:08d}.jpg")
    return root


def _write_fer2013_csv(root, classes, counts, size, rng) -> Path:
    usage = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
    emotion_id = {vocab.canonical(c): i for i, c in enumerate(FER2013_CSV_EMOTIONS)}
    path = root / "fer2013.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        for split, n in counts.items():
            for c, face in _faces(classes, n, size, rng):
                w.writerow([emotion_id[c], " ".join(map(str, face.reshape(-1).tolist())), usage[split]])
    return path


def _write_ferplus(root, classes, counts, size, rng) -> Path:
    folders = {"train": "FER2013Train", "val": "FER2013Valid", "test": "FER2013Test"}
    column = {vocab.canonical(c): i for i, c in enumerate(VOTE_COLUMNS[:8])}
    serial = 0
    for split, n in counts.items():
        rows = []
        for c, face in _faces(classes, n, size, rng):
            name = f"fer{serial:07d}.png"
            serial += 1
            _save(face, root / folders[split] / name)
            votes = np.zeros(len(VOTE_COLUMNS), dtype=int)
            votes[column[c]] = rng.integers(6, 10)  # a clear majority of 10 annotators
            for _ in range(10 - votes.sum()):
                votes[rng.integers(0, len(VOTE_COLUMNS))] += 1
            rows.append([name, "(0, 0, 48, 48)", *votes.tolist()])
        with open(root / folders[split] / "label.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
    return root


def _write_ckplus48(root, classes, counts, size, rng, n_subjects: int = 12) -> Path:
    unsupported = set(classes) - set(CK_FOLDERS)
    if unsupported:
        raise ConfigError(f"ckplus48 has no class {sorted(unsupported)}")
    subjects = [random_subject(rng) for _ in range(n_subjects)]
    n_sequences = max(1, math.ceil(counts["train"] / 3))
    for ci, c in enumerate(classes):
        for seq in range(n_sequences):
            subject = (ci * n_sequences + seq) % n_subjects  # spread classes over all subjects
            for frame in range(3):  # three near-identical peak frames, as in CK+48
                intensity = 1.0 + 0.1 * frame
                face = draw_face(c, rng, size, subjects[subject], intensity)
                _save(face, root / CK_FOLDERS[c] / f"S{subject + 10:03d}_{seq + 1:03d}_{frame + 1:08d}.png")
    return root


def _write_jaffe(root, classes, counts, size, rng) -> Path:
    codes = {c: code for code, c in EXPRESSION_CODES.items()}
    unsupported = set(classes) - set(codes)
    if unsupported:
        raise ConfigError(f"jaffe has no class {sorted(unsupported)}")
    subjects = {s: random_subject(rng) for s in JAFFE_SUBJECTS}
    serial = 0
    for c in classes:
        for i in range(counts["train"]):
            initials = JAFFE_SUBJECTS[i % len(JAFFE_SUBJECTS)]
            serial += 1
            face = draw_face(c, rng, size, subjects[initials])
            _save(face, root / f"{initials}.{codes[c]}{i // len(JAFFE_SUBJECTS) + 1}.{serial}.tiff")
    return root


def _raf_items(classes, counts, size, rng):
    label_of = {c: k for k, c in RAF_LABELS.items()}
    unsupported = set(classes) - set(label_of)
    if unsupported:
        raise ConfigError(f"rafdb has no class {sorted(unsupported)}")
    for split in ("train", "test"):
        for i, (c, face) in enumerate(_faces(classes, counts[split], size, rng), 1):
            yield split, f"{split}_{i:05d}", label_of[c], face, rng.uniform(0.85, 1.15, 3)


def _write_rafdb(root, classes, counts, size, rng) -> Path:
    lines = []
    for _split, stem, label, face, tint in _raf_items(classes, counts, size, rng):
        _save(face, root / "Image" / "aligned" / f"{stem}_aligned.jpg", tint)
        lines.append(f"{stem}.jpg {label}")
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def _write_rafdb_kaggle(root, classes, counts, size, rng) -> Path:
    for split, stem, label, face, tint in _raf_items(classes, counts, size, rng):
        _save(face, root / "DATASET" / split / str(label) / f"{stem}_aligned.jpg", tint)
    return root


def _write_folder(root, classes, counts, size, rng) -> Path:
    for i, (c, face) in enumerate(_faces(classes, counts["train"], size, rng)):
        _save(face, root / c / f"face_{i:05d}.png")
    return root


def _write_folder_split(root, classes, counts, size, rng) -> Path:
    for split, n in counts.items():
        for i, (c, face) in enumerate(_faces(classes, n, size, rng)):
            _save(face, root / split / c / f"face_{i:05d}.png")
    return root
