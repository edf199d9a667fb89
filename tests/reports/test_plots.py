"""PNG figures (plots.py) and `fermetric plot`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fermetric.cli import main
from fermetric.errors import ConfigError, DataError
from fermetric.reports.plots import (
    find_confusion,
    plot_confusion,
    plot_curves,
    plot_embeddings,
    read_metrics,
    subsample,
)


def assert_png(path, min_size=(300, 200)):
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
        assert np.asarray(image.convert("L")).std() > 5  # something was drawn


def write_metrics(path, epochs=4):
    """metrics.jsonl as engine/train.py writes it (plus a partial last line from a killed run)."""
    lines = [
        json.dumps(
            {
                "epoch": e,
                "step": 10 * e,
                "train": {"loss": 2.0 / e, "ce": 1.5 / e, "metric": 0.5 / e},
                "val": {"accuracy": 0.3 + 0.1 * e, "macro_f1": 0.2 + 0.1 * e, "n": 50},
                "lr": 0.1,
                "seconds": 1.0,
            }
        )
        for e in range(1, epochs + 1)
    ]
    path.write_text("\n".join(lines) + '\n{"epoch": 5, "tra')
    return path


def test_read_metrics_flattens_and_tolerates_a_cut_last_line(tmp_path):
    records = read_metrics(write_metrics(tmp_path / "metrics.jsonl"))
    assert len(records) == 4
    assert records[1]["train/ce"] == pytest.approx(0.75) and records[1]["val/accuracy"] == pytest.approx(0.5)
    (tmp_path / "bad.jsonl").write_text("{oops\n{}\n")
    with pytest.raises(DataError, match="bad.jsonl:1"):
        read_metrics(tmp_path / "bad.jsonl")


def test_plot_curves(tmp_path):
    out = plot_curves(write_metrics(tmp_path / "metrics.jsonl"), tmp_path / "curves.png")
    assert_png(out, (800, 300))
    no_val = tmp_path / "no_val.jsonl"  # a k-fold run (CK+) has no validation split: one panel
    no_val.write_text("\n".join(json.dumps({"epoch": e, "train": {"loss": 1.0 / e}}) for e in (1, 2, 3)) + "\n")
    with Image.open(plot_curves(no_val, tmp_path / "one.png")) as one, Image.open(out) as two:
        assert one.size[0] < 0.7 * two.size[0]
    (tmp_path / "empty.jsonl").write_text('{"note": "x"}\n')
    with pytest.raises(DataError):
        plot_curves(tmp_path / "empty.jsonl", tmp_path / "x.png")


def test_plot_confusion(tmp_path):
    confusion = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 4]])
    assert_png(plot_confusion(confusion, ["happy", "sad", "angry"], tmp_path / "c.png"))
    assert_png(plot_confusion(confusion, ["happy", "sad", "angry"], tmp_path / "raw.png", normalize=False))
    with pytest.raises(DataError, match="does not fit"):
        plot_confusion(confusion, ["happy", "sad"], tmp_path / "x.png")


def test_plot_embeddings(tmp_path):
    from threadpoolctl import threadpool_limits

    limit = threadpool_limits(1)  # OpenMP threads of t-SNE spin badly on a loaded 2-core CI machine
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 4
    labels = np.repeat([0, 1, 2, -1], 12)
    embeddings = centres[np.maximum(labels, 0)] + rng.normal(size=(48, 8))
    assert_png(
        plot_embeddings(embeddings, labels, ["neutral", "happy", "sad"], "tsne", tmp_path / "e.png", max_points=40)
    )
    with pytest.raises(DataError):
        plot_embeddings(embeddings[:2], labels[:2], ["neutral"], "tsne", tmp_path / "x.png")
    try:
        import umap  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="umap-learn"):
            plot_embeddings(embeddings, labels, ["neutral", "happy", "sad"], "umap", tmp_path / "u.png")
    limit.restore_original_limits()


def test_subsample_is_uniform_sorted_and_seeded():
    picked = subsample(1000, 100, seed=3)
    assert len(picked) == 100 == len(set(picked.tolist())) and (np.diff(picked) > 0).all()
    np.testing.assert_array_equal(picked, subsample(1000, 100, seed=3))
    np.testing.assert_array_equal(subsample(5, 100), np.arange(5))


def test_find_confusion_in_results_json():
    results = {
        "classes": ["a", "b"],
        "recipe_config": {"data": {"x": 1}},
        "metrics": {
            "val": {"confusion": [[1, 0], [0, 1]], "classes": ["a", "b"]},
            "test": {"confusion": [[2, 1], [0, 3]], "classes": ["a", "b"]},
        },
    }
    assert find_confusion(results) == ([[2, 1], [0, 3]], ["a", "b"])  # test preferred over val
    assert find_confusion({"metrics": {}}) is None


def test_cli_curves_and_confusion_from_a_run(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    write_metrics(run / "metrics.jsonl")
    (run / "results.json").write_text(
        json.dumps({"metrics": {"test": {"confusion": [[3, 1], [1, 3]], "classes": ["happy", "sad"]}}})
    )
    assert main(["plot", "curves", "--run", str(run), "--out", str(tmp_path / "curves.png")]) == 0
    assert main(["plot", "confusion", "--run", str(run), "--out", str(tmp_path / "confusion.png")]) == 0
    assert_png(tmp_path / "curves.png")
    assert_png(tmp_path / "confusion.png")
    assert main(["plot", "curves", "--out", str(tmp_path / "x.png")]) != 0
    assert "needs --run" in capsys.readouterr().err
