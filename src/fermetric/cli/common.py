"""What several commands share: loading a model, loading a dataset split for it, dataset options.

One copy of the "checkpoint + device, then the split in the model's class order" preamble that
``eval``, ``plot``, ``subclasses`` and ``index build`` start with.
"""

from __future__ import annotations

import json
import sys

from ..data import load_dataset, parse_data_arg
from ..engine import checkpoint
from ..engine.distributed import resolve_device
from ..engine.evaluate import align_classes, preprocessing_from_meta, restrict_to_classes
from ..errors import ConfigError
from ..fileio import json_default


def dataset_options(args) -> dict:
    """``fold`` / ``label_mode`` / ``skip_bad`` options that were given (loaders only get what they take)."""
    given = {key: getattr(args, key, None) for key in ("fold", "label_mode", "skip_bad")}
    return {key: value for key, value in given.items() if value is not None and value is not False}  # fold 0 counts


def load_model(args):
    """``(device, model, meta)`` of ``--checkpoint`` on ``--device`` (eval mode)."""
    device = resolve_device(getattr(args, "device", "auto"))
    model, meta = checkpoint.load_model(args.checkpoint, device=device)
    return device, model, meta


def load_split(args, meta: dict | None, split: str | None = None, classes: str = "all", align: bool = True):
    """``(imageset, name, root, left_out)``: ``--data``'s split (``--split`` unless given).

    ``meta`` (the model's) is read only for its classes: ``None`` with ``align=False`` and
    ``classes="all"``.

    ``align``: relabelled into the model's class order (a class the model lacks is refused).
    ``classes="shared"`` first leaves out the images of classes the model does not know
    (``left_out`` says which and how many; ``None`` otherwise).
    """
    if not getattr(args, "data", None):
        raise ConfigError(f"{args.command} needs --data DATASET=ROOT")
    name, root = parse_data_arg(args.data)
    imageset = load_dataset(name, root, split=split or args.split, **dataset_options(args))
    left_out = None
    if classes == "shared":
        imageset, left_out = restrict_to_classes(imageset, meta["classes"])
    return (align_classes(imageset, meta["classes"]) if align else imageset), name, root, left_out


def preprocessing_of(meta: dict):
    """The evaluation preprocessing the checkpoint was trained with."""
    return preprocessing_from_meta(meta)


def write_json_line(record: dict) -> None:
    """One JSON object per line on stdout, flushed (a consumer reads records as they come)."""
    sys.stdout.write(json.dumps(record, default=json_default) + "\n")
    sys.stdout.flush()
