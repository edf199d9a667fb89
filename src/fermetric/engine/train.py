"""Training: one loop for every recipe, fast on a GPU, exact on a CPU; ``fermetric train``.

GPU-fast design (FER images are tiny, so input handling, not the network, is the usual limit):

* The whole uint8 training split is copied to the device once; a batch is an index tensor from
  ``epoch_batches`` (random or P x K per ``recipe.data.sampler``), gathered with ``index_select``
  and augmented on the device by ``GPUAugment``. No DataLoader, no worker processes.
* Precision policy (``precision.py``): ``auto`` = bf16 autocast on CUDA and on CPUs with native
  bf16 (AMX / AVX512-BF16), fp32 elsewhere; channels_last (``recipe.channels_last``) on every
  device; optional ``torch.compile`` on CUDA (``recipe.compile``). Losses are computed in float32.
* One host sync per step (the NaN/Inf check, which ``on_nan`` needs before the optimizer step).

Optimisation (decisions and defaults):

* SGD (Nesterov, momentum from the recipe) or AdamW. Weight decay applies to weight matrices and
  convolution kernels only, not to biases and norm parameters (timm's convention). The loss's own
  parameters (learnable centres) are a separate group: ``lr * loss_lr_multiplier``, no decay.
* Schedule stepped per optimizer step: ``onecycle`` (cosine, 20% warm-up, constant momentum) or
  ``cosine`` with ``warmup_epochs`` of linear warm-up.
* Loss = ``ce_weight * CE(logits, target; label_smoothing)`` + ``weight * metric_loss(embedding,
  labels[, logits=logits])``; soft targets when the training set carries ``soft_labels`` and its
  ``info["label_mode"] == "probability"`` (FER+).
* Optional EMA of the weights (``recipe.ema`` decay, ``AveragedModel`` with buffers): when on, the
  EMA weights are the ones validated, saved as best, exported and reported.

Reproducibility and robustness:

* Seeds python/numpy/torch. ``deterministic=True`` (``--deterministic``) adds deterministic
  algorithms (warn-only); without it the run is fast (oneDNN's bf16 paths) and a resumed run
  continues the same schedule from the same step, with float results equal up to rounding.
  Augmentation draws from a ``torch.Generator`` re-seeded per batch from (seed, epoch, batch,
  rank), so it does not depend on what ran before; the global RNG states (dropout, mixup) are
  checkpointed, and validation runs with them saved and restored. Hence on the CPU with
  ``deterministic=True`` a resumed run
  ends with exactly the metrics of an uninterrupted one, whether it stopped at an epoch end, at
  ``max_steps`` inside an epoch, or was killed.
* ``out/last.pt`` every epoch (the previous one kept as ``last.prev.pt``), ``out/best.pt`` on a
  new best validation accuracy, ``out/metrics.jsonl`` one line per epoch (rewritten from the
  checkpoint's history on resume), ``out/results.json`` and ``out/model.safetensors`` at the end.
* Without a validation split (CK+ folds) nothing is selected: the last epoch is the result, and
  ``results.json`` says so.
* NaN/Inf loss: ``on_nan="stop"`` raises TrainingError (the last checkpoint stays the last good
  one); ``"skip"`` drops the batch (no optimizer/scheduler step) and counts it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import random
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from .._version import __version__
from ..data.samplers import epoch_batches
from ..data.transforms import GPUAugment, Preprocessing
from ..errors import ConfigError, TrainingError
from ..fileio import atomic_write, json_default, write_json_atomic
from ..losses import create_loss
from ..losses.space import L2
from ..models import create_model
from . import checkpoint as ckpt
from . import distributed as dist_utils
from .evaluate import align_classes, embed_reference, evaluate
from .optim import build_optimizer, build_scheduler, ema_model
from .precision import autocast, deterministic_mode, resolve_precision, thread_count
from .priors import class_frequencies
from .progress import progress_bar
from .rundir import (
    METRICS_FILE,
    RESULTS_FILE,
    WEIGHTS_FILE,
    check_output_dir,
    checkpoint_bytes_estimate,
    recipe_diff,
    remove_stale_temp_files,
)
from .task import TrainingTask

log = logging.getLogger(__name__)  # epoch lines and resume notices (the CLI shows INFO on stderr)

#: FERNet's classifier parameters: re-initialised when a warm start changes the classes
CLASSIFIER_PREFIX = "classifier."


# ---------------------------------------------------------------------------------- helpers
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def batch_seed(seed: int, epoch: int, batch: int, rank: int) -> int:
    """A well-mixed 63-bit seed for one batch's augmentation (independent of history)."""
    return int(
        np.random.SeedSequence([seed % 2**32, epoch, batch, rank]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)
    )


@contextlib.contextmanager
def preserved_rng():
    """Run a block (validation) without moving the global python/numpy/torch RNGs."""
    state = ckpt.rng_state()
    try:
        yield
    finally:
        ckpt.set_rng_state(state)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


# ----------------------------------------------------------------------------------- trainer
class Trainer:
    """State and steps of one training run (see :func:`train`)."""

    def __init__(
        self,
        recipe,
        train_set,
        val_set,
        out_dir,
        context,
        seed=0,
        resume=False,
        on_nan="stop",
        max_steps=None,
        progress=True,
        test_set=None,
        dataset=None,
        precision="auto",
        deterministic=False,
        metric_labels=None,
        metric_classes=None,
        init_from=None,
    ):
        if on_nan not in ("stop", "skip"):
            raise ConfigError(f"on_nan must be 'stop' or 'skip', got {on_nan!r}")
        if max_steps is not None and max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {max_steps}")
        if recipe.epochs < 1:
            raise ConfigError(f"recipe epochs must be >= 1, got {recipe.epochs}")
        self.recipe, self.ctx, self.seed = recipe, context, int(seed)
        self.device = context.device
        self.out_dir = Path(out_dir)
        self.on_nan, self.max_steps = on_nan, max_steps
        self.progress = progress and context.is_main
        check_output_dir(self.out_dir)  # before anything expensive
        resuming = any((self.out_dir / n).exists() for n in (ckpt.LAST, ckpt.LAST_PREV))
        if resuming and not resume:
            raise TrainingError(
                f"{self.out_dir} already holds a run (last.pt); pass --resume to continue it or choose another --out"
            )
        train_set, val_set, metric_labels = self._select_items(train_set, val_set, metric_labels, metric_classes)
        self.train_set, self.val_set, self.test_set = train_set, val_set, test_set
        # P x K batches group the metric loss's labels (the classifier's unless metric_labels)
        self.sampler_labels = np.asarray(train_set.labels) if metric_labels is None else metric_labels
        self.classes = list(train_set.classes)
        self.dataset = dataset or train_set.name
        # recipe.amp: false pins the recipe to fp32 under "auto" (an explicit --precision still wins)
        self.precision = resolve_precision(precision if (recipe.amp or precision != "auto") else "fp32", self.device)
        self.deterministic = bool(deterministic)
        self.channels_last = bool(recipe.channels_last)
        seed_everything(self.seed)
        self.preprocessing = Preprocessing.from_data_config(recipe.data)
        self.augment = GPUAugment(recipe.data.augment, self.preprocessing).to(self.device)
        self.generator = torch.Generator(device=self.device)  # re-seeded per batch (batch_seed)
        init_classifier = self._build_model(metric_labels, metric_classes, None if resuming else init_from)
        self._build_optimisation()
        self._load_data(train_set, metric_labels)
        self.meta = ckpt.make_meta(recipe, self.classes, self.preprocessing, self.dataset, self.seed)
        self.meta["precision"] = self.precision
        # what the classifier's outputs assume; predicting under another prior needs it (priors.py)
        self.meta["class_prior"] = class_frequencies(train_set, len(self.classes))
        # the detail its training faces had: prediction renders photo crops at this side first
        self.meta["train_image_size"] = int(max(train_set.images.shape[1:]))
        if self.module.teacher is not None:  # a name such as "default" may later ship other weights
            teacher = self.module.teacher[0]
            self.meta["distill_teacher"] = {"source": teacher.source, "digest": teacher.digest}
        if init_from is not None:
            self.meta["init_from"] = str(init_from)
            self.meta["init_classifier"] = init_classifier
            if getattr(self, "init_new_modules", None):  # modules that started fresh (not on resume)
                self.meta["init_new_modules"] = self.init_new_modules
        # The space every distance of this model is measured in (evaluation, index, sub-classes)
        self.space = self.loss_fn.embedding_space if self.loss_fn is not None else L2
        self.meta["embedding_space"] = self.space.to_dict()
        self.step = 0
        self.epochs_done = 0
        self.history: list[dict] = []
        self.best: dict | None = None
        self.partial: dict | None = None
        self.skipped_total = 0
        if resume:
            self._restore()

    # ----------------------------------------------------------------------------- set-up
    @staticmethod
    def _select_items(train_set, val_set, metric_labels, metric_classes):
        """The labelled training items (and their metric labels), the validation set in the
        training classes' order, and the labels P x K batches group."""
        if len(train_set) == 0:
            raise ConfigError(f"training set {train_set.name}/{train_set.split} is empty")
        labeled = np.asarray(train_set.labels) >= 0
        if metric_labels is not None:
            metric_labels = np.asarray(metric_labels, dtype=np.int64)
            if metric_labels.shape != (len(train_set),) or metric_classes is None or metric_classes < 1:
                raise ConfigError(
                    f"metric_labels need one label per training image ({len(train_set)}) and "
                    f"metric_classes >= 1; got shape {metric_labels.shape}, {metric_classes}"
                )
            labeled &= metric_labels >= 0
            metric_labels = metric_labels[labeled]
        if not labeled.all():  # supervised training: unlabeled items are not used
            train_set = train_set.subset(labeled)
        if val_set is not None and list(val_set.classes) != list(train_set.classes):
            try:  # a validation split lacking some training classes is mapped onto them
                val_set = align_classes(val_set, train_set.classes)
            except Exception:
                raise ConfigError(
                    f"validation classes {list(val_set.classes)} are not among the training "
                    f"classes {list(train_set.classes)}"
                ) from None
        return train_set, val_set, metric_labels

    def _build_model(self, metric_labels, metric_classes, init_from) -> str:
        """Model, metric loss and the task that joins them (DDP-wrapped); returns whether a warm
        start kept the classifier ("kept") or made a new one ("new")."""
        recipe = self.recipe
        num_classes = len(self.classes)
        self.model = create_model(recipe.model, num_classes=num_classes).to(self.device)
        self.loss_fn = None
        if recipe.loss.name:
            self.loss_fn = create_loss(
                recipe.loss.name,
                int(metric_classes or num_classes),
                recipe.model.embedding_dim,
                **dict(recipe.loss.options or {}),
            ).to(self.device)
        if self.loss_fn is not None and self.loss_fn.needs_logits and metric_labels is not None:
            raise ConfigError(
                f"loss {recipe.loss.name!r} reads the classifier's logits, so it cannot train on "
                "labels other than the classifier's (metric_labels)"
            )
        init_classifier = self._warm_start(init_from) if init_from is not None else "kept"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        check_output_dir(self.out_dir, checkpoint_bytes_estimate(self.model, recipe.optim.optimizer, bool(recipe.ema)))
        teacher = None
        if recipe.distill.teacher:
            from .distill import make_teacher

            if not (recipe.distill.temperature > 0 and recipe.distill.weight >= 0):
                raise ConfigError(
                    f"distill needs temperature > 0 and weight >= 0, got temperature={recipe.distill.temperature} "
                    f"weight={recipe.distill.weight}"
                )
            teacher = (
                make_teacher(recipe.distill.teacher, self.classes, self.preprocessing, self.device, recipe.distill.tta),
                recipe.distill,
            )
        self.module = TrainingTask(self.model, self.loss_fn, recipe.loss, teacher)
        self.net = dist_utils.wrap(self.module, self.ctx)
        if recipe.compile and self.device.type == "cuda":
            self.net = torch.compile(self.net)
        self.ema = ema_model(self.model, float(recipe.ema)) if recipe.ema else None
        return init_classifier

    def _warm_start(self, init_from) -> str:
        """Load an earlier run's weights; another class list gets a new classifier, and a module
        the source has none of (TCL's attention, PI&DML's partial branches) starts fresh."""
        weights, init_meta, init_path = ckpt.read_source(init_from)
        same_classes = list(init_meta["classes"]) == self.classes
        if not same_classes:  # fine-tuning on other classes (FER2013 -> CK+): a new classifier
            weights = {k: v for k, v in weights.items() if not k.startswith(CLASSIFIER_PREFIX)}
        source_modules = {k.split(".")[0] for k in weights}
        new_modules = {k.split(".")[0] for k in self.model.state_dict()} - source_modules
        try:
            missing, unexpected = self.model.load_state_dict(weights, strict=same_classes and not new_modules)
        except RuntimeError as err:
            raise ConfigError(
                f"init_from {init_path}: its weights do not fit this recipe's model ({str(err).splitlines()[0][:200]})"
            ) from None
        missing = [k for k in missing if k.split(".")[0] not in new_modules]
        self.init_new_modules = sorted(new_modules | ({CLASSIFIER_PREFIX.rstrip(".")} if not same_classes else set()))
        if unexpected or any(not k.startswith(CLASSIFIER_PREFIX) for k in missing):
            raise ConfigError(
                f"init_from {init_path}: its weights do not fit this recipe's model "
                f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
            )
        return "kept" if same_classes else "new"

    def _build_optimisation(self) -> None:
        recipe = self.recipe
        self.optimizer = build_optimizer(self.model, self.loss_fn, recipe.optim)
        self.steps_per_epoch = len(self._batches(0))
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"no training batches: {len(self.train_set)} images with batch size {recipe.data.batch_size}"
            )
        self.scheduler = build_scheduler(self.optimizer, recipe.optim, self.steps_per_epoch, recipe.epochs)

    def _load_data(self, train_set, metric_labels) -> None:
        """The whole training split on the device, once: images, labels, metric labels, soft targets."""
        images = np.ascontiguousarray(train_set.images)
        if not images.flags.writeable:  # the read-only memory-mapped cache: copy (torch warns on, and a CPU
            images = images.copy()  # tensor would alias, read-only memory)
        self.images = torch.from_numpy(images).to(self.device)
        self.labels = torch.from_numpy(np.asarray(train_set.labels, dtype=np.int64)).to(self.device)
        # The metric loss's labels: the classifier's unless given (DMSL mitosis: sub-classes)
        self.metric_labels = self.labels if metric_labels is None else torch.from_numpy(metric_labels).to(self.device)
        self.soft = None
        if train_set.soft_labels is not None and (train_set.info or {}).get("label_mode") == "probability":
            self.soft = torch.from_numpy(np.asarray(train_set.soft_labels, dtype=np.float32)).to(self.device)

    # ----------------------------------------------------------------------------- batches
    def _batches(self, epoch: int) -> list[np.ndarray]:
        data = self.recipe.data
        batches = epoch_batches(
            self.sampler_labels,
            data.batch_size,
            mode=data.sampler,
            samples_per_class=data.samples_per_class,
            seed=self.seed,
            epoch=epoch,
            rank=self.ctx.rank,
            world_size=self.ctx.world_size,
        )
        if self.ctx.enabled:  # every rank must run the same number of steps (DDP collectives)
            count = torch.tensor([len(batches)], device=self.device)
            dist_utils.all_reduce_min(count, self.ctx)
            batches = batches[: int(count.item())]
        return batches

    # ----------------------------------------------------------------------------- state
    def _payload(self) -> dict:
        return {
            "meta": self.meta,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "loss": self.loss_fn.state_dict() if self.loss_fn is not None else {},
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "epoch": self.epochs_done,
            "step": self.step,
            "best": self.best,
            "rng": ckpt.rng_state(),
            "history": self.history,
            "partial": self.partial,
            "skipped_total": self.skipped_total,
            "train_size": len(self.train_set),
        }

    def _restore(self) -> None:
        found = ckpt.resume_checkpoint(self.out_dir, map_location=self.device)
        if found is None:
            if self.progress:
                log.info(f"fermetric train: nothing to resume in {self.out_dir}; starting a new run")
            return
        payload, path = found
        saved = payload["meta"]
        diff = recipe_diff(saved["recipe"], self.meta["recipe"])
        if diff:
            raise TrainingError(
                f"{path} was trained with a different recipe ({', '.join(diff[:5])} differ); "
                "resume with the same options or choose another --out"
            )
        if (
            list(saved["classes"]) != self.classes
            or saved.get("seed") != self.seed
            or payload.get("train_size", len(self.train_set)) != len(self.train_set)
        ):
            raise TrainingError(
                f"{path} belongs to a run with other data or seed ({saved.get('dataset')}, "
                f"{payload.get('train_size')} training images, seed {saved.get('seed')}); "
                "resume with the same --data and --seed or choose another --out"
            )
        self.meta = saved
        self.model.load_state_dict(payload["model"])
        if self.loss_fn is not None:
            self.loss_fn.load_state_dict(payload["loss"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        if self.ema is not None and payload.get("ema"):
            self.ema.load_state_dict(payload["ema"])
        self.step, self.epochs_done = int(payload["step"]), int(payload["epoch"])
        self.best, self.history = payload.get("best"), list(payload.get("history") or [])
        self.partial = payload.get("partial")
        self.skipped_total = int(payload.get("skipped_total", 0))
        ckpt.set_rng_state(payload["rng"])
        if self.ctx.is_main:
            remove_stale_temp_files(self.out_dir)
            self._reconcile_best(payload)
            self._rewrite_metrics()
            if self.progress:
                where = f"epoch {self.epochs_done}" + (f" + {self.partial['batch']} batches" if self.partial else "")
                log.info(f"fermetric train: resumed {path} at {where} (step {self.step})")

    def _reconcile_best(self, payload: dict) -> None:
        """Make best.pt agree with the resumed history (a kill may fall between last and best)."""
        best_path = self.out_dir / ckpt.BEST
        if not self.best:
            if best_path.exists():
                best_path.unlink()
            return
        try:
            on_disk = ckpt.load(best_path)["epoch"] if best_path.exists() else None
        except Exception:
            on_disk = None
        if on_disk == self.best["epoch"]:
            return
        if self.best["epoch"] == payload["epoch"] and not payload.get("partial"):
            ckpt.save(best_path, payload)
        else:
            warnings.warn(
                f"{best_path} does not match the resumed run (epoch {on_disk} vs {self.best['epoch']}); "
                "it will be rewritten at the next improvement",
                stacklevel=2,
            )
            if best_path.exists():
                best_path.unlink()
            self.best = None

    def _rewrite_metrics(self) -> None:
        text = "".join(json.dumps(record, default=json_default) + "\n" for record in self.history)
        atomic_write(self.out_dir / METRICS_FILE, text.encode())

    # ------------------------------------------------------------------------------ steps
    def _augmented(self, index: torch.Tensor, epoch: int, batch: int) -> torch.Tensor:
        self.generator.manual_seed(batch_seed(self.seed, epoch, batch, self.ctx.rank))
        x = self.augment(self.images.index_select(0, index), generator=self.generator)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _losses(self, x: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        labels = self.labels.index_select(0, index)
        target = self.soft.index_select(0, index) if self.soft is not None else labels
        with autocast(self.device, self.precision):
            return self.net(x, labels, self.metric_labels.index_select(0, index), target)

    def _finite(self, total: torch.Tensor) -> bool:
        flag = torch.isfinite(total.detach()).to(torch.float32).reshape(1)
        dist_utils.all_reduce_min(flag, self.ctx)  # all ranks skip or stop together
        return bool(flag.item())

    def _train_epoch(self, epoch: int) -> dict | None:
        """Run (the rest of) one epoch; returns its sums, or None when stopped by max_steps."""
        batches = self._batches(epoch)
        part_names = self.module.term_names
        start_batch = 0
        sums = torch.zeros(len(part_names), dtype=torch.float64, device=self.device)
        counts = {"batches": 0, "images": 0, "skipped": 0, "seconds": 0.0}
        if self.partial is not None and self.partial["epoch"] == epoch:
            start_batch = int(self.partial["batch"])
            sums += self.partial["sums"].to(self.device, torch.float64)
            counts = dict(self.partial["counts"])
        self.partial = None
        self.net.train()
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=len(batches),
                initial=start_batch,
                desc=f"epoch {epoch + 1}/{self.recipe.epochs}",
                leave=False,
                file=sys.stderr,
                dynamic_ncols=True,
            )
        started = time.perf_counter()
        stopped = False
        try:
            for b in range(start_batch, len(batches)):
                index = torch.from_numpy(np.asarray(batches[b], dtype=np.int64)).to(self.device, non_blocking=True)
                x = self._augmented(index, epoch, b)
                parts = self._losses(x, index)
                if self._step(parts["loss"], epoch, b):
                    sums += torch.stack([parts[name].detach().to(torch.float64) for name in part_names])
                    counts["batches"] += 1
                else:
                    counts["skipped"] += 1
                counts["images"] += len(index)
                if bar is not None:
                    bar.update(1)
                    if b % 20 == 0 and counts["batches"]:
                        bar.set_postfix(loss=f"{sums[0].item() / counts['batches']:.4f}")
                if self.max_steps is not None and self.step >= self.max_steps and b + 1 < len(batches):
                    stopped = True
                    counts["seconds"] += time.perf_counter() - started
                    self.partial = {"epoch": epoch, "batch": b + 1, "sums": sums.cpu(), "counts": counts}
                    break
        finally:
            if bar is not None:
                bar.close()
        if stopped:
            return None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        counts["seconds"] += time.perf_counter() - started
        return {"names": part_names, "sums": sums, "counts": counts}

    def _step(self, total: torch.Tensor, epoch: int, batch: int) -> bool:
        """One optimiser step on ``total``; a non-finite loss stops the run or skips the batch
        (``on_nan``), on every rank alike. Returns whether a step was taken."""
        self.optimizer.zero_grad(set_to_none=True)
        if not self._finite(total):
            if self.on_nan == "stop":
                last = self.out_dir / ckpt.LAST
                kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"
                raise TrainingError(
                    f"loss is {float(total.detach()):g} at epoch {epoch + 1}, step {self.step + 1} "
                    f"(batch {batch + 1}); {kept}; lower optim.lr or pass --on-nan skip"
                )
            self.skipped_total += 1
            return False
        total.backward()
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step += 1
        return True

    def _epoch_record(self, epoch: int, result: dict) -> dict:
        counts = result["counts"]
        totals = torch.cat(
            [
                result["sums"],
                torch.tensor(
                    [counts["batches"], counts["images"], counts["skipped"]], dtype=torch.float64, device=self.device
                ),
            ]
        )
        dist_utils.all_reduce_sum(totals, self.ctx)  # loss sums, batch and image counts of all ranks
        n_parts = len(result["names"])
        batches = float(totals[n_parts])  # optimizer steps taken (skipped batches excluded)
        train = {name: (float(totals[i]) / batches if batches else None) for i, name in enumerate(result["names"])}
        seconds = counts["seconds"]
        return {
            "epoch": epoch + 1,
            "step": self.step,
            "train": train,
            "skipped_batches": int(totals[n_parts + 2]),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "images_per_second": float(totals[n_parts + 1]) / seconds if seconds > 0 else None,
            "seconds": seconds,
        }

    def _eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _validate(self) -> dict | None:
        if self.val_set is None:
            return None
        with preserved_rng():
            metrics = evaluate(
                self._eval_model(),
                self.val_set,
                self.preprocessing,
                self.device,
                tta="none",
                embedding_metrics=False,
                precision=self.precision,
            )
        return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "n": metrics["n"]}

    # -------------------------------------------------------------------------------- run
    def run(self) -> dict:
        started = time.perf_counter()
        stopped_by_max_steps = False
        while self.epochs_done < self.recipe.epochs:
            if self.max_steps is not None and self.step >= self.max_steps:
                stopped_by_max_steps = True
                break
            epoch = self.epochs_done
            result = self._train_epoch(epoch)
            if result is None:  # max_steps inside the epoch: save a resumable mid-epoch state
                stopped_by_max_steps = True
                if self.ctx.is_main:
                    ckpt.save_training(self.out_dir, self._payload())
                dist_utils.barrier(self.ctx)
                break
            record = self._epoch_record(epoch, result)
            self.epochs_done = epoch + 1
            is_best = False
            if self.ctx.is_main:
                eval_started = time.perf_counter()
                val = self._validate()
                if val is not None:
                    record["val"] = val
                    record["eval_seconds"] = time.perf_counter() - eval_started
                    if val["accuracy"] is not None and (self.best is None or val["accuracy"] > self.best["accuracy"]):
                        self.best = {"accuracy": val["accuracy"], "epoch": epoch + 1}
                        is_best = True
                self.history.append(record)
                ckpt.save_training(self.out_dir, self._payload(), is_best=is_best)
                with open(self.out_dir / METRICS_FILE, "a") as handle:
                    handle.write(json.dumps(record, default=json_default) + "\n")
                if self.progress:
                    self._log_epoch(record, is_best)
            else:
                self.history.append(record)
            dist_utils.barrier(self.ctx)
        results = self._finish(time.perf_counter() - started, stopped_by_max_steps) if self.ctx.is_main else None
        dist_utils.barrier(self.ctx)
        return dist_utils.broadcast_object(results, self.ctx)

    def _log_epoch(self, record: dict, is_best: bool) -> None:
        parts = " ".join(f"{k} {_fmt(v)}" for k, v in record["train"].items())
        val = record.get("val")
        val_text = f" | val acc {_fmt(val['accuracy'])}{' *' if is_best else ''}" if val else ""
        skipped = f" | skipped {record['skipped_batches']}" if record["skipped_batches"] else ""
        log.info(
            f"epoch {record['epoch']}/{self.recipe.epochs} | {parts}{val_text} | "
            f"{record['images_per_second'] or 0:,.0f} img/s | {record['seconds']:.1f}s{skipped}"
        )

    def _final_model(self) -> tuple[torch.nn.Module, str]:
        best_path = self.out_dir / ckpt.BEST
        if self.val_set is not None and self.best and best_path.exists():
            payload = ckpt.load(best_path, map_location=self.device)
            model = ckpt.build_model(payload["meta"], best_path).to(self.device)
            model.load_state_dict(ckpt.model_weights(payload))
            model.eval()
            return model, f"best validation accuracy (epoch {self.best['epoch']})"
        if self.val_set is None:
            return self._eval_model(), "last epoch (no validation split: no model selection)"
        return self._eval_model(), "last state (no validated epoch yet)"

    def _finish(self, run_seconds: float, stopped_by_max_steps: bool) -> dict:
        model, selection = self._final_model()
        tta = self.recipe.tta
        with preserved_rng(), progress_bar("final evaluation", enabled=self.progress) as progress:
            metrics = {}
            reference = None  # the training split, embedded once for val and test (minutes at 96 px)
            if self.val_set is not None or self.test_set is not None:
                reference = embed_reference(
                    model,
                    self.train_set,
                    self.preprocessing,
                    self.device,
                    tta=tta,
                    precision=self.precision,
                    progress=progress,
                )

            def score(imageset, **options) -> dict:
                return evaluate(
                    model,
                    imageset,
                    self.preprocessing,
                    self.device,
                    tta=tta,
                    reference=reference,
                    space=self.space,
                    precision=self.precision,
                    progress=progress,
                    **options,
                )

            if self.val_set is not None:
                metrics["val"] = score(self.val_set)
            if self.test_set is not None:
                test = self.test_set
                if list(test.classes) != self.classes:
                    test = align_classes(test, self.classes)
                metrics["test"] = score(test, keep_predictions=True)  # per image: paired comparisons
        ckpt.save_weights(self.out_dir / WEIGHTS_FILE, model, self.meta)
        train_seconds = sum(r["seconds"] for r in self.history)
        images = sum((r.get("images_per_second") or 0) * r["seconds"] for r in self.history)
        results = {
            "recipe": self.recipe.name,
            "dataset": self.dataset,
            "seed": self.seed,
            "classes": self.classes,
            "selection": selection,
            "metrics": metrics,
            "tta": tta,
            "epochs_completed": self.epochs_done,
            "epochs": self.recipe.epochs,
            "steps": self.step,
            "stopped_by_max_steps": stopped_by_max_steps,
            "skipped_batches": self.skipped_total,
            "wall_seconds": run_seconds,
            "train_seconds": train_seconds,
            "images_per_second": images / train_seconds if train_seconds > 0 else None,
            "device": dist_utils.device_name(self.device),
            "precision": self.precision,
            "channels_last": self.channels_last,
            "deterministic": self.deterministic,
            "threads": torch.get_num_threads(),
            "world_size": self.ctx.world_size,
            "torch_version": torch.__version__,
            "fermetric_version": __version__,
            "python_version": platform.python_version(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "recipe_config": self.recipe.to_dict(),
            "out_dir": str(self.out_dir),
        }
        write_json_atomic(self.out_dir / RESULTS_FILE, results)
        if self.progress:
            for split, values in metrics.items():
                log.info(
                    f"{split}: accuracy {_fmt(values['accuracy'])} macro-F1 {_fmt(values['macro_f1'])} "
                    f"(n={values['n']}, tta={tta}, {selection})"
                )
        return results


def train(
    recipe,
    train_set,
    val_set,
    out_dir,
    device="auto",
    seed: int = 0,
    resume: bool = False,
    on_nan: str = "stop",
    max_steps: int | None = None,
    progress: bool = True,
    test_set=None,
    dataset: str | None = None,
    precision: str = "auto",
    deterministic: bool = False,
    threads: int | None = None,
    metric_labels=None,
    metric_classes: int | None = None,
    init_from=None,
) -> dict:
    """Train ``recipe`` on ``train_set``, select on ``val_set``, write everything to ``out_dir``.

    Args:
        recipe: a :class:`fermetric.config.Recipe`.
        train_set, val_set: ImageSets with the same classes; ``val_set=None`` means no selection
            (the last epoch is the result).
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` (under torchrun: the local rank's GPU).
        resume: continue from ``out_dir/last.pt`` (or ``last.prev.pt`` if that is corrupt).
        on_nan: ``stop`` (TrainingError) or ``skip`` (drop the batch) on a NaN/Inf loss.
        max_steps: stop after this many optimizer steps (a resumable checkpoint is written).
        test_set: also evaluated at the end and reported as ``metrics["test"]``.
        dataset: a name for metadata and results (default ``train_set.name``).
        precision: ``auto`` | ``bf16`` | ``fp32`` (see :mod:`fermetric.engine.precision`).
        deterministic: deterministic algorithms, for bit-exact repeatability and resume (slower;
            without it a resumed run continues the same schedule from the same step).
        metric_labels, metric_classes: labels ``[len(train_set)]`` in ``[0, metric_classes)`` that
            the metric loss (and the P x K sampler) use instead of the classifier's, e.g. DMSL's
            sub-classes during mitosis while cross-entropy keeps the expressions.
        init_from: a run directory or weights file whose model weights start this run (warm
            start, same architecture). With the same classes every weight is loaded; with other
            classes (fine-tuning a FER2013 model on CK+) every weight but the classifier's.
        threads: torch threads for the run, restored afterwards (default: unchanged in a single
            process; under torchrun the available cores shared by the local processes).
    Returns:
        The content of ``out_dir/results.json``.
    """
    context = dist_utils.setup(device)
    created = not Path(out_dir).exists()
    try:
        with deterministic_mode(context.device, deterministic), thread_count(threads):
            trainer = Trainer(
                recipe,
                train_set,
                val_set,
                out_dir,
                context,
                seed=seed,
                resume=resume,
                on_nan=on_nan,
                max_steps=max_steps,
                progress=progress,
                test_set=test_set,
                dataset=dataset,
                precision=precision,
                deterministic=deterministic,
                metric_labels=metric_labels,
                metric_classes=metric_classes,
                init_from=init_from,
            )
            return trainer.run()
    except BaseException:
        if created and context.is_main:  # a run that failed before writing anything leaves no empty folder
            with contextlib.suppress(OSError):
                Path(out_dir).rmdir()  # only succeeds when empty
        raise
    finally:
        dist_utils.cleanup(context)
