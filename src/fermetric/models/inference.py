"""A trained network made ready for inference: eval mode, BatchNorm folded into the convolution
before it, channels_last.

Both are exact up to float rounding (logits within ~1e-5) and worth it on the CPU: folding removes
the MobileNetV2 ``default``'s 52 BatchNorm layers and channels_last lets oneDNN skip layout
reorders. A one-thread timing of that model on batches of 64 on the 2-core development CPU, in
one process and under load, gave about 1.5x more faces per second than the plain network. Only Conv2d -> BatchNorm2d
pairs that sit next to each other in an ``nn.Sequential`` are folded (torchvision's and timm's
conv-norm-act blocks, the tiny CNN): there the BatchNorm provably takes the convolution's output
and nothing else. Anything else is left as it is, so any network stays correct.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..errors import ConfigError
from .network import FERNetExport


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d inside an ``nn.Sequential``
    into that convolution (in place; the BatchNorm becomes ``nn.Identity``). Returns how many."""
    folded = 0
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for conv_name, norm_name in zip(names, names[1:]):
            conv, norm = module._modules[conv_name], module._modules[norm_name]
            if isinstance(conv, nn.Conv2d) and type(norm) is nn.BatchNorm2d and norm.track_running_stats:
                module._modules[conv_name] = fuse_conv_bn_eval(conv, norm)
                module._modules[norm_name] = nn.Identity()
                folded += 1
    return folded


def inference_model(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with BatchNorm folded and channels_last weights; ``model``
    itself is untouched (its state dict still names the trained weights)."""
    ready = copy.deepcopy(model).eval()
    with torch.no_grad():
        fold_batchnorm(ready)
    for parameter in ready.parameters():
        parameter.requires_grad_(False)
    return ready.to(memory_format=torch.channels_last)


PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class CompiledInference(nn.Module):
    """An inference model (:func:`inference_model`) compiled by TorchInductor with its weights
    frozen into the graph, in bf16 or fp32, run on fixed-size batches.

    Eager PyTorch spends most of a small CNN's time between operators; Inductor fuses them and
    prepacks the convolution weights once. On the 2-core development CPU (AMX-BF16, one thread)
    the MobileNetV2 ``default`` ran 2.6x more faces per second this way than eagerly in bf16
    (``docs/RESULTS.md``, "CPU inference against fer"). The price is a compilation of a few
    seconds to a minute per batch shape on first use, and a C++ compiler on the machine.

    Each batch is cut into ``micro_batch``-sized chunks and the last chunk is padded with zeros
    to the next power of two, so at most ``log2(micro_batch) + 1`` shapes are ever compiled
    (one face, a photo's few faces, a video's stream of full chunks) and none is recompiled.
    ``precision``: ``fp32`` or ``bf16`` (weights and activations; bf16 pays on CPUs with native
    bf16). Outputs are ``{"logits", "embedding"}`` in float32 either way.
    """

    def __init__(self, model: nn.Module, precision: str = "fp32", micro_batch: int = 32) -> None:
        """``model``: a :class:`FERNet` (compiled through :class:`FERNetExport`'s tuple outputs)."""
        super().__init__()
        if precision not in PRECISION_DTYPES:
            raise ConfigError(f"precision must be one of {sorted(PRECISION_DTYPES)}, got {precision!r}")
        if micro_batch < 1 or micro_batch & (micro_batch - 1):
            raise ConfigError(f"micro_batch must be a power of two, got {micro_batch}")
        self.precision = precision
        self.dtype = PRECISION_DTYPES[precision]
        self.model = inference_model(model).to(self.dtype)
        self.micro_batch = micro_batch
        # dynamic=False: one specialised graph per padded shape
        self._compiled = torch.compile(FERNetExport(self.model), dynamic=False)
        self.eval()  # like inference_model: callers that restore a training mode leave it alone

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch._inductor.config as inductor_config  # here: importing it costs a second

        logits, embeddings = [], []
        # freezing (weights as constants, prepacked) is read when a shape compiles, at call time;
        # torch.compile(options={"freezing": True}) measured no faster, so it is set around the calls
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False), inductor_config.patch(freezing=True):
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
        try:
            return self._compiled(chunk)
        except torch._dynamo.exc.BackendCompilerFailed as error:
            cause = getattr(error, "inner_exception", error)
            reason = " ".join(f"{type(cause).__name__}: {cause}".split())  # one line
            raise ConfigError(
                "the compiled backend could not compile the model (TorchInductor needs a working C++ "
                f"compiler on this machine; {reason}); use the torch or onnx backend instead"
            ) from error
