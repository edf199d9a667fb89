"""Numeric precision, memory format, determinism and threads: one policy for training and inference.

``precision``:

* ``auto`` (the default everywhere): bf16 autocast on CUDA, and on a CPU whose hardware runs bf16
  natively (AMX or AVX512-BF16, as the torch build reports it); fp32 elsewhere. On a CPU without
  those units oneDNN emulates bf16 and it is several times *slower* than fp32 (measured on an AVX2
  AMD EPYC: ResNet-18 width 0.5 training 3 img/s in bf16 against 37 in fp32), so ``auto`` must
  look at the hardware rather than at the device type.
* ``bf16``: bf16 autocast wherever asked (even where it is slow: a user's explicit choice).
* ``fp32``: no autocast.

Losses are always computed in float32 (the losses switch autocast off inside). channels_last is
the recipe's ``channels_last`` flag on every device: oneDNN's CPU convolutions are faster in it in
fp32 too (ResNet-18 width 0.5: 29 -> 37 img/s on the AVX2 CPU above), and its bf16 fast paths need it.

Determinism is a separate, opt-in choice (``deterministic=True``): deterministic algorithms (warn
only) for bit-exact repeatability and resume. On the CPU it disables oneDNN's fast bf16 kernels.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from ..errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp32")

__all__ = [
    "PRECISIONS",
    "cpu_flags",
    "cpu_has_native_bf16",
    "resolve_precision",
    "autocast",
    "deterministic_mode",
    "available_cores",
    "default_threads",
    "thread_count",
]


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (``/proc/cpuinfo``); empty where it reports none."""
    try:
        return set(Path("/proc/cpuinfo").read_text(errors="replace").split())
    except OSError:
        return set()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bf16 matrix maths in hardware (AMX tiles or AVX512-BF16)."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if all(probes):
        try:
            return any(probe() for probe in probes)
        except Exception:  # private probes that changed: fall back to the kernel's flags
            pass
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})  # torch builds without the probes


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``"bf16"`` or ``"fp32"`` for ``precision`` (``auto`` | ``bf16`` | ``fp32``) on ``device``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str):
    """The autocast context of a resolved ``precision`` (``bf16`` or ``fp32``) on ``device``."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@contextlib.contextmanager
def deterministic_mode(device: torch.device, deterministic: bool):
    """Deterministic kernels when asked; cudnn autotuning on CUDA otherwise. Restores the settings.

    ``set_deterministic_debug_mode("warn")`` is ``use_deterministic_algorithms(True,
    warn_only=True)`` without the latter's import of torch._inductor (seconds; it only sets a
    torch.compile flag).
    """
    previous = (torch.get_deterministic_debug_mode(), torch.backends.cudnn.benchmark)
    if deterministic:
        torch.set_deterministic_debug_mode("warn")
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: autotune once
    try:
        yield
    finally:
        torch.set_deterministic_debug_mode(previous[0])
        torch.backends.cudnn.benchmark = previous[1]


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Threads per process: the available cores shared by torchrun's local processes
    (``LOCAL_WORLD_SIZE``), at least one. More threads than cores thrash (ten times slower)."""
    return max(1, available_cores() // _local_processes())


def _local_processes() -> int:
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


@contextlib.contextmanager
def thread_count(threads: int | None):
    """Run a block with ``threads`` torch threads, restoring the previous count afterwards.

    ``None`` leaves a single process's setting alone (a library should not override what its
    caller chose; the command line passes the available cores) but, under torchrun, shares the
    cores between the local processes (:func:`default_threads`): N processes with all cores each
    thrash.
    """
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    previous = torch.get_num_threads()
    if threads is None and _local_processes() > 1:
        threads = default_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
