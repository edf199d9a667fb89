"""Export a trained model: ``fermetric export --checkpoint C --format onnx|safetensors --out FILE``.

* ``onnx``: the network as an ONNX graph for any runtime (below); with ``--int8-calibration``
  an int8 graph (:func:`export_onnx_int8`) that OpenVINO runs with its int8 kernels
  (``backend="openvino-int8"``).
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
import threading
import warnings
from pathlib import Path

from ._version import __version__
from .data.cache import default_cache_dir
from .engine.checkpoint import load_model, resolve_source, save_weights
from .errors import CheckpointError, ConfigError
from .fileio import atomic_write, temp_file_beside
from .models import FERNetExport

__all__ = [
    "WEIGHT_DTYPES",
    "export_model_onnx",
    "export_onnx",
    "export_onnx_int8",
    "export_weights",
    "int8_calibration_of",
    "onnx_graph_for",
    "onnx_model_for",
    "openvino_model_for",
    "quantize_onnx_int8",
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


def _set_metadata(proto, props: dict[str, str]) -> None:
    """Replace an ONNX model's ``metadata_props`` with ``props`` (JSON strings, in order)."""
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


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
        _set_metadata(proto, props)
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
    from .engine.evaluate import preprocessing_from_meta
    from .models.quantize import calibrate_int8

    batches, data = _calibration_faces(meta, imageset, faces, seed)
    calibration = calibrate_int8(model, iter(batches), int(preprocessing_from_meta(meta).size))
    return {**calibration, "data": data, "seed": seed}


def _calibration_faces(meta: dict, imageset, faces: int, seed: int):
    """``(float32 [N, C, S, S] faces, description)``: ``faces`` images of ``imageset`` drawn
    with ``seed`` and prepared as evaluation prepares them (the int8 calibrations' input)."""
    import numpy as np
    import torch

    from .engine.evaluate import preprocessing_from_meta

    if faces < 1:
        raise ConfigError(f"calibration needs at least one face, got {faces}")
    images = imageset.images if hasattr(imageset, "images") else imageset
    if len(images) == 0:
        raise ConfigError("the calibration data holds no images")
    preprocessing = preprocessing_from_meta(meta)
    chosen = np.sort(np.random.default_rng(seed).permutation(len(images))[:faces])
    batches = [
        preprocessing.apply(torch.from_numpy(np.ascontiguousarray(images[chosen[start : start + 64]])))
        for start in range(0, len(chosen), 64)
    ]
    name = getattr(imageset, "name", "") or "images"
    split = getattr(imageset, "split", "") or "?"
    return batches, f"{name}/{split}"


def quantize_onnx_int8(graph: str | os.PathLike, out: str | os.PathLike, batches) -> Path:
    """Quantise the float32 ONNX ``graph`` into ``out`` with onnxruntime's static quantiser
    (``quantize_static``, after its shape-inference pass): QuantizeLinear / DequantizeLinear pairs
    around every convolution and the linear layers, per-channel symmetric int8 weights, per-tensor
    uint8 activations with min-max ranges from ``batches`` (float32 ``[N, C, S, S]`` arrays of
    prepared faces). Returns ``out``; metadata is not carried over."""
    import tempfile

    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quant_pre_process,
            quantize_static,
        )
    except ImportError:
        raise ConfigError(
            "int8 ONNX export needs onnxruntime, a fermetric dependency: pip install 'onnxruntime>=1.17,<2'"
        ) from None

    class Faces(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    with tempfile.TemporaryDirectory(prefix="fermetric-int8-") as folder:
        prepared = Path(folder) / "prepared.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the quantiser's advice to pre-process, which it is given
            quant_pre_process(str(graph), str(prepared))
            quantize_static(
                str(prepared),
                str(out),
                Faces(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
    return Path(out)


def export_onnx_int8(
    checkpoint, out: str | os.PathLike, imageset, faces: int = 512, seed: int = 0, opset: int = 17
) -> Path:
    """Write ``checkpoint`` as an int8 ONNX graph (:func:`quantize_onnx_int8`) calibrated on
    ``faces`` images of ``imageset`` (its training data) drawn with ``seed``; returns ``out``.

    OpenVINO turns the QuantizeLinear / DequantizeLinear pairs into its int8 kernels
    (``backend="openvino-int8"``). The graph keeps the fp32 export's metadata plus ``int8``
    (calibration data, faces, seed, the weights' digest, the onnxruntime version), so a graph is
    tied to the weights it was calibrated for.
    """
    import tempfile

    from .engine.checkpoint import state_digest

    onnx = _require_onnx(opset)
    out = Path(out)
    if out.suffix != ".onnx":
        raise ConfigError(f"--out {out}: name the graph *.onnx")
    model, meta = load_model(checkpoint, device="cpu")
    batches, data = _calibration_faces(meta, imageset, faces, seed)

    with tempfile.TemporaryDirectory(prefix="fermetric-int8-") as folder:
        fp32, int8 = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        export_model_onnx(model, meta, fp32, opset=opset, source=str(checkpoint))
        quantize_onnx_int8(fp32, int8, (batch.numpy() for batch in batches))
        import onnxruntime  # present: the quantiser is onnxruntime's

        proto = onnx.load(str(int8))
        props = {entry.key: entry.value for entry in onnx.load(str(fp32), load_external_data=False).metadata_props}
        props["int8"] = json.dumps(
            {
                "method": "onnxruntime quantize_static: QDQ, per-channel int8 weights, uint8 activations, min-max",
                "data": data,
                "faces": sum(len(batch) for batch in batches),
                "seed": seed,
                "weights": state_digest(model.state_dict()),
                "onnxruntime": onnxruntime.__version__,
            }
        )
        _set_metadata(proto, props)
        onnx.checker.check_model(proto)
    return atomic_write(out, proto.SerializeToString())  # what onnx.save writes, without a half file


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
class _GraphRuntime:
    """What ``embed`` asks of a model besides calling it, for a graph a runtime runs: no training
    mode to switch, no parameters."""

    training = False

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def parameters(self):
        return iter(())


class OnnxRuntimeModel(_GraphRuntime):
    """An exported graph run by onnxruntime behind the model interface ``embed`` uses:
    ``model(x) -> {"logits", "embedding"}`` on a float32 ``[N, 1, S, S]`` tensor (CPU provider).

    ``fermetric predict --backend onnx`` and ``Predictor.load(..., backend="onnx")`` use it.
    """

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


def onnx_graph_for(source) -> Path:
    """The float32 ONNX graph of ``source``: an ``.onnx`` file as it is, any checkpoint source
    exported once into the cache (``$FERMETRIC_CACHE/onnx/<sha256 of the weights file>.onnx``;
    without a cache, into a temporary folder)."""
    import hashlib
    import tempfile

    if str(source).endswith(".onnx"):
        path = Path(source)
        if not path.is_file():
            raise CheckpointError(f"ONNX model {path} does not exist")
        return path
    weights = resolve_source(source)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:20]
    folder = default_cache_dir()
    folder = (folder / "onnx") if folder is not None else Path(tempfile.mkdtemp(prefix="fermetric-onnx-"))
    path = folder / f"{digest}.onnx"
    if not path.is_file():
        export_onnx(source, path)
    return path


def onnx_model_for(source, threads: int | None = None) -> tuple[OnnxRuntimeModel, dict]:
    """``(OnnxRuntimeModel, meta)`` for an ``.onnx`` file or any checkpoint source
    (:func:`onnx_graph_for`)."""
    model = OnnxRuntimeModel(onnx_graph_for(source), threads)
    if not model.meta:
        raise CheckpointError(
            f"{model.path} has no fermetric metadata; export it with `fermetric export --format onnx`"
        )
    return model, model.meta


# ----------------------------------------------------------------------------- OpenVINO
#: fermetric's precision names -> OpenVINO's inference precision of the ops a graph leaves in float
OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoModel(_GraphRuntime):
    """An exported graph run by OpenVINO on the CPU behind the model interface ``embed`` uses:
    ``model(x) -> {"logits", "embedding"}`` on a float32 ``[N, 1, S, S]`` tensor.

    OpenVINO compiles the graph once for this CPU (bf16 or int8 kernels on AMX, VNNI or
    AVX-512 where present; the batch axis stays dynamic). An int8 graph
    (:func:`export_onnx_int8`) runs its convolutions in int8; ``precision`` (``fp32`` or
    ``bf16``) is what the ops left in float run in. Each thread that calls the model gets its own
    inference request (a request holds its buffers between calls), so one model serves many.
    A batch runs in chunks of ``micro_batch`` faces: in probes on the development CPU (one thread)
    OpenVINO's int8 kernels ran chunks of 32 as fast as larger ones and faster than 256 at a time
    (2180-2520 faces/s at 32, 2150-2580 at 64, 2030-2430 at 256). Threads are not pinned to cores:
    the CPU may be shared.
    """

    def __init__(
        self, path: str | os.PathLike, threads: int | None = None, precision: str = "fp32", micro_batch: int = 32
    ) -> None:
        import torch

        try:
            import openvino
        except ImportError:
            raise ConfigError("the openvino backends need OpenVINO: pip install 'fermetric[openvino]'") from None
        if precision not in OPENVINO_PRECISIONS:
            raise ConfigError(f"OpenVINO runs fp32 or bf16, not {precision!r}")
        self.path = Path(path)
        self.precision = precision
        self.micro_batch = int(micro_batch)
        core = openvino.Core()
        self.config = {  # kept: a profiler compiles the same graph with the same settings
            "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
            "INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision],
            "PERFORMANCE_HINT": "LATENCY",  # one stream: a call's batch uses every thread it has
            "NUM_STREAMS": 1,
            "ENABLE_CPU_PINNING": False,
        }
        try:
            self.compiled = core.compile_model(core.read_model(str(path)), "CPU", self.config)
        except RuntimeError as err:
            reason = " ".join(str(err).split())[:300]
            raise CheckpointError(f"OpenVINO could not compile {path}: {reason}") from None
        self._requests = threading.local()
        self.outputs = [self.compiled.output(name) for name in OUTPUT_NAMES]
        meta = read_onnx_meta(path)
        self.meta = meta.get("fermetric_meta") or {}
        self.int8 = meta.get("int8")  # what an int8 graph was calibrated on; None for a float graph
        self.embedding_dim = int(self.compiled.output(OUTPUT_NAMES[1]).get_partial_shape()[1].get_length())

    def __call__(self, x):
        import numpy as np
        import torch

        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self.compiled.create_infer_request()
        array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        outputs = {name: [] for name in OUTPUT_NAMES}
        for start in range(0, len(array), self.micro_batch):
            # share_inputs: OpenVINO reads the array in place instead of copying it first
            results = request.infer({0: array[start : start + self.micro_batch]}, share_inputs=True)
            for name, port in zip(OUTPUT_NAMES, self.outputs):
                outputs[name].append(results[port].copy())  # the request reuses its output buffers
        return {name: torch.from_numpy(np.concatenate(parts)) for name, parts in outputs.items()}


def openvino_model_for(source, int8: bool = False, threads: int | None = None, precision: str = "fp32"):
    """``(OpenVinoModel, meta)`` for a checkpoint source or an ``.onnx`` file.

    Float (``int8=False``): the graph :func:`onnx_graph_for` gives. int8: an ``.onnx`` file made
    by :func:`export_onnx_int8`, or a shipped model's int8 graph (the meta then comes from its
    weights file, the catalogue's source of truth); other sources are refused with the command
    that makes their graph.
    """
    from .engine.shipped import shipped_model, shipped_models

    weights = None  # a shipped model's trained network, which its int8 graph must match
    if not int8 or str(source).endswith(".onnx"):
        path = onnx_graph_for(source)
    elif isinstance(source, str) and source in shipped_models():
        shipped = shipped_model(source)
        if shipped.int8_graph is None:
            raise ConfigError(f"shipped model {source!r} has no int8 graph; use backend openvino (float)")
        if not shipped.int8_graph.is_file():
            raise CheckpointError(f"{shipped.int8_graph}, {source!r}'s int8 graph, is missing; reinstall fermetric")
        path = shipped.int8_graph
        weights = load_model(source, device="cpu")
    else:
        raise ConfigError(
            f"{source}: the openvino-int8 backend runs an int8 graph; make one with fermetric export --checkpoint "
            f"{source} --format onnx --int8-calibration --data DATASET=ROOT (its training data) --out model.int8.onnx "
            "and load that file"
        )
    model = OpenVinoModel(path, threads, precision)
    if int8 and not model.int8:
        raise ConfigError(
            f"{path} is a float graph; export an int8 one with --int8-calibration, or use backend openvino"
        )
    if weights is not None:
        from .engine.checkpoint import state_digest

        if model.int8.get("weights") != state_digest(weights[0].state_dict()):
            raise CheckpointError(f"{path} was calibrated for other weights than {source!r}'s; reinstall fermetric")
    meta = weights[1] if weights is not None else model.meta
    if not meta:
        raise CheckpointError(f"{path} has no fermetric metadata; export it with `fermetric export --format onnx`")
    return model, meta
