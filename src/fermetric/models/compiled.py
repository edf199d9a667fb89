"""A trained network compiled by TorchInductor for the CPU: in fp32 or bf16, or quantised to int8
(:mod:`fermetric.models.quantize`), run on fixed-size batches."""

from __future__ import annotations

import contextlib
import logging
import warnings

import torch
from torch import nn

from ..errors import ConfigError
from .inference import inference_model
from .network import FERNetExport
from .quantize import quantize_int8

__all__ = ["COMPILED_PRECISIONS", "MICRO_BATCH", "CompiledInference"]

# what CompiledInference feeds its graph; int8 takes float32 in and quantises inside the graph
COMPILED_PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32}
# faces per chunk unless told: for int8, on the development CPU (one thread, `default`) 1985 faces/s
# against 1851 at 64, 1621 at 32 and 1705 at 256 (interleaved passes in one process)
MICRO_BATCH = {"fp32": 32, "bf16": 32, "int8": 128}


@contextlib.contextmanager
def _quiet_compilation():
    """Compilation notices that are torch's own business, not the user's: a CUDA build's "No CUDA
    runtime is found" log line, and a tensor-copy warning raised inside Inductor's int8 lowering."""
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="To copy construct from a tensor", category=UserWarning)
            yield
    finally:
        log.setLevel(level)


class CompiledInference(nn.Module):
    """An inference model (:func:`inference_model`) compiled by TorchInductor with its weights
    frozen into the graph, in bf16, fp32 or int8, run on fixed-size batches.

    Eager PyTorch spends most of a small CNN's time between operators; Inductor fuses them and
    prepacks the convolution weights once. On the 2-core development CPU (AMX-BF16, one thread)
    the MobileNetV2 ``default`` ran 2.6x more faces per second this way than eagerly in bf16
    (``docs/RESULTS.md``, "CPU inference against fer"). The price is a compilation of a few
    seconds to a minute per batch shape on first use, and a C++ compiler on the machine.

    Each batch is cut into ``micro_batch``-sized chunks and the last chunk is padded with zeros
    to the next power of two, so at most ``log2(micro_batch) + 1`` shapes are ever compiled
    (one face, a photo's few faces, a video's stream of full chunks) and none is recompiled.
    ``precision``: ``fp32``, ``bf16`` (weights and activations; bf16 pays on CPUs with native
    bf16) or ``int8`` (quantised with stored activation ranges by
    :func:`fermetric.models.quantize.quantize_int8`; oneDNN's int8 kernels, AMX-INT8 or VNNI where
    the CPU has them). Outputs are ``{"logits", "embedding"}`` in float32 in every case.
    """

    def __init__(
        self,
        model: nn.Module,
        precision: str = "fp32",
        micro_batch: int | None = None,
        int8_calibration: dict | None = None,
    ) -> None:
        """``model``: a :class:`FERNet` (compiled through :class:`FERNetExport`'s tuple outputs).
        ``micro_batch``: faces per chunk, a power of two (default: :data:`MICRO_BATCH` of ``precision``).
        ``int8_calibration``: with ``precision="int8"``, the activation ranges of
        :func:`fermetric.models.quantize.calibrate_int8` (a shipped model's ``int8_calibration``)."""
        super().__init__()
        if precision not in COMPILED_PRECISIONS:
            raise ConfigError(f"precision must be one of {sorted(COMPILED_PRECISIONS)}, got {precision!r}")
        micro_batch = MICRO_BATCH[precision] if micro_batch is None else micro_batch
        if micro_batch < 1 or micro_batch & (micro_batch - 1):
            raise ConfigError(f"micro_batch must be a power of two, got {micro_batch}")
        if precision == "int8" and int8_calibration is None:
            raise ConfigError("int8 needs the model's int8 calibration (fermetric export --int8-calibration)")
        self.precision = precision
        self.dtype = COMPILED_PRECISIONS[precision]
        self.micro_batch = micro_batch
        self.int8_calibration = int8_calibration
        if precision == "int8":
            self.model = model  # quantised on the first call, when the input size is known
            self._compiled = None
        else:
            self.model = inference_model(model).to(self.dtype)
            # dynamic=False: one specialised graph per padded shape
            self._compiled = torch.compile(FERNetExport(self.model), dynamic=False)
        self.eval()  # like inference_model: callers that restore a training mode leave it alone

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch._inductor.config as inductor_config  # here: importing it costs a second

        logits, embeddings = [], []
        # freezing (weights as constants, prepacked) is read when a shape compiles, at call time;
        # torch.compile(options={"freezing": True}) measured no faster, so it is set around the calls
        with (
            torch.no_grad(),
            torch.autocast(x.device.type, enabled=False),
            inductor_config.patch(freezing=True),
            _quiet_compilation(),
        ):
            for start in range(0, x.shape[0], self.micro_batch):
                chunk = x[start : start + self.micro_batch].to(self.dtype).contiguous()
                count = chunk.shape[0]
                padded = 1 << (count - 1).bit_length()  # the next power of two
                if padded > count:
                    chunk = torch.cat([chunk, chunk.new_zeros((padded - count, *chunk.shape[1:]))])
                chunk_logits, chunk_embedding = self._run_compiled(chunk)
                logits.append(chunk_logits[:count].float())
                embeddings.append(chunk_embedding[:count].float())
        return {"logits": torch.cat(logits), "embedding": torch.cat(embeddings)}

    def _run_compiled(self, chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._compiled is None:  # int8: quantised (in float) and then compiled to int8 kernels
            quantised = quantize_int8(self.model, self.int8_calibration, input_size=chunk.shape[-1])
            self._compiled = torch.compile(quantised, dynamic=False)
        try:
            return self._compiled(chunk)
        except torch._dynamo.exc.BackendCompilerFailed as error:
            cause = getattr(error, "inner_exception", error)
            reason = " ".join(f"{type(cause).__name__}: {cause}".split())  # one line
            raise ConfigError(
                "the compiled backend could not compile the model (TorchInductor needs a working C++ "
                f"compiler on this machine; {reason}); use the torch or onnx backend instead"
            ) from error
