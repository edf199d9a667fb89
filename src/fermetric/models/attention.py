"""Selective attention (TCL, Rajoli et al. 2023): pixel-wise and element-wise gates, mixed."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SelectiveAttention"]


class SelectiveAttention(nn.Module):
    """Gate a feature map ``F [B,C,H,W]`` by a learned mix of a spatial and a channel attention.

    The paper states only that the module "combines pixel-wise and element-wise attention
    coefficients computed from high-level deep features"; this is fermetric's precise version
    (methods.md section 3, *design*):

    - spatial (pixel-wise) map ``S = sigmoid(conv3x3(relu(conv1x1(F))))`` of shape ``[B,1,H,W]``;
      the 1x1 conv reduces ``C -> C/reduction`` (BAM-style), the 3x3 conv sees each pixel's
      neighbourhood and outputs one coefficient per pixel.
    - channel (element-wise) vector ``A = sigmoid(W2 relu(W1 avgpool(F)))`` of shape ``[B,C,1,1]``
      (a squeeze-and-excitation MLP with the same reduction).
    - gate ``G = alpha * S + (1 - alpha) * A + beta * (S * A)``, broadcast to ``[B,C,H,W]``;
      output ``F * G``.

    ``alpha = sigmoid(alpha_logit)`` stays in (0, 1) and starts at ``alpha_init`` (default 0.5:
    both attentions weigh the same); it decides how much each pixel vs each channel matters. The
    product term ``S * A`` is the joint "this channel at this pixel" coefficient, the only term
    that is not separable; ``beta = softplus(beta_raw) >= 0`` (starts at 1) keeps it a boost,
    never a sign flip, so ``G`` lies in ``(0, 1 + beta)`` and the gate can leave a feature
    almost unchanged (S, A near 1 with beta near 0) or suppress it (S, A near 0). Both mixing
    weights are learned scalars, so every parameter always gets a gradient (DDP-friendly).
    The reduced width is ``max(channels // reduction, 8)`` so small backbones keep a usable MLP.
    """

    def __init__(self, channels: int, reduction: int = 16, alpha_init: float = 0.5) -> None:
        super().__init__()
        if not 0.0 < alpha_init < 1.0:
            raise ValueError(f"alpha_init must lie strictly between 0 and 1, got {alpha_init}")
        hidden = max(channels // reduction, 8)
        self.channels = channels
        self.spatial = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 3, padding=1),
        )
        self.channel = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
        self.alpha_logit = nn.Parameter(torch.tensor(math.log(alpha_init / (1.0 - alpha_init))))
        self.beta_raw = nn.Parameter(torch.tensor(math.log(math.e - 1.0)))  # softplus(.) == 1

    @property
    def alpha(self) -> torch.Tensor:
        return torch.sigmoid(self.alpha_logit)

    @property
    def beta(self) -> torch.Tensor:
        return F.softplus(self.beta_raw)

    def gates(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(S [B,1,H,W], A [B,C,1,1])``, each in (0, 1)."""
        spatial = torch.sigmoid(self.spatial(fmap))
        channel = torch.sigmoid(self.channel(fmap.mean(dim=(2, 3))))[:, :, None, None]
        return spatial, channel

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        spatial, channel = self.gates(fmap)
        alpha = self.alpha.to(spatial.dtype)
        gate = alpha * spatial + (1 - alpha) * channel + self.beta.to(spatial.dtype) * (spatial * channel)
        return fmap * gate
