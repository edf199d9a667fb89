"""The ``fermetric`` command line.

This package is the only place that parses arguments or prints: this file declares the commands
and their options; each command is run by ``run(args)`` in its own module here (``cli/train.py``,
``cli/predict.py``...; imported lazily, so ``fermetric --help`` is instant), which calls the
library and formats what it returns. Shared preambles (loading a model, a dataset split) live in
``cli/common.py``. The library reports through return values, progress callbacks, warnings and
the ``fermetric`` logger, which this module sends to stderr for the duration of a command.
A :class:`~fermetric.errors.FermetricError` prints one line and exits non-zero (2); any other
exception prints one line too (an ``OSError`` as an error, exit 2; anything else as an internal
error, exit 1), and so does every warning; ``--debug`` shows tracebacks and Python's own warning
format instead.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
import warnings

from .._version import __version__
from ..config import recipe_names
from ..errors import FermetricError

# command -> "module:function" taking the parsed arguments and returning an exit code
HANDLERS = {
    "train": "fermetric.cli.train:run",
    "eval": "fermetric.cli.eval:run",
    "audit-data": "fermetric.cli.audit:run",
    "info": "fermetric.cli.info:run",
    "demo": "fermetric.cli.predict:run_demo",
    "predict": "fermetric.cli.predict:run",
    "index-build": "fermetric.cli.index:run_build",
    "index-query": "fermetric.cli.index:run_query",
    "plot": "fermetric.cli.plot:run",
    "export": "fermetric.cli.export:run",
    "subclasses": "fermetric.cli.subclasses:run",
}


class _StderrHandler(logging.Handler):
    """The library's log lines as plain lines on the *current* ``sys.stderr`` (looked up at each
    record, so redirected or captured stderr gets them too)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # never let reporting break a command
            self.handleError(record)


@contextlib.contextmanager
def _library_log(quiet: bool):
    """Route the ``fermetric`` logger's INFO lines to stderr while a command runs."""
    logger = logging.getLogger("fermetric")
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _data_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "--data",
        required=required,
        metavar="DATASET=ROOT",
        help="dataset name and root, e.g. fer2013=../shared/data/fer2013 (see `fermetric info`)",
    )
    _dataset_choices(p)


def _dataset_choices(p: argparse.ArgumentParser) -> None:
    """How a dataset given with ``--data`` is read: its fold, FER+ label mode, bad images."""
    p.add_argument(
        "--fold", type=int, default=None, help="test fold of a subject-independent k-fold protocol (CK+: 0-9)"
    )
    p.add_argument(
        "--label-mode",
        default=None,
        choices=["majority", "plurality", "probability"],
        help="FER+ label mode (default majority)",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out images that cannot be decoded (listed in one warning) instead of stopping",
    )


def _precision_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="auto (default): bf16 on CUDA and on CPUs with native bf16 (AMX/AVX512-BF16), else fp32",
    )


def _prior(text: str):
    """``train``, ``uniform`` or ``class=weight,class=weight,...`` (argparse type of --prior)."""
    if text in ("train", "uniform"):  # engine.priors.PRIORS, not imported: it would load numpy for --help
        return text
    weights = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(
                f"{text!r} is not train, uniform or class=weight,... (e.g. happy=0.3,neutral=0.3,sad=0.1,...)"
            )
    return weights


def _prior_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--prior",
        type=_prior,
        default="train",
        metavar="train|uniform|CLASS=W,...",
        help="the class frequencies to predict under: train (default: the training set's, as trained), "
        "uniform (every expression equally likely: posed and lab photos), or your own weights; "
        "adds log(prior / training frequencies) to the logits",
    )


def _crop_resolution_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--crop-resolution",
        choices=("train", "input"),
        default="train",
        help="train (default): show each face at the side of the model's training images (48 px for the "
        "shipped models), enlarged as in training, so it carries no finer detail than the model learned "
        "from (docs/RESULTS.md, face crop resolution); input: at the model's input size",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fermetric",
        description="Facial expression recognition with deep metric learning (MT-DML, DMSL, TCL, PI&DML).",
    )
    parser.add_argument("--version", action="version", version=f"fermetric {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a recipe on a dataset")
    p.add_argument(
        "--recipe",
        required=True,
        help=f"recipe name ({', '.join(recipe_names())}) or YAML path",
    )
    _data_options(p)
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics.jsonl, results)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint in --out")
    p.add_argument(
        "--init-from",
        default=None,
        metavar="SOURCE",
        help="fine-tune from a trained model (run directory, .pt, .safetensors, or a shipped name such as "
        "default): its backbone, width, embedding size and input preprocessing replace the recipe's (--set still wins), a class "
        "list of its own gets a new classifier (default: none, train from scratch)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field, e.g. --set optim.lr=0.05 (repeatable)",
    )
    p.add_argument(
        "--on-nan",
        choices=["stop", "skip"],
        default="stop",
        help="on a NaN/Inf loss: stop (keep the last good checkpoint) or skip the batch",
    )
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps (smoke runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _precision_option(p)
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic algorithms: bit-exact repeats and resume (slower; default off)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: the available cores, shared by torchrun's local processes)",
    )

    p = sub.add_parser("eval", help="evaluate a checkpoint on a dataset split")
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a shipped model's name (default; `fermetric info` lists them), a run directory or a checkpoint file",
    )
    _data_options(p)
    p.add_argument("--split", default="test")
    p.add_argument("--tta", choices=["none", "flip"], default="none")
    p.add_argument(
        "--reference",
        choices=["auto", "train", "none"],
        default="auto",
        help="embeddings k-NN and nearest-centroid accuracy compare against: the train split "
        "(auto: when the dataset has one and --split is not train), or none (leave-one-out "
        "k-NN; no centroid accuracy, whose centroids would leak the evaluated labels)",
    )
    p.add_argument(
        "--classes",
        choices=["all", "shared"],
        default="all",
        help="shared: score only the classes the model and the dataset both have (says how many "
        "images were left out); all (default): refuse a dataset class the model lacks",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", default=None, help="also write metrics.json and confusion.png here")
    _precision_option(p)
    _prior_option(p)
    _crop_resolution_option(p)

    p = sub.add_parser("audit-data", help="class counts, duplicates, blank and unreadable images")
    p.add_argument("dataset", metavar="DATASET=ROOT")
    p.add_argument("--json", action="store_true")

    sub.add_parser("info", help="versions, device, backbones, recipes and datasets").add_argument(
        "--json", action="store_true"
    )

    p = sub.add_parser("demo", help="the shipped model on the shipped example photo")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("predict", help="expressions of the faces in photos, folders, videos, streams and cameras")
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="photos, folders, videos, a camera index (0) or a stream URL (rtsp://...)",
    )
    p.add_argument("--checkpoint", default="default")
    p.add_argument("--json", action="store_true", help="print JSON lines, one per face")
    p.add_argument("--csv", default=None, metavar="FILE")
    p.add_argument(
        "--annotate",
        default=None,
        metavar="DIR|VIDEO",
        help="write copies with boxes and labels into DIR, or the analysed video frames into VIDEO (.mp4)",
    )
    p.add_argument("--no-detect", action="store_true", help="inputs are already face crops")
    p.add_argument("--detector", default="yunet", help="face detector (yunet, haar; mtcnn, mediapipe when installed)")
    p.add_argument(
        "--min-face",
        type=int,
        default=None,
        metavar="PX",
        help="smallest face side in px (yunet 10, haar 40, mtcnn 20); for haar and mtcnn lower finds smaller faces, slower",
    )
    p.add_argument(
        "--tta",
        default="none",
        choices=("none", "flip"),
        help="flip: average with the mirrored face (twice the model time)",
    )
    p.add_argument("--embeddings", action="store_true", help="--json records also carry each face's raw embedding")
    p.add_argument(
        "--backend",
        choices=["auto", "torch", "onnx", "openvino", "openvino-int8", "compiled", "compiled-int8"],
        default="auto",
        help="onnx: the model exported once (cached) and run by onnxruntime on the CPU (2-3x faster "
        "than torch there, benchmarks/predict_backends.py); openvino: the same graph compiled by OpenVINO "
        "(pip install 'fermetric[openvino]'); openvino-int8: the model's int8 graph in OpenVINO (the most "
        "faces/s on a CPU; the shipped models carry one, fermetric export --format onnx "
        "--int8-calibration makes one); compiled: torch compiled by TorchInductor (after seconds to a "
        "minute of compilation; needs a C++ compiler); compiled-int8: the same with int8 weights and "
        "activations (needs torchao and a model that carries an int8 calibration, as the shipped ones "
        "do); auto: onnx on the CPU when onnxruntime is installed and --precision is auto or fp32, else torch",
    )
    p.add_argument("--every", type=int, default=10, help="videos and streams: analyse every N-th frame (default 10)")
    p.add_argument(
        "--max-frames",
        type=int,
        default=None,
        help="videos and streams: analyse at most N frames of each (default: all; a camera needs it)",
    )
    p.add_argument(
        "--show",
        action="store_true",
        help="show each analysed photo or frame with its boxes and labels in a window (needs a display and "
        "OpenCV with a GUI: pip install opencv-python); q or Esc closes the window, the analysis goes on",
    )
    p.add_argument("--device", default="auto")
    _precision_option(p)
    _prior_option(p)
    _crop_resolution_option(p)

    p = sub.add_parser("index", help="nearest-expression retrieval (faiss)")
    isub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    b = isub.add_parser("build", help="embed a dataset or folder into an index")
    b.add_argument("--checkpoint", default="default")
    b.add_argument("--data", required=True, metavar="DATASET=ROOT|FOLDER")
    _dataset_choices(b)
    b.add_argument("--split", default="train")
    b.add_argument("--out", required=True, metavar="INDEX")
    b.add_argument("--device", default="auto")
    b.add_argument("--detect", action="store_true", help="FOLDER holds photos: index every detected face")
    _precision_option(b)
    q = isub.add_parser("query", help="the k nearest expressions to an image")
    q.add_argument("index", metavar="INDEX")
    q.add_argument("image", metavar="IMAGE")
    q.add_argument("-k", type=int, default=10)
    q.add_argument("--sheet", default=None, metavar="PNG", help="write a contact sheet")
    q.add_argument("--no-detect", action="store_true")
    q.add_argument("--json", action="store_true")

    p = sub.add_parser("plot", help="embeddings, confusion matrix, training curves (PNG)")
    p.add_argument("kind", choices=["embeddings", "confusion", "curves"])
    p.add_argument("--checkpoint", default="default")
    p.add_argument("--data", default=None, metavar="DATASET=ROOT")
    _dataset_choices(p)
    p.add_argument("--split", default="test")
    p.add_argument("--run", default=None, help="run directory (curves, confusion from metrics)")
    p.add_argument("--method", choices=["tsne", "umap"], default="tsne")
    p.add_argument("--max-points", type=int, default=3000)
    p.add_argument("--out", required=True, metavar="PNG")
    p.add_argument("--device", default="auto")

    p = sub.add_parser("export", help="export a checkpoint (ONNX graph or safetensors weights)")
    p.add_argument("--checkpoint", default="default")
    p.add_argument("--format", choices=["onnx", "safetensors"], default="onnx")
    p.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        default=None,
        help="safetensors: storage type of the weights (float16 halves the file)",
    )
    p.add_argument(
        "--int8-calibration",
        action="store_true",
        help="calibrate int8 inference on faces of --data's training split: safetensors stores the ranges in "
        "the file (--backend compiled-int8; needs torchao: pip install 'fermetric[int8]'); onnx writes an int8 "
        "graph (--backend openvino-int8)",
    )
    _data_options(p, required=False)
    p.add_argument("--calibration-faces", type=int, default=512, help="faces drawn for --int8-calibration")
    p.add_argument("--seed", type=int, default=0, help="draw of the calibration faces")
    p.add_argument("--out", required=True)

    p = sub.add_parser("subclasses", help="DMSL sub-class discovery ('mitosis') on a trained model")
    p.add_argument("--checkpoint", required=True)
    _data_options(p)
    p.add_argument("--split", default="train")
    p.add_argument("--out", required=True)
    p.add_argument("--max-components", type=int, default=4)
    p.add_argument("--min-samples", type=int, default=100)
    p.add_argument("--device", default="auto")
    _precision_option(p)
    document_options(parser)
    return parser


#: Help for the options declared without their own (shared wording keeps the commands consistent).
COMMON_HELP = {
    "--epochs": "override the recipe's number of epochs",
    "--seed": "random seed of data order, augmentation and initialisation",
    "--split": "dataset split to read (train, val, test; all for k-fold datasets)",
    "--tta": "test-time augmentation: none, or flip (average with the mirrored face)",
    "--device": "auto (CUDA when available, else CPU), cpu, cuda or cuda:N",
    "--json": "print JSON instead of a table",
    "--checkpoint": "a shipped model's name ('default'; `fermetric info` lists them), a run directory, "
    "a .pt checkpoint or a .safetensors file",
    "--csv": "also write one CSV row per face to FILE",
    "--out": "output path",
    "--data": "DATASET=ROOT (see `fermetric info`)",
    "-k": "number of nearest neighbours",
    "--no-detect": "the image is a face crop already (no face detection)",
    "--method": "2-D projection: t-SNE, or UMAP (pip install 'fermetric[umap]')",
    "--max-points": "embed and plot at most this many faces",
    "--format": "onnx (graph for onnxruntime) or safetensors (weights)",
    "--max-components": "most Gaussian sub-classes per expression",
    "--min-samples": "expressions with fewer images stay one sub-class",
    "dataset": "DATASET=ROOT of the dataset to audit",
    "index": "an index folder written by `fermetric index build`",
    "image": "the query photo (or face crop with --no-detect)",
    "kind": "embeddings (t-SNE/UMAP map), confusion (matrix PNG) or curves (training curves)",
}


def document_options(parser: argparse.ArgumentParser) -> None:
    """Every option of every command gets help text, ending with its default when it has one."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                document_options(sub)
            continue
        if action.help == argparse.SUPPRESS or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        if not action.help:
            name = next((o for o in action.option_strings if o.startswith("--")), None) or (
                action.option_strings[0] if action.option_strings else action.dest
            )
            action.help = COMMON_HELP.get(name, action.dest.replace("_", " "))
        shown = action.default not in (None, False, [], argparse.SUPPRESS) and not action.required
        if shown and "default" not in action.help:
            action.help += f" (default: {action.default})"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    command = args.command if args.command != "index" else f"index-{args.index_command}"
    module_name, function_name = HANDLERS[command].split(":")
    formatwarning = warnings.formatwarning
    if not args.debug:  # warnings too are one line ("path:line: Category: ..." plus source line with --debug)
        warnings.formatwarning = lambda message, category, *rest, **kw: (
            f"fermetric {args.command}: warning: {' '.join(str(message).split())}\n"
        )
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
        with _library_log(quiet=bool(getattr(args, "quiet", False) or getattr(args, "json", False))):
            return int(handler(args) or 0)
    except FermetricError as err:
        if args.debug:
            raise
        print(f"fermetric {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"fermetric {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # an unforeseen failure or a bug: still one line (the traceback: --debug)
        if args.debug:
            raise
        reason = " ".join(str(err).split())[:300] or "no message"
        if isinstance(err, OSError):  # full disk, permissions, a vanished file: the user's to fix
            print(f"fermetric {args.command}: error: {reason}", file=sys.stderr)
            return 2
        print(
            f"fermetric {args.command}: internal error: {type(err).__name__}: {reason} "
            "(rerun with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":
    sys.exit(main())
