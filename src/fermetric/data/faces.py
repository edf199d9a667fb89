"""Face detection and face crops: a photo becomes the grey, training-style crops a model expects.

Detectors live in the ``FACE_DETECTORS`` registry and share one surface, ``detector(image) ->
list[Face]``, on RGB (or grey) uint8 arrays:

* ``yunet`` (default, always available): YuNet (Wu, Peng, Yu, *Machine Intelligence Research*
  2023), a 54,608-parameter CNN run by OpenCV's ``FaceDetectorYN``; its ONNX file ships in
  ``fermetric.assets`` (model ``s``; ``n``, the larger one OpenCV's model zoo ships, is there too).
  Score is a probability (faces >= 0.5 kept); five landmarks (eyes, nose tip, mouth corners).
  Chosen over Haar by ``benchmarks/face_detector_settings.py`` under a rule fixed before the run
  (docs/RESULTS.md): on 600 FER2013 PublicTest faces made into photos it found 555 / 569 / 591 /
  595 (faces of 72 / 96 / 192 px, and 192 px framed tightly) where Haar found 475 / 477 / 475 /
  450, with 1 false detection on 17 face-free images (Haar 2), the shipped model scored 67.2 /
  69.0 / 68.7% end to end instead of 54.0 / 53.3 / 50.3%, in 4.4 instead of 11.7 ms per 240 px
  photo. Its box runs from the brows to the chin, a median 1.03 of the FER2013 face side tall
  and 0.81 wide, centred within 2% of the face: the square crop on its longer side matches the
  training crops with ``margin=0``. Its eye points follow a tilted head only part of the way
  (model ``s`` barely, ``n`` about half), so its crops are levelled little.
* ``haar`` (always available): OpenCV's ``haarcascade_frontalface_alt2.xml``
  (``cv2.data.haarcascades``) with ``scaleFactor=1.2, minNeighbors=2``, faces of at least 40 px
  in the detection image. Chosen by ``benchmarks/face_detector_settings.py`` (results in
  docs/RESULTS.md) over the usual ``frontalface_default`` at ``1.1 / 5`` (``fer``'s settings):
  the same FER2013 faces found, fewer detections on face-free images, about 1.5x less time per
  photo (alt2's early stages reject more windows, and the larger step between pyramid scales
  searches fewer of them). When it finds no face it searches once more in the image with its
  edges replicated outward by 0.2 of its longer side (``edge_pad``), for faces of at least half
  its shorter side: a cascade window must fit inside the image, so a face that fills the frame
  (a close portrait, a tight crop) was otherwise missed. On 600 PublicTest faces made into photos
  this found 475 instead of 431 at 192 px with a border and 450 instead of 364 framed tightly,
  with no more false detections (``face_detector_settings.py --split val``). The score is the
  cascade's final-stage sum from ``detectMultiScale3`` (``levelWeights``): higher is surer, it is
  **not** a probability. No landmarks, so Haar crops are not rotated.
* ``mtcnn`` (``pip install --no-deps facenet-pytorch && pip install requests``): score is a probability, 5 landmarks
  (eye, eye, nose, mouth corner, mouth corner) so crops are aligned.
* ``mediapipe`` (``pip install mediapipe==0.10.21``, the last release with bundled models): the
  BlazeFace short/full-range detector, probability score, 6 keypoints (eyes first).

Design decisions (all options, defaults stated):

* **Bounded memory and time**: a detector sees the image downscaled (``INTER_AREA``) so that its
  longer side is at most ``max_side=1024`` px; boxes and landmarks are mapped back to original
  pixels. Faces below the detector's minimum (``min_face``, 40 px for Haar) in the detection
  image are not found: lower ``min_face`` (``--min-face``) for crowds and small faces, at a cost
  in time.
* **Landmarks**: detector-specific points ``[K, 2]`` in original pixels; rows 0 and 1 are always
  the two eye centres (either order). ``align_face`` uses only those two.
* **Order**: faces are returned left to right (then top to bottom), so results are stable.
* **Crop** (:func:`align_face`): a square of side ``max(box w, h) * (1 + 2 * margin)`` centred
  on the box. The margin is calibrated so that crops match FER2013, the reference training data,
  whose crops are tight (forehead to chin). Measured by running each detector on FER2013 test
  images (upscaled 4x, with a 24 px grey border so the whole face is visible): the Haar box side
  is a median 0.92-0.94 of the FER2013 crop side (``benchmarks/face_detector_settings.py``) and
  MTCNN's longer box side a median 1.05 (140 images), both centred within 1 px at 48 px scale,
  so both use ``margin=0.0`` (widening Haar crops towards the FER2013 side lowered end-to-end
  accuracy in that benchmark: 76.5 / 75.2% of the found faces at margin 0, 70.6 / 72.9% at 0.04,
  2026-12-07, crops at the training side). MediaPipe's boxes are tighter (they end
  near the brows): ``margin=0.1``, not measured here. Override with ``margin=``.
* A photo without a detectable face gives ``[]``, never an error.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from ..errors import ConfigError, ImageError
from ..registry import Registry

__all__ = [
    "Face",
    "FaceDetector",
    "HaarDetector",
    "MTCNNDetector",
    "MediaPipeDetector",
    "YuNetDetector",
    "FACE_DETECTORS",
    "DEFAULT_DETECTOR",
    "create_detector",
    "detect_faces",
    "align_face",
    "crop_faces",
    "to_grey",
]


@dataclass(frozen=True)
class Face:
    """One detected face.

    Attributes:
        box: ``(x0, y0, x1, y1)`` in pixels of the original image (x1, y1 exclusive).
        score: detector confidence (see the detector for its scale); ``None`` when no detector ran.
        landmarks: optional float ``[K, 2]`` (x, y) points; rows 0 and 1 are the eye centres.
    """

    box: tuple[float, float, float, float]
    score: float | None = None
    landmarks: np.ndarray | None = field(default=None, compare=False)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    def scaled(self, factor: float) -> Face:
        """The same face with coordinates multiplied by ``factor`` (image resizing)."""
        box = tuple(float(v) * factor for v in self.box)
        landmarks = None if self.landmarks is None else np.asarray(self.landmarks, np.float64) * factor
        return replace(self, box=box, landmarks=landmarks)  # type: ignore[arg-type]


def to_grey(image: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W]`` luma of an RGB ``[H, W, 3]`` or grey image.

    PIL's ``"L"`` conversion (ITU-R 601), exactly as ``data.imageio`` decodes grey training images
    (OpenCV's ``cvtColor`` rounds differently in about 0.1% of pixels).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ImageError(f"expected a uint8 image, got {image.dtype}; convert with np.clip(x, 0, 255).astype(np.uint8)")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        from PIL import Image

        return np.asarray(Image.fromarray(np.ascontiguousarray(image)).convert("L"))
    raise ImageError(f"expected an RGB [H,W,3] or grey [H,W] image, got shape {image.shape}")


def _to_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image)


class FaceDetector:
    """Base class: downscale, run ``_detect``, map back, filter and sort.

    Args:
        max_side: longest side (px) of the image the detector sees; larger images are downscaled.
        min_score: drop faces scoring below this (``None``: keep what the detector keeps).
    """

    name: str = ""
    #: default ``margin`` of :func:`align_face` for this detector's boxes (see the module notes)
    crop_margin: float = 0.0

    def __init__(self, max_side: int = 1024, min_score: float | None = None) -> None:
        if max_side < 32:
            raise ConfigError(f"face detector max_side={max_side} is too small; use at least 32")
        self.max_side = int(max_side)
        self.min_score = min_score

    def __call__(self, image: np.ndarray) -> list[Face]:
        return self.detect(image)

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an RGB ``[H, W, 3]`` or grey ``[H, W]`` uint8 image, in its pixel coordinates."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise ImageError(
                f"face detection needs a uint8 RGB [H,W,3] or grey [H,W] image, got {image.dtype} {image.shape}"
            )
        height, width = image.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        small = image
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            scale = size[0] / width  # the factor actually applied (rounding)
        faces = [face.scaled(1.0 / scale) if scale != 1.0 else face for face in self._detect(small)]
        if self.min_score is not None:
            faces = [f for f in faces if f.score is not None and f.score >= self.min_score]
        faces = [f for f in faces if f.width > 0 and f.height > 0]
        return sorted(faces, key=lambda f: (f.box[0], f.box[1]))

    def _detect(self, image: np.ndarray) -> list[Face]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_side={self.max_side}, min_score={self.min_score})"


FACE_DETECTORS: Registry[Callable[..., FaceDetector]] = Registry("face detector")


def _is_path(name: str) -> bool:
    """A model or cascade given as a file path rather than as a shipped file's name."""
    return "/" in name or "\\" in name


#: what ``create_detector``, ``Predictor`` and the command line use unless told (see the module notes)
DEFAULT_DETECTOR = "yunet"

#: the smallest face (fraction of the image's shorter side) Haar's edge-padded second search looks for
EDGE_FACE_SIDE = 0.5


@FACE_DETECTORS.register("haar")
class HaarDetector(FaceDetector):
    """OpenCV's frontal-face Haar cascade (no landmarks, score = final-stage sum, not a probability).

    Args:
        scale_factor, min_neighbors: ``detectMultiScale`` settings (1.2 and 2: see the module notes).
        min_face: smallest face side (px) in the detection image.
        cascade: file name inside ``cv2.data.haarcascades`` or a path to a cascade XML.
        edge_pad: when no face is found, search once more in the image with its edges replicated
            outward by this fraction of its longer side on every side (0: never), for faces of at
            least ``EDGE_FACE_SIDE`` of the image's shorter side. A cascade window must fit inside
            the image, so a tightly framed face that reaches the edges (a close portrait) is missed
            without it; its box may then reach past the image (the crop replicates the edge). Only
            large faces reach all the edges, so the second search skips small windows: it costs
            a fraction of the first.
    """

    name = "haar"
    crop_margin = 0.0

    def __init__(
        self,
        max_side: int = 1024,
        min_score: float | None = None,
        scale_factor: float = 1.2,
        min_neighbors: int = 2,
        min_face: int = 40,
        cascade: str = "haarcascade_frontalface_alt2.xml",
        edge_pad: float = 0.2,
    ) -> None:
        super().__init__(max_side, min_score)
        if scale_factor <= 1.0 or min_neighbors < 0 or min_face < 1 or not 0 <= edge_pad <= 1:
            raise ConfigError(
                f"Haar settings need scale_factor > 1, min_neighbors >= 0, min_face >= 1 and 0 <= edge_pad <= 1; "
                f"got {scale_factor}, {min_neighbors}, {min_face}, {edge_pad}"
            )
        self.edge_pad = float(edge_pad)
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_face = int(min_face)
        folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
        path = cascade if _is_path(cascade) else (folder or "") + cascade
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise ConfigError(
                f"cannot load the Haar cascade {path!r} (OpenCV {cv2.__version__}; OpenCV 5 ships none): "
                "install 'opencv-python-headless<5' or use --detector mtcnn"
            )
        self.cascade = cascade

    def __repr__(self) -> str:
        return (
            f"HaarDetector(cascade={self.cascade!r}, scale_factor={self.scale_factor}, "
            f"min_neighbors={self.min_neighbors}, min_face={self.min_face}, edge_pad={self.edge_pad}, "
            f"max_side={self.max_side})"
        )

    def _detect(self, image: np.ndarray) -> list[Face]:
        grey = to_grey(image)
        if min(grey.shape) < self.min_face:
            return []
        faces = self._cascade_faces(grey)
        if faces or not self.edge_pad:
            return faces
        pad = int(round(self.edge_pad * max(grey.shape)))
        padded = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        large = max(self.min_face, int(EDGE_FACE_SIDE * min(grey.shape)))
        return [replace(face, box=tuple(v - pad for v in face.box)) for face in self._cascade_faces(padded, large)]

    def _cascade_faces(self, grey: np.ndarray, min_face: int | None = None) -> list[Face]:
        side = self.min_face if min_face is None else min_face
        boxes, _levels, weights = self._cascade.detectMultiScale3(
            grey,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(side, side),
            outputRejectLevels=True,
        )
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        return [
            Face((float(x), float(y), float(x + w), float(y + h)), float(score))
            for (x, y, w, h), score in zip(np.asarray(boxes).reshape(-1, 4), weights)
        ]


#: YuNet variants shipped in ``fermetric.assets`` (libfacedetection.train's ONNX exports, Apache-2.0):
#: ``s`` (54,608 parameters, the default: more FER2013 faces found, faster) and ``n`` (75,856, the
#: variant OpenCV's model zoo ships; more accurate on WIDER FACE's small faces)
YUNET_MODELS = {"n": "yunet_n_320_320.onnx", "s": "yunet_s_320_320.onnx"}


@FACE_DETECTORS.register("yunet")
class YuNetDetector(FaceDetector):
    """YuNet, a small CNN face detector run by OpenCV's ``FaceDetectorYN`` (shipped, no download).

    Score: the detector's face probability (0-1). Five landmarks: the two eyes, the nose tip and
    the two mouth corners, so crops are rotated to level the eyes. It sees the image's luma (as
    the expression model does), so a colour photo and its grey version give the same faces.

    Args:
        min_score: faces scoring below this are dropped (YuNet's own ``score_threshold``; 0.5).
        model: ``"s"`` (default) or ``"n"`` (:data:`YUNET_MODELS`), or a path to a YuNet ONNX file in
            OpenCV's format (outputs ``cls_8 ... kps_32``, OpenCV >= 4.8).
        nms_threshold: overlap (IoU) above which the weaker of two boxes is dropped.
        min_face: faces whose box is narrower than this (px, in the detection image) are dropped;
            YuNet itself finds faces down to about 10 px.
    """

    name = "yunet"
    crop_margin = 0.0

    def __init__(
        self,
        max_side: int = 1024,
        min_score: float = 0.5,
        model: str = "s",
        nms_threshold: float = 0.3,
        min_face: int = 10,
    ) -> None:
        super().__init__(max_side, min_score)
        if min_score is None or not 0.0 <= min_score < 1.0 or not 0.0 < nms_threshold <= 1.0 or min_face < 1:
            raise ConfigError(
                f"YuNet needs 0 <= min_score < 1, 0 < nms_threshold <= 1 and min_face >= 1; got {min_score}, {nms_threshold}, {min_face}"
            )
        if model in YUNET_MODELS:
            from importlib import resources

            path = str(resources.files("fermetric.assets") / YUNET_MODELS[model])
        elif _is_path(model):
            path = model
        else:
            raise ConfigError(
                f"unknown YuNet model {model!r}; use {' or '.join(YUNET_MODELS)}, or a path to an .onnx file"
            )
        if not hasattr(cv2, "FaceDetectorYN"):
            raise ConfigError(f"face detector 'yunet' needs OpenCV >= 4.8 (this is {cv2.__version__})")
        try:
            self._net = cv2.FaceDetectorYN.create(path, "", (320, 320), float(min_score), float(nms_threshold), 5000)
        except cv2.error as err:
            raise ConfigError(f"cannot load the YuNet model {path!r}: {str(err).strip().splitlines()[-1]}") from None
        self.model = model
        self.nms_threshold = float(nms_threshold)
        self.min_face = int(min_face)

    def __repr__(self) -> str:
        return (
            f"YuNetDetector(model={self.model!r}, min_score={self.min_score}, nms_threshold={self.nms_threshold}, "
            f"min_face={self.min_face}, max_side={self.max_side})"
        )

    def _detect(self, image: np.ndarray) -> list[Face]:
        # the luma in all three channels, as for a grey photo: a face is found where it is whatever
        # container or colour order the pixels came in, and the crop the model sees is luma too
        bgr = cv2.cvtColor(to_grey(image), cv2.COLOR_GRAY2BGR)
        self._net.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = self._net.detect(bgr)
        faces = []
        for row in np.zeros((0, 15)) if rows is None else np.asarray(rows, np.float64):
            x, y, w, h = row[:4]
            if not np.isfinite(row).all() or w < self.min_face:  # flat images can make YuNet emit inf/NaN rows
                continue
            faces.append(
                Face((float(x), float(y), float(x + w), float(y + h)), float(row[14]), row[4:14].reshape(5, 2))
            )
        return faces


def _float_array(value, shape_tail: tuple[int, ...]) -> np.ndarray:
    """facenet-pytorch returns object arrays under numpy 2: stack them into float arrays."""
    if value is None:
        return np.zeros((0, *shape_tail))
    rows = [np.asarray(v, dtype=np.float64).reshape(shape_tail) for v in value]
    return np.stack(rows) if rows else np.zeros((0, *shape_tail))


@FACE_DETECTORS.register("mtcnn")
class MTCNNDetector(FaceDetector):
    """MTCNN from facenet-pytorch (probability score, 5 landmarks: eyes, nose, mouth corners).

    Args:
        device: torch device for the three small CNNs (``"cpu"`` default).
        min_score: 0.9 by default (facenet-pytorch keeps weaker candidates).
        min_face: smallest face side (px) in the detection image (facenet-pytorch's ``min_face_size``).
    """

    name = "mtcnn"
    crop_margin = 0.0

    def __init__(
        self, max_side: int = 1024, min_score: float | None = 0.9, device: str = "cpu", min_face: int = 20
    ) -> None:
        super().__init__(max_side, min_score)
        try:
            from facenet_pytorch import MTCNN
        except ImportError:
            raise ConfigError(
                "face detector 'mtcnn' needs facenet-pytorch: pip install --no-deps facenet-pytorch && pip install requests"
            ) from None
        self._mtcnn = MTCNN(keep_all=True, device=device, min_face_size=int(min_face))

    def _detect(self, image: np.ndarray) -> list[Face]:
        from PIL import Image

        boxes, probs, points = self._mtcnn.detect(Image.fromarray(_to_rgb(image)), landmarks=True)
        boxes = _float_array(boxes, (4,))
        probs = np.asarray([float(p) for p in (probs if boxes.size else [])], dtype=np.float64)
        points = _float_array(points, (5, 2))
        return [Face(tuple(map(float, b)), float(p), lm) for b, p, lm in zip(boxes, probs, points)]


@FACE_DETECTORS.register("mediapipe")
class MediaPipeDetector(FaceDetector):
    """MediaPipe face detection (``mp.solutions.face_detection``; probability score, 6 keypoints).

    Args:
        model_selection: 0 short range (faces within about 2 m), 1 full range (default: photos).
        min_score: the detector's own confidence threshold (0.5).
    """

    name = "mediapipe"
    crop_margin = 0.1

    def __init__(self, max_side: int = 1024, min_score: float | None = 0.5, model_selection: int = 1) -> None:
        super().__init__(max_side, min_score)
        try:
            import mediapipe as mp

            solution = mp.solutions.face_detection
        except (ImportError, AttributeError):
            raise ConfigError(
                "face detector 'mediapipe' needs mediapipe with bundled models: pip install mediapipe==0.10.21"
            ) from None
        self._detector = solution.FaceDetection(
            model_selection=model_selection, min_detection_confidence=min_score or 0.5
        )

    def _detect(self, image: np.ndarray) -> list[Face]:
        rgb = _to_rgb(image)
        height, width = rgb.shape[:2]
        result = self._detector.process(rgb)
        faces = []
        for detection in result.detections or []:
            data = detection.location_data
            rel = data.relative_bounding_box
            x0, y0 = rel.xmin * width, rel.ymin * height
            box = (x0, y0, x0 + rel.width * width, y0 + rel.height * height)
            # keypoints: right eye, left eye (the subject's), nose tip, mouth centre, two ear tragions
            points = np.array([(k.x * width, k.y * height) for k in data.relative_keypoints], dtype=np.float64)
            faces.append(Face(tuple(map(float, box)), float(detection.score[0]), points))
        return faces


def create_detector(detector: str | FaceDetector = DEFAULT_DETECTOR, **options) -> FaceDetector:
    """A detector by registry name (``yunet``, ``haar``, ``mtcnn``, ``mediapipe``) built with ``options``
    (e.g. ``min_face=24``), or the instance given."""
    if isinstance(detector, FaceDetector):
        if options:
            raise ConfigError(f"options {sorted(options)} apply to a detector name, not to the instance {detector!r}")
        return detector
    factory = FACE_DETECTORS.get(detector)
    accepted = set(inspect.signature(factory).parameters)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(
            f"face detector {detector!r} has no option {', '.join(unknown)}; its options: {', '.join(sorted(accepted))}"
        )
    return factory(**options)


def detect_faces(image: np.ndarray, detector: str | FaceDetector = DEFAULT_DETECTOR) -> list[Face]:
    """Faces in an RGB (or grey) uint8 image, left to right; ``[]`` when there is none."""
    return create_detector(detector)(image)


def eye_angle(face: Face) -> float:
    """Degrees to rotate (counter-clockwise, OpenCV convention) so that the eyes are level; 0 without landmarks."""
    if face.landmarks is None or len(face.landmarks) < 2:
        return 0.0
    first, second = sorted(np.asarray(face.landmarks, np.float64)[:2].tolist())  # image-left eye first
    return math.degrees(math.atan2(second[1] - first[1], second[0] - first[0]))


def crop_matrix(face: Face, crop_side: int, margin: float) -> np.ndarray:
    """The 2x3 affine map from image pixels to a ``crop_side`` square crop of ``face``.

    The crop is the square of side ``max(w, h) * (1 + 2 * margin)`` centred on the box, rotated
    about the box centre by :func:`eye_angle`.
    """
    cx, cy = face.center
    side = max(face.width, face.height) * (1.0 + 2.0 * margin)
    if side <= 0:
        raise ImageError(f"face box {face.box} is empty")
    matrix = cv2.getRotationMatrix2D((cx, cy), eye_angle(face), crop_side / side)
    matrix[:, 2] += (crop_side / 2.0 - cx, crop_side / 2.0 - cy)
    return matrix


def align_face(grey: np.ndarray, face: Face, size: int = 48, margin: float = 0.0) -> np.ndarray:
    """A ``size`` x ``size`` uint8 crop of ``face`` from a grey image, eyes level when landmarks exist.

    The crop is first rendered at the face's own resolution (bilinear, replicating the border
    where the square leaves the image) and then resized with ``INTER_AREA``, so large faces are
    averaged down the way dataset crops were, not aliased by a one-step warp.
    """
    grey = to_grey(grey)
    side = max(face.width, face.height) * (1.0 + 2.0 * margin)
    work = max(int(size), int(round(side)))
    crop = cv2.warpAffine(
        grey, crop_matrix(face, work, margin), (work, work), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    if work != size:
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return crop


def crop_faces(
    image: np.ndarray,
    detector: str | FaceDetector = DEFAULT_DETECTOR,
    size: int = 48,
    margin: float | None = None,
) -> list[tuple[Face, np.ndarray]]:
    """Detect and crop: ``[(Face, grey uint8 [size, size])]`` left to right; ``[]`` for no face.

    ``margin=None`` uses the detector's calibrated ``crop_margin`` (see the module notes).
    """
    detector = create_detector(detector)
    margin = detector.crop_margin if margin is None else margin
    grey = to_grey(image)
    return [(face, align_face(grey, face, size, margin)) for face in detector(image)]
