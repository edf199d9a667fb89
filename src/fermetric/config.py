"""Typed training recipes.

A recipe is a small YAML file in ``fermetric/recipes``. Every method recipe starts from ``ce.yaml``
(``base: ce``) and overrides only what the method needs, so all methods share one protocol:
same backbone, input size, augmentation, schedule and epochs.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


@dataclass
class ModelConfig:
    backbone: str = "resnet18"
    width: float = 1.0  # channel multiplier of resnet18/34 and tiny (0.5: half the channels, ~4x fewer FLOPs)
    embedding_dim: int = 512
    attention: bool = False  # TCL's selective attention module on the last feature map
    partial: str | None = None  # None | "template" | "landmarks": PI&DML partial-image branches
    partial_shared: bool = True  # one branch for all regions, or one per region
    dropout: float = 0.0
    pretrained: bool = False  # ImageNet weights that ship inside registry packages (extra)
    # ImageNet backbones only: True removes the downsampling before the first stage (total stride 8,
    # for 48 px crops); False keeps the standard stride-32 network, for inputs of 96 px and up,
    # where pretrained filters see features at about the scale they were trained on
    small_input: bool = True


@dataclass
class LossConfig:
    name: str | None = None  # None: cross-entropy only; else a name in fermetric.losses.LOSSES
    weight: float = 1.0  # lambda of the metric loss
    options: dict = field(default_factory=dict)  # keyword arguments of the metric loss
    ce_weight: float = 1.0
    label_smoothing: float = 0.0


@dataclass
class OptimConfig:
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # cosine | onecycle
    warmup_epochs: float = 1.0  # cosine only; onecycle warms up over 20% of the steps
    loss_lr_multiplier: float = 1.0  # learning-rate factor for loss parameters (learnable centres)


@dataclass
class AugmentConfig:
    crop_padding: int = 4  # pad-and-crop jitter in pixels at input size
    scale: tuple[float, float] = (0.8, 1.2)
    rotation: float = 10.0  # degrees
    hflip: bool = True
    erasing: float = 0.5  # probability of random erasing
    # Photometric jitter (lighting), each off at 0: brightness and contrast factors ~ U(1 - v, 1 + v),
    # gamma ~ log-uniform in [1 / (1 + v), 1 + v]; per sample, on [0, 1] pixels, before the affine.
    brightness: float = 0.0
    contrast: float = 0.0
    gamma: float = 0.0


@dataclass
class DataConfig:
    input_size: int = 48
    batch_size: int = 256
    sampler: str = "random"  # random | pk (P classes x K samples per batch)
    samples_per_class: int = 16  # K of a P x K batch
    mean: float = 0.5
    std: float = 0.25
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class DistillConfig:
    """Knowledge distillation from a trained model (``teacher``: a shipped name, run or file), or
    from an ensemble of them (a list: the student learns the mean of their logits)."""

    teacher: str | list[str] | None = None  # None: no distillation
    weight: float = 1.0  # of the soft-target term, beside loss.ce_weight * cross-entropy
    temperature: float = 4.0
    tta: str = "none"  # none | flip: each teacher averages its logits of the face and its mirror


@dataclass
class Recipe:
    name: str = "ce"
    description: str = ""
    epochs: int = 60
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    ema: float | None = None  # decay of an exponential moving average of the weights
    amp: bool = True  # bf16 autocast on CUDA (CPU always runs fp32)
    channels_last: bool = True  # on CUDA
    compile: bool = False  # torch.compile the model on CUDA
    tta: str = "none"  # none | flip: test-time augmentation, always reported with results

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Recipe:
        return _build(cls, data, "recipe")


def _checked(hint, value, where: str):
    """``value`` if it fits the field type ``hint`` (a numeric string such as YAML's ``1e-3`` is
    read as a float), else a one-line ConfigError: a wrong type must not surface later as a
    TypeError deep inside training."""
    if hint is Any:
        return value
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is not type(None):
                try:
                    return _checked(option, value, where)
                except ConfigError as err:
                    errors.append(str(err))
        raise ConfigError("; or ".join(errors))
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"{where} must be a non-empty list, got {value!r}")
        return [_checked(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if typing.get_origin(hint) is tuple:
        items = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(items):
            raise ConfigError(f"{where} must be a list of {len(items)} values, got {value!r}")
        return tuple(_checked(h, v, f"{where}[{i}]") for i, (h, v) in enumerate(zip(items, value)))
    if hint is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if hint in (bool, str, dict) and not isinstance(value, hint):
        expected = {bool: "true or false", str: "a string", dict: "a mapping"}[hint]
        raise ConfigError(f"{where} must be {expected}, got {value!r}")
    return value


def _build(kind, data: dict, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {data!r}")
    known = {f.name: f for f in fields(kind)}
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(f"unknown {where} option(s) {sorted(unknown)}; known: {sorted(known)}")
    hints = typing.get_type_hints(kind)
    values = {}
    for name, value in data.items():
        default = getattr(kind(), name)
        if is_dataclass(default):
            value = _build(type(default), value, f"{where}.{name}")
        else:
            value = _checked(hints[name], value, f"{where}.{name}")
        values[name] = value
    return kind(**values)


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "options":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def recipe_names() -> list[str]:
    folder = resources.files("fermetric") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_recipe_dict(name_or_path: str, seen: tuple = ()) -> dict:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        text = path.read_text()
    else:
        resource = resources.files("fermetric") / "recipes" / f"{name_or_path}.yaml"
        if not resource.is_file():
            raise ConfigError(f"unknown recipe {name_or_path!r}; known: {', '.join(recipe_names())} (or a .yaml path)")
        text = resource.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {name_or_path}: not valid YAML ({' '.join(str(err).split())[:200]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {name_or_path} must be a YAML mapping of options, got {type(data).__name__}")
    base = data.pop("base", None)
    if base:
        if base in seen:
            raise ConfigError(f"recipe {name_or_path!r} inherits from itself through {base!r}")
        data = _merge(_read_recipe_dict(base, seen + (name_or_path,)), data)
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.05"`` -> (["optim", "lr"], 0.05); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, value = text.split("=", 1)
    try:
        return key.strip().split("."), yaml.safe_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"override {text!r}: the value is not valid YAML; quote it, e.g. {key}='{value}'") from None


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    """A recipe by name (``ce``, ``mtdml``...) or YAML path, with ``key.sub=value`` overrides."""
    data = _read_recipe_dict(name_or_path)
    for text in overrides or []:
        keys, value = parse_override(text)
        node = data
        for depth, key in enumerate(keys[:-1]):
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(keys[: depth + 1])} is not a group of options")
        node[keys[-1]] = value
    return Recipe.from_dict(data)


def replace(recipe: Recipe, **changes) -> Recipe:
    return dataclasses.replace(recipe, **changes)
