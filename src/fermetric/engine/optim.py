"""Optimiser, learning-rate schedule and weight EMA of a recipe's ``optim`` section.

Weight decay applies to weight matrices and kernels only: biases, normalisation parameters and
the metric losses' learnable centres (at ``loss_lr_multiplier`` times the learning rate) are free
of it; frozen parameters (``requires_grad=False``) are left out.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError


def build_optimizer(model: torch.nn.Module, loss: torch.nn.Module | None, optim_cfg) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": optim_cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    loss_params = [p for p in (loss.parameters() if loss is not None else []) if p.requires_grad]
    if loss_params:
        groups.append({"params": loss_params, "weight_decay": 0.0, "lr": optim_cfg.lr * optim_cfg.loss_lr_multiplier})
    groups = [g for g in groups if g["params"]]
    name = optim_cfg.optimizer.lower()
    if name == "sgd":
        return torch.optim.SGD(
            groups,
            lr=optim_cfg.lr,
            momentum=optim_cfg.momentum,
            nesterov=bool(optim_cfg.nesterov and optim_cfg.momentum > 0),
        )
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=optim_cfg.lr)
    raise ConfigError(f"unknown optim.optimizer {optim_cfg.optimizer!r}; use sgd or adamw")


def build_scheduler(optimizer, optim_cfg, steps_per_epoch: int, epochs: int):
    total = max(1, steps_per_epoch * epochs)
    name = optim_cfg.schedule.lower()
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],
            total_steps=total,
            pct_start=0.2,
            anneal_strategy="cos",
            cycle_momentum=False,
        )
    if name == "cosine":
        warmup = min(total - 1, max(0, round(optim_cfg.warmup_epochs * steps_per_epoch)))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    raise ConfigError(f"unknown optim.schedule {optim_cfg.schedule!r}; use onecycle or cosine")


def ema_model(model: torch.nn.Module, decay: float):
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    if not 0.0 < decay < 1.0:
        raise ConfigError(f"recipe ema={decay!r} must be a decay in (0, 1), e.g. 0.999, or null")
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
