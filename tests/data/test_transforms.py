"""Preprocessing (the eval path) and batched GPU augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fermetric.config import AugmentConfig
from fermetric.data.transforms import GPUAugment, Preprocessing
from fermetric.errors import ConfigError


@pytest.fixture
def batch(rng):
    return torch.from_numpy(rng.integers(0, 256, (16, 48, 48), dtype=np.uint8))


def test_preprocessing_normalises_and_resizes(batch):
    pre = Preprocessing(size=48, mean=0.5, std=0.25)
    out = pre.apply(batch)
    assert out.shape == (16, 1, 48, 48) and out.dtype == torch.float32
    expected = (batch.float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(out[:, 0], expected)
    assert torch.equal(pre.apply(batch.unsqueeze(1)), out)  # [B,1,H,W] is accepted too
    small = Preprocessing(size=24).apply(batch)
    assert small.shape == (16, 1, 24, 24)
    # antialiased 2x downscale of a 2x2-pixel checkerboard is flat grey, not aliased
    checker = torch.from_numpy((np.indices((48, 48)).sum(0) % 2 * 255).astype(np.uint8))[None]
    flat = Preprocessing(size=24, mean=0.0, std=1.0).apply(checker)
    assert torch.allclose(flat, torch.full_like(flat, 0.5), atol=0.02)
    with pytest.raises(TypeError):
        pre.apply(batch.float())


@pytest.mark.parametrize("size", [96, 72, 30])
def test_the_fast_evaluation_path_gives_the_plain_formula(batch, size):
    """apply() normalises in place at the smaller size and antialiases only a shrink: the
    straightforward order (antialiased resize, then normalise) within float rounding."""
    pre = Preprocessing(size=size, mean=0.5, std=0.25)
    before = batch.clone()
    resized = F.interpolate(batch[:, None].float() / 255, size=(size, size), mode="bilinear", antialias=True)
    torch.testing.assert_close(pre.apply(batch), (resized - 0.5) / 0.25, rtol=0, atol=2e-5)
    assert torch.equal(batch, before)


def test_preprocessing_dict_roundtrip():
    pre = Preprocessing(size=64, mean=0.4, std=0.2)
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    assert pre.to_dict() == {"size": 64, "mean": 0.4, "std": 0.2}
    with pytest.raises(ConfigError, match="unknown preprocessing key"):
        Preprocessing.from_dict({"size": 48, "colour": "rgb"})
    with pytest.raises(ConfigError):
        Preprocessing(std=0)


def test_eval_mode_is_the_deterministic_preprocessing(batch):
    pre = Preprocessing()
    augment = GPUAugment(AugmentConfig(), pre).eval()
    assert torch.equal(augment(batch), pre.apply(batch))
    assert torch.equal(augment(batch), augment(batch))


def test_training_output_shapes_and_seeded_determinism(batch):
    augment = GPUAugment(AugmentConfig(), Preprocessing(size=40)).train()
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a, b = augment(batch, generator=g1), augment(batch, generator=g2)
    assert a.shape == (16, 1, 40, 40) and a.dtype == torch.float32
    assert torch.equal(a, b)
    c = augment(batch, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(a, c)


def test_identity_settings_change_nothing(batch):
    cfg = AugmentConfig(crop_padding=0, scale=(1.0, 1.0), rotation=0.0, hflip=False, erasing=0.0)
    pre = Preprocessing()
    out = GPUAugment(cfg, pre).train()(batch, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, pre.apply(batch), atol=1e-4, rtol=0)


def test_flip_mirrors_about_half_the_batch(rng):
    images = torch.from_numpy(rng.integers(0, 256, (200, 12, 12), dtype=np.uint8))
    cfg = AugmentConfig(crop_padding=0, scale=(1.0, 1.0), rotation=0.0, hflip=True, erasing=0.0)
    pre = Preprocessing(size=12)
    out = GPUAugment(cfg, pre).train()(images, generator=torch.Generator().manual_seed(1))
    plain, mirrored = pre.apply(images), pre.apply(images.flip(-1))
    same = (out - plain).abs().amax((1, 2, 3)) < 1e-4
    flipped = (out - mirrored).abs().amax((1, 2, 3)) < 1e-4
    assert bool((same ^ flipped).all())  # every image is exactly itself or its mirror image
    assert 70 < int(flipped.sum()) < 130


def test_affine_matches_the_drawn_matrices(batch):
    """One affine_grid + grid_sample: the output equals resampling with the drawn matrices."""
    cfg = AugmentConfig(crop_padding=4, scale=(0.8, 1.2), rotation=10.0, hflip=True, erasing=0.0)
    augment = GPUAugment(cfg, Preprocessing()).train()
    theta = augment.affine_matrices(16, "cpu", torch.Generator().manual_seed(3))
    linear = theta[:, :, :2]
    dets = torch.linalg.det(linear).abs()
    assert ((dets >= 1 / 1.2**2 - 1e-5) & (dets <= 1 / 0.8**2 + 1e-5)).all()  # area scale from `scale`
    assert (theta[:, :, 2].abs() <= 2 * 4 / 48 + 1e-6).all()  # translation <= crop_padding px
    x = batch.float().unsqueeze(1) / 255
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    expected = (F.grid_sample(x, grid, align_corners=False) - 0.5) / 0.25
    torch.testing.assert_close(augment(batch, generator=torch.Generator().manual_seed(3)), expected)


def test_rotation_angle_is_within_range():
    cfg = AugmentConfig(crop_padding=0, scale=(1.0, 1.0), rotation=10.0, hflip=False, erasing=0.0)
    theta = GPUAugment(cfg, Preprocessing()).affine_matrices(1000, "cpu", torch.Generator().manual_seed(0))
    angles = torch.atan2(theta[:, 1, 0], theta[:, 0, 0]).abs()
    assert angles.max() <= math.radians(10) + 1e-6 and angles.max() > math.radians(9)


def test_erasing_probability_and_area():
    cfg = AugmentConfig(crop_padding=0, scale=(1.0, 1.0), rotation=0.0, hflip=False, erasing=0.5)
    augment = GPUAugment(cfg, Preprocessing(size=32)).train()
    masks = augment.erase_masks(4000, 32, 32, "cpu", torch.Generator().manual_seed(0))
    erased = masks.flatten(1).any(1)
    assert abs(erased.float().mean().item() - 0.5) < 0.03
    area = masks.flatten(1).float().mean(1)[erased]
    assert 0.02 * 0.5 <= area.min() and area.max() <= 0.33 * 1.3  # within RandomErasing's area range
    assert 0.12 < area.mean().item() < 0.2  # about the mean of U(0.02, 0.33), less clipping at borders
    for m in masks[erased][:50, 0]:  # each mask is one solid rectangle
        rows, cols = m.any(1).nonzero(), m.any(0).nonzero()
        box = m[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert bool(box.all())
    white = torch.full((8, 32, 32), 255, dtype=torch.uint8)
    out = GPUAugment(
        AugmentConfig(crop_padding=0, scale=(1, 1), rotation=0, hflip=False, erasing=1.0), Preprocessing(size=32)
    ).train()(white, generator=torch.Generator().manual_seed(0))
    assert ((out == 0).flatten(1).any(1)).all()  # erased pixels hold 0 = the mean grey after normalising


def test_bad_augment_config():
    with pytest.raises(ConfigError):
        GPUAugment(AugmentConfig(scale=(1.2, 0.8)), Preprocessing())
    with pytest.raises(ConfigError):
        GPUAugment(AugmentConfig(erasing=1.5), Preprocessing())


def test_photometric_jitter_factors_and_ranges(rng):
    """Against the formulas on images whose pixels stay inside (0, 1) after the jitter."""
    images = torch.from_numpy(rng.integers(96, 160, (500, 8, 8), dtype=np.uint8))
    still = dict(crop_padding=0, scale=(1.0, 1.0), rotation=0.0, hflip=False, erasing=0.0)
    pre = Preprocessing(size=8, mean=0.0, std=1.0)
    x = images.float().unsqueeze(1) / 255

    bright = GPUAugment(AugmentConfig(**still, brightness=0.3), pre).train()(images, torch.Generator().manual_seed(0))
    factor = (bright / x).flatten(1)
    assert torch.allclose(factor, factor[:, :1].expand_as(factor), atol=1e-4)  # one factor per image
    assert 0.7 - 1e-4 <= factor.min() and factor.max() <= 1.3 + 1e-4 and factor.std() > 0.1

    contrast = GPUAugment(AugmentConfig(**still, contrast=0.4), pre).train()(images, torch.Generator().manual_seed(0))
    torch.testing.assert_close(contrast.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-5, rtol=0)  # the mean stays
    spread = contrast.std((1, 2, 3)) / x.std((1, 2, 3))
    assert 0.6 - 1e-4 <= spread.min() and spread.max() <= 1.4 + 1e-4 and spread.std() > 0.1

    gamma = GPUAugment(AugmentConfig(**still, gamma=0.5), pre).train()(images, torch.Generator().manual_seed(0))
    exponent = (gamma.log() / x.log()).flatten(1)
    assert torch.allclose(exponent, exponent[:, :1].expand_as(exponent), atol=1e-3)
    assert 1 / 1.5 - 1e-3 <= exponent.min() and exponent.max() <= 1.5 + 1e-3
    assert (exponent[:, 0] < 1).any() and (exponent[:, 0] > 1).any()

    harsh = AugmentConfig(**still, brightness=0.9, contrast=0.9, gamma=2.0)
    white = torch.full((64, 8, 8), 255, dtype=torch.uint8)
    out = GPUAugment(harsh, pre).train()(torch.cat([white, images[:64]]), torch.Generator().manual_seed(1))
    assert out.min() >= 0 and out.max() <= 1  # clamped to valid pixels


def test_photometric_jitter_off_leaves_the_random_stream_alone(batch):
    """A recipe without the jitter augments exactly as before the jitter existed."""
    plain = GPUAugment(AugmentConfig(), Preprocessing()).train()
    expected = plain(batch, torch.Generator().manual_seed(4))
    explicit = GPUAugment(AugmentConfig(brightness=0.0, contrast=0.0, gamma=0.0), Preprocessing()).train()
    assert torch.equal(explicit(batch, torch.Generator().manual_seed(4)), expected)
    jittered = GPUAugment(AugmentConfig(brightness=0.2), Preprocessing()).train()
    assert not torch.equal(jittered(batch, torch.Generator().manual_seed(4)), expected)
    assert torch.equal(jittered.eval()(batch), Preprocessing().apply(batch))  # evaluation never jitters


def test_bad_photometric_config():
    for bad in (dict(brightness=1.0), dict(contrast=-0.1), dict(gamma=-1.0)):
        with pytest.raises(ConfigError):
            GPUAugment(AugmentConfig(**bad), Preprocessing())
