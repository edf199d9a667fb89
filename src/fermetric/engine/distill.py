"""The teacher of a distilled run: a trained, frozen model that scores each augmented batch.

A student learns the teacher's softened class probabilities beside the labels (``recipe.distill``).
The teacher may take another input size or normalisation than the student (the shipped 96 px
``default`` teaching a 48 px network): it sees the student's augmented batch converted back to
pixels, resized and normalised its own way, so both judge the same augmented face.

Several teachers (``distill.teacher: [default, runs/x]``) teach as one: the mean of their logits,
each computed at its own input size. Averaging logits (not probabilities) keeps one tempered
softmax for the whole ensemble, so ``distill.temperature`` means what it means for one teacher.

``distill.tta: flip`` has each teacher score the face and its mirror and average the two logits,
as ``fermetric eval --tta flip`` does: a stronger teacher for the price of a second forward pass,
whose gain the single-crop student can learn (the shipped ``default`` is 0.9 points better on
PublicTest with flip TTA than without).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data.transforms import Preprocessing
from ..errors import ConfigError
from .checkpoint import load_model, state_digest
from .evaluate import check_tta, preprocessing_from_meta


class Teacher:
    """``teacher(x) -> logits``: ``x`` is a batch prepared with ``student`` preprocessing.

    A plain object, not a ``Module``: the training task's ``train()`` must not switch the
    teacher's BatchNorm to batch statistics, its weights are not the student's to save, and
    DDP must not synchronise them.
    """

    def __init__(self, source: str, classes, student: Preprocessing, device, tta: str = "none") -> None:
        self.tta = check_tta(tta)
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
        logits = self.model(x)["logits"].float()
        if self.tta == "flip":
            logits = (logits + self.model(x.flip(-1))["logits"].float()) / 2
        return logits


class EnsembleTeacher:
    """``teacher(x) -> logits``: the mean logits of several :class:`Teacher` s on the same batch."""

    def __init__(self, sources: Sequence[str], classes, student: Preprocessing, device, tta: str = "none") -> None:
        if not sources:
            raise ConfigError("distill.teacher is an empty list; name one model or several")
        self.members = [Teacher(source, classes, student, device, tta) for source in sources]
        self.source = [member.source for member in self.members]
        self.digest = [member.digest for member in self.members]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(0)


def make_teacher(
    source: str | Sequence[str], classes, student: Preprocessing, device, tta: str = "none"
) -> Teacher | EnsembleTeacher:
    """One teacher for a source (shipped name, run directory or file), an ensemble for a list;
    ``tta`` (none | flip) is how each of them scores a batch."""
    if isinstance(source, str):
        return Teacher(source, classes, student, device, tta)
    return EnsembleTeacher(list(source), classes, student, device, tta)
