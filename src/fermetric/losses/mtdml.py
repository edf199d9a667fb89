"""Multi-threshold triplet loss of MT-DML (Yang et al., Pattern Recognition 156:110711, 2024)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .base import LOSSES, MetricLoss
from .functional import (
    LossInputError,
    label_masks,
    pairwise_distances,
)
from .pml import pml_component
from .space import L2, RAW, EmbeddingSpace

SPACINGS = ("linear", "geometric")
DUAL_NEGATIVES = ("own", "shared")


@LOSSES.register("mtdml")
class MultiThresholdTripletLoss(MetricLoss):
    """Batch-hard triplet loss with one margin (threshold) per embedding slice, plus the dual term.

    Paper (Yang et al. 2024, arXiv 2406.16434): the best triplet threshold differs between datasets
    and classes, so N thresholds sampled over a valid range each train one slice of the embedding;
    all slices train jointly and their concatenation is the feature. With batch-hard mining the
    plain triplet loss can make "incomplete judgements"; a dual triplet loss fixes this.

    fermetric design (``docs/METHODS.md`` section 1), every choice an option:

    - ``num_slices=8``: the ``[B, D]`` embedding is cut into ``num_slices`` equal slices of
      ``D / num_slices`` dims (64 with the recipe's D=512); ``D`` not divisible raises.
    - ``normalize=True``: each slice is L2-normalised on its own; distances are Euclidean.
    - ``margin_range=(0.1, 0.8)``, ``spacing="linear"``: tau_k evenly spaced over the range
      (``torch.linspace``; ``"geometric"`` uses evenly spaced logarithms and needs tau_min > 0).
      One slice gets tau_min. Exposed as the non-persistent buffer ``margins`` ``[num_slices]``.
    - Mining: batch hard per slice (hardest positive = farthest same-label sample, hardest
      negative = nearest other-label sample), over all slices at once on an ``[S, B, B]`` tensor.
    - ``dual=True``: for anchor a with hardest positive p and hardest negative n, the loss of a is
      ``[d(a,p) - d(a,n) + tau]_+ + dual_weight * [d(a,p) - d(p,n') + tau]_+`` where n' is the
      hardest negative of p (``dual_negative="own"``, the default, a reading of the paper's
      text; ``"shared"`` uses the anchor's own n, ``d(p, n)``, so the guess can be ablated).
      The two judgements are *summed* per anchor (the dual term is "added"
      to the anchor's judgement), so with ``dual_weight=1`` the loss is up to twice the plain one.
    - Reduction: mean over valid anchors (at least one positive and one negative in the batch;
      zero-loss anchors included, i.e. pytorch-metric-learning's ``MeanReducer``, not its default
      ``AvgNonZeroReducer``), then mean over slices. No valid anchor (one-class batch, all
      singletons) gives 0 with zero gradient.
    - ``miner`` (optional, a pytorch-metric-learning tuple miner: a class name, ``{name, options}``
      or an instance): each slice's triplets come from the miner, called on that slice, instead of
      batch-hard mining (pair miners' output becomes every triplet of each pair, by PML's
      ``convert_to_triplets``); the dual term then uses each triplet's positive p with p's own
      batch-hard negative (``"own"``) or the triplet's n (``"shared"``). ``reducer`` (a PML
      reducer, given the same way) replaces the mean over each slice's triplets, e.g.
      ``AvgNonZeroReducer`` for PML's default.

    With ``num_slices=1, dual=False`` this is exactly pytorch-metric-learning's
    ``TripletMarginLoss(margin=tau_min, reducer=MeanReducer())`` with ``BatchHardMiner``, and with
    a ``miner`` and ``reducer`` it is ``TripletMarginLoss(margin=tau_min, reducer=reducer)`` with
    that miner.

    Args:
        embedding_dim: optional; when given, divisibility by ``num_slices`` is checked at once.
    """

    def __init__(
        self,
        num_slices: int = 8,
        margin_range: tuple[float, float] = (0.1, 0.8),
        dual: bool = True,
        spacing: str = "linear",
        normalize: bool = True,
        dual_weight: float = 1.0,
        dual_negative: str = "own",
        embedding_dim: int | None = None,
        miner=None,
        reducer=None,
    ) -> None:
        super().__init__()
        if not isinstance(num_slices, int) or num_slices < 1:
            raise ConfigError(f"mtdml option num_slices={num_slices!r} must be a positive integer")
        if spacing not in SPACINGS:
            raise ConfigError(f"mtdml option spacing={spacing!r} is unknown; use one of {', '.join(SPACINGS)}")
        low, high = (float(v) for v in margin_range)
        if not 0.0 <= low <= high or (spacing == "geometric" and low <= 0.0):
            raise ConfigError(
                f"mtdml option margin_range={list(margin_range)} must be [min, max] with "
                f"0 {'<' if spacing == 'geometric' else '<='} min <= max"
            )
        if dual_negative not in DUAL_NEGATIVES:
            raise ConfigError(
                f"mtdml option dual_negative={dual_negative!r} is unknown; use one of {', '.join(DUAL_NEGATIVES)}"
            )
        if embedding_dim is not None and embedding_dim % num_slices:
            raise ConfigError(
                f"mtdml: embedding_dim={embedding_dim} is not divisible by num_slices={num_slices}; "
                "set model.embedding_dim to a multiple of it or change loss.options.num_slices"
            )
        self.num_slices = num_slices
        self.margin_range = (low, high)
        self.spacing = spacing
        self.dual = bool(dual)
        self.dual_weight = float(dual_weight)
        self.dual_negative = dual_negative
        self.normalize = bool(normalize)
        self.miner = pml_component(miner, "Miner")
        self.reducer = pml_component(reducer, "Reducer")
        if spacing == "linear":
            margins = torch.linspace(low, high, num_slices, dtype=torch.float64)
        else:
            margins = torch.logspace(math.log10(low), math.log10(high), num_slices, dtype=torch.float64)
        # Derived from the options, so not saved in checkpoints; moves with .to(device).
        self.register_buffer("margins", margins.float(), persistent=False)

    @property
    def embedding_space(self) -> EmbeddingSpace:
        """Each slice L2-normalised on its own (the space the triplets are judged in), or raw."""
        if not self.normalize:
            return RAW
        return L2 if self.num_slices == 1 else EmbeddingSpace("sliced_l2", self.num_slices)

    loss_name = "mtdml"

    def check(self, embeddings, labels, logits) -> None:
        if embeddings.shape[1] % self.num_slices:
            raise LossInputError(
                f"mtdml: embedding dim {embeddings.shape[1]} is not divisible by "
                f"num_slices={self.num_slices}; set model.embedding_dim to a multiple of it or "
                "change loss.options.num_slices"
            )

    def compute(self, z: torch.Tensor, labels: torch.Tensor, logits=None) -> torch.Tensor:
        # z: each slice normalised already (embedding_space); slices become a batch axis
        batch, dim = z.shape
        z = z.reshape(batch, self.num_slices, dim // self.num_slices).transpose(0, 1)  # [S, B, d]
        dist = pairwise_distances(z)  # [S, B, B]
        positives, negatives = label_masks(labels)
        # Indices are picked without gradient; the distances are gathered with it.
        with torch.no_grad():
            hardest_pos = dist.masked_fill(~positives, float("-inf")).argmax(-1)  # [S, B]
            hardest_neg = dist.masked_fill(~negatives, float("inf")).argmin(-1)
        own_negative = dist.gather(-1, hardest_neg.unsqueeze(-1)).squeeze(-1)  # [S, B]: d(i, hardest neg of i)
        if self.miner is None:  # batch hard, all slices at once: one triplet per anchor and slice
            every = torch.arange(self.num_slices, device=z.device).unsqueeze(1)  # [S, 1]
            anchors = torch.arange(batch, device=z.device).expand(self.num_slices, batch)
            loss = self._triplet_terms(dist, own_negative, every, anchors, hardest_pos, hardest_neg)  # [S, B]
            valid = positives.any(1) & negatives.any(1)  # [B]: anchors with a positive and a negative
            if self.reducer is None:  # the mean over valid anchors, without a host sync (torch.compile)
                weights = valid.to(dist.dtype)
                return ((loss * weights).sum(-1) / weights.sum().clamp_min(1.0)).mean()
            a = valid.nonzero().squeeze(1)
            triplets = [(a, hardest_pos[s, a], hardest_neg[s, a]) for s in range(self.num_slices)]
            losses = [loss[s, a] for s in range(self.num_slices)]
        else:
            triplets = [self._mined(z[s], labels) for s in range(self.num_slices)]
            losses = []
            for s, (a, p, n) in enumerate(triplets):  # one slice at a time: [1, T] triplets
                where = torch.tensor([[s]], device=z.device)
                losses.append(self._triplet_terms(dist, own_negative, where, a[None], p[None], n[None])[0])
        per_slice = [self.reduce(losses[s], triplets[s], "triplet", z[s], labels) for s in range(self.num_slices)]
        return torch.stack(per_slice).mean()

    def _triplet_terms(self, dist, own_negative, slices, a, p, n) -> torch.Tensor:
        """The (dual) triplet losses ``[S', T]`` of triplets ``a, p, n [S', T]`` in ``slices [S', 1]``."""
        d = lambda x, y: dist[slices, x, y]  # noqa: E731 - distances within each triplet's slice
        d_ap = d(a, p)
        tau = self.margins.to(dist.dtype)[slices]
        loss = F.relu(d_ap - d(a, n) + tau)
        if self.dual:
            # "own": n' is p's own batch-hard negative; "shared": the anchor's n, judged from p
            d_pn = own_negative[slices, p] if self.dual_negative == "own" else d(p, n)
            loss = loss + self.dual_weight * F.relu(d_ap - d_pn + tau)
        return loss

    def _mined(self, z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from pytorch_metric_learning.utils.loss_and_miner_utils import convert_to_triplets

        with torch.no_grad():
            mined = self.miner(z, labels)
        return tuple(convert_to_triplets(mined, labels, t_per_anchor="all"))  # as TripletMarginLoss does

    def extra_repr(self) -> str:
        return (
            f"num_slices={self.num_slices}, margin_range={self.margin_range}, spacing={self.spacing!r}, "
            f"dual={self.dual}, dual_weight={self.dual_weight}, dual_negative={self.dual_negative!r}, "
            f"normalize={self.normalize}, miner={type(self.miner).__name__ if self.miner is not None else None}, "
            f"reducer={type(self.reducer).__name__ if self.reducer is not None else None}"
        )
