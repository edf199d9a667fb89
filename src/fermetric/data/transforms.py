"""Batched preprocessing and augmentation on the device that holds the data.

A whole split lives on the GPU as uint8 ``[N, H, W]``; each batch is gathered by index and
turned into a normalised float ``[B, 1, S, S]`` tensor here, in a handful of batched tensor ops
(no per-sample Python loop), so augmentation never starves an H100.

Design decisions (each with its default):

- :class:`Preprocessing` ``(size=48, mean=0.5, std=0.25)``: ``x / 255``, resized to ``size`` x
  ``size`` with bilinear interpolation and antialiasing when the input size differs, then
  ``(x - mean) / std``. This is the deterministic evaluation path, and it is stored in every
  checkpoint (``to_dict`` / ``from_dict``) so prediction preprocesses exactly as training did.
- :class:`GPUAugment` (training mode) draws, per sample, one affine transform and applies it
  with a single ``affine_grid`` + ``grid_sample`` per batch:

  * scale ``s ~ U(scale)`` (``s > 1`` zooms in), rotation ``~ U(-rotation, rotation)`` degrees,
    translation ``~ U(-crop_padding, crop_padding)`` pixels per axis (the pad-and-crop jitter);
  * horizontal flip with probability 0.5 when ``hflip`` (folded into the same matrix);
  * bilinear sampling; pixels from outside the image are zero (black), like zero-padded
    random crops and torchvision's ``RandomAffine(fill=0)``.

  Before the affine, optional photometric jitter for lighting (each off at 0, the default), per
  sample on ``[0, 1]`` pixels: brightness ``x * b`` with ``b ~ U(1 - brightness, 1 + brightness)``,
  contrast ``m + (x - m) * c`` around the image's mean ``m`` with ``c ~ U(1 - contrast, 1 +
  contrast)`` (torchvision ``ColorJitter``'s two factors, drawn per sample instead of per batch),
  then gamma ``x ** g`` with ``log g ~ U(-log(1 + gamma), log(1 + gamma))`` (darker or brighter
  mid-tones at fixed black and white), clamped to ``[0, 1]``. A jitter at 0 draws no random
  numbers, so recipes without it see exactly the random stream they saw before it existed.
  Then random erasing with probability ``erasing`` per sample (torchvision ``RandomErasing``
  defaults: area ``U(0.02, 0.33)`` of the image, log-uniform aspect ratio in ``(0.3, 3.3)``,
  value 0 after normalisation, i.e. the mean grey), as one batched rectangle mask.
  In ``eval()`` mode it is exactly ``preprocessing.apply``.
- Randomness comes from an optional ``torch.Generator`` on the batch's device (same seed ->
  same output); without one, from torch's global RNG.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

ERASE_AREA = (0.02, 0.33)
ERASE_RATIO = (0.3, 3.3)


@dataclass
class Preprocessing:
    """uint8 ``[B, H, W]`` -> normalised float ``[B, 1, size, size]`` (deterministic)."""

    size: int = 48
    mean: float = 0.5
    std: float = 0.25

    def __post_init__(self) -> None:
        if int(self.size) < 1 or float(self.std) <= 0:
            raise ConfigError(f"preprocessing needs size >= 1 and std > 0, got size={self.size} std={self.std}")

    def to_float(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B,H,W]`` or ``[B,1,H,W]`` -> float32 ``[B,1,H,W]`` in [0, 1]."""
        if images.dtype != torch.uint8:
            raise TypeError(f"expected a uint8 image batch, got {images.dtype}")
        if images.dim() == 3:
            images = images.unsqueeze(1)
        if images.dim() != 4 or images.shape[1] != 1:
            raise ValueError(f"expected [B,H,W] or [B,1,H,W] grey images, got {tuple(images.shape)}")
        return images.float().div_(255.0)

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] == (self.size, self.size):
            return x
        # antialiasing only changes a shrink: enlarged (FER2013's 48 px to 96) both give the same
        # pixels within 1e-6, and the antialiased kernel took 1.5x as long
        shrink = max(x.shape[-2:]) > self.size
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=shrink)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """The evaluation path: to float, resize if needed, normalise.

        Normalising commutes with the bilinear resize (its weights sum to 1), so it runs in place
        at the smaller of the two sizes: a quarter of the work for 48 px faces enlarged to 96."""
        x = self.to_float(images)  # a new tensor: in-place work below never touches the caller's
        if x.shape[-2] * x.shape[-1] <= self.size * self.size:
            return self.resize(x.sub_(self.mean).div_(self.std))
        return self.resize(x).sub_(self.mean).div_(self.std)

    def to_dict(self) -> dict:
        return {"size": int(self.size), "mean": float(self.mean), "std": float(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown preprocessing key(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_data_config(cls, data_cfg) -> Preprocessing:
        """From a recipe's ``DataConfig`` (``input_size``, ``mean``, ``std``)."""
        return cls(size=int(data_cfg.input_size), mean=float(data_cfg.mean), std=float(data_cfg.std))

    def __repr__(self) -> str:
        return f"Preprocessing({', '.join(f'{k}={v}' for k, v in asdict(self).items())})"


def _uniform(shape, low: float, high: float, device, generator) -> torch.Tensor:
    return torch.rand(shape, device=device, generator=generator) * (high - low) + low


class GPUAugment(nn.Module):
    """Batched photometric jitter + random affine + flip + erasing, then normalisation (see the
    module docstring).

    Args:
        augment_cfg: a :class:`fermetric.config.AugmentConfig` (``crop_padding``, ``scale``,
            ``rotation``, ``hflip``, ``erasing``, ``brightness``, ``contrast``, ``gamma``).
        preprocessing: the :class:`Preprocessing` whose output this matches.
    """

    def __init__(self, augment_cfg, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.cfg = augment_cfg
        self.preprocessing = preprocessing
        low, high = (float(v) for v in augment_cfg.scale)
        if not 0 < low <= high:
            raise ConfigError(f"augment.scale must be 0 < low <= high, got {augment_cfg.scale}")
        if not 0 <= float(augment_cfg.erasing) <= 1:
            raise ConfigError(f"augment.erasing is a probability, got {augment_cfg.erasing}")
        for name in ("brightness", "contrast"):
            if not 0 <= float(getattr(augment_cfg, name)) < 1:
                raise ConfigError(
                    f"augment.{name} must be in [0, 1) (factors 1 +- it), got {getattr(augment_cfg, name)}"
                )
        if not float(augment_cfg.gamma) >= 0:
            raise ConfigError(f"augment.gamma must be >= 0, got {augment_cfg.gamma}")

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.training:
            return self.preprocessing.apply(images)
        x = self.preprocessing.resize(self.preprocessing.to_float(images))
        x = self.photometric(x, generator)
        x = self.affine(x, generator)
        x = self.preprocessing.normalise(x)
        return self.erase(x, generator)

    def affine_matrices(self, batch: int, device, generator=None) -> torch.Tensor:
        """``[B, 2, 3]`` matrices mapping output to input coordinates (``affine_grid`` convention)."""
        cfg, size = self.cfg, self.preprocessing.size
        low, high = (float(v) for v in cfg.scale)
        scale = _uniform(batch, low, high, device, generator)
        angle = _uniform(batch, -1.0, 1.0, device, generator) * math.radians(float(cfg.rotation))
        # one pixel is 2/size in normalised coordinates (align_corners=False)
        shift = _uniform((batch, 2), -1.0, 1.0, device, generator) * (2.0 * float(cfg.crop_padding) / size)
        flip = torch.ones(batch, device=device)
        if cfg.hflip:
            flip = torch.where(torch.rand(batch, device=device, generator=generator) < 0.5, -flip, flip)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [
                torch.stack([cos * flip, -sin, shift[:, 0]], dim=1),
                torch.stack([sin * flip, cos, shift[:, 1]], dim=1),
            ],
            dim=1,
        )
        return theta

    def photometric(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        """Per-sample brightness, contrast and gamma jitter of ``[B, 1, H, W]`` pixels in ``[0, 1]``."""
        cfg, batch = self.cfg, x.shape[0]
        brightness, contrast, gamma = float(cfg.brightness), float(cfg.contrast), float(cfg.gamma)
        if brightness == contrast == gamma == 0:
            return x
        shape = (batch, 1, 1, 1)
        if brightness > 0:
            x = x * _uniform(shape, 1 - brightness, 1 + brightness, x.device, generator).to(x.dtype)
        if contrast > 0:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = mean + (x - mean) * _uniform(shape, 1 - contrast, 1 + contrast, x.device, generator).to(x.dtype)
        x = x.clamp(0.0, 1.0)
        if gamma > 0:
            bound = math.log1p(gamma)
            x = x ** torch.exp(_uniform(shape, -bound, bound, x.device, generator)).to(x.dtype)
        return x

    def affine(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        theta = self.affine_matrices(x.shape[0], x.device, generator).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def erase_masks(self, batch: int, height: int, width: int, device, generator=None) -> torch.Tensor:
        """bool ``[B, 1, H, W]``: one random rectangle for each sample chosen with p = ``erasing``."""
        p = float(self.cfg.erasing)
        apply = torch.rand(batch, device=device, generator=generator) < p
        area = _uniform(batch, *ERASE_AREA, device, generator) * (height * width)
        log_ratio = _uniform(batch, math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]), device, generator)
        ratio = torch.exp(log_ratio)
        h = torch.sqrt(area * ratio).round().clamp(1, height)
        w = torch.sqrt(area / ratio).round().clamp(1, width)
        top = (torch.rand(batch, device=device, generator=generator) * (height - h + 1)).floor()
        left = (torch.rand(batch, device=device, generator=generator) * (width - w + 1)).floor()
        rows = torch.arange(height, device=device).view(1, height, 1)
        cols = torch.arange(width, device=device).view(1, 1, width)
        inside = (
            (rows >= top.view(-1, 1, 1))
            & (rows < (top + h).view(-1, 1, 1))
            & (cols >= left.view(-1, 1, 1))
            & (cols < (left + w).view(-1, 1, 1))
        )
        return (inside & apply.view(-1, 1, 1)).unsqueeze(1)

    def erase(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        if float(self.cfg.erasing) <= 0:
            return x
        mask = self.erase_masks(x.shape[0], x.shape[-2], x.shape[-1], x.device, generator)
        return x.masked_fill(mask, 0.0)

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"size={self.preprocessing.size}, scale={tuple(c.scale)}, rotation={c.rotation}, "
            f"crop_padding={c.crop_padding}, hflip={c.hflip}, erasing={c.erasing}, "
            f"brightness={c.brightness}, contrast={c.contrast}, gamma={c.gamma}"
        )
