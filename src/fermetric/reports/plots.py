"""PNG figures: embedding maps (t-SNE / UMAP), confusion matrices, training curves.

Every figure is drawn on a ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot, no
display, no global state), so plotting works on headless machines and inside threads.

Design decisions (defaults stated):

* **Embeddings** are L2-normalised before the 2-D projection, because the methods compare
  normalised embeddings (``docs/METHODS.md``). At most ``max_points=3000`` points, drawn
  uniformly at random with ``seed=0`` (t-SNE is quadratic-ish in memory and time). t-SNE is
  scikit-learn's (``init="pca"``, perplexity ``min(30, (n - 1) / 3)``); UMAP needs the optional
  ``umap-learn`` (``pip install 'fermetric[umap]'``).
* **Confusion** matrices are row-normalised by default (each row is the recall distribution of a
  true class, readable under class imbalance); cells also print the raw count.
* **Curves** read a run's ``metrics.jsonl`` (one JSON object per line, nested objects flattened
  with ``/``, as ``engine/train.py`` writes them: ``train/loss``, ``train/ce``, ``train/metric``,
  ``val/accuracy``...): the left panel shows every training loss term (keys under ``train/`` or
  containing ``loss``, not validation ones), the right every validation accuracy-like number
  (keys containing ``val`` and ``acc`` or ``f1``), against ``epoch`` (line number when absent).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError

__all__ = ["plot_embeddings", "plot_confusion", "plot_curves", "read_metrics", "find_confusion"]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _save(figure, out: str | os.PathLike) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    return out


# --------------------------------------------------------------------------------- embeddings
def project_2d(embeddings: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """``[N, 2]`` t-SNE or UMAP coordinates of embeddings, taken as given: map them into their
    model's space first (``space_of_meta(meta)(z)``), as ``fermetric plot embeddings`` does."""
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) < 3:
        raise DataError(f"need at least 3 embeddings [N, D] to project, got shape {x.shape}")
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, (len(x) - 1) / 3))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise ConfigError(
                "method 'umap' needs umap-learn: pip install 'fermetric[umap]' (or use --method tsne)"
            ) from None
        return umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
    raise ConfigError(f"unknown projection method {method!r}; use tsne or umap")


def subsample(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n`` items, uniformly at random."""
    if max_points < 1:
        raise ConfigError(f"max_points must be >= 1, got {max_points}")
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def plot_embeddings(
    embeddings,
    labels,
    classes,
    method: str = "tsne",
    out: str | os.PathLike = "embeddings.png",
    max_points: int = 3000,
    seed: int = 0,
    title: str = "",
) -> Path:
    """A 2-D map of embeddings coloured by class (label ``-1``: grey "unlabelled")."""
    embeddings = np.asarray(embeddings)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(embeddings):
        raise DataError(f"{len(embeddings)} embeddings but {len(labels)} labels")
    keep = subsample(len(labels), max_points, seed)
    points = project_2d(embeddings[keep], method, seed)
    labels = labels[keep]
    figure = _figure(7.5, 6.0)
    ax = figure.add_subplot(1, 1, 1)
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    for index, name in enumerate(classes):
        mask = labels == index
        if mask.any():
            ax.scatter(
                points[mask, 0],
                points[mask, 1],
                s=6,
                alpha=0.7,
                color=palette(index % 10),
                label=f"{name} ({mask.sum()})",
            )
    unknown = labels < 0
    if unknown.any():
        ax.scatter(
            points[unknown, 0], points[unknown, 1], s=6, alpha=0.5, color="0.6", label=f"unlabelled ({unknown.sum()})"
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", fontsize=8, markerscale=2, frameon=False)
    ax.set_title(title or f"{method} of {len(labels)} embeddings")
    return _save(figure, out)


# ---------------------------------------------------------------------------------- confusion
def plot_confusion(
    confusion, classes, out: str | os.PathLike = "confusion.png", normalize: bool = True, title: str = ""
) -> Path:
    """A confusion matrix (rows: true, columns: predicted), row-normalised by default."""
    counts = np.asarray(confusion, dtype=np.float64)
    classes = list(classes)
    if counts.shape != (len(classes), len(classes)):
        raise DataError(f"confusion matrix of shape {counts.shape} does not fit {len(classes)} classes")
    shown = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts
    size = 1.2 + 0.75 * len(classes)
    figure = _figure(size + 1.0, size)
    ax = figure.add_subplot(1, 1, 1)
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else max(1.0, shown.max()))
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    limit = 0.5 * (1 if normalize else max(1.0, shown.max()))
    for i in range(len(classes)):
        for j in range(len(classes)):
            text = f"{shown[i, j]:.2f}\n({int(counts[i, j])})" if normalize else f"{int(counts[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if shown[i, j] > limit else "black")
    total = counts.sum()
    accuracy = np.trace(counts) / total if total else float("nan")
    ax.set_title(title or f"accuracy {accuracy:.4f} (n={int(total)})" + (", rows normalised" if normalize else ""))
    return _save(figure, out)


# ------------------------------------------------------------------------------------- curves
def _flatten(record: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def read_metrics(metrics_jsonl: str | os.PathLike) -> list[dict]:
    """The numeric fields of each line of a ``metrics.jsonl`` (nested keys joined with ``/``)."""
    path = Path(metrics_jsonl)
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass --run RUN_DIR of a `fermetric train` run")
    records = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                continue  # a run killed mid-write leaves a partial last line
            raise DataError(f"{path}:{number} is not valid JSON") from None
        if isinstance(record, dict):
            records.append(_flatten(record))
    return records


def _is_validation(key: str) -> bool:
    return any(part.startswith("val") for part in key.replace("/", "_").split("_"))


def plot_curves(metrics_jsonl: str | os.PathLike, out: str | os.PathLike = "curves.png", title: str = "") -> Path:
    """Training loss terms (left) and validation accuracy (right, when the run has any) per epoch."""
    records = [r for r in read_metrics(metrics_jsonl) if r]
    if not records:
        raise DataError(f"{metrics_jsonl} holds no numeric metrics")
    keys = sorted({k for r in records for k in r})
    loss_keys = [k for k in keys if (k.startswith("train/") or "loss" in k.lower()) and not _is_validation(k)]
    acc_keys = [k for k in keys if _is_validation(k) and ("acc" in k.lower() or "f1" in k.lower())]
    if not acc_keys:
        acc_keys = [k for k in keys if "acc" in k.lower()]
    if not loss_keys and not acc_keys:
        raise DataError(f"{metrics_jsonl} has no loss or accuracy fields (found: {', '.join(keys[:8])})")
    # a run without a validation split (k-fold CK+) gets one panel, not an empty second one
    panels = [(keys, label) for keys, label in ((loss_keys, "training loss"), (acc_keys, "validation")) if keys]
    figure = _figure(5.5 * len(panels), 4.2)
    for column, (chosen, ylabel) in enumerate(panels):
        ax = figure.add_subplot(1, len(panels), column + 1)
        for key in chosen:
            points = [(r.get("epoch", i), r[key]) for i, r in enumerate(records) if key in r and math.isfinite(r[key])]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o" if len(points) < 30 else None, markersize=3, label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if chosen:
            ax.legend(fontsize=8, frameon=False)
    figure.suptitle(title or str(metrics_jsonl), fontsize=10)
    return _save(figure, out)


# ---------------------------------------------------------------------------------------- CLI
def find_confusion(results, preferred=("test", "val", "eval")) -> tuple[list, list] | None:
    """``(confusion, classes)`` from a results/metrics JSON: top level, else a nested split entry."""
    if not isinstance(results, dict):
        return None
    if "confusion" in results and ("classes" in results or "per_class_recall" in results):
        classes = results.get("classes") or list(results["per_class_recall"])
        return results["confusion"], classes
    nested = [k for k in preferred if isinstance(results.get(k), dict)]
    nested += [k for k, v in results.items() if isinstance(v, dict) and k not in nested]
    for key in nested:
        found = find_confusion(results[key], preferred)
        if found:
            return found
    return None
