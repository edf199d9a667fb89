"""The Predictor API on single images (tiny random model, see conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import fermetric
from fermetric import predict as predict_module
from fermetric.data.faces import detect_faces
from fermetric.errors import CheckpointError, ConfigError

# the tiny model of conftest.py
CLASSES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry")
INPUT_SIZE, EMBEDDING_DIM = 32, 16


def naive_probabilities(model, grey_crops: np.ndarray, mean=0.5, std=0.25) -> np.ndarray:
    """The model on crops normalised by hand: (x / 255 - mean) / std, softmax in float64."""
    x = torch.from_numpy((grey_crops.astype(np.float32) / 255.0 - mean) / std)[:, None]
    with torch.no_grad():
        logits = model(x)["logits"].double()
    return torch.softmax(logits, dim=1).numpy()


def test_load_gives_a_predictor(predictor, tiny_checkpoint):
    assert isinstance(predictor, predict_module.Predictor)
    assert predictor.classes == CLASSES and predictor.input_size == INPUT_SIZE
    assert predictor.embedding_dim == EMBEDDING_DIM
    assert str(tiny_checkpoint) in repr(predictor)


def test_no_detect_is_the_training_forward_pass(predictor):
    crop = np.random.default_rng(3).integers(0, 256, (INPUT_SIZE, INPUT_SIZE), dtype=np.uint8)
    records = predictor.predict(crop, detect=False)
    assert len(records) == 1
    expected = naive_probabilities(predictor.model, crop[None])[0]
    got = np.array([records[0]["probabilities"][c] for c in CLASSES])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert records[0]["label"] == CLASSES[int(np.argmax(expected))]
    assert records[0]["box"] == [0.0, 0.0, INPUT_SIZE, INPUT_SIZE] and records[0]["score"] is None


def test_flip_tta_averages_logits_with_the_mirrored_crop(predictor, tiny_checkpoint):
    crops = np.random.default_rng(5).integers(0, 256, (3, INPUT_SIZE, INPUT_SIZE), dtype=np.uint8)
    flip = fermetric.load(tiny_checkpoint, tta="flip")
    x = torch.from_numpy((crops.astype(np.float32) / 255.0 - 0.5) / 0.25)[:, None]
    with torch.no_grad():
        plain, mirrored = predictor.model(x), predictor.model(x.flip(-1))
    logits = (plain["logits"].double() + mirrored["logits"].double()) / 2
    probabilities, embeddings = flip.run_crops(crops)
    np.testing.assert_allclose(probabilities, torch.softmax(logits, 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(embeddings, ((plain["embedding"] + mirrored["embedding"]) / 2).numpy(), atol=1e-5)
    assert not np.allclose(probabilities, predictor.run_crops(crops)[0], atol=1e-4)
    with pytest.raises(ConfigError, match="unknown tta"):
        fermetric.load(tiny_checkpoint, tta="crops")


def test_no_detect_resizes_the_whole_image_as_evaluation_does(predictor):
    image = np.random.default_rng(4).integers(0, 256, (80, 64), dtype=np.uint8)
    got = predictor.predict(image, detect=False)[0]
    assert got["box"] == [0.0, 0.0, 64.0, 80.0]
    # evaluation resizes non-S images with antialiased bilinear interpolation on [0, 1] floats
    x = torch.from_numpy(image.astype(np.float32) / 255.0)[None, None]
    x = torch.nn.functional.interpolate(
        x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True
    )
    with torch.no_grad():
        logits = predictor.model((x - 0.5) / 0.25)["logits"].double()
    expected = torch.softmax(logits, dim=1).numpy()[0]
    np.testing.assert_allclose([got["probabilities"][c] for c in CLASSES], expected, atol=1e-6)
    # several sizes in one call keep their order
    crops = [image, image[:INPUT_SIZE, :INPUT_SIZE], image]
    probabilities, embeddings = predictor.run_crops(crops)
    np.testing.assert_allclose(probabilities[0], expected, atol=1e-6)
    np.testing.assert_allclose(probabilities[2], expected, atol=1e-6)
    np.testing.assert_allclose(probabilities[1], naive_probabilities(predictor.model, crops[1][None])[0], atol=1e-6)


def test_same_pixels_give_the_same_result_in_every_container(predictor, astronaut_small, tmp_path):
    rgb = astronaut_small
    png = tmp_path / "astronaut.png"
    Image.fromarray(rgb).save(png)
    reference = predictor.predict(rgb)
    assert len(reference) == 1
    variants = {
        "str path": predictor.predict(str(png)),
        "Path": predictor.predict(png),
        "PIL": predictor.predict(Image.fromarray(rgb)),
        "BGR array": predictor.predict(np.ascontiguousarray(rgb[:, :, ::-1]), channel_order="bgr"),
    }
    for name, records in variants.items():
        assert records == reference, name
    # a grey photo: 2-D array, grey PNG, PIL "L", and RGB with three equal channels
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    Image.fromarray(grey).save(tmp_path / "grey.png")
    grey_reference = predictor.predict(grey)
    assert len(grey_reference) == 1
    for records in (
        predictor.predict(tmp_path / "grey.png"),
        predictor.predict(Image.fromarray(grey)),
        predictor.predict(np.repeat(grey[:, :, None], 3, axis=2)),
    ):
        assert records == grey_reference
    # the colour photo is turned into exactly that grey image before cropping
    assert grey_reference == reference


def test_bgr_order_matters_for_colour_input(predictor, astronaut_small):
    # the same array read as RGB and as BGR is two different grey images
    rgb = predictor.embed(astronaut_small, detect=False)
    bgr = predictor.embed(astronaut_small, detect=False, channel_order="bgr")
    assert not np.allclose(rgb, bgr)


def test_records_describe_each_face(predictor, astronaut_small):
    records = predictor.predict(astronaut_small)
    faces = detect_faces(astronaut_small)
    assert len(records) == len(faces) == 1
    record = records[0]
    assert set(record) == {"face", "box", "score", "label", "probabilities", "embedding_norm", "landmarks"}
    # YuNet's five points: eyes, nose tip, mouth corners (Haar gives none: null)
    assert record["landmarks"] == [[round(float(x), 1), round(float(y), 1)] for x, y in faces[0].landmarks]
    assert record["box"] == [round(v, 1) for v in faces[0].box]
    assert record["score"] == pytest.approx(faces[0].score)
    probabilities = record["probabilities"]
    assert list(probabilities) == list(CLASSES) and sum(probabilities.values()) == pytest.approx(1.0)
    assert record["label"] == max(probabilities, key=probabilities.get)
    embedding = predictor.embed(astronaut_small)
    assert embedding.shape == (1, EMBEDDING_DIM) and embedding.dtype == np.float32
    assert record["embedding_norm"] == pytest.approx(float(np.linalg.norm(embedding[0])), rel=1e-6)
    # the crop the model saw is the detector's crop
    ((face, crop),) = predictor.faces(astronaut_small)
    assert face.box == faces[0].box and crop.shape == (INPUT_SIZE, INPUT_SIZE)
    expected = naive_probabilities(predictor.model, crop[None])[0]
    np.testing.assert_allclose([probabilities[c] for c in CLASSES], expected, atol=1e-6)


def test_all_faces_of_an_image_in_one_batch(predictor, astronaut_small):
    pair = np.concatenate([astronaut_small, astronaut_small], axis=1)  # two faces, 256 px apart
    single = predictor.predict(astronaut_small)[0]
    records = predictor.predict(pair)
    assert [r["face"] for r in records] == [0, 1]
    first, second = records
    assert second["box"][0] == pytest.approx(first["box"][0] + 256, abs=2)
    for record in records:
        np.testing.assert_allclose(
            [record["probabilities"][c] for c in CLASSES], [single["probabilities"][c] for c in CLASSES], atol=1e-3
        )
    assert predictor.embed(pair).shape == (2, EMBEDDING_DIM)


def test_no_face_is_an_empty_result_not_an_error(predictor, noise_image):
    assert predictor.predict(noise_image) == []
    assert predictor.embed(noise_image).shape == (0, EMBEDDING_DIM)


def test_boxes_are_in_the_original_file_pixels(predictor, astronaut, tmp_path, monkeypatch):
    path = tmp_path / "photo.png"
    Image.fromarray(astronaut).save(path)
    full = predictor.predict(astronaut)
    monkeypatch.setattr(predict_module, "MAX_DECODE_SIDE", 256)  # the file is decoded at half size
    reduced = predictor.predict(path)
    assert len(full) == len(reduced) == 1
    np.testing.assert_allclose(reduced[0]["box"], full[0]["box"], atol=6)


def test_bad_arguments_fail_with_one_line_errors(tiny_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="unknown face detector 'nope'"):
        fermetric.load(str(tiny_checkpoint), detector="nope")
    with pytest.raises(CheckpointError, match="does not exist"):
        fermetric.load(str(tmp_path / "missing.safetensors"))


def test_records_carry_landmarks_and_embeddings_on_request(tiny_checkpoint, astronaut_small):
    import fermetric
    from fermetric.data.faces import Face, FaceDetector

    class FakeDetector(FaceDetector):
        name = "fake"

        def _detect(self, image):
            return [Face((20.0, 20.0, 80.0, 80.0), 0.97, np.array([[35.0, 40.0], [65.0, 40.0]]))]

    predictor = fermetric.load(str(tiny_checkpoint), device="cpu", detector=FakeDetector())
    predictor.with_embeddings = True
    (record,) = predictor.predict(astronaut_small)
    assert record["landmarks"] == [[35.0, 40.0], [65.0, 40.0]] and record["score"] == pytest.approx(0.97)
    assert len(record["embedding"]) == EMBEDDING_DIM
    assert float(np.linalg.norm(record["embedding"])) == pytest.approx(record["embedding_norm"], rel=1e-5)


def test_a_uniform_prior_divides_the_probabilities_by_the_training_frequencies(tiny_checkpoint, tmp_path):
    from fermetric.engine.checkpoint import load_weights, save_weights

    with pytest.raises(CheckpointError, match="class_prior"):  # the fixture predates recorded priors
        fermetric.load(str(tiny_checkpoint), device="cpu", prior="uniform")
    tensors, meta = load_weights(tiny_checkpoint)
    trained_prior = np.array([0.2, 0.3, 0.15, 0.1, 0.1, 0.05, 0.1])
    with_prior = save_weights(
        tmp_path / "with_prior.safetensors", tensors, {**meta, "class_prior": list(trained_prior)}
    )
    crops = np.random.default_rng(5).integers(0, 256, (3, INPUT_SIZE, INPUT_SIZE), dtype=np.uint8)
    as_trained = fermetric.load(str(with_prior), device="cpu", precision="fp32")
    uniform = fermetric.load(str(with_prior), device="cpu", precision="fp32", prior="uniform")
    assert "prior='uniform'" in repr(uniform)
    expected = naive_probabilities(as_trained.model, crops) / trained_prior  # Bayes: p(y|x) / p_train(y)
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(uniform.run_crops(crops)[0], expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        as_trained.run_crops(crops)[0], naive_probabilities(as_trained.model, crops), rtol=1e-4, atol=1e-6
    )
    records = uniform.predict(crops[0], detect=False)
    assert records[0]["label"] == CLASSES[int(expected[0].argmax())]


def test_the_compiled_backend_gives_the_torch_results(predictor, tiny_checkpoint, astronaut_small):
    compiled = fermetric.load(tiny_checkpoint, backend="compiled", precision="fp32")
    assert compiled.backend == "compiled" and compiled.precision == "fp32"
    crops = np.random.default_rng(7).integers(0, 256, (40, INPUT_SIZE, INPUT_SIZE), dtype=np.uint8)
    (expected, expected_embeddings), (got, embeddings) = predictor.run_crops(crops), compiled.run_crops(crops)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(embeddings, expected_embeddings, atol=1e-4)
    a, b = predictor.predict(astronaut_small), compiled.predict(astronaut_small)
    assert [r["label"] for r in a] == [r["label"] for r in b] and [r["box"] for r in a] == [r["box"] for r in b]
    with pytest.raises(ConfigError, match="unknown backend 'jit'"):
        fermetric.load(tiny_checkpoint, backend="jit")
