"""Face detection and crops (data/faces.py): no model needed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fermetric.data.faces import (
    DEFAULT_DETECTOR,
    FACE_DETECTORS,
    Face,
    FaceDetector,
    HaarDetector,
    YuNetDetector,
    align_face,
    create_detector,
    crop_faces,
    crop_matrix,
    detect_faces,
    eye_angle,
    to_grey,
)
from fermetric.errors import ConfigError, ImageError


def test_astronaut_has_one_face_where_her_face_is(astronaut):
    faces = HaarDetector()(astronaut)
    assert len(faces) == 1
    face = faces[0]
    # Hand-read from the photo: Eileen Collins' face spans about x 180-270, y 65-165 (eyes near
    # y 105, mouth near y 140); the Haar box must cover that region and not much more.
    cx, cy = face.center
    assert 200 <= cx <= 250 and 95 <= cy <= 135
    assert 70 <= face.width <= 140 and face.width == pytest.approx(face.height)
    assert face.score is not None and face.score > 0
    assert face.landmarks is None


@pytest.mark.parametrize(
    "image",
    [
        np.full((300, 400, 3), 128, np.uint8),  # flat
        np.zeros((64, 64), np.uint8),  # black, grey
        np.full((10, 12, 3), 200, np.uint8),  # smaller than the cascade window
    ],
)
def test_images_without_faces_give_no_face(image):
    assert detect_faces(image) == []


def test_noise_gives_no_face(noise_image):
    assert detect_faces(noise_image) == []


def test_large_images_are_detected_downscaled_and_boxes_mapped_back(astronaut):
    big = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    # max_side=512 makes the detector see (almost exactly) the original photo again
    faces = HaarDetector(max_side=512)(big)
    reference = HaarDetector()(astronaut)
    assert len(faces) == len(reference) == 1
    np.testing.assert_allclose(faces[0].box, np.array(reference[0].box) * 2, atol=4)


def test_grey_and_rgb_inputs_detect_the_same_face(astronaut_small):
    faces = detect_faces(astronaut_small)
    assert len(faces) == 1
    assert [f.box for f in detect_faces(to_grey(astronaut_small))] == [f.box for f in faces]


def test_to_grey_is_pil_luma():
    from PIL import Image

    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(to_grey(rgb), expected)
    with pytest.raises(ImageError):
        to_grey(rgb.astype(np.float32))


def test_square_crop_without_landmarks_is_the_plain_slice():
    grey = np.random.default_rng(2).integers(0, 256, (100, 120), dtype=np.uint8)
    face = Face((30.0, 20.0, 70.0, 60.0), 1.0)
    np.testing.assert_array_equal(align_face(grey, face, size=40, margin=0.0), grey[20:60, 30:70])
    # margin 0.25: a 60-px square around the same centre (50, 40), here inside the image
    np.testing.assert_array_equal(align_face(grey, face, size=60, margin=0.25), grey[10:70, 20:80])
    # resizing to the model size uses INTER_AREA on the native-resolution crop
    expected = cv2.resize(grey[20:60, 30:70], (20, 20), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(align_face(grey, face, size=20, margin=0.0), expected)


def test_crop_leaving_the_image_replicates_the_border():
    grey = np.tile(np.arange(50, dtype=np.uint8), (50, 1))  # value = column index
    crop = align_face(grey, Face((-10.0, 0.0, 30.0, 40.0)), size=40)
    assert (crop[:, :10] == 0).all() and (crop[:, 10:] == np.arange(30)).all()


@pytest.mark.parametrize(
    "eyes", [((40.0, 50.0), (80.0, 70.0)), ((80.0, 40.0), (40.0, 62.0)), ((30.0, 60.0), (90.0, 45.0))]
)
def test_alignment_levels_the_eyes(eyes):
    grey = np.full((128, 128), 200, np.uint8)
    for x, y in eyes:
        cv2.circle(grey, (int(x), int(y)), 5, 0, -1)
    face = Face((20.0, 20.0, 100.0, 100.0), 1.0, np.array([*eyes, (60.0, 80.0)]))
    matrix = crop_matrix(face, 80, margin=0.0)
    mapped = np.array([matrix @ np.array([x, y, 1.0]) for x, y in eyes])
    assert mapped[0, 1] == pytest.approx(mapped[1, 1], abs=1e-6)
    # the eye distance is kept (scale 1 for an 80-px crop of an 80-px box)
    assert np.linalg.norm(mapped[0] - mapped[1]) == pytest.approx(np.linalg.norm(np.subtract(*eyes)), rel=1e-6)
    # and in the pixels: the two dark discs end up on one row
    crop = align_face(grey, face, size=80, margin=0.0)
    _, labels, stats, centroids = cv2.connectedComponentsWithStats((crop < 100).astype(np.uint8))
    blobs = centroids[1:][stats[1:, cv2.CC_STAT_AREA] > 20]
    assert len(blobs) == 2 and abs(blobs[0, 1] - blobs[1, 1]) < 1.0


def test_crop_faces_returns_model_sized_crops(astronaut_small):
    crops = crop_faces(astronaut_small, "haar", size=48)
    assert len(crops) == 1
    face, crop = crops[0]
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, align_face(to_grey(astronaut_small), face, 48, HaarDetector.crop_margin))
    assert crop_faces(np.full((200, 200, 3), 90, np.uint8)) == []


class _ListDetector(FaceDetector):
    """Returns fixed faces (in the coordinates of the image it is given)."""

    def __init__(self, faces, **options):
        super().__init__(**options)
        self.faces = faces

    def _detect(self, image):
        return list(self.faces)


def test_detector_base_sorts_filters_and_rescales():
    faces = [
        Face((50.0, 5.0, 60.0, 15.0), 0.9),
        Face((10.0, 5.0, 20.0, 15.0), 0.4),
        Face((30.0, 30.0, 30.0, 40.0), 0.99),
        Face((10.0, 1.0, 20.0, 4.0), 0.95, np.array([[12.0, 2.0], [18.0, 2.0]])),
    ]
    image = np.zeros((100, 200, 3), np.uint8)
    found = _ListDetector(faces, max_side=100, min_score=0.5)(image)  # seen at half size
    assert [f.box for f in found] == [(20.0, 2.0, 40.0, 8.0), (100.0, 10.0, 120.0, 30.0)]  # empty box dropped
    np.testing.assert_allclose(found[0].landmarks, [[24.0, 4.0], [36.0, 4.0]])


def test_the_default_detector_is_yunet_everywhere():
    import inspect

    from fermetric.cli import build_parser
    from fermetric.predict import Predictor

    assert DEFAULT_DETECTOR == "yunet"
    assert isinstance(create_detector(), YuNetDetector)
    assert build_parser().parse_args(["predict", "photo.jpg"]).detector == DEFAULT_DETECTOR
    assert inspect.signature(Predictor.load).parameters["detector"].default == DEFAULT_DETECTOR


def test_registry_and_optional_detectors():
    assert {"haar", "yunet", "mtcnn", "mediapipe"} <= set(FACE_DETECTORS.names())
    with pytest.raises(ConfigError, match="haar"):
        create_detector("nope")
    detector = HaarDetector()
    assert create_detector(detector) is detector
    for name, module in (("mtcnn", "facenet_pytorch"), ("mediapipe", "mediapipe")):
        try:
            __import__(module)
        except ImportError:
            with pytest.raises(ConfigError, match="pip install"):
                create_detector(name)


def test_detector_options_are_checked_by_name():
    assert create_detector("haar", min_face=24).min_face == 24
    with pytest.raises(ConfigError, match="no option min_size.*min_face"):
        create_detector("haar", min_size=24)
    with pytest.raises(ConfigError, match="not to the instance"):
        create_detector(HaarDetector(), min_face=24)
    with pytest.raises(ConfigError, match="scale_factor > 1"):
        HaarDetector(scale_factor=1.0)


def test_a_face_filling_the_frame_is_found_in_an_edge_padded_second_search(astronaut):
    (face,) = HaarDetector()(astronaut)  # about 98 px
    x0, y0, x1, y1 = (int(v) for v in face.box)
    inset = 8  # the photo ends inside the face's box: no cascade window fits around the face
    tight = astronaut[y0 + inset : y1 - inset, x0 + inset : x1 - inset]
    assert HaarDetector(edge_pad=0)(tight) == []
    (found,) = HaarDetector()(tight)  # the default: edge_pad 0.2
    expected = (-inset, -inset, x1 - x0 - inset, y1 - y0 - inset)  # the box reaches past the photo
    np.testing.assert_allclose(found.box, expected, atol=4)
    crop = align_face(to_grey(tight), found, 48)  # the edge is replicated where the box leaves the photo
    assert crop.shape == (48, 48)
    # a face found in the first search is all there is: the second never runs
    assert HaarDetector()(astronaut) == HaarDetector(edge_pad=0)(astronaut)
    with pytest.raises(ConfigError, match="0 <= edge_pad <= 1"):
        HaarDetector(edge_pad=1.5)


def test_min_face_bounds_the_faces_found(astronaut):
    side = detect_faces(astronaut)[0].width  # about 100 px
    assert len(HaarDetector(min_face=int(side * 0.8))(astronaut)) == 1
    assert HaarDetector(min_face=int(side * 1.5))(astronaut) == []


def test_mtcnn_finds_the_astronaut_with_landmarks(astronaut):
    pytest.importorskip("facenet_pytorch")
    faces = detect_faces(astronaut, "mtcnn")
    assert len(faces) == 1 and faces[0].score > 0.9 and faces[0].landmarks.shape == (5, 2)
    haar = detect_faces(astronaut)[0]
    assert np.linalg.norm(np.subtract(faces[0].center, haar.center)) < 15
    # rotating the photo 20 degrees counter-clockwise turns the eye line by the same angle, so
    # the alignment rotation found for the rotated photo is 20 degrees less
    rotated = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((256, 256), 20, 1.0), (512, 512))
    (face,) = detect_faces(rotated, "mtcnn")
    assert eye_angle(face) == pytest.approx(eye_angle(faces[0]) - 20, abs=4)


def test_device_reaches_detectors_that_take_one(monkeypatch):
    from fermetric.data.faces import FACE_DETECTORS, FaceDetector
    from fermetric.predict import detector_options

    assert detector_options("haar", None, "auto") == {}
    assert detector_options("haar", 30, "cpu") == {"min_face": 30}

    class NetDetector(FaceDetector):
        def __init__(self, min_face: int = 20, device: str = "cpu") -> None:
            super().__init__()

    monkeypatch.setitem(FACE_DETECTORS._items, "netdet", NetDetector)
    assert detector_options("netdet", None, "cpu") == {"device": "cpu"}


# ------------------------------------------------------------------------------------- YuNet
def test_yunet_finds_the_astronaut_with_eyes_nose_and_mouth(astronaut):
    (face,) = YuNetDetector()(astronaut)
    haar = HaarDetector()(astronaut)[0]
    assert np.linalg.norm(np.subtract(face.center, haar.center)) < 15
    assert 0.8 * haar.height <= face.height <= 1.4 * haar.height
    assert 0.7 <= face.score <= 1.0
    # the five points, hand-read from the photo: eyes near y 105, nose between them and the mouth
    # (near y 140), all inside the box; rows 0 and 1 are the eyes (align_face levels them)
    points = face.landmarks
    assert points.shape == (5, 2)
    x0, y0, x1, y1 = face.box
    assert np.all((points[:, 0] > x0) & (points[:, 0] < x1) & (points[:, 1] > y0) & (points[:, 1] < y1))
    eyes, nose, mouth = points[:2], points[2], points[3:]
    assert np.all(np.abs(eyes[:, 1] - 105) < 12) and np.all(np.abs(mouth[:, 1] - 142) < 12)
    assert eyes[:, 1].max() < nose[1] < mouth[:, 1].min()
    assert abs(eye_angle(face)) < 5  # her head is upright
    # it sees the luma: the grey photo gives exactly this face; the larger model n finds it too
    assert YuNetDetector()(to_grey(astronaut)) == [face]
    (larger,) = YuNetDetector(model="n")(astronaut)
    np.testing.assert_allclose(larger.box, face.box, atol=8)


def test_yunet_eye_points_follow_a_tilted_head_part_of_the_way(astronaut):
    detector = YuNetDetector(model="n")  # the default model s's points barely turn (measured: 0-3 degrees)
    (upright,) = detector(astronaut)
    for tilt in (-20, 20):  # counter-clockwise degrees, about the face
        rotated = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((224, 120), tilt, 1.0), (512, 512))
        (face,) = detector(rotated)
        # measured: model n's eye points turn by about half the tilt (10 of 20 degrees), so its
        # crops are levelled part of the way; a full turn would be -tilt
        turned = eye_angle(face) - eye_angle(upright)
        assert 0.25 * abs(tilt) <= -np.sign(tilt) * turned <= abs(tilt) + 4


@pytest.mark.parametrize(
    "image",
    [np.full((300, 400, 3), 128, np.uint8), np.zeros((64, 64), np.uint8), np.full((10, 12, 3), 200, np.uint8)],
)
def test_yunet_finds_no_face_in_flat_or_tiny_images(image):
    assert YuNetDetector()(image) == []


@pytest.mark.filterwarnings("error::RuntimeWarning")  # arithmetic on an inf / NaN box warns
def test_yunet_drops_rows_that_are_not_finite():
    """On tiny or flat images YuNet can emit inf / NaN boxes: they are no faces, never NaN boxes."""

    class StubNet:
        def setInputSize(self, size):
            pass

        def detect(self, image):
            good = [40, 30, 80, 90, *range(10), 0.9]
            return 1, np.array([[-np.inf, 0, np.inf, 20, *range(10), 0.8], [np.nan, *good[1:]], good], np.float32)

    detector = YuNetDetector(min_score=0.5)
    detector._net = StubNet()
    (face,) = detector(np.full((200, 200), 128, np.uint8))
    assert face.box == pytest.approx((40, 30, 120, 120)) and face.score == pytest.approx(0.9)


def test_yunet_finds_no_face_in_noise(noise_image):
    assert YuNetDetector()(noise_image) == []


def test_yunet_finds_a_face_filling_the_frame_and_maps_downscaled_boxes_back(astronaut):
    (face,) = YuNetDetector()(astronaut)
    x0, y0, x1, y1 = (int(v) for v in face.box)
    tight = astronaut[y0:y1, x0:x1]
    (found,) = YuNetDetector()(tight)
    assert found.width > 0.7 * (x1 - x0)
    big = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    (large,) = YuNetDetector(max_side=512)(big)
    np.testing.assert_allclose(large.box, np.array(face.box) * 2, atol=6)
    np.testing.assert_allclose(large.landmarks, face.landmarks * 2, atol=6)


def test_yunet_options_are_checked(astronaut, tmp_path):
    side = YuNetDetector()(astronaut)[0].width
    assert YuNetDetector(min_face=int(side * 1.3))(astronaut) == []
    assert create_detector("yunet", min_face=24).min_face == 24
    for bad in (dict(min_score=1.5), dict(min_score=None), dict(nms_threshold=0.0), dict(min_face=0)):
        with pytest.raises(ConfigError, match="YuNet needs"):
            YuNetDetector(**bad)
    with pytest.raises(ConfigError, match="unknown YuNet model 'm'.*n or s"):
        YuNetDetector(model="m")
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_text("not a network")
    with pytest.raises(ConfigError, match="cannot load the YuNet model"):
        YuNetDetector(model=str(not_onnx))


def test_the_shipped_yunet_files_are_the_published_ones():
    import hashlib
    from importlib import resources

    from fermetric.data.faces import YUNET_MODELS

    published = {  # libfacedetection.train at 0047ac24a, onnx/ (src/fermetric/assets/README.md)
        "s": "beb05bf2378aee45cd7c41056da07265b7bb91041ed1b06f923819a9c744ec36",
        "n": "81dbde155e982455488235acb8ec2dec5d647edf7cf7080d33e4abb69b93a0d2",
    }
    for model, digest in published.items():
        data = (resources.files("fermetric.assets") / YUNET_MODELS[model]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest
