"""The teacher of a distilled run: a trained, frozen model that scores each augmented batch.

A student learns the teacher's softened class probabilities beside the labels (``recipe.distill``).
The teacher may take another input size or normalisation than the student (the shipped 96 px
``default`` teaching a 48 px network): it sees the student's augmented batch converted back to
pixels, resized and normalised its own way, so both judge the same augmented face.
"""

from __future__ import annotations

import torch

from ..data.transforms import Preprocessing
from ..errors import ConfigError
from .checkpoint import load_model, state_digest
from .evaluate import preprocessing_from_meta


class Teacher:
    """``teacher(x) -> logits``: ``x`` is a batch prepared with ``student`` preprocessing.

    A plain object, not a ``Module``: the training task's ``train()`` must not switch the
    teacher's BatchNorm to batch statistics, its weights are not the student's to save, and
    DDP must not synchronise them.
    """

    def __init__(self, source: str, classes, student: Preprocessing, device) -> None:
        self.model, meta = load_model(source, device)
        if list(meta["classes"]) != list(classes):
            raise ConfigError(
                f"distill.teacher {source} predicts {list(meta['classes'])} but the training set has "
                f"{list(classes)}: the teacher must know the same classes in the same order"
            )
        self.model.requires_grad_(False)
        self.source = str(source)
        self.digest = state_digest(self.model.state_dict())
        self.preprocessing = preprocessing_from_meta(meta)
        self.student = student

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        prep = self.preprocessing
        if (prep.size, prep.mean, prep.std) != (self.student.size, self.student.mean, self.student.std):
            pixels = x.float() * self.student.std + self.student.mean
            x = prep.normalise(prep.resize(pixels))
        return self.model(x)["logits"].float()
