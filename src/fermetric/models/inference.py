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
