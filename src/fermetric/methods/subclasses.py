"""DMSL sub-class discovery ("mitosis"), Marrero Fernandez et al., arXiv 2001.06612.

DMSL's structured loss makes the embedding a mixture of Gaussians, one per class, so a class that
hides several expressions (a smile and a laugh are both *happy*) shows up as several Gaussian
modes. Mitosis finds them and turns them into labels:

* :func:`discover_subclasses` (pure numpy / scikit-learn): for every class with at least
  ``min_samples`` samples, fit a Gaussian mixture with ``min(n // samples_per_component,
  max_components)`` components (the paper's ``min(n/10, k)``) and relabel the samples as
  sub-classes ``"happy/0"``, ``"happy/1"``... The result is a :class:`SubclassAssignment`.
* :func:`mitosis`: the semi-supervised procedure. Repeat ``rounds`` times {train
  ``epochs_per_round`` epochs on the current (sub-)labels; embed the training set; discover
  sub-classes with ``k`` growing 2, 3, ... up to ``max_components``}.
* :func:`fit_centroids` / :func:`predict_nearest_centroid`: DMSL predicts the nearest class
  centroid; fermetric re-estimates the centroids on the whole training set after training
  (methods.md, design), for classes or sub-classes. Sub-class predictions map back to their
  parent class for accuracy.
* ``fermetric subclasses`` (``cli/subclasses.py``) writes the sub-class structure for a person
  to inspect (counts, the images nearest each sub-centroid, a contact sheet).

Design decisions (all options, defaults stated):

* ``select="fixed"`` uses the paper's component count; ``select="bic"`` fits 1..that count and
  keeps the lowest Bayesian information criterion, so a class only splits when the data say so.
* ``covariance_type="full"`` as in the paper. Each class's embeddings are first standardised by
  one scalar (their mean per-dimension standard deviation; this does not change a mixture's
  partition), then ``reg_covar=1e-4`` is added to every covariance diagonal (scikit-learn's
  absolute ``reg_covar``; its own default is 1e-6): 1e-4 of the class's own variance, whatever
  the embedding's scale, yet it keeps a full covariance invertible when a component has fewer
  samples than dimensions, the normal case here (100 samples, 64 dimensions, up to 4
  components). ``means`` stay in the embedding's own units.
* The embedding space is the one the model's loss measures (``EmbeddingSpace``, recorded in the
  checkpoint): raw for DMSL (its loss does not normalise unless ``normalize: true``), per-slice
  normalised for MT-DML, L2-normalised for every
  other recipe (methods.md's shared rule).
* Sub-classes of a class are numbered by decreasing size (``happy/0`` is the largest); global
  sub-class ids run over classes in class order. Components that end up with no sample after
  hard assignment are dropped.
* A class whose mixture cannot be fitted (fewer distinct embeddings than components, or a
  numerical failure) keeps a single sub-class and a :class:`SubclassWarning` says why. A class
  below ``min_samples`` keeps a single sub-class silently (that is the rule, not a failure).
  A class with no labelled sample gets no sub-class; unlabelled samples (label -1) keep -1.
* Sub-centroids (``means``) are the plain means of the samples assigned to each sub-class, the
  same estimate :func:`fit_centroids` uses, so the assignment doubles as a nearest-centroid model.
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.checkpoint import load_model
from ..engine.evaluate import embed, preprocessing_from_meta
from ..engine.train import WEIGHTS_FILE, train
from ..errors import ConfigError, DataError
from ..losses.dmsl import class_centroids, nearest_centroid_predict
from ..losses.space import RAW, EmbeddingSpace, space_of_recipe
from ..reports.sheets import image_grid

if TYPE_CHECKING:  # heavy imports stay lazy: `fermetric --help` must not import torch
    from ..data.base import ImageSet

SELECT_MODES = ("fixed", "bic")
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
SEPARATOR = "/"  # sub-class names are "<class>/<index>"


class SubclassWarning(UserWarning):
    """A class could not be split as asked and keeps a single sub-class."""


@dataclass
class SubclassAssignment:
    """Sub-classes discovered inside the classes of a labelled set.

    Attributes:
        sublabels: int64 ``[N]`` global sub-class id per sample, -1 where the label was -1.
        parent: int64 ``[S]`` the original class of each sub-class.
        counts: int64 ``[S]`` samples per sub-class.
        means: float32 ``[S, D]`` sub-centroids (means of the assigned samples).
        names: ``S`` names ``"<class>/<i>"``, ``i`` counting from 0 by decreasing size.
        classes: names of the original classes (``num_classes`` of them).
        options: the discovery options, for the record.
        info: per class name, what was fitted (``n``, ``components``, ``reason``, ``bic``).
    """

    sublabels: np.ndarray
    parent: np.ndarray
    counts: np.ndarray
    means: np.ndarray
    names: list[str]
    classes: tuple[str, ...]
    options: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def num_subclasses(self) -> int:
        return len(self.parent)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subclasses_of(self, class_index: int) -> np.ndarray:
        """Global ids of the sub-classes of one original class (largest first)."""
        return np.flatnonzero(self.parent == class_index)

    def to_parent(self, sublabels) -> np.ndarray:
        """Map sub-class ids (array-like) to original class ids; -1 stays -1."""
        sub = np.asarray(sublabels, dtype=np.int64)
        bad = (sub < -1) | (sub >= self.num_subclasses)
        if bad.any():
            raise DataError(
                f"sub-class id {int(sub[bad].flat[0])} is out of range [-1, {self.num_subclasses}); "
                "use the assignment these ids came from"
            )
        return np.where(sub >= 0, self.parent[np.clip(sub, 0, None)], -1)

    def to_dict(self) -> dict:
        return {
            "classes": list(self.classes),
            "names": list(self.names),
            "parent": self.parent.tolist(),
            "counts": self.counts.tolist(),
            "means": self.means.astype(float).tolist(),
            "sublabels": self.sublabels.tolist(),
            "options": self.options,
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, data: dict) -> SubclassAssignment:
        try:
            dim = len(data["means"][0]) if data["means"] else 0
            return cls(
                sublabels=np.asarray(data["sublabels"], dtype=np.int64),
                parent=np.asarray(data["parent"], dtype=np.int64),
                counts=np.asarray(data["counts"], dtype=np.int64),
                means=np.asarray(data["means"], dtype=np.float32).reshape(-1, dim),
                names=list(data["names"]),
                classes=tuple(data["classes"]),
                options=dict(data.get("options", {})),
                info=dict(data.get("info", {})),
            )
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise DataError(f"not a sub-class assignment ({err!r}); write it with SubclassAssignment.save") from None

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict()))
        return path

    @classmethod
    def load(cls, path) -> SubclassAssignment:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(
                f"cannot read sub-class assignment {path}: {err}; write it with SubclassAssignment.save"
            ) from None
        return cls.from_dict(data)


def _check_inputs(embeddings, labels, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(embeddings)
    y = np.asarray(labels)
    if x.ndim != 2:
        raise DataError(f"embeddings must be [N, D], got shape {x.shape}")
    if y.shape != (len(x),):
        raise DataError(f"labels must be [N] with N={len(x)} (one per embedding), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"labels must be integers, got {y.dtype}")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    if len(y) and (y.min() < -1 or y.max() >= num_classes):
        raise DataError(f"labels must lie in [-1, {num_classes}), found {int(y.min())}..{int(y.max())}")
    if not np.isfinite(x).all():
        rows = int((~np.isfinite(x)).any(axis=1).sum())
        raise DataError(f"{rows} embedding(s) contain NaN/Inf; the model diverged - use an earlier checkpoint")
    return x.astype(np.float64), y.astype(np.int64)


def _fit_mixture(x: np.ndarray, k: int, covariance_type: str, reg_covar: float, n_init: int, max_iter: int, seed: int):
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    gmm = GaussianMixture(
        n_components=k,
        covariance_type=covariance_type,
        reg_covar=reg_covar,
        n_init=n_init,
        max_iter=max_iter,
        random_state=seed,
    )
    # One BLAS/OpenMP thread: EM on one class's [n, D] matrices is small-matrix work where thread
    # hand-offs cost more than they save (FER2013-sized input: 12 s of CPU instead of 230 s).
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        # A mixture that stops at max_iter is still a usable partition; say nothing.
        warnings.filterwarnings("ignore", message=".*did not converge.*")
        gmm.fit(x)
    return gmm


def discover_subclasses(
    embeddings,
    labels,
    num_classes: int,
    max_components: int = 4,
    min_samples: int = 100,
    samples_per_component: int = 10,
    covariance_type: str = "full",
    select: str = "fixed",
    reg_covar: float = 1e-4,
    n_init: int = 1,
    max_iter: int = 100,
    seed: int = 0,
    classes=None,
) -> SubclassAssignment:
    """Split every large-enough class into Gaussian sub-classes.

    Args:
        embeddings: ``[N, D]`` float embeddings (numpy or anything ``np.asarray`` takes).
        labels: int ``[N]`` class ids in ``[0, num_classes)``, -1 for unlabelled samples.
        num_classes: number of original classes.
        max_components: the paper's ``k``, the most sub-classes one class may get (default 4).
        min_samples: classes with fewer labelled samples keep one sub-class (default 100).
        samples_per_component: a class of ``n`` samples gets at most ``n // samples_per_component``
            components (default 10, the paper's ``n/10``); always at least one.
        covariance_type: scikit-learn's ``GaussianMixture`` covariance type (default ``"full"``).
        select: ``"fixed"`` (default) fits exactly ``min(n // samples_per_component,
            max_components)`` components; ``"bic"`` fits 1..that many and keeps the lowest BIC.
        reg_covar: added to covariance diagonals (absolute; default 1e-4, see the module notes).
        n_init, max_iter: EM restarts and iterations per fit (scikit-learn's defaults 1 and 100).
        seed: ``random_state`` of every fit; the result is a deterministic function of the inputs.
        classes: names of the original classes (default ``"class0"``, ``"class1"``...).
    """
    x, y = _check_inputs(embeddings, labels, num_classes)
    if max_components < 1 or min_samples < 1 or samples_per_component < 1:
        raise ConfigError(
            f"max_components, min_samples and samples_per_component must be >= 1, got "
            f"{max_components}, {min_samples}, {samples_per_component}"
        )
    if select not in SELECT_MODES:
        raise ConfigError(f"select must be one of {SELECT_MODES}, got {select!r}")
    if covariance_type not in COVARIANCE_TYPES:
        raise ConfigError(f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}")
    if classes is None:
        classes = tuple(f"class{c}" for c in range(num_classes))
    classes = tuple(str(c) for c in classes)
    if len(classes) != num_classes:
        raise ConfigError(f"classes has {len(classes)} names but num_classes is {num_classes}")

    sublabels = np.full(len(y), -1, dtype=np.int64)
    parent: list[int] = []
    names: list[str] = []
    means: list[np.ndarray] = []
    counts: list[int] = []
    info: dict[str, Any] = {}
    for c, class_name in enumerate(classes):
        members = np.flatnonzero(y == c)
        n = len(members)
        record: dict[str, Any] = {"n": n}
        info[class_name] = record
        if n == 0:
            record.update(components=0, reason="no labelled sample")
            continue
        if n < min_samples:
            most = 1
            record["reason"] = f"fewer than min_samples={min_samples}"
        else:
            most = max(1, min(n // samples_per_component, max_components))
        components = np.zeros(n, dtype=np.int64)
        if most > 1:
            components = _split_class(
                x[members], most, class_name, record, covariance_type, select, reg_covar, n_init, max_iter, seed
            )
        # Number the class's components by decreasing size (stable, so ties keep the fit's order)
        # and drop components that received no sample.
        sizes = np.bincount(components, minlength=components.max() + 1)
        order = [j for j in np.argsort(-sizes, kind="stable") if sizes[j] > 0]
        record["components"] = len(order)
        if len(order) < sizes.size:
            record["reason"] = f"{sizes.size - len(order)} of {sizes.size} fitted components received no sample"
        for rank, j in enumerate(order):
            sub_id = len(parent)
            chosen = members[components == j]
            sublabels[chosen] = sub_id
            parent.append(c)
            names.append(f"{class_name}{SEPARATOR}{rank}")
            counts.append(len(chosen))
            means.append(x[chosen].mean(axis=0))

    dim = x.shape[1]
    return SubclassAssignment(
        sublabels=sublabels,
        parent=np.asarray(parent, dtype=np.int64),
        counts=np.asarray(counts, dtype=np.int64),
        means=np.asarray(means, dtype=np.float32).reshape(-1, dim),
        names=names,
        classes=classes,
        options=dict(
            max_components=max_components,
            min_samples=min_samples,
            samples_per_component=samples_per_component,
            covariance_type=covariance_type,
            select=select,
            reg_covar=reg_covar,
            n_init=n_init,
            max_iter=max_iter,
            seed=seed,
        ),
        info=info,
    )


def _split_class(
    x: np.ndarray,
    most: int,
    class_name: str,
    record: dict,
    covariance_type: str,
    select: str,
    reg_covar: float,
    n_init: int,
    max_iter: int,
    seed: int,
) -> np.ndarray:
    """Component index per sample of one class; a single component when no split can be fitted."""
    distinct = len(np.unique(x, axis=0))
    if distinct < most:
        # k-means initialisation cannot place more centres than there are distinct points.
        reason = f"only {distinct} distinct embedding(s) for {most} components"
        warnings.warn(f"class {class_name!r}: {reason}; keeping one sub-class", SubclassWarning, stacklevel=3)
        record["reason"] = reason
        return np.zeros(len(x), dtype=np.int64)
    # One scalar standardisation per class: a Gaussian mixture's partition does not change under
    # it, but the absolute reg_covar then means the same for every embedding scale (a raw DMSL
    # embedding may be 1e-3 wide or 10 wide; L2-normalised ones have variance ~1/D).
    spread = float(np.sqrt(np.mean(np.var(x, axis=0))))
    x = (x - x.mean(axis=0)) / (spread if spread > 0 else 1.0)
    candidates = [most] if select == "fixed" else list(range(1, most + 1))
    best, best_bic, bics = None, np.inf, []
    for k in candidates:
        try:
            gmm = _fit_mixture(x, k, covariance_type, reg_covar, n_init, max_iter, seed)
        except (ValueError, np.linalg.LinAlgError) as err:
            # scikit-learn raises ValueError for ill-defined (singular) covariances.
            reason = f"Gaussian mixture with {k} components failed ({str(err).split('. ')[0].split(' (')[0]})"
            warnings.warn(
                f"class {class_name!r}: {reason}; keeping one sub-class "
                "(raise reg_covar to regularise the covariances)",
                SubclassWarning,
                stacklevel=3,
            )
            record["reason"] = reason
            return np.zeros(len(x), dtype=np.int64)
        if select == "bic":
            bic = float(gmm.bic(x))
            bics.append(bic)
            if bic < best_bic:
                best, best_bic = gmm, bic
        else:
            best = gmm
    if select == "bic":
        record["bic"] = bics
    return best.predict(x).astype(np.int64)


def assign_to_subclasses(embeddings, labels, assignment: SubclassAssignment) -> np.ndarray:
    """Sub-label new samples whose class is known: the nearest sub-centroid *of their own class*.

    Used for validation/test sets during mitosis, so that their parent label is kept exactly.
    Samples labelled -1, or of a class that has no sub-class, get -1.
    """
    x, y = _check_inputs(embeddings, labels, assignment.num_classes)
    if len(x) and x.shape[1] != assignment.means.shape[1]:
        raise DataError(
            f"embeddings have {x.shape[1]} dimensions but the sub-centroids have "
            f"{assignment.means.shape[1]}; embed with the model the assignment came from"
        )
    out = np.full(len(y), -1, dtype=np.int64)
    if assignment.num_subclasses == 0:
        return out
    means = assignment.means.astype(np.float64)
    # ||x||^2 - 2 x.m + ||m||^2: an [N, S] matrix, never the [N, S, D] difference tensor.
    distances = (x**2).sum(1)[:, None] - 2.0 * x @ means.T + (means**2).sum(1)[None, :]
    distances[assignment.parent[None, :] != y[:, None]] = np.inf
    has_subclass = np.isin(y, assignment.parent)
    out[has_subclass] = distances[has_subclass].argmin(axis=1)
    return out


def subclass_imageset(imageset: ImageSet, sublabels, assignment: SubclassAssignment) -> ImageSet:
    """A copy of ``imageset`` whose labels are sub-class ids and whose classes are sub-class names.

    ``soft_labels`` are dropped (they are per original class; mitosis trains on hard sub-labels).
    ``info["parent"]`` and ``info["parent_classes"]`` record the mapping back.
    """
    sublabels = np.asarray(sublabels, dtype=np.int64)
    if sublabels.shape != (len(imageset),):
        raise DataError(f"need one sub-label per image ({len(imageset)}), got shape {sublabels.shape}")
    return replace(
        imageset,
        labels=sublabels,
        classes=tuple(assignment.names),
        soft_labels=None,
        info={**imageset.info, "parent": assignment.parent.tolist(), "parent_classes": list(assignment.classes)},
    )


# ------------------------------------------------------------------------ embedding space
def _to_numpy(array) -> np.ndarray:
    if hasattr(array, "detach"):  # a torch tensor
        array = array.detach().float().cpu().numpy()
    return np.asarray(array)


def embed_set(
    model,
    imageset: ImageSet,
    preprocessing,
    device,
    space: EmbeddingSpace,
    batch_size: int = 256,
    tta: str = "none",
    precision: str = "auto",
    progress=None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(logits, embeddings)`` of a whole set as float32 numpy, embeddings L2-normalised if asked."""
    logits, embeddings = embed(
        model, imageset, preprocessing, device, batch_size=batch_size, tta=tta, precision=precision, progress=progress
    )
    embeddings = _to_numpy(embeddings).astype(np.float32)
    return _to_numpy(logits).astype(np.float32), space(embeddings)


def nearest_centroid(embeddings, centroids) -> np.ndarray:
    """Index of the nearest centroid per row (centroids that are NaN, i.e. empty classes, never win)."""
    import torch

    z = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
    c = torch.as_tensor(np.asarray(centroids, dtype=np.float32))
    return nearest_centroid_predict(z, c).cpu().numpy().astype(np.int64)


# ----------------------------------------------------------------- nearest-centroid prediction
def fit_centroids(
    model,
    train_set: ImageSet,
    preprocessing,
    device="cpu",
    labels=None,
    num_classes: int | None = None,
    space: EmbeddingSpace = RAW,
    batch_size: int = 256,
    tta: str = "none",
) -> np.ndarray:
    """Class centroids ``[C, D]`` re-estimated on the whole training set (methods.md, design).

    DMSL predicts the nearest class centroid; the loss only ever sees batch means, so after
    training the centroids are the means over every training embedding. Pass ``labels`` (e.g. an
    assignment's ``sublabels``) and ``num_classes`` for sub-class centroids; a class without a
    labelled item gets a NaN row that :func:`nearest_centroid` never predicts. ``space``: the
    model's embedding space (``space_of_meta(meta)``).
    """
    import torch

    labels = train_set.labels if labels is None else np.asarray(labels, dtype=np.int64)
    num_classes = train_set.num_classes if num_classes is None else num_classes
    if len(labels) != len(train_set):
        raise DataError(f"need one label per training image ({len(train_set)}), got {len(labels)}")
    _, z = embed_set(model, train_set, preprocessing, device, space, batch_size, tta)
    centroids = class_centroids(torch.from_numpy(z), torch.from_numpy(labels.astype(np.int64)), num_classes)
    return centroids.cpu().numpy().astype(np.float32)


def predict_nearest_centroid(
    model,
    imageset: ImageSet,
    preprocessing,
    centroids,
    device="cpu",
    parent=None,
    space: EmbeddingSpace = RAW,
    batch_size: int = 256,
    tta: str = "none",
) -> np.ndarray:
    """Predicted class per image: the nearest centroid, mapped through ``parent`` when given.

    With sub-class centroids (``assignment.means``) pass ``parent=assignment.parent`` to get
    predictions of the original classes, the ones accuracy is measured on.
    """
    _, z = embed_set(model, imageset, preprocessing, device, space, batch_size, tta)
    predicted = nearest_centroid(z, centroids)
    return predicted if parent is None else np.asarray(parent, dtype=np.int64)[predicted]


def _accuracy(predicted: np.ndarray, labels: np.ndarray) -> float | None:
    known = labels >= 0
    return float(np.mean(predicted[known] == labels[known])) if known.any() else None


# -------------------------------------------------------------------------------------- mitosis
@dataclass
class MitosisResult:
    """What :func:`mitosis` returns: the final sub-classes, the last model and one record per round."""

    assignment: SubclassAssignment
    model: Any
    meta: dict
    history: list[dict]
    out_dir: Path


def mitosis(
    recipe,
    train_set: ImageSet,
    val_set: ImageSet | None,
    out_dir,
    rounds: int = 3,
    epochs_per_round: int | None = None,
    max_components: int = 4,
    min_samples: int = 100,
    samples_per_component: int = 10,
    select: str = "fixed",
    device="cpu",
    seed: int = 0,
    max_steps: int | None = None,
    batch_size: int = 256,
    progress: bool = False,
    warm_start: bool = True,
    ce_labels: str = "parent",
) -> MitosisResult:
    """DMSL's semi-supervised sub-class discovery.

    Round ``r`` (0-based): train ``epochs_per_round`` epochs (default: the recipe's ``epochs``);
    embed the training set; split each class of >= ``min_samples`` images into
    ``min(n // samples_per_component, k_r)`` Gaussian sub-classes with ``k_r = min(2 + r,
    max_components)`` (k grows from 2 to the maximum). Round 0 trains on the expressions; round
    ``r > 0`` gives the structured (metric) loss the sub-classes of round ``r - 1``.

    What comes from where:

    * From the authors' code (``train_mitosis.py``, branch ``mitosis`` of
      ``pedrodiamel/ferattention``), the defaults: ``warm_start=True`` keeps training the same
      network across rounds (round ``r`` starts from round ``r - 1``'s selected weights), and
      ``ce_labels="parent"`` keeps cross-entropy on the original expression labels, so the
      classifier keeps one output per expression and only the structured loss sees sub-classes.
    * Options that restore fermetric's earlier reading: ``warm_start=False`` (a fresh model from
      the recipe each round) and ``ce_labels="subclasses"`` (the classifier is trained on the
      sub-classes, one output each; a fresh model then, since the head changes size).
    * Design choices: the growth of k and the GMM fit (see :func:`discover_subclasses`).

    The validation set, whose sub-classes are unknown, gets for each image the nearest
    sub-centroid of its own (known) class (only needed with ``ce_labels="subclasses"``).
    Accuracy is always reported on the original classes (``val_centroid_accuracy``: nearest
    sub-centroid, mapped to its parent; ``val_classifier_accuracy``: the classifier head).

    The returned ``assignment`` comes from the last round's model, so its ``means`` are that
    model's sub-centroids: ``nearest_centroid(z, assignment.means)`` mapped through
    ``assignment.parent`` is the DMSL prediction. Files under ``out_dir``: ``round<r>/`` (the
    engine's run directory and that round's ``subclasses.json``), ``subclasses.json`` (final)
    and ``mitosis.json`` (options and history).
    """
    from dataclasses import replace as replace_dataclass

    if rounds < 1:
        raise ConfigError(f"mitosis rounds must be >= 1, got {rounds}")
    if max_components < 1:
        raise ConfigError(f"mitosis max_components must be >= 1, got {max_components}")
    if epochs_per_round is not None and epochs_per_round < 1:
        raise ConfigError(f"mitosis epochs_per_round must be >= 1, got {epochs_per_round}")
    if ce_labels not in ("parent", "subclasses"):
        raise ConfigError(f"mitosis ce_labels must be 'parent' or 'subclasses', got {ce_labels!r}")
    if warm_start and ce_labels == "subclasses":
        raise ConfigError(
            "mitosis warm_start needs ce_labels='parent': a classifier over the sub-classes changes size every round"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    round_recipe = recipe if epochs_per_round is None else replace_dataclass(recipe, epochs=epochs_per_round)
    space = space_of_recipe(recipe)

    current_train, current_val = train_set, val_set
    trained_parent = np.arange(train_set.num_classes)  # classifier output -> original class
    history: list[dict] = []
    assignment = model = meta = None
    previous_dir = None
    for r in range(rounds):
        round_dir = out_dir / f"round{r}"
        extra = {}
        if assignment is not None and ce_labels == "parent":
            extra = {"metric_labels": assignment.sublabels, "metric_classes": assignment.num_subclasses}
        if warm_start and previous_dir is not None:
            extra["init_from"] = previous_dir / WEIGHTS_FILE
        summary = train(
            round_recipe,
            current_train,
            current_val,
            round_dir,
            device=device,
            seed=seed,
            resume=False,
            on_nan="stop",
            max_steps=max_steps,
            progress=progress,
            **extra,
        )
        previous_dir = round_dir
        # The engine's selected model (best validation epoch, else the last one).
        model, meta = load_model(round_dir / WEIGHTS_FILE, device)
        preprocessing = preprocessing_from_meta(meta)
        _, z_train = embed_set(model, train_set, preprocessing, device, space, batch_size)
        k = min(2 + r, max_components)
        assignment = discover_subclasses(
            z_train,
            train_set.labels,
            train_set.num_classes,
            max_components=k,
            min_samples=min_samples,
            samples_per_component=samples_per_component,
            select=select,
            seed=seed,
            classes=train_set.classes,
        )
        assignment.save(round_dir / "subclasses.json")
        record = {
            "round": r,
            "k": k,
            "num_subclasses": assignment.num_subclasses,
            "subclass_counts": dict(zip(assignment.names, assignment.counts.tolist())),
            "warm_start": bool(extra.get("init_from")),
            "train": _train_summary(summary),
        }
        if val_set is not None and len(val_set):
            logits, z_val = embed_set(model, val_set, preprocessing, device, space, batch_size)
            record["val_centroid_accuracy"] = _accuracy(
                assignment.parent[nearest_centroid(z_val, assignment.means)], val_set.labels
            )
            record["val_classifier_accuracy"] = _accuracy(trained_parent[logits.argmax(1)], val_set.labels)
            if ce_labels == "subclasses":
                current_val = subclass_imageset(
                    val_set, assign_to_subclasses(z_val, val_set.labels, assignment), assignment
                )
        history.append(record)
        if ce_labels == "subclasses":
            current_train = subclass_imageset(train_set, assignment.sublabels, assignment)
            trained_parent = assignment.parent

    assignment.save(out_dir / "subclasses.json")
    options = dict(
        rounds=rounds,
        epochs_per_round=epochs_per_round,
        max_components=max_components,
        min_samples=min_samples,
        samples_per_component=samples_per_component,
        select=select,
        seed=seed,
        max_steps=max_steps,
        embedding_space=space.to_dict(),
        warm_start=warm_start,
        ce_labels=ce_labels,
    )
    (out_dir / "mitosis.json").write_text(json.dumps({"options": options, "history": history}, indent=2))
    return MitosisResult(assignment=assignment, model=model, meta=meta, history=history, out_dir=out_dir)


def _train_summary(results: dict) -> dict:
    """The few numbers of the engine's ``results.json`` that a mitosis round reports."""
    val = (results.get("metrics") or {}).get("val") or {}
    return {
        "steps": results.get("steps"),
        "epochs_completed": results.get("epochs_completed"),
        "selection": results.get("selection"),
        "val_subclass_accuracy": val.get("accuracy"),
        "out_dir": results.get("out_dir"),
    }


# ------------------------------------------------------------------------------------- outputs
def exemplars(embeddings, assignment: SubclassAssignment, per_subclass: int = 8) -> list[np.ndarray]:
    """Per sub-class, the indices of its members nearest its sub-centroid (nearest first)."""
    x = np.asarray(embeddings, dtype=np.float64)
    found = []
    for s in range(assignment.num_subclasses):
        members = np.flatnonzero(assignment.sublabels == s)
        distances = ((x[members] - assignment.means[s].astype(np.float64)) ** 2).sum(1)
        found.append(members[np.argsort(distances, kind="stable")[:per_subclass]])
    return found


def summary_dict(assignment: SubclassAssignment, paths, nearest: list[np.ndarray], **context) -> dict:
    """The inspectable summary written as ``subclasses.json`` by ``fermetric subclasses``."""
    classes = {}
    for c, name in enumerate(assignment.classes):
        subs = assignment.subclasses_of(c)
        classes[name] = {
            "n": int(assignment.counts[subs].sum()),
            "subclasses": {assignment.names[s]: int(assignment.counts[s]) for s in subs},
            **({"note": assignment.info[name]["reason"]} if "reason" in assignment.info.get(name, {}) else {}),
        }
    return {
        **context,
        "options": assignment.options,
        "num_subclasses": assignment.num_subclasses,
        "classes": classes,
        "subclasses": [
            {
                "name": assignment.names[s],
                "parent": assignment.classes[assignment.parent[s]],
                "count": int(assignment.counts[s]),
                "nearest": [paths[i] for i in nearest[s]],
            }
            for s in range(assignment.num_subclasses)
        ],
    }


def write_assignment_csv(path, assignment: SubclassAssignment, imageset: ImageSet) -> Path:
    """``path,label,subclass`` per image (names; empty for unlabelled images)."""
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "subclass"])
        for p, label, sub in zip(imageset.paths, imageset.labels, assignment.sublabels):
            writer.writerow(
                [p, imageset.classes[label] if label >= 0 else "", assignment.names[sub] if sub >= 0 else ""]
            )
    return path


def contact_sheet(
    path, images: np.ndarray, assignment: SubclassAssignment, nearest: list[np.ndarray], columns: int = 8
) -> Path:
    """A PNG grid: one row per sub-class, its images nearest the sub-centroid; the row's first
    tile is captioned with the sub-class name and size (:func:`~fermetric.reports.sheets.image_grid`)."""
    tiles, captions = [], []
    for s in range(max(assignment.num_subclasses, 1)):
        chosen = list(nearest[s][:columns]) if s < len(nearest) else []
        tiles += [images[i] for i in chosen] + [None] * (columns - len(chosen))
        title = f"{assignment.names[s]}\nn={int(assignment.counts[s])}" if s < assignment.num_subclasses else ""
        captions += [title] + [""] * (columns - 1)
    return image_grid(tiles, captions, path, columns=columns, tile_size=64)
