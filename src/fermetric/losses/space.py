"""The embedding space a loss trains: what every consumer (evaluation, retrieval, plots,
sub-classes) must measure distances in.

Each loss declares its space as the ``embedding_space`` property; cross-entropy alone uses the
shared convention (L2-normalised). A space is recorded in checkpoint metadata
(``meta["embedding_space"]``) and read back with :func:`space_of_meta`, so no consumer guesses
from a loss name.

Spaces:

* ``l2``: the whole embedding L2-normalised (TCL, EMLF, DMSL with ``normalize``, cross-entropy).
* ``sliced_l2``: the embedding cut into ``slices`` equal slices, each L2-normalised on its own,
  then concatenated (MT-DML): squared distances are sums of the slices' squared distances.
* ``raw``: the embedding as the network outputs it (DMSL without ``normalize``: its Gaussians
  live in the raw space).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import ConfigError
from .functional import l2_normalize

KINDS = ("l2", "sliced_l2", "raw")


@dataclass(frozen=True)
class EmbeddingSpace:
    kind: str = "l2"
    slices: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown embedding space {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.slices < 1 or (self.kind != "sliced_l2" and self.slices != 1):
            raise ConfigError(f"embedding space {self.kind!r} cannot have slices={self.slices}")

    def __call__(self, z):
        """``z [N, D]`` (numpy or torch) mapped into the space (float32 numpy stays numpy)."""
        if self.kind == "raw":
            return z
        if z.shape[1] % self.slices:
            raise ConfigError(f"embedding dim {z.shape[1]} is not divisible into {self.slices} slices")
        return l2_normalize(z, self.slices)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> EmbeddingSpace:
        data = dict(data or {})
        return cls(kind=str(data.get("kind", "l2")), slices=int(data.get("slices", 1)))

    def describe(self) -> str:
        if self.kind == "sliced_l2":
            return f"Euclidean on {self.slices} separately L2-normalised slices (concatenated)"
        return "Euclidean on L2-normalised embeddings" if self.kind == "l2" else "Euclidean on raw embeddings"


#: cross-entropy only, and every loss with ``normalize=True`` over the whole embedding
L2 = EmbeddingSpace("l2")
RAW = EmbeddingSpace("raw")


def space_of_recipe(recipe, num_classes: int = 2) -> EmbeddingSpace:
    """The space a model trained with ``recipe`` (Recipe or its dict) measures: its loss's own."""
    from . import create_loss

    data = recipe.to_dict() if hasattr(recipe, "to_dict") else dict(recipe)
    loss = data.get("loss") or {}
    if not loss.get("name"):
        return L2
    dim = int((data.get("model") or {}).get("embedding_dim", 512))
    return create_loss(loss["name"], max(2, num_classes), dim, **dict(loss.get("options") or {})).embedding_space


def space_of_meta(meta: dict) -> EmbeddingSpace:
    """The space recorded in checkpoint ``meta`` (derived from its recipe for older checkpoints)."""
    if meta.get("embedding_space"):
        return EmbeddingSpace.from_dict(meta["embedding_space"])
    return space_of_recipe(meta["recipe"], len(meta.get("classes") or ()))
