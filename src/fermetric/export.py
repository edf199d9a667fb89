"""Export a trained model: ``fermetric export --checkpoint C --format onnx|safetensors --out FILE``.

* ``onnx``: the network as an ONNX graph for any runtime (below).
* ``safetensors``: the deployable weights alone (the EMA copy when the run kept one) with the
  checkpoint meta, optionally stored as ``--dtype float16`` or ``bfloat16``: half the file for
  shipping (a ResNet-18 fits the 25 MB package budget in float16); loading casts them back to
  float32, so only the storage is rounded. ``fermetric.load`` / ``--checkpoint`` read the file.

Design decisions of the ONNX export (defaults stated):

* **Graph**: the network exactly as ``FERNet.forward`` runs it in eval mode, on the normalised
  input ``image`` float32 ``[N, 1, S, S]``, with two outputs ``logits [N, C]`` and
  ``embedding [N, D]`` (raw, not L2-normalised). The batch axis is dynamic. Preprocessing
  (grey, resize to S, ``(x / 255 - mean) / std``) stays outside the graph, as in PyTorch, and is
  described in the metadata so any runtime can reproduce it.
* **Metadata** (``metadata_props``, all JSON strings): ``fermetric_meta`` (the checkpoint meta:
  recipe, classes, preprocessing, dataset...), ``classes``, ``preprocessing``, ``input``,
  ``outputs``, ``fermetric_version``. :func:`read_onnx_meta` reads them back.
* **Exporter**: the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``), which
  the installed torch (2.14) and the GPU machine's torch 2.11 both have and which needs no
  ``onnxscript``; on a torch where it is gone the dynamo exporter is used with a dynamic batch
  dimension. ``opset=17`` (onnxruntime >= 1.14).
* **Checked**: ``onnx.checker.check_model`` runs before the file is moved into place (atomic
  write: a failed export never leaves a half file under ``out``).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from ._version import __version__
from .data.cache import default_cache_dir
from .engine.checkpoint import load_model, resolve_source, save_weights
from .errors import CheckpointError, ConfigError
from .fileio import temp_file_beside
from .models import FERNetExport

__all__ = [
    "WEIGHT_DTYPES",
    "export_model_onnx",
    "export_onnx",
    "export_weights",
    "int8_calibration_of",
    "read_onnx_meta",
]

INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "embedding")
WEIGHT_DTYPES = ("float32", "float16", "bfloat16")


def _require_onnx(opset: int | None = None):
    """``onnx``, and the opset checked, before any work is done."""
    try:
        import onnx
    except ImportError:
        raise ConfigError(
            "ONNX export needs onnx, a fermetric dependency missing here: pip install 'onnx>=1.15,<2'"
        ) from None
    if opset is not None and opset < 13:
        raise ConfigError(f"opset {opset} is too old; use 13 or newer (default 17)")
    return onnx


def _export_graph(module, example, path: str, opset: int) -> None:
    import torch

    dynamic_axes = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}}
    common = dict(input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), opset_version=opset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        try:
            torch.onnx.export(
                module, (example,), path, dynamic_axes=dynamic_axes, do_constant_folding=True, dynamo=False, **common
            )
            return
        except TypeError as err:  # a torch without the `dynamo` switch: the classic exporter is the default
            if "dynamo" not in str(err):
                raise
            torch.onnx.export(module, (example,), path, dynamic_axes=dynamic_axes, do_constant_folding=True, **common)
            return
        except (RuntimeError, NotImplementedError, ImportError) as err:
            if "dynamo" not in str(err).lower() and "torchscript" not in str(err).lower():
                raise
        # The TorchScript exporter has been removed: use the dynamo exporter.
        batch = torch.export.Dim("batch", min=1)
        program = torch.onnx.export(module, (example,), dynamo=True, dynamic_shapes=({0: batch},), **common)
        program.save(path)


def export_onnx(checkpoint="default", out: str | os.PathLike = "model.onnx", opset: int = 17) -> Path:
    """Write ``checkpoint`` as an ONNX model with ``(logits, embedding)`` outputs; returns ``out``."""
    _require_onnx(opset)  # fail before the checkpoint loads
    model, meta = load_model(checkpoint, device="cpu")
    return export_model_onnx(model, meta, out, opset=opset, source=str(checkpoint))


def export_model_onnx(model, meta: dict, out: str | os.PathLike, opset: int = 17, source: str = "the model") -> Path:
    """Write an in-memory ``FERNet`` as ONNX with the fermetric metadata; returns ``out``.

    ``meta`` needs ``classes`` and ``preprocessing`` (``{"size", "mean", "std"}``), as in a
    checkpoint's meta (:func:`fermetric.engine.checkpoint.make_meta` builds one); the speed
    benchmark exports untrained candidates this way. ``model`` is left in eval mode.
    """
    import torch

    onnx = _require_onnx(opset)
    if "classes" not in meta:
        raise ConfigError("ONNX export needs meta['classes'] (the class names in logit order)")
    model.eval()
    preprocessing = dict(meta.get("preprocessing", {}))
    size = int(preprocessing.get("size") or meta.get("recipe", {}).get("data", {}).get("input_size", 48))
    in_chans = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).in_channels
    example = torch.randn(2, in_chans, size, size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_beside(out)
    os.close(fd)
    try:
        with torch.no_grad():
            _export_graph(FERNetExport(model).eval(), example, tmp, opset)
        proto = onnx.load(tmp)
        props = {
            "fermetric_meta": json.dumps(meta),
            "classes": json.dumps(list(meta["classes"])),
            "preprocessing": json.dumps(preprocessing),
            "input": json.dumps(
                {
                    "name": INPUT_NAME,
                    "shape": ["batch", in_chans, size, size],
                    "dtype": "float32",
                    "description": "grey face crop resized to size x size, normalised as "
                    "(pixel / 255 - mean) / std with the preprocessing metadata",
                }
            ),
            "outputs": json.dumps(
                {
                    "logits": "class scores in 'classes' order (softmax for probabilities)",
                    "embedding": "raw embedding (L2-normalise for retrieval)",
                }
            ),
            "fermetric_version": __version__,
        }
        del proto.metadata_props[:]
        for key, value in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.doc_string = f"fermetric {__version__} expression model ({meta.get('recipe', {}).get('name', '?')})"
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
        os.replace(tmp, out)
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(
            f"ONNX export of {source} failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        ) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def export_weights(
    checkpoint="default",
    out: str | os.PathLike = "model.safetensors",
    dtype: str = "float32",
    int8_calibration=None,
    calibration_faces: int = 512,
    seed: int = 0,
) -> Path:
    """Write the deployable weights of ``checkpoint`` as ``.safetensors`` with floating tensors
    stored as ``dtype`` (integer buffers unchanged); the model is rebuilt and loaded first, so a
    file that would not load is never written. Returns ``out``.

    ``int8_calibration``: an image set (its training data: FER2013 Training for a FER2013 model)
    from which ``calibration_faces`` faces (a ``seed``-ed draw) calibrate int8 inference
    (:func:`int8_calibration_of`); the ranges go into the file's metadata, so the file runs with
    ``backend="compiled-int8"`` anywhere, without that data.
    """
    import torch

    if dtype not in WEIGHT_DTYPES:
        raise ConfigError(f"unknown weight dtype {dtype!r}; use one of {', '.join(WEIGHT_DTYPES)}")
    if Path(out).suffix != ".safetensors":
        raise ConfigError(f"--out {out}: name the weights file *.safetensors")
    model, meta = load_model(checkpoint, device="cpu")
    target = getattr(torch, dtype)
    state = {k: v.to(target) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    meta = {**meta, "weights_dtype": dtype}
    if int8_calibration is not None:
        model.load_state_dict(state)  # calibrate the weights as they will be loaded (rounded to dtype)
        meta["int8_calibration"] = int8_calibration_of(model, meta, int8_calibration, calibration_faces, seed)
    return save_weights(out, state, meta)


def int8_calibration_of(model, meta: dict, imageset, faces: int = 512, seed: int = 0) -> dict:
    """The int8 activation ranges of ``model`` (:func:`fermetric.models.quantize.calibrate_int8`)
    from ``faces`` images of ``imageset`` drawn with ``seed``, prepared as evaluation prepares
    them, plus where they came from."""
    import numpy as np
    import torch

    from .engine.evaluate import preprocessing_from_meta
    from .models.quantize import calibrate_int8

    if faces < 1:
        raise ConfigError(f"calibration needs at least one face, got {faces}")
    images = imageset.images if hasattr(imageset, "images") else imageset
    if len(images) == 0:
        raise ConfigError("the calibration data holds no images")
    preprocessing = preprocessing_from_meta(meta)
    chosen = np.sort(np.random.default_rng(seed).permutation(len(images))[:faces])
    batches = (
        preprocessing.apply(torch.from_numpy(np.ascontiguousarray(images[chosen[start : start + 64]])))
        for start in range(0, len(chosen), 64)
    )
    calibration = calibrate_int8(model, batches, int(preprocessing.size))
    name = getattr(imageset, "name", "") or "images"
    split = getattr(imageset, "split", "") or "?"
    return {**calibration, "data": f"{name}/{split}", "seed": seed}


def read_onnx_meta(path: str | os.PathLike) -> dict:
    """The fermetric metadata of an exported model: ``{key: parsed JSON value}``."""
    onnx = _require_onnx()
    proto = onnx.load(str(path), load_external_data=False)
    meta = {}
    for entry in proto.metadata_props:
        try:
            meta[entry.key] = json.loads(entry.value)
        except json.JSONDecodeError:
            meta[entry.key] = entry.value
    return meta


# ----------------------------------------------------------------------------- ONNX Runtime
class OnnxRuntimeModel:
    """An exported graph run by onnxruntime behind the model interface ``embed`` uses:
    ``model(x) -> {"logits", "embedding"}`` on a float32 ``[N, 1, S, S]`` tensor (CPU provider).

    ``fermetric predict --backend onnx`` and ``Predictor.load(..., backend="onnx")`` use it.
    """

    training = False

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import torch

        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError(
                "the onnx backend needs onnxruntime, a fermetric dependency missing here: pip install 'onnxruntime>=1.17,<2'"
            ) from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = read_onnx_meta(path)
        self.meta = meta.get("fermetric_meta") or {}
        self.embedding_dim = int(self.session.get_outputs()[1].shape[1])

    def __call__(self, x):
        import torch

        logits, embedding = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.detach().float().cpu().numpy()})
        return {"logits": torch.from_numpy(logits), "embedding": torch.from_numpy(embedding)}

    def eval(self) -> OnnxRuntimeModel:
        return self

    def train(self, mode: bool = True) -> OnnxRuntimeModel:
        return self

    def parameters(self):
        return iter(())


def onnx_model_for(source, threads: int | None = None) -> tuple[OnnxRuntimeModel, dict]:
    """``(OnnxRuntimeModel, meta)`` for an ``.onnx`` file, or for any checkpoint source, exported
    once into the cache (``$FERMETRIC_CACHE/onnx/<sha256 of the weights file>.onnx``; without a
    cache, into a temporary folder)."""
    import hashlib
    import tempfile

    if str(source).endswith(".onnx"):
        path = Path(source)
        if not path.is_file():
            raise CheckpointError(f"ONNX model {path} does not exist")
    else:
        weights = resolve_source(source)
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:20]
        folder = default_cache_dir()
        folder = (folder / "onnx") if folder is not None else Path(tempfile.mkdtemp(prefix="fermetric-onnx-"))
        path = folder / f"{digest}.onnx"
        if not path.is_file():
            export_onnx(source, path)
    model = OnnxRuntimeModel(path, threads)
    if not model.meta:
        raise CheckpointError(f"{path} has no fermetric metadata; export it with `fermetric export --format onnx`")
    return model, model.meta
