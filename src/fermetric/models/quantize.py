"""int8 static quantisation of an inference network for TorchInductor on x86 CPUs (torchao's PT2E).

Calibration and use are separate, so that a shipped model runs in int8 without its training data:

* :func:`calibrate_int8` runs calibration faces through the network with torchao's
  ``X86InductorQuantizer`` observers (per-channel symmetric int8 weights, per-tensor affine uint8
  activations, histogram ranges) and returns the activation ranges it chose as plain JSON
  (``{"activations": [[scale, zero_point], ...], ...}``), small enough for a weights file's metadata.
* :func:`quantize_int8` rebuilds the quantised graph from the float network and those ranges alone:
  each activation observer is replaced by a fixed one holding its stored range, the weight
  observers see the weights once, and ``convert_pt2e`` lowers the graph to quantise/dequantise
  pairs that Inductor fuses into oneDNN int8 kernels (AMX-INT8 or VNNI where the CPU has them).

The stored ranges are matched to observers by their order in the exported graph; a different
graph (another torch or torchao version that observes other points) is refused with a clear error
rather than quantised wrongly.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

import torch
from torch import nn

from ..errors import ConfigError
from .inference import inference_model
from .network import FERNetExport

__all__ = ["calibrate_int8", "quantize_int8", "weights_fingerprint"]

CALIBRATION_FORMAT = "torchao-pt2e-x86-inductor/1"


def _torchao():
    # torchao 0.18 registers an Enum with torch's pytree on import, which torch 2.14 answers with a
    # deprecation line on stderr: not the user's concern, so that logger is quiet meanwhile
    pytree_log = logging.getLogger("torch.utils._pytree")
    level = pytree_log.level
    pytree_log.setLevel(logging.ERROR)
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
        from torchao.quantization.pt2e import FixedQParamsObserver, ObserverBase
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError:
        raise ConfigError("int8 inference needs torchao: pip install 'fermetric[int8]'") from None
    except Exception as err:  # a torchao built for another torch fails on import in its own ways
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise ConfigError(f"torchao does not load with this torch ({reason}); pip install 'fermetric[int8]'") from None
    finally:
        pytree_log.setLevel(level)
    return x86, FixedQParamsObserver, ObserverBase, prepare_pt2e, convert_pt2e


def _prepared(model: nn.Module, input_size: int):
    """The float network exported with a dynamic batch axis and annotated with observers, its
    activation observers in graph order, and an example input."""
    x86, _, observer_base, prepare_pt2e, _ = _torchao()
    network = FERNetExport(inference_model(model).float()).eval()
    in_chans = next(m for m in network.modules() if isinstance(m, nn.Conv2d)).in_channels
    example = torch.zeros(2, in_chans, input_size, input_size)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    exported = torch.export.export(network, (example,), dynamic_shapes=({0: batch},)).module()
    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    activations, seen = [], set()
    for node in prepared.graph.nodes:
        if node.op != "call_module":
            continue
        observer = getattr(prepared, node.target)
        if not isinstance(observer, observer_base) or id(observer) in seen:
            continue
        seen.add(id(observer))
        if observer.qscheme == torch.per_tensor_affine:  # the per-channel ones observe weights
            activations.append(observer)
    return prepared, activations, example


def weights_fingerprint(model: nn.Module) -> str:
    """A short digest of ``model``'s float32 tensors: ties a calibration to the weights it measured."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def calibrate_int8(model: nn.Module, batches: Iterable[torch.Tensor], input_size: int) -> dict:
    """Activation ranges for :func:`quantize_int8` from calibration ``batches`` (float
    ``[N, C, input_size, input_size]``, preprocessed as the model's inputs are; a few hundred
    faces of the training data are enough)."""
    prepared, activations, _ = _prepared(model, input_size)  # fails clearly without torchao
    import torchao

    seen = 0
    with torch.no_grad():
        for batch in batches:
            prepared(batch.float())
            seen += len(batch)
    if seen == 0:
        raise ConfigError("int8 calibration needs at least one batch of faces")
    ranges = []
    for observer in activations:
        scale, zero_point = observer.calculate_qparams()
        ranges.append([float(scale.reshape(-1)[0]), int(zero_point.reshape(-1)[0])])
    return {
        "format": CALIBRATION_FORMAT,
        "activations": ranges,
        "weights": weights_fingerprint(model),
        "faces": seen,
        "torch": torch.__version__.split("+")[0],
        "torchao": torchao.__version__,
    }


def quantize_int8(model: nn.Module, calibration: dict, input_size: int) -> torch.fx.GraphModule:
    """The int8 graph of ``model`` (float ``[N, C, S, S]`` in, ``(logits, embedding)`` float out),
    quantised with the activation ranges of :func:`calibrate_int8`; compile it with TorchInductor
    (``freezing``) to run int8 kernels: uncompiled it only simulates int8 in float."""
    _, fixed_observer, _, _, convert_pt2e = _torchao()
    if not isinstance(calibration, dict) or calibration.get("format") != CALIBRATION_FORMAT:
        raise ConfigError(f"not an int8 calibration of format {CALIBRATION_FORMAT!r}; calibrate the model again")
    if calibration.get("weights") != weights_fingerprint(model):
        raise ConfigError(
            "the int8 calibration was made for other weights (a fine-tuned or averaged copy of a calibrated "
            "file keeps its metadata); calibrate this model again with fermetric export --int8-calibration"
        )
    prepared, activations, example = _prepared(model, input_size)
    ranges = calibration["activations"]
    if len(ranges) != len(activations):
        raise ConfigError(
            f"the int8 calibration holds {len(ranges)} activation ranges but this torch/torchao observes "
            f"{len(activations)} points (calibrated with torch {calibration.get('torch')}, torchao "
            f"{calibration.get('torchao')}); calibrate the model again or use another backend"
        )
    fixed = {
        id(observer): fixed_observer(
            scale=float(scale),
            zero_point=int(zero_point),
            dtype=observer.dtype,
            qscheme=observer.qscheme,
            quant_min=observer.quant_min,
            quant_max=observer.quant_max,
        )
        for observer, (scale, zero_point) in zip(activations, ranges)
    }
    for node in prepared.graph.nodes:  # an observer shared by several points is replaced at each
        if node.op == "call_module" and id(getattr(prepared, node.target)) in fixed:
            setattr(prepared, node.target, fixed[id(getattr(prepared, node.target))])
    with torch.no_grad():
        prepared(example)  # the weight observers' one look at the weights
    return convert_pt2e(prepared)
