"""Retrieval index: build, search, save/load, contact sheet, CLI (tiny random model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fermetric.cli import main
from fermetric.data.base import ImageSet
from fermetric.errors import CheckpointError, ConfigError, DataError
from fermetric.retrieval import EmbeddingIndex, Neighbor, model_fingerprint


def smooth_crops(n: int, seed: int, size: int = 32) -> np.ndarray:
    """Blurry random grey images (face-crop-like statistics, all different)."""
    import cv2

    rng = np.random.default_rng(seed)
    return np.stack([cv2.GaussianBlur(rng.integers(0, 256, (size, size), dtype=np.uint8), (7, 7), 2) for _ in range(n)])


@pytest.fixture
def crop_folder(tmp_path):
    """happy/ (3), Sadness/ (3, an alias spelling) and misc/ (2 of 40 px, no emotion: unknown label)."""
    root = tmp_path / "crops"
    for folder, seed, n, size in (("happy", 1, 3, 32), ("Sadness", 2, 3, 32), ("misc", 3, 2, 40)):
        (root / folder).mkdir(parents=True)
        for i, crop in enumerate(smooth_crops(n, seed, size)):
            Image.fromarray(crop).save(root / folder / f"{i}.png")
    return root


def test_folder_index_labels_and_self_retrieval(predictor, crop_folder):
    index = EmbeddingIndex.build(predictor, crop_folder)
    assert len(index) == 8 and index.dim == 16 and index.classes == ("happy", "sad")
    labels = {path: index.label_name(int(label)) for path, label in zip(index.paths, index.labels)}
    assert labels == {
        "Sadness/0.png": "sad",
        "Sadness/1.png": "sad",
        "Sadness/2.png": "sad",
        "happy/0.png": "happy",
        "happy/1.png": "happy",
        "happy/2.png": "happy",
        "misc/0.png": None,
        "misc/1.png": None,
    }
    np.testing.assert_allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, rtol=1e-5)
    assert index.thumbnails.shape == (8, 32, 32)  # 40-px images are shown at the model's size
    for path in ("Sadness/2.png", "happy/0.png", "misc/1.png"):
        results = index.query(crop_folder / path, k=3, detect=False)
        assert len(results) == 3 and all(isinstance(r, Neighbor) for r in results)
        assert results[0].path == path and results[0].distance < 1e-3
        assert results[0].label == labels[path]
        assert [r.distance for r in results] == sorted(r.distance for r in results)


def test_an_index_built_on_onnxruntime_is_queried_with_torch(tiny_checkpoint, crop_folder, predictor):
    from fermetric.predict import Predictor

    on_onnx = Predictor.load(tiny_checkpoint)  # the default on a CPU: auto -> onnx
    assert on_onnx.backend == "onnx"
    index = EmbeddingIndex.build(on_onnx, crop_folder)
    assert index.meta["model_fingerprint"] == predictor.fingerprint  # the weights' digest, not the runtime's
    for path in ("Sadness/2.png", "happy/0.png"):
        (nearest,) = index.query(crop_folder / path, k=1, detect=False, predictor=predictor)  # torch
        assert nearest.path == path and nearest.distance < 1e-2  # the same face (torch may run in bf16)


def test_search_matches_brute_force_distances(predictor, crop_folder):
    index = EmbeddingIndex.build(predictor, crop_folder)
    query = np.random.default_rng(7).normal(size=(2, 16)).astype(np.float32)
    unit = query / np.linalg.norm(query, axis=1, keepdims=True)
    for row, results in zip(unit, index.search(query, k=5)):
        distances = np.sqrt(((index.embeddings - row) ** 2).sum(axis=1))
        order = np.argsort(distances, kind="stable")[:5]
        assert [r.path for r in results] == [index.paths[i] for i in order]
        np.testing.assert_allclose([r.distance for r in results], distances[order], atol=1e-5)
    assert len(index.search(query[:1], k=100)[0]) == len(index)  # k larger than the index
    with pytest.raises(ConfigError):
        index.search(query, k=0)
    with pytest.raises(CheckpointError, match="dimensions"):
        index.search(np.ones((1, 5), np.float32))


def test_imageset_index_embeds_like_the_predictor(predictor):
    images = smooth_crops(6, seed=4)
    imageset = ImageSet(
        images=images,
        labels=np.array([0, 1, 2, 0, 1, -1]),
        classes=("neutral", "happy", "sad"),
        paths=[f"img{i}.png" for i in range(6)],
        name="synthetic",
        split="train",
        root="/nowhere",
    )
    index = EmbeddingIndex.build(predictor, imageset)
    _, embeddings = predictor.run_crops(images)
    np.testing.assert_allclose(
        index.embeddings, embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True), atol=1e-6
    )
    np.testing.assert_array_equal(index.thumbnails, images)
    assert index.meta["data"] == {"kind": "dataset", "name": "synthetic", "split": "train", "root": "/nowhere"}
    assert [index.label_name(int(v)) for v in index.labels] == ["neutral", "happy", "sad", "neutral", "happy", None]


def test_save_load_round_trip_and_safe_overwrite(predictor, crop_folder, tmp_path):
    index = EmbeddingIndex.build(predictor, crop_folder)
    out = index.save(tmp_path / "my.index")
    assert sorted(p.name for p in out.iterdir()) == ["index.faiss", "items.npz", "meta.json"]
    loaded = EmbeddingIndex.load(out)
    assert loaded.paths == index.paths and loaded.classes == index.classes
    np.testing.assert_array_equal(loaded.labels, index.labels)
    np.testing.assert_array_equal(loaded.thumbnails, index.thumbnails)
    assert loaded.meta["model_fingerprint"] == model_fingerprint(predictor.model) == predictor.fingerprint
    assert loaded.meta["model_meta"]["classes"] == list(predictor.classes)
    query = np.random.default_rng(8).normal(size=(1, 16))
    assert loaded.search(query, 4) == index.search(query, 4)
    # the recorded checkpoint is enough to query the loaded index
    assert loaded.query(crop_folder / "happy" / "1.png", k=1, detect=False)[0].path == "happy/1.png"
    # an index of the previous format (sha256 fingerprints) is refused with the way out
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "format": 1}))
    with pytest.raises(DataError, match="older fermetric.*rebuild it"):
        EmbeddingIndex.load(out)
    index.save(out)  # overwriting an index is fine, and leaves no temporary directories behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crops", "my.index"]
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "data.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a fermetric index"):
        index.save(tmp_path / "precious")
    with pytest.raises(DataError, match="not a fermetric index"):
        EmbeddingIndex.load(tmp_path / "precious")
    with pytest.raises(DataError, match="does not exist; build one"):
        EmbeddingIndex.load(tmp_path / "missing.index")
    (out / "items.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="corrupt"):
        EmbeddingIndex.load(out)


def test_another_model_is_refused(predictor, crop_folder, tmp_path):
    from fermetric.engine.checkpoint import save_weights
    from fermetric.predict import Predictor

    index = EmbeddingIndex.build(predictor, crop_folder)
    state = {k: v.clone() for k, v in predictor.model.state_dict().items()}
    first_weight = next(k for k, v in state.items() if v.is_floating_point())
    state[first_weight] += 0.01  # any change of any weight makes it another model
    save_weights(tmp_path / "other.safetensors", state, predictor.meta)
    other = Predictor.load(tmp_path / "other.safetensors")
    assert other.fingerprint != predictor.fingerprint
    with pytest.raises(CheckpointError, match="not the one this index was built with"):
        index.query(crop_folder / "happy" / "0.png", detect=False, predictor=other)


def test_index_embeds_and_queries_with_the_builders_tta(tiny_checkpoint, crop_folder, tmp_path):
    from fermetric.predict import Predictor

    flip = Predictor.load(tiny_checkpoint, tta="flip")
    index = EmbeddingIndex.build(flip, crop_folder)
    _, expected = flip.run_crops([np.asarray(Image.open(crop_folder / "happy" / "1.png").convert("L"))])
    position = index.paths.index("happy/1.png")
    np.testing.assert_allclose(index.embeddings[position], expected[0] / np.linalg.norm(expected[0]), atol=1e-5)
    index.save(tmp_path / "flip.index")
    loaded = EmbeddingIndex.load(tmp_path / "flip.index")
    assert loaded.meta["tta"] == "flip" and loaded.predictor().tta == "flip"
    assert loaded.query(crop_folder / "happy" / "1.png", k=1, detect=False)[0].distance < 1e-3
    with pytest.raises(ConfigError, match="built with tta='flip'"):
        loaded.query(crop_folder / "happy" / "1.png", detect=False, predictor=Predictor.load(tiny_checkpoint))


def test_photo_folder_indexes_detected_faces(predictor, tmp_path, astronaut_small):
    root = tmp_path / "photos"
    root.mkdir()
    Image.fromarray(astronaut_small).save(root / "astronaut.png")
    index = EmbeddingIndex.build(predictor, root, detect=True)
    assert index.paths == ["astronaut.png#face0"] and index.thumbnails.shape == (1, 32, 32)
    (result,) = index.query(astronaut_small, k=5)
    assert result.path == "astronaut.png#face0" and result.distance < 1e-3


def test_an_index_queries_with_faces_cropped_at_the_side_it_was_built_from(tiny_checkpoint, tmp_path, astronaut_small):
    from fermetric.engine.checkpoint import load_weights, save_weights
    from fermetric.predict import Predictor

    tensors, meta = load_weights(tiny_checkpoint)
    meta["train_image_size"] = 16
    save_weights(tmp_path / "tiny16.safetensors", tensors, meta)
    root = tmp_path / "photos"
    root.mkdir()
    Image.fromarray(astronaut_small).save(root / "astronaut.png")
    index = EmbeddingIndex.build(Predictor.load(tmp_path / "tiny16.safetensors"), root, detect=True)
    assert index.meta["crop_size"] == 16 and index.thumbnails.shape == (1, 16, 16)
    index.save(tmp_path / "photos.index")
    loaded = EmbeddingIndex.load(tmp_path / "photos.index")
    assert loaded.predictor().crop_size == 16 and loaded.query(astronaut_small, k=1)[0].distance < 1e-3
    at_input = Predictor.load(tmp_path / "tiny16.safetensors", crop_resolution="input")
    with pytest.raises(
        ConfigError,
        match="built from 16 px face crops but the predictor crops 32 px; load it with crop_resolution=.train.",
    ):
        loaded.query(astronaut_small, predictor=at_input)
    # an index written before crop_size was recorded was built from crops at the input size
    del loaded.meta["crop_size"]
    loaded._predictor = None
    assert loaded.predictor().crop_size == 32
    # a dataset of larger images is embedded as the predictor shows them: averaged down to 16 px
    import cv2

    images = smooth_crops(4, seed=6, size=40)
    imageset = ImageSet(images, np.array([0, 1, 0, 1]), ("neutral", "happy"), [f"{i}.png" for i in range(4)])
    small16 = Predictor.load(tmp_path / "tiny16.safetensors")
    index = EmbeddingIndex.build(small16, imageset)
    small = np.stack([cv2.resize(x, (16, 16), interpolation=cv2.INTER_AREA) for x in images])
    _, expected = small16.run_crops(small)
    np.testing.assert_allclose(index.embeddings, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)
    np.testing.assert_array_equal(index.thumbnails, small)


def test_contact_sheet_png(predictor, crop_folder, tmp_path):
    index = EmbeddingIndex.build(predictor, crop_folder)
    query = crop_folder / "happy" / "2.png"
    results = index.query(query, k=7, detect=False)
    out = index.contact_sheet(np.asarray(Image.open(query)), results, tmp_path / "sheets" / "sheet.png")
    with Image.open(out) as sheet:
        width, height = sheet.size
        pixels = np.asarray(sheet.convert("L"))
    assert width > height > 100  # 6 columns x 2 rows
    assert pixels.std() > 10  # not blank


def test_cli_build_and_query(tiny_checkpoint, crop_folder, tmp_path, capsys):
    out = tmp_path / "cli.index"
    assert (
        main(
            [
                "index",
                "build",
                "--checkpoint",
                str(tiny_checkpoint),
                "--data",
                str(crop_folder),
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert "indexed 8 faces" in capsys.readouterr().out
    sheet = tmp_path / "sheet.png"
    assert (
        main(
            [
                "index",
                "query",
                str(out),
                str(crop_folder / "Sadness" / "0.png"),
                "-k",
                "3",
                "--no-detect",
                "--json",
                "--sheet",
                str(sheet),
            ]
        )
        == 0
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["rank"] for line in lines] == [1, 2, 3]
    assert lines[0]["path"] == "Sadness/0.png" and lines[0]["label"] == "sad" and lines[0]["distance"] < 1e-3
    assert sheet.is_file()
    assert main(["index", "query", str(out), str(crop_folder / "misc" / "1.png"), "-k", "2", "--no-detect"]) == 0
    assert "misc/1.png" in capsys.readouterr().out
