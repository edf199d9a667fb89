"""The training task: the model and its losses under one module, returning the loss terms.

timm's task modules in miniature: the task owns what a training step computes (cross-entropy on
the classifier, plus the recipe's metric loss on the embedding, weighted), so the loop only
steps, checkpoints and logs. One module, so DDP syncs the metric loss's learnable centres too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses.distill import distillation_loss
from ..losses.functional import no_autocast


class TrainingTask(torch.nn.Module):
    """``task(x, labels, metric_labels, target) -> {"ce", ["metric"], "loss"}`` (float32 scalars).

    Args:
        model: returns ``{"logits", "embedding"}`` (FERNet).
        loss: the metric loss (a :class:`~fermetric.losses.base.MetricLoss`) or ``None``.
        loss_cfg: the recipe's ``loss`` section (``ce_weight``, ``weight``, ``label_smoothing``).
        teacher: a :class:`~fermetric.engine.distill.Teacher` and the recipe's ``distill`` section,
            or ``None``: adds ``distill.weight`` x the soft-target term ``"distill"``.

    The forward runs the model under whatever autocast the caller set; the losses are computed
    in float32 with autocast off. ``target``: soft class probabilities (FER+ probability labels)
    or the hard ``labels``; ``metric_labels``: what the metric loss groups (the labels, or DMSL
    sub-classes); a loss that ``needs_logits`` is given the classifier's logits.
    """

    def __init__(self, model: torch.nn.Module, loss: torch.nn.Module | None, loss_cfg, teacher=None) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.loss_cfg = loss_cfg
        self.teacher = teacher  # (Teacher, DistillConfig): a plain attribute, not a submodule

    @property
    def term_names(self) -> list[str]:
        metric = ["metric"] if self.loss is not None else []
        return ["loss", "ce"] + metric + (["distill"] if self.teacher is not None else [])

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor, metric_labels: torch.Tensor, target: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        out = self.model(x)
        logits, embedding = out["logits"].float(), out["embedding"].float()
        soft_targets = self.teacher[0](x) if self.teacher is not None else None
        with no_autocast(logits):
            ce = F.cross_entropy(logits, target, label_smoothing=self.loss_cfg.label_smoothing)
            parts = {"ce": ce}
            total = self.loss_cfg.ce_weight * ce
            if self.loss is not None:
                if self.loss.needs_logits:
                    metric = self.loss(embedding, labels, logits=logits)
                else:
                    metric = self.loss(embedding, metric_labels)
                parts["metric"] = metric
                total = total + self.loss_cfg.weight * metric
            if soft_targets is not None:
                config = self.teacher[1]
                parts["distill"] = distillation_loss(logits, soft_targets, config.temperature)
                total = total + config.weight * parts["distill"]
        parts["loss"] = total
        return parts
