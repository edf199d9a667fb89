"""Class priors: the expression frequencies a model learned, and predicting under others.

A classifier trained with cross-entropy estimates ``p_train(class | face)``, which carries the
training set's class frequencies: FER2013 has 25% happy faces and 1.5% disgusted ones, so a
doubtful disgusted face is called angry. Where expressions come in other proportions (a lab
dataset that poses each expression equally often, such as CK+ or JAFFE) the Bayes-optimal
prediction for that population adds ``log p_target(class) - log p_train(class)`` to every logit
(logit adjustment: Saerens et al., Neural Computation 2002; Menon et al., ICLR 2021). Nothing is
fitted: the offset follows from the two priors.

* ``prior="train"`` (the default everywhere): the model as trained; the protocol's numbers.
* ``prior="uniform"``: every expression equally likely (posed and lab photos).
* a mapping ``{class: weight}`` (weights are normalised; every class of the model must appear):
  the frequencies of the user's own population.

Training records ``class_prior`` (the training labels' frequencies) in every checkpoint's meta;
a checkpoint without it cannot predict under another prior and says so.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import CheckpointError, ConfigError

PRIORS = ("train", "uniform")


def class_frequencies(imageset, num_classes: int) -> list[float]:
    """The class frequencies of a training set: the mean soft label where it has soft labels
    (FER+ probability labels), else the share of each hard label; unlabelled items left out. A
    class with no image counts as one, so that its log-frequency stays finite."""
    labels = np.asarray(imageset.labels)
    labelled = labels >= 0
    soft = getattr(imageset, "soft_labels", None)
    if soft is not None:
        weights = np.asarray(soft, dtype=np.float64)[labelled].sum(0)
    else:
        weights = np.bincount(labels[labelled], minlength=num_classes).astype(np.float64)
    weights = np.where(weights > 0, weights, 1.0)
    return [float(w) for w in weights / weights.sum()]


def check_prior(prior) -> str | Mapping:
    if isinstance(prior, Mapping) or prior in PRIORS:
        return prior
    raise ConfigError(f"unknown prior {prior!r}; use one of {', '.join(PRIORS)} or a {{class: weight}} mapping")


def prior_name(prior) -> str:
    """``train``, ``uniform`` or ``class=weight,...``: how results and reports name a prior."""
    if isinstance(prior, Mapping):
        return ",".join(f"{name}={float(weight):g}" for name, weight in prior.items())
    return str(prior)


def logit_offset(meta: dict, prior="train") -> np.ndarray | None:
    """What to add to a model's logits to predict under ``prior`` (``None`` for ``"train"``)."""
    check_prior(prior)
    if isinstance(prior, str) and prior == "train":
        return None
    classes = list(meta["classes"])
    trained = meta.get("class_prior")
    if trained is None:
        raise CheckpointError(
            "this checkpoint does not record the class frequencies it was trained on (meta 'class_prior': "
            "older files lack it; `benchmarks/class_prior.py --write` adds it); it can only predict with prior='train'"
        )
    trained = np.asarray(trained, dtype=np.float64)
    if trained.shape != (len(classes),) or not np.all(trained > 0):
        raise CheckpointError(f"the checkpoint's class_prior {trained.tolist()} does not fit its classes {classes}")
    if isinstance(prior, Mapping):
        unknown = sorted(set(prior) - set(classes))
        missing = [c for c in classes if c not in prior]
        if unknown or missing:
            raise ConfigError(
                f"a prior must give a weight to each of the model's classes {classes}"
                + (f"; unknown: {unknown}" if unknown else "")
                + (f"; missing: {missing}" if missing else "")
            )
        target = np.asarray([float(prior[c]) for c in classes])
        if not np.all(np.isfinite(target)) or np.any(target <= 0):
            raise ConfigError(f"prior weights must be positive numbers, got {dict(prior)}")
    else:  # uniform
        target = np.ones(len(classes))
    target = target / target.sum()
    return (np.log(target) - np.log(trained / trained.sum())).astype(np.float32)
