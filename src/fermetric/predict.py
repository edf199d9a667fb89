"""Photo -> faces -> expressions: the :class:`Predictor` and ``fermetric predict``.

>>> import fermetric
>>> predictor = fermetric.load("default")                  # or a run directory / .pt / .safetensors
>>> predictor.predict(fermetric.assets.example_photo())     # one dict per face
[{'face': 0, 'box': [177.0, 66.0, 272.0, 161.0], 'score': 5.83, 'label': 'happy', ...}]

Design decisions (defaults stated; every one is an argument):

* **Inputs** (:meth:`Predictor.predict`, :meth:`Predictor.embed`): a path (``str``/``Path``), a
  ``PIL.Image``, or a numpy array: RGB ``[H,W,3]`` by default, ``channel_order="bgr"`` for OpenCV
  frames, ``[H,W]`` grey, ``[H,W,4]`` with alpha. All of them are decoded by
  ``data.imageio.to_array`` (EXIF orientation, 16-bit, palettes... as for datasets), so the same
  pixels give the same result whatever container they came in. Files are decoded at most
  ``max_side=4096`` px on their longer side (bounded memory); boxes are still reported in the
  original file's pixels.
* **Faces**: ``detect=True`` runs the face detector (``yunet`` by default, see
  ``data/faces.py``) and crops each face as a square, grey image, turned to level the eyes when
  the detector gives landmarks, with the detector's calibrated margin (FER2013-style tight crops;
  rendered at the face's resolution, then ``INTER_AREA`` down to the crop side).
  ``detect=False`` treats the whole image as one face crop, like a dataset image, exactly as
  ``fermetric eval`` does: larger than a crop side below ``input_size``, it is first averaged
  down (``INTER_AREA``) to that side; then ``Preprocessing`` resizes it.
* **Crop side** (``crop_resolution``): ``"train"`` (default) renders a face at the side of the
  images the model was trained on (``meta["train_image_size"]``: 48 px for FER2013 and FER+)
  and lets ``Preprocessing`` enlarge it to ``input_size`` exactly as in training, so a photo's
  face carries the detail the model learned from and no finer; ``"input"`` renders it at
  ``input_size`` directly. The shipped models learned from 48 px faces enlarged to 96 px: real
  photos' finer detail (sensor noise, JPEG blocks, sharpening) is outside what they saw, and
  rendered at 96 px it cost the shipped ``default`` 2.6-4.5 points on FER2013 PrivateTest faces
  photographed at 4x resolution with Haar's crops, where the 48 px crops held their accuracy, and
  0.8-2.0 points on the degraded photos with YuNet's crops, which lose 1.5 points on clean
  enlarged 48 px faces (``benchmarks/crop_resolution.py``, docs/RESULTS.md). A model without
  ``train_image_size`` (trained before fermetric recorded it) is cropped at ``input_size``.
* **Same path as evaluation**: crops go through ``engine.evaluate.embed`` with the checkpoint's
  own ``Preprocessing`` (grey, size, mean/std from its meta) and precision policy (``auto``),
  no test-time augmentation unless ``tta="flip"`` (``--tta flip``: logits and embeddings averaged
  with the mirrored face, as ``fermetric eval --tta flip`` does). All faces of an image (and of a
  chunk of files or video frames) are one batch.
* **Outputs**: ``label`` is the classifier's argmax; ``probabilities`` its softmax; ``score`` the
  detector's confidence (``None`` without detection); ``embedding_norm`` the L2 norm of the raw
  embedding (retrieval L2-normalises it; an unusually small norm marks an input far from the
  training data); ``box`` is in the photo's pixels and may reach past its edges for a face that
  fills the frame (the crop replicates the edge there).
* **Many files** (:meth:`Predictor.predict_paths`): files, folders (recursive, sorted, hidden
  files and folders skipped) and videos (every ``every``-th frame, ``frame`` and ``time`` in the
  output); a file that cannot be read is recorded in ``skipped`` with the reason, and the run
  goes on.
"""

from __future__ import annotations

import errno
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from .data.base import IMAGE_EXTENSIONS
from .data.faces import (
    DEFAULT_DETECTOR,
    FACE_DETECTORS,
    Face,
    FaceDetector,
    align_face,
    create_detector,
    to_grey,
)
from .data.imageio import non_regular_kind, to_array
from .engine.checkpoint import load_model, state_digest
from .engine.distributed import resolve_device
from .engine.evaluate import at_crop_side, check_tta, crop_side, embed, preprocessing_from_meta
from .engine.precision import resolve_precision
from .engine.priors import logit_offset, prior_name
from .errors import ConfigError, ImageError
from .export import onnx_model_for, openvino_model_for
from .models import CompiledInference, inference_model

__all__ = ["Predictor", "PredictionReport", "load", "expand_paths", "BACKENDS", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS"]

BACKENDS = ("torch", "onnx", "openvino", "openvino-int8", "compiled", "compiled-int8", "auto")  # Predictor.load

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv"})
#: longest side (px) a file is decoded at; the detector then sees at most its own ``max_side``
MAX_DECODE_SIDE = 4096
#: a chunk of files/frames is sent through the model once it holds this many crops ...
CHUNK_CROPS = 256
#: ... or this many decoded pixels kept for ``annotate`` (bounded memory on 4K video / big photos)
CHUNK_PIXELS = 48_000_000


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _original_scale(path: Path, decoded: np.ndarray) -> float:
    """Factor from decoded pixels to the file's own pixels (1.0 unless it was decoded smaller).

    The longer side is the same before and after an EXIF rotation, so the ratio of longer sides
    needs no orientation handling.
    """
    if max(decoded.shape[:2]) < MAX_DECODE_SIDE:
        return 1.0
    try:
        from PIL import Image

        with warnings.catch_warnings():  # a huge file was decoded reduced on purpose: no bomb warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # header only
                return max(image.size) / max(decoded.shape[:2])
    except Exception:
        return 1.0


@dataclass
class _Unit:
    """One image or video frame waiting in a chunk for its forward pass."""

    path: str
    frame: int | None
    time: float | None
    faces: list[Face]  # in decoded pixels
    crops: list[np.ndarray]
    scale: float  # decoded -> original pixels
    image: np.ndarray | None = None  # decoded RGB, kept only for annotation


@dataclass
class PredictionReport:
    """What :meth:`Predictor.predict_paths` did.

    Attributes:
        records: one dict per face (``path``, ``frame``, ``time`` plus :meth:`Predictor.predict`'s keys).
        files: files read successfully (a video counts once).
        frames: images and sampled video frames analysed.
        no_face: ``(path, frame or None)`` of the images / frames in which no face was found.
        skipped: ``(path, reason)`` for every input that could not be read.
        classes: the model's classes (for per-class counts).
    """

    classes: tuple[str, ...]
    records: list[dict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    frames: int = 0
    no_face: list[tuple[str, int | None]] = field(default_factory=list)
    downscaled: list[str] = field(default_factory=list)  # annotated copies smaller than their original
    videos: list[str] = field(default_factory=list)  # video files and streams that were read
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def class_counts(self) -> dict[str, int]:
        counts = {c: 0 for c in self.classes}
        for record in self.records:
            counts[record["label"]] += 1
        return counts


class Predictor:
    """A trained model plus its preprocessing and a face detector (scikit-learn-sized surface).

    Args:
        model: a FERNet in eval mode (as ``engine.checkpoint.load_model`` returns it).
        meta: the checkpoint meta (``classes``, ``preprocessing``, ``recipe``...).
        detector: face detector name or instance (``yunet`` default), built on first use.
        device: torch device of ``model``.
        batch_size: crops per forward pass.
        source: where the model came from (recorded by retrieval indexes).
        tta: ``"none"`` or ``"flip"`` (average with the mirrored crop; twice the model time).
        precision: ``auto`` (bf16 on CUDA and on CPUs with native bf16, else fp32), ``bf16`` or
            ``fp32`` (:mod:`fermetric.engine.precision`).
        with_embeddings: records also carry each face's raw ``embedding`` (``--embeddings``).
        crop_resolution: ``"train"`` (faces rendered at the training images' side, then enlarged
            as in training) or ``"input"`` (at ``input_size``); see the module notes.
        prior: the class frequencies to predict under: ``"train"`` (as trained), ``"uniform"``
            (posed and lab photos: every expression equally likely) or ``{class: weight}``
            (:mod:`fermetric.engine.priors`); probabilities and labels follow it.
    """

    def __init__(
        self,
        model,
        meta: dict,
        detector: str | FaceDetector = DEFAULT_DETECTOR,
        device="cpu",
        batch_size: int = 256,
        source: str = "",
        tta: str = "none",
        precision: str = "auto",
        with_embeddings: bool = False,
        prior="train",
        crop_resolution: str = "train",
    ) -> None:
        self.tta = check_tta(tta)
        #: the side (px) face crops are rendered at before ``Preprocessing`` resizes them
        self.crop_size = crop_side(meta, crop_resolution)
        self.crop_resolution = crop_resolution
        self.prior = prior
        self.logit_offset = logit_offset(meta, prior)
        self.precision = resolve_precision(precision, device)
        self.with_embeddings = bool(with_embeddings)
        self.backend = "torch"  # Predictor.load sets the backend it resolved
        self.model = model
        self._inference_model = None
        self._fingerprint: str | None = None
        self.meta = meta
        self.classes: tuple[str, ...] = tuple(meta["classes"])
        self.preprocessing = preprocessing_from_meta(meta)
        self.input_size = int(self.preprocessing.size)
        self.device = device
        self.batch_size = batch_size
        self.source = source
        self._detector_spec = detector
        self._detector: FaceDetector | None = detector if isinstance(detector, FaceDetector) else None

    @classmethod
    def load(
        cls,
        source: str | os.PathLike = "default",
        device="cpu",
        detector: str | FaceDetector = DEFAULT_DETECTOR,
        batch_size: int = 256,
        tta: str = "none",
        precision: str = "auto",
        backend: str = "auto",
        prior="train",
        crop_resolution: str = "train",
    ) -> Predictor:
        """A predictor for a checkpoint: a shipped model's name (``"default"``, listed by
        :func:`fermetric.engine.shipped.shipped_models` and ``fermetric info``), a run directory, a
        ``.pt`` training checkpoint or a ``.safetensors`` weights file (or, with
        ``backend="onnx"``, ``"openvino"`` or ``"openvino-int8"``, an exported ``.onnx`` file).

        ``backend``: ``auto`` (default, as on the command line: ``onnx`` on the CPU when onnx and
        onnxruntime are installed, as fermetric's dependencies are, and ``precision`` is ``auto``
        or ``fp32``; else ``torch``), ``torch`` (the PyTorch module itself, in ``precision``),
        ``onnx`` (the model exported once, cached, and run by onnxruntime on the CPU in fp32: 2-3x
        faster than torch per face on the development CPU and 1.5-2.3x per small photo, see
        ``docs/RESULTS.md``), ``compiled`` (torch compiled by TorchInductor with frozen
        weights, in ``precision``: the most faces per second on batches, for folders and videos,
        after a compilation of seconds to a minute per batch shape on first use; needs a C++
        compiler), ``compiled-int8`` (the same with int8 weights and activations, quantised with
        the activation ranges the weights file carries, ``int8_calibration``: the shipped models
        have them, ``fermetric export --int8-calibration`` adds them; needs torchao; runs on the
        CPU), ``openvino`` (the ONNX graph compiled by OpenVINO for this CPU, in ``precision``:
        bf16 with ``auto`` on CPUs with native bf16; ``pip install 'fermetric[openvino]'``),
        ``openvino-int8`` (the model's int8 ONNX graph in OpenVINO: the shipped models carry one,
        ``fermetric export --format onnx --int8-calibration`` makes one, which is then the
        ``source``; the most faces per second on a CPU, see ``docs/RESULTS.md``). The
        first ``onnx`` or ``openvino`` load of a weights file exports it (seconds) into the cache
        (``$FERMETRIC_CACHE``); ``model`` is then the runtime's model: ask for
        ``backend="torch"`` to get the PyTorch module.
        """
        device = resolve_device(device)
        if not isinstance(detector, FaceDetector):
            FACE_DETECTORS.get(detector)  # an unknown name fails before the model loads
        if backend == "auto":  # a precision other than fp32 asks for torch: onnxruntime runs the graph in fp32
            onnx = device.type == "cpu" and precision in ("auto", "fp32") and _onnx_available()
            backend = "onnx" if onnx else "torch"
        if backend == "onnx":
            model, meta = onnx_model_for(source)
            device, precision = "cpu", "fp32"  # onnxruntime's CPU provider, in the graph's float32
        elif backend in ("openvino", "openvino-int8"):
            device = resolve_device("cpu")  # OpenVINO's CPU plugin
            precision = resolve_precision(precision, device)
            model, meta = openvino_model_for(source, int8=backend == "openvino-int8", precision=precision)
        elif backend in ("torch", "compiled"):
            model, meta = load_model(source, device=device)
        elif backend == "compiled-int8":
            device = resolve_device("cpu")  # oneDNN's int8 kernels
            model, meta = load_model(source, device=device)
            if "int8_calibration" not in meta:
                raise ConfigError(
                    f"{source} carries no int8 calibration; add one with fermetric export --format safetensors "
                    "--int8-calibration --data DATASET=ROOT (its training data), or use the compiled backend"
                )
        else:
            raise ConfigError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        predictor = cls(
            model,
            meta,
            detector=detector,
            device=device,
            batch_size=batch_size,
            source=str(source),
            tta=tta,
            precision=precision,
            prior=prior,
            crop_resolution=crop_resolution,
        )
        predictor.backend = backend
        return predictor

    @property
    def inference_model(self):
        """What runs the crops: for a torch model, an eval-mode copy with BatchNorm folded and
        channels_last (:func:`fermetric.models.inference_model`; ``model`` keeps the trained
        weights), compiled in ``precision`` with the ``compiled`` backend
        (:class:`fermetric.models.CompiledInference`); an onnxruntime model as it is."""
        if self._inference_model is None:
            if not isinstance(self.model, nn.Module):
                self._inference_model = self.model
            elif self.backend == "compiled":
                self._inference_model = CompiledInference(self.model, self.precision)
            elif self.backend == "compiled-int8":
                calibration = self.meta["int8_calibration"]
                self._inference_model = CompiledInference(self.model, "int8", int8_calibration=calibration)
            else:
                self._inference_model = inference_model(self.model)
        return self._inference_model

    @property
    def fingerprint(self) -> str:
        """The digest of the trained weights (:func:`fermetric.engine.checkpoint.state_digest`, what
        checkpoints carry), the same whichever backend runs them: retrieval indexes record and
        check it. An int8 graph records the digest of the weights it quantises; another exported
        model is digested through the checkpoint it was loaded from."""
        if self._fingerprint is None:
            calibrated_for = (getattr(self.model, "int8", None) or {}).get("weights")
            if isinstance(self.model, nn.Module):
                self._fingerprint = state_digest(self.model.state_dict())
            elif calibrated_for:  # recorded by export_onnx_int8 (checked against the weights at load when shipped)
                self._fingerprint = calibrated_for
            elif self.source and not self.source.endswith(".onnx"):
                self._fingerprint = state_digest(load_model(self.source)[0].state_dict())
            else:
                raise ConfigError(
                    f"{self.source or 'this model'} is an ONNX file: the digest of its trained weights needs the "
                    "checkpoint it was exported from; load that (with any backend)"
                )
        return self._fingerprint

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = create_detector(self._detector_spec)
        return self._detector

    def __repr__(self) -> str:
        recipe = self.meta.get("recipe", {}).get("name", "?")
        return (
            f"Predictor(source={self.source!r}, recipe={recipe!r}, classes={list(self.classes)}, "
            f"input_size={self.input_size}, device={str(self.device)!r}, tta={self.tta!r}, "
            f"backend={self.backend!r}, precision={self.precision!r}, prior={prior_name(self.prior)!r}, "
            f"crop_size={self.crop_size})"
        )

    # ------------------------------------------------------------------------------ images
    def _decode(self, image, channel_order: str = "rgb") -> tuple[np.ndarray, float]:
        """``(uint8 RGB or grey array, decoded->original scale)`` for any supported input."""
        if isinstance(image, (str, os.PathLike)):
            decoded = to_array(image, mode="rgb", max_side=MAX_DECODE_SIDE)
            return decoded, _original_scale(Path(image), decoded)
        if isinstance(image, np.ndarray) and image.ndim == 2 and image.dtype == np.uint8:
            return np.ascontiguousarray(image), 1.0  # grey stays grey: detection and crops use luma anyway
        return to_array(image, mode="rgb", channel_order=channel_order, max_side=MAX_DECODE_SIDE), 1.0

    def _crops(self, image: np.ndarray, detect: bool) -> tuple[list[Face], list[np.ndarray]]:
        """Faces (decoded pixels) and their grey crops (``crop_size`` squares)."""
        grey = to_grey(image)
        if not detect:  # the whole image, shown to the model exactly as in evaluation
            height, width = grey.shape
            whole = Face((0.0, 0.0, float(width), float(height)), None)
            return [whole], [at_crop_side(grey, self.crop_size, self.input_size)]
        detector = self.detector
        faces = detector(image)
        return faces, [align_face(grey, face, self.crop_size, detector.crop_margin) for face in faces]

    def faces(self, image, detect: bool = True, channel_order: str = "rgb") -> list[tuple[Face, np.ndarray]]:
        """``[(Face in original pixels, grey crop)]``: exactly what the model is given (crops are
        ``crop_size`` squares, enlarged to ``input_size`` by ``Preprocessing``; with
        ``detect=False`` the whole grey image, averaged down to ``crop_size`` when that is below
        both its size and ``input_size``)."""
        decoded, scale = self._decode(image, channel_order)
        faces, crops = self._crops(decoded, detect)
        return [(f.scaled(scale) if scale != 1.0 else f, c) for f, c in zip(faces, crops)]

    # ------------------------------------------------------------------------------- model
    def run_crops(self, crops: np.ndarray | list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities [N,C], embeddings [N,D])`` of grey uint8 crops (``[N,h,w]`` or a list).

        Crops of equal size form one batch; other sizes are resized by ``Preprocessing`` (as in
        evaluation), one batch per size.
        """
        if isinstance(crops, np.ndarray) and crops.ndim == 3:
            groups = {crops.shape[1:]: np.arange(len(crops))}
        else:
            groups = {}
            for i, crop in enumerate(crops):
                groups.setdefault(np.shape(crop), []).append(i)
        n = len(crops)
        probabilities = np.zeros((n, len(self.classes)))
        embeddings = np.zeros((n, self.embedding_dim), np.float32)
        for shape, index in groups.items():
            if len(shape) != 2:
                raise ImageError(f"crops must be grey [h, w] arrays, got shape {shape}")
            batch = np.stack([np.asarray(crops[i], dtype=np.uint8) for i in index])
            logits, embedded = embed(
                self.inference_model,
                batch,
                self.preprocessing,
                self.device,
                self.batch_size,
                tta=self.tta,
                precision=self.precision,
            )
            if self.logit_offset is not None:
                logits = logits + self.logit_offset
            probabilities[index], embeddings[index] = _softmax(logits), embedded
        return probabilities, embeddings

    @property
    def embedding_dim(self) -> int:
        return int(getattr(self.model, "embedding_dim", 0) or self.meta["recipe"]["model"]["embedding_dim"])

    def _records(
        self, faces: list[Face], probabilities: np.ndarray, embeddings: np.ndarray, scale: float
    ) -> list[dict]:
        records = []
        for index, (face, probs, emb) in enumerate(zip(faces, probabilities, embeddings)):
            face = face.scaled(scale) if scale != 1.0 else face
            best = int(np.argmax(probs))
            record = {
                "face": index,
                "box": [round(float(v), 1) for v in face.box],
                "score": None if face.score is None else float(face.score),
                "label": self.classes[best],
                "probabilities": {c: float(p) for c, p in zip(self.classes, probs)},
                "embedding_norm": float(np.linalg.norm(emb)),
                "landmarks": (
                    None
                    if face.landmarks is None
                    else [[round(float(x), 1), round(float(y), 1)] for x, y in face.landmarks]
                ),
            }
            if self.with_embeddings:
                record["embedding"] = [float(v) for v in emb]
            records.append(record)
        return records

    def predict(self, image, detect: bool = True, channel_order: str = "rgb") -> list[dict]:
        """One dict per face, left to right: ``face``, ``box`` (``[x0, y0, x1, y1]`` in the
        original image's pixels), ``score`` (the detector's confidence, ``None`` without one),
        ``label``, ``probabilities``, ``embedding_norm``, ``landmarks`` (``[[x, y], ...]`` in
        pixels when the detector gives them, else ``None``) and, with ``with_embeddings``, the raw
        ``embedding``; ``[]`` when no face is found."""
        decoded, scale = self._decode(image, channel_order)
        faces, crops = self._crops(decoded, detect)
        probabilities, embeddings = self.run_crops(crops)
        return self._records(faces, probabilities, embeddings, scale)

    def embed(self, image, detect: bool = True, channel_order: str = "rgb") -> np.ndarray:
        """Raw embeddings ``[F, D]`` (float32) of the faces in ``image``, in :meth:`predict`'s order."""
        decoded, _ = self._decode(image, channel_order)
        _, crops = self._crops(decoded, detect)
        return self.run_crops(crops)[1]

    def predict_frames(
        self, frames: Iterable, detect: bool = True, channel_order: str = "rgb", batch_frames: int = 16
    ) -> Iterator[list[dict]]:
        """Records per frame of an iterable of frames (arrays or PIL images: a camera loop, a
        decoded video), in order; the faces of up to ``batch_frames`` frames share one forward
        pass, so a stream costs about one model call per ``batch_frames`` frames.

        Yields one list per frame, like :meth:`predict` (``[]`` for a frame without a face).
        """
        if batch_frames < 1:
            raise ConfigError(f"batch_frames must be >= 1, got {batch_frames}")
        held: list[tuple[list[Face], list[np.ndarray], float]] = []

        def run() -> Iterator[list[dict]]:
            crops = [c for _, frame_crops, _ in held for c in frame_crops]
            probabilities, embeddings = self.run_crops(crops)
            start = 0
            for faces, frame_crops, scale in held:
                n = len(frame_crops)
                yield self._records(faces, probabilities[start : start + n], embeddings[start : start + n], scale)
                start += n
            held.clear()

        for frame in frames:
            decoded, scale = self._decode(frame, channel_order)
            faces, crops = self._crops(decoded, detect)
            held.append((faces, crops, scale))
            if len(held) >= batch_frames:
                yield from run()
        if held:
            yield from run()

    # ------------------------------------------------------------------------------- paths
    def predict_paths(
        self,
        paths: Iterable[str | os.PathLike],
        detect: bool = True,
        every: int = 10,
        annotate: str | os.PathLike | None = None,
        on_record: Callable[[dict], None] | None = None,
        progress: Callable[[int], None] | None = None,
        on_no_face: Callable[[dict], None] | None = None,
        max_frames: int | None = None,
        on_frame: Callable[[np.ndarray, str, int | None], None] | None = None,
        frame_progress: Callable[[int], None] | None = None,
    ) -> PredictionReport:
        """Predict on files, folders and videos; unreadable inputs are skipped, not fatal.

        ``paths`` may hold files, folders, videos and streams: a camera index (``"0"``) or a URL
        (``rtsp://...``, ``http://...``), read like a video.

        Args:
            every: videos and streams: analyse frames 0, every, 2*every, ...
            max_frames: videos and streams: analyse at most this many frames of each (a camera
                never ends on its own).
            annotate: folder for copies with boxes and labels drawn (folder inputs keep their
                relative layout under the folder's name; video frames become
                ``<name>_frameNNNNNN.jpg``), or a video file (``.mp4``, ``.avi``...): the analysed
                frames of the video inputs, annotated, at the source's frame rate / ``every``.
            on_record: called with each face record as soon as its chunk is done (streaming output).
            progress: called with 1 as each file (image or whole video) is done.
            frame_progress: called with 1 as each video or stream frame is analysed (a bar
                driven by it shows frames/s; a camera or a long video never finishes a file).
            on_no_face: called with ``{"path", "frame", "time", "face": None, "label": None,
                "reason"}`` for an image or frame in which no face was found (so that a JSON
                stream has one record per analysed image at least).
            on_frame: called with each analysed image or frame drawn with its boxes and labels
                (RGB uint8), its path and its frame index (``None`` for a photo), as soon as it
                is done: with it every image is its own batch, for a live display (``--show``).
        """
        if every < 1:
            raise ConfigError(f"--every must be >= 1, got {every}")
        if max_frames is not None and max_frames < 1:
            raise ConfigError(f"--max-frames must be >= 1, got {max_frames}")
        report = PredictionReport(self.classes)
        paths = [os.fspath(p) for p in paths]
        streams = [p for p in paths if is_stream(p) and not Path(p).exists()]
        video_out = annotate is not None and Path(annotate).suffix.lower() in VIDEO_EXTENSIONS
        keep_images = annotate is not None or on_frame is not None
        annotator = None
        if annotate is not None:
            annotator = _VideoAnnotator(Path(annotate), every) if video_out else _Annotator(Path(annotate))
        files, report.skipped = expand_paths([p for p in paths if p not in streams])
        if video_out and any(path.suffix.lower() not in VIDEO_EXTENSIONS for path, _ in files):
            raise ConfigError(
                f"--annotate {annotate} is a video: pass only videos or streams (annotated copies "
                "of photos need a folder)"
            )
        sources = [(p, None, True) for p in streams] + [
            (path, root, path.suffix.lower() in VIDEO_EXTENSIONS) for path, root in files
        ]
        pending: list[_Unit] = []

        def flush() -> None:
            crops = [c for unit in pending for c in unit.crops]
            probabilities, embeddings = self.run_crops(crops)
            start = 0
            for unit in pending:
                n = len(unit.crops)
                records = self._records(
                    unit.faces, probabilities[start : start + n], embeddings[start : start + n], unit.scale
                )
                start += n
                where = unit.path if unit.frame is None else f"{unit.path}#{unit.frame}"
                if not records:
                    report.no_face.append((unit.path, unit.frame))
                    if on_no_face is not None:
                        on_no_face(
                            {
                                "path": unit.path,
                                "frame": unit.frame,
                                "time": unit.time,
                                "face": None,
                                "label": None,
                                "reason": "no face found",
                            }
                        )
                for record in records:
                    record = {"path": unit.path, "frame": unit.frame, "time": unit.time, **record}
                    report.records.append(record)
                    if on_record is not None:
                        on_record(record)
                if on_frame is not None and unit.image is not None:
                    on_frame(_Annotator.draw(unit, records), unit.path, unit.frame)
                if annotator is not None and unit.image is not None:
                    error = annotator.write(unit, records)
                    if error:
                        report.skipped.append((where, error))
            pending.clear()

        def add(unit: _Unit) -> None:
            report.frames += 1
            pending.append(unit)
            held = sum(u.image.size for u in pending if u.image is not None) + sum(
                c.size for u in pending for c in u.crops
            )
            if on_frame is not None or sum(len(u.crops) for u in pending) >= CHUNK_CROPS or held >= CHUNK_PIXELS:
                flush()

        for path, root, is_video in sources:
            label = str(path)
            if annotator is not None and not video_out:
                annotator.register(label, Path(path), root)
            if is_video:
                frames, fps = 0, []
                for frame_index, time, rgb in _video_frames(path, every, max_frames, fps):
                    if video_out and frames == 0:
                        annotator.start(label, fps[0] if fps else 0.0, rgb.shape[:2])
                    faces, crops = self._crops(rgb, detect)
                    add(_Unit(label, frame_index, time, faces, crops, 1.0, rgb if keep_images else None))
                    frames += 1
                    if frame_progress is not None:
                        frame_progress(1)
                if frames:
                    report.files.append(label)
                    report.videos.append(label)
                else:
                    what = "stream or camera" if is_stream(label) else "video"
                    report.skipped.append((label, f"not a readable {what} (no frame could be decoded)"))
            else:
                try:
                    decoded, scale = self._decode(path)
                except ImageError as err:
                    report.skipped.append((label, _reason(err, label)))
                else:
                    faces, crops = self._crops(decoded, detect)
                    report.files.append(label)
                    add(_Unit(label, None, None, faces, crops, scale, decoded if keep_images else None))
            if progress is not None:
                progress(1)
        if pending:
            flush()
        if annotator is not None:
            report.downscaled = annotator.downscaled
            annotator.close()
        return report


def load(
    source: str | os.PathLike = "default",
    device="cpu",
    detector: str | FaceDetector = DEFAULT_DETECTOR,
    tta: str = "none",
    precision: str = "auto",
    backend: str = "auto",
    prior="train",
    crop_resolution: str = "train",
) -> Predictor:
    """``fermetric.load``: a :class:`Predictor` for a checkpoint (a shipped model's name such as
    ``"default"``, a run directory or a file); ``prior="uniform"`` for posed or lab photos."""
    return Predictor.load(
        source,
        device=device,
        detector=detector,
        tta=tta,
        precision=precision,
        backend=backend,
        prior=prior,
        crop_resolution=crop_resolution,
    )


def detector_options(name: str, min_face: int | None, device: str) -> dict:
    """Options for detector ``name`` from the command line: ``--min-face`` when given, and
    ``--device`` for detectors that run a network (MTCNN), so that one flag moves all the work."""
    import inspect

    options = {} if min_face is None else {"min_face": min_face}
    if "device" in inspect.signature(FACE_DETECTORS.get(name)).parameters:
        options["device"] = str(resolve_device(device))
    return options


def _onnx_available() -> bool:
    from importlib.util import find_spec

    return find_spec("onnxruntime") is not None and find_spec("onnx") is not None


# ----------------------------------------------------------------------------------- inputs
def _reason(err: Exception, label: str) -> str:
    """An ImageError's message without the leading ``"<path>: "`` (the report names the path)."""
    text = str(err)
    return text[len(label) + 2 :] if text.startswith(label + ": ") else text


def _is_hidden(name: str) -> bool:
    return name.startswith(".")  # .DS_Store, AppleDouble "._x.jpg", .git ...


def expand_paths(paths: Iterable[str | os.PathLike]) -> tuple[list[tuple[Path, Path | None]], list[tuple[str, str]]]:
    """``([(file, folder it came from or None)], [(path, reason skipped)])``.

    Folders are walked recursively in sorted order, following symlinked folders (a dataset folder
    of links to class folders is common) but never into a folder already visited (a link to an
    ancestor would loop forever). Only regular files with image and video extensions are taken
    from folders (hidden files and folders are ignored); FIFOs, sockets and devices are skipped
    with their reason, since opening a FIFO blocks until someone writes to it. A file named
    explicitly is always tried, whatever its extension, if it is a regular file.
    """
    files: list[tuple[Path, Path | None]] = []
    skipped: list[tuple[str, str]] = []
    media = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS

    def not_a_file(path: Path) -> str | None:
        try:
            kind = non_regular_kind(path)
        except OSError as err:
            return "symlink loop" if err.errno == errno.ELOOP else f"cannot read ({err.strerror or err})"
        return f"is a {kind}, not a regular file" if kind else None

    for raw in paths:
        path = Path(raw)
        reason = not_a_file(path)
        if reason:
            skipped.append((str(path), reason))
        elif path.is_dir():
            found, visited, skipped_before = [], set(), len(skipped)
            for folder, dirnames, filenames in os.walk(path, followlinks=True):
                real = os.path.realpath(folder)
                if real in visited:  # a symlink back into the walk
                    dirnames[:] = []
                    skipped.append((folder, "symlink loop: folder already visited"))
                    continue
                visited.add(real)
                dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
                for name in sorted(filenames):
                    if _is_hidden(name) or Path(name).suffix.lower() not in media:
                        continue
                    file = Path(folder) / name
                    reason = not_a_file(file)
                    if reason:
                        skipped.append((str(file), reason))
                    elif file.exists():
                        found.append((file, path))
                    else:
                        skipped.append((str(file), "dangling symlink"))
            if not found and len(skipped) == skipped_before:
                skipped.append((str(path), "folder holds no image or video files"))
            files.extend(found)
        elif path.exists():
            files.append((path, None))
        elif path.is_symlink():
            skipped.append((str(path), "dangling symlink"))
        else:
            skipped.append((str(path), "no such file or folder"))
    return files, skipped


def is_stream(source: str | os.PathLike) -> bool:
    """A camera index (``"0"``) or a stream URL (``rtsp://``, ``http://``...), not a file."""
    text = os.fspath(source)
    return isinstance(text, str) and (text.isdigit() or "://" in text)


def _video_frames(
    source, every: int, max_frames: int | None = None, fps_out: list | None = None
) -> Iterator[tuple[int, float | None, np.ndarray]]:
    """``(frame index, time in s, RGB frame)`` for frames 0, every, 2*every... (others only
    grabbed), at most ``max_frames`` of them. ``source``: a file, a camera index or a URL.

    Times are the container's presentation timestamps (``CAP_PROP_POS_MSEC``), so variable frame
    rate phone videos get true times; ``index / fps`` only where the backend reports none.
    ``fps_out``, when given, receives the source's nominal frame rate (for annotated video).
    """
    import cv2

    capture = cv2.VideoCapture(int(source) if str(source).isdigit() else str(source))
    try:
        if not capture.isOpened():
            return
        fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        if fps_out is not None:
            fps_out.append(fps)
        index = analysed = 0
        while max_frames is None or analysed < max_frames:
            if index % every == 0:
                ok, frame = capture.read()
                if not ok or frame is None:
                    return
                position = capture.get(cv2.CAP_PROP_POS_MSEC)  # of the frame just decoded
                if position > 0 or index == 0:
                    time = round(float(position) / 1000.0, 3)
                else:  # the backend reports no timestamps
                    time = round(index / fps, 3) if fps > 0 else None
                yield index, time, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                analysed += 1
            elif not capture.grab():  # decode-free skip
                return
            index += 1
    finally:
        capture.release()


# ------------------------------------------------------------------------------- annotation
_WRITABLE = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class _Annotator:
    """Writes copies of images/frames with boxes and ``label p`` drawn (OpenCV drawing, PIL saving)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.targets: dict[str, Path] = {}
        self.used: set[Path] = set()
        self.downscaled: list[str] = []  # copies drawn at the decoded size, smaller than the original

    def register(self, label: str, path: Path, root: Path | None) -> None:
        relative = Path(path.name) if root is None else Path(root.name or "input") / path.relative_to(root)
        self.targets[label] = relative

    def _target(self, unit: _Unit) -> Path:
        relative = self.targets.get(unit.path, Path(Path(unit.path).name))
        if unit.frame is not None:
            relative = relative.with_name(f"{relative.stem}_frame{unit.frame:06d}.jpg")
        elif relative.suffix.lower() not in _WRITABLE:
            relative = relative.with_suffix(".png")
        target = self.out_dir / relative
        stem, n = target.stem, 1
        while target in self.used:  # two inputs with the same name
            target = target.with_name(f"{stem}_{n}{target.suffix}")
            n += 1
        self.used.add(target)
        return target

    @staticmethod
    def draw(unit: _Unit, records: list[dict]) -> np.ndarray:
        """The unit's decoded image (RGB) with each face's box and ``label p`` drawn."""
        import cv2

        image = unit.image
        canvas = np.ascontiguousarray(np.repeat(image[:, :, None], 3, 2) if image.ndim == 2 else image.copy())
        thickness = max(1, round(max(canvas.shape[:2]) / 400))
        for face, record in zip(unit.faces, records):
            x0, y0, x1, y1 = (int(round(v)) for v in face.box)
            text = f"{record['label']} {record['probabilities'][record['label']]:.2f}"
            font_scale = max(0.4, min(2.0, (x1 - x0) / 160))
            cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), thickness)
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
            ty = y0 - base - 2 if y0 - th - base - 2 >= 0 else min(y1 + th + 2, canvas.shape[0] - base)
            cv2.rectangle(canvas, (x0, ty - th - 2), (x0 + tw + 2, ty + base), (0, 255, 0), -1)
            cv2.putText(
                canvas, text, (x0 + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), thickness, cv2.LINE_AA
            )
        return canvas

    def write(self, unit: _Unit, records: list[dict]) -> str | None:
        from PIL import Image

        canvas = self.draw(unit, records)
        target = self._target(unit)
        if unit.scale != 1.0:
            self.downscaled.append(str(target))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            options = {"quality": 90} if target.suffix.lower() in (".jpg", ".jpeg") else {}
            Image.fromarray(canvas).save(target, **options)
        except (OSError, ValueError) as err:
            return f"cannot write annotated copy {target}: {err}"
        return None

    def close(self) -> None:
        pass


class _VideoAnnotator(_Annotator):
    """Writes the analysed frames of video inputs, annotated, into one video file (OpenCV).

    The output runs at the first source's frame rate divided by ``every`` (only every N-th frame
    is analysed), so it lasts as long as the input; frames of another size are resized to the
    first one's.
    """

    def __init__(self, out_file: Path, every: int) -> None:
        super().__init__(out_file.parent)
        self.out_file = out_file
        self.every = every
        self.writer = None
        self.size: tuple[int, int] | None = None

    def start(self, label: str, fps: float, shape: tuple[int, int]) -> None:
        import cv2

        if self.writer is not None:
            return
        fourcc = cv2.VideoWriter_fourcc(
            *("mp4v" if self.out_file.suffix.lower() in (".mp4", ".m4v", ".mov") else "MJPG")
        )
        self.size = (int(shape[1]), int(shape[0]))
        rate = (fps if fps and fps > 0 else 25.0) / self.every
        self.out_file.parent.mkdir(parents=True, exist_ok=True)
        self.writer = cv2.VideoWriter(str(self.out_file), fourcc, max(rate, 1.0), self.size)
        if not self.writer.isOpened():
            self.writer = None
            raise ConfigError(f"--annotate {self.out_file}: OpenCV cannot write this video format; use .mp4 or .avi")

    def write(self, unit: _Unit, records: list[dict]) -> str | None:
        import cv2

        if self.writer is None:
            return f"cannot write annotated video {self.out_file}: not started"
        canvas = self.draw(unit, records)
        if (canvas.shape[1], canvas.shape[0]) != self.size:
            canvas = cv2.resize(canvas, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        return None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
