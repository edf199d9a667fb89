"""Faces are cropped at the side of the training images and enlarged as in training
(``crop_resolution="train"``), checked against crops and forward passes computed by hand."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import fermetric
from fermetric.errors import ConfigError

CLASSES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry")
INPUT_SIZE, TRAINED_AT = 32, 16  # the tiny model of model_fixtures.py, as if trained on 16 px faces


@pytest.fixture(scope="module")
def trained_small(tiny_checkpoint, tmp_path_factory):
    """The tiny model with ``train_image_size = 16`` in its metadata (training writes it)."""
    from fermetric.engine.checkpoint import load_weights, save_weights

    tensors, meta = load_weights(tiny_checkpoint)
    meta["train_image_size"] = TRAINED_AT
    path = tmp_path_factory.mktemp("trained16") / "tiny16.safetensors"
    save_weights(path, tensors, meta)
    return path


def enlarged_probabilities(model, small: np.ndarray) -> np.ndarray:
    """The model on a small grey crop enlarged to its input as training enlarges its images:
    bilinear, half-pixel centres, no antialiasing; softmax in float64."""
    x = torch.from_numpy((small.astype(np.float32) / 255.0 - 0.5) / 0.25)[None, None]
    x = torch.nn.functional.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    with torch.no_grad():
        return torch.softmax(model(x)["logits"].double(), dim=1).numpy()[0]


def probabilities_of(record: dict) -> np.ndarray:
    return np.array([record["probabilities"][c] for c in CLASSES])


def test_the_crop_side_follows_the_training_images_unless_asked_otherwise(tiny_checkpoint, trained_small):
    assert fermetric.load(trained_small).crop_size == TRAINED_AT
    assert fermetric.load(trained_small, crop_resolution="input").crop_size == INPUT_SIZE
    assert fermetric.load(tiny_checkpoint).crop_size == INPUT_SIZE  # no train_image_size: as before
    assert "crop_size=16" in repr(fermetric.load(trained_small))
    with pytest.raises(ConfigError, match="crop_resolution must be one of train, input"):
        fermetric.load(trained_small, crop_resolution="native")


def test_a_detected_face_is_averaged_down_to_the_training_side_then_enlarged_as_in_training(
    trained_small, astronaut_small
):
    predictor = fermetric.load(trained_small, detector="haar")
    ((face, crop),) = predictor.faces(astronaut_small)
    assert crop.shape == (TRAINED_AT, TRAINED_AT)
    # Haar boxes are integer squares, and unrotated: the crop is the box's pixels averaged down (INTER_AREA)
    x0, y0, x1, y1 = (int(v) for v in face.box)
    assert x1 - x0 == y1 - y0 > 2 * TRAINED_AT
    grey = np.asarray(Image.fromarray(astronaut_small).convert("L"))
    by_hand = cv2.resize(grey[y0:y1, x0:x1], (TRAINED_AT, TRAINED_AT), interpolation=cv2.INTER_AREA)
    assert np.abs(crop.astype(int) - by_hand).max() <= 1
    (record,) = predictor.predict(astronaut_small)
    np.testing.assert_allclose(probabilities_of(record), enlarged_probabilities(predictor.model, crop), atol=1e-6)
    # the other side is a different input: the option is not a no-op
    (at_input,) = fermetric.load(trained_small, detector="haar", crop_resolution="input").predict(astronaut_small)
    assert at_input["box"] == record["box"]
    assert not np.allclose(probabilities_of(at_input), probabilities_of(record), atol=1e-4)


def test_a_whole_image_larger_than_the_training_side_is_averaged_down_first(trained_small):
    predictor = fermetric.load(trained_small)
    image = np.random.default_rng(4).integers(0, 256, (80, 64), dtype=np.uint8)
    (record,) = predictor.predict(image, detect=False)
    assert record["box"] == [0.0, 0.0, 64.0, 80.0]  # still in the image's own pixels
    small = cv2.resize(image, (TRAINED_AT, TRAINED_AT), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(probabilities_of(record), enlarged_probabilities(predictor.model, small), atol=1e-6)
    tiny = image[:12, :12]  # smaller than the training side: enlarged straight to the input
    (record,) = predictor.predict(tiny, detect=False)
    np.testing.assert_allclose(probabilities_of(record), enlarged_probabilities(predictor.model, tiny), atol=1e-6)


def test_the_command_line_passes_the_crop_resolution(trained_small, tmp_path, capsys):
    from fermetric.cli import main

    image = np.random.default_rng(7).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "face.png")
    for resolution in ("train", "input"):
        argv = ["predict", str(tmp_path / "face.png"), "--checkpoint", str(trained_small), "--no-detect"]
        assert (
            main(argv + ["--json", "--backend", "torch", "--precision", "fp32", "--crop-resolution", resolution]) == 0
        )
        (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
        (expected,) = fermetric.load(trained_small, crop_resolution=resolution, precision="fp32").predict(
            image, detect=False
        )
        np.testing.assert_allclose(probabilities_of(line), probabilities_of(expected), atol=1e-5)


def test_images_larger_than_the_training_side_are_averaged_down_and_others_pass_through():
    from fermetric.engine.evaluate import at_crop_side, crop_side

    images = np.random.default_rng(2).integers(0, 256, (3, 40, 40), dtype=np.uint8)
    small = at_crop_side(images, 16, 32)
    assert small.shape == (3, 16, 16)
    np.testing.assert_array_equal(small[1], cv2.resize(images[1], (16, 16), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(at_crop_side(images[0], 16, 32), small[0])  # one [H, W] image
    assert at_crop_side(images, 32, 32) is images  # not below the input size: Preprocessing resizes
    assert at_crop_side(images[:, :12, :12], 16, 32).shape == (3, 12, 12)  # smaller than the side
    assert at_crop_side(images[:0], 16, 32).shape == (0, 16, 16)  # an empty split stays empty
    meta = {"preprocessing": {"size": 32}, "train_image_size": 16}
    assert crop_side(meta) == 16 and crop_side(meta, "input") == 32
    assert crop_side({"preprocessing": {"size": 32}}) == 32
    with pytest.raises(ConfigError, match="crop_resolution must be one of train, input"):
        crop_side(meta, "native")
    from fermetric.data.base import ImageSet
    from fermetric.engine.evaluate import shown_as_trained

    imageset = ImageSet(images, np.zeros(3, np.int64), CLASSES, ["a", "b", "c"], name="x", split="test")
    shown = shown_as_trained(imageset, meta)
    np.testing.assert_array_equal(shown.images, small)
    assert shown.paths == imageset.paths and shown.name == "x"
    assert shown_as_trained(imageset, meta, "input").images is images


def test_eval_shows_dataset_images_at_the_training_side_as_prediction_does(trained_small, tmp_path, capsys):
    """``fermetric eval`` of 40 px images: averaged down to 16 px, then enlarged to 32 as in
    training; ``--crop-resolution input`` shrinks them straight to 32 (antialiased, as before)."""
    from fermetric.cli import main
    from fermetric.data import load_dataset
    from fermetric.data.synthetic import make_synthetic_faces
    from fermetric.engine.evaluate import align_classes

    root = make_synthetic_faces(tmp_path / "fer", "fer2013", n_per_class=2, size=40, seed=3)
    predictor = fermetric.load(trained_small, precision="fp32")
    testset = align_classes(load_dataset("fer2013", root, "test"), list(CLASSES))
    labels = np.asarray(testset.labels)
    small = [cv2.resize(x, (TRAINED_AT, TRAINED_AT), interpolation=cv2.INTER_AREA) for x in testset.images]
    at_train = np.array([np.argmax(enlarged_probabilities(predictor.model, x)) for x in small])
    x = torch.from_numpy(np.asarray(testset.images, np.float32) / 255.0)[:, None]
    x = torch.nn.functional.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True)
    with torch.no_grad():
        at_input = predictor.model((x - 0.5) / 0.25)["logits"].argmax(1).numpy()
    expected = {"train": np.mean(at_train == labels), "input": np.mean(at_input == labels)}
    for resolution, side in (("train", TRAINED_AT), ("input", INPUT_SIZE)):
        argv = ["eval", "--checkpoint", str(trained_small), "--data", f"fer2013={root}", "--reference", "none"]
        assert main(argv + ["--json", "--precision", "fp32", "--crop-resolution", resolution]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["crop_size"] == side and result["n"] == len(labels)
        assert result["accuracy"] == pytest.approx(expected[resolution])
    # and prediction on the same files without detection agrees with eval
    (record,) = predictor.predict(root / testset.paths[0], detect=False)
    assert CLASSES.index(record["label"]) == at_train[0]
