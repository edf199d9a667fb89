"""The precision policy: auto picks bf16 only where the hardware runs it; determinism is opt-in."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fermetric.engine import precision as P
from fermetric.engine.train import train
from fermetric.errors import ConfigError

from .engine_helpers import history as read_history
from .engine_helpers import tiny_recipe


def test_auto_is_bf16_on_cuda_and_on_native_bf16_cpus_only(monkeypatch):
    assert P.resolve_precision("auto", "cuda") == "bf16"
    assert P.resolve_precision("fp32", "cuda") == "fp32"
    assert P.resolve_precision("bf16", "cpu") == "bf16"  # an explicit choice is honoured
    monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: False)
    assert P.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: True)
    assert P.resolve_precision("auto", "cpu") == "bf16"
    with pytest.raises(ConfigError, match="unknown precision 'fp16'"):
        P.resolve_precision("fp16", "cpu")


@pytest.mark.host_precision
def test_native_bf16_falls_back_to_the_kernel_flags(monkeypatch, tmp_path):
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    assert P.cpu_has_native_bf16() in (True, False)  # /proc/cpuinfo, or False without it


def test_threads_are_shared_between_torchrun_processes(monkeypatch):
    monkeypatch.setattr(P, "available_cores", lambda: 16)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert P.default_threads() == 4
    previous = torch.get_num_threads()
    with P.thread_count(None) as threads:
        assert threads == 4 == torch.get_num_threads()
    assert torch.get_num_threads() == previous
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    with P.thread_count(None) as threads:  # one process: the caller's setting stands
        assert threads == previous
    with pytest.raises(ConfigError):
        with P.thread_count(0):
            pass


def test_deterministic_mode_is_opt_in():
    before = torch.get_deterministic_debug_mode()
    with P.deterministic_mode(torch.device("cpu"), True):
        assert torch.get_deterministic_debug_mode() == 1  # warn
    with P.deterministic_mode(torch.device("cpu"), False):
        assert torch.get_deterministic_debug_mode() == before
    assert torch.get_deterministic_debug_mode() == before


def test_precision_is_recorded_and_a_fast_resume_continues_the_schedule(tiny_sets, tmp_path):
    train_set, val_set, _ = tiny_sets
    recipe = tiny_recipe("ce", epochs=2)
    whole = train(recipe, train_set, val_set, tmp_path / "whole", device="cpu", progress=False, precision="fp32")
    assert whole["precision"] == "fp32" and whole["deterministic"] is False
    first = train(
        recipe, train_set, val_set, tmp_path / "cut", device="cpu", progress=False, precision="fp32", max_steps=4
    )
    assert first["steps"] == 4
    train(recipe, train_set, val_set, tmp_path / "cut", device="cpu", progress=False, precision="fp32", resume=True)
    a, b = read_history(tmp_path / "whole"), read_history(tmp_path / "cut")
    assert [(h["epoch"], h["step"]) for h in a] == [(h["epoch"], h["step"]) for h in b]
    assert [h["lr"] for h in a] == pytest.approx([h["lr"] for h in b], rel=1e-12)
    assert [h["train"]["loss"] for h in a] == pytest.approx([h["train"]["loss"] for h in b], rel=1e-3)


def test_bf16_forward_is_close_to_fp32():
    from fermetric.config import load_recipe
    from fermetric.data.transforms import Preprocessing
    from fermetric.engine.evaluate import embed
    from fermetric.models import create_model

    torch.manual_seed(0)
    model = create_model(load_recipe("ce", ["model.backbone=tiny", "model.embedding_dim=16"]).model, num_classes=7)
    images = np.random.default_rng(0).integers(0, 256, (16, 48, 48), dtype=np.uint8)
    prep = Preprocessing(48, 0.5, 0.25)
    fp32, _ = embed(model, images, prep, precision="fp32")
    bf16, _ = embed(model, images, prep, precision="bf16")
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, fp32, atol=0.1 * np.abs(fp32).max() + 1e-3)
