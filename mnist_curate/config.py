"""The typed, validated configuration of every stage.

A config is a YAML mapping with one section per stage plus a few top-level
keys. Every key is declared here with its type, default and allowed range, so
this module is the one place where defaults live. ``load_config`` reads a file,
applies command-line overrides and checks everything before any work starts;
each problem names the key path, the value found and what is expected.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from mnist_curate.errors import ConfigError


def _knob(default: Any, help: str, *, min: float | None = None, max: float | None = None,
          min_exclusive: bool = False, choices: tuple | None = None) -> Any:
    """Declare a config key with its default, a one-line help and its bounds."""
    metadata = {"help": help, "min": min, "max": max, "min_exclusive": min_exclusive, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class DataConfig:
    dir: Optional[str] = _knob(
        None, "Folder that holds the four MNIST files (gz or unpacked, flat or MNIST/raw/). "
        "Null downloads into cache_dir.")
    cache_dir: Optional[str] = _knob(
        None, "Where a download goes. Null means $XDG_CACHE_HOME/mnist-curate (~/.cache/mnist-curate).")
    mirrors: list[str] = _knob(
        [], "Base URLs to download the MNIST archives from, tried in order. Empty uses torchvision's mirrors.")
    limit: Optional[int] = _knob(
        None, "Stratified subset of this many samples per split, for quick runs. Null uses all samples.",
        min=20, max=10_000)


@dataclass
class TrainConfig:
    epochs: int = _knob(8, "Epochs for the final model, trained on every training sample.", min=1, max=1000)
    fold_epochs: Optional[int] = _knob(
        6, "Epochs for each out-of-fold model. Null uses `epochs`.", min=1, max=1000)
    folds: int = _knob(
        5, "Out-of-fold models: each training sample is scored by a model that never saw it. "
        "0 turns this off (training-sample scores are then optimistic); 1 is not allowed.", min=0, max=20)
    batch_size: int = _knob(256, "Training batch size.", min=1, max=65_536)
    lr: float = _knob(0.004, "Peak learning rate of the one-cycle schedule (Adam).", min=0.0, min_exclusive=True, max=10.0)
    weight_decay: float = _knob(0.0001, "Adam weight decay (L2).", min=0.0, max=1.0)
    eval_batch_size: int = _knob(2048, "Batch size for inference.", min=1, max=65_536)


UMAP_METRICS = ("euclidean", "cosine", "manhattan", "correlation")
LABEL_ISSUE_FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
                       "predicted_neq_given", "low_normalized_margin", "low_self_confidence")


@dataclass
class EmbedConfig:
    umap_n_neighbors: int = _knob(
        15, "UMAP neighbourhood size: larger values keep more of the global layout.", min=2, max=200)
    umap_min_dist: float = _knob(
        0.1, "UMAP minimum distance between points in the map: smaller packs clusters tighter.", min=0.0, max=1.0)
    umap_metric: str = _knob(
        "cosine", "Distance between embeddings that UMAP preserves.", choices=UMAP_METRICS)
    umap_n_epochs: int = _knob(
        100, "UMAP layout optimisation epochs; the map's cost grows linearly with them.", min=1, max=10_000)
    umap_negative_sample_rate: int = _knob(
        3, "UMAP negative samples per positive one in each epoch: more push clusters apart harder but cost more.",
        min=1, max=100)


@dataclass
class ScoreConfig:
    representativeness_clusters: int = _knob(
        20, "KMeans clusters per split for representativeness (FiftyOne Brain uses 20).", min=2, max=1000)
    label_issue_filter_by: str = _knob(
        "prune_by_noise_rate", "cleanlab find_label_issues filter_by method for the label_issue flag.",
        choices=LABEL_ISSUE_FILTERS)


@dataclass
class CandidatesConfig:
    top_mistakenness: float = _knob(
        0.003, "Rule mistaken: the top fraction of each split by mistakenness, when also misclassified.",
        min=0.0, max=1.0)
    top_hardness: float = _knob(
        0.003, "Rule hard: the top fraction of each split by hardness, when also misclassified.", min=0.0, max=1.0)
    top_uniqueness: float = _knob(
        0.001, "Rule outlier: the top fraction of each split by uniqueness.", min=0.0, max=1.0)
    label_issues: bool = _knob(True, "Rule label_issue: flag cleanlab's confident-learning label issues.")
    montage_size: int = _knob(100, "Top candidates shown in montage.png, by suspicion.", min=1, max=2000)


@dataclass
class ReviewConfig:
    port: int = _knob(5151, "TCP port of the FiftyOne App server.", min=1, max=65_535)
    address: str = _knob(
        "127.0.0.1", "Address the App server listens on: 127.0.0.1 serves this machine only (reach it from "
        "elsewhere through an SSH tunnel); 0.0.0.0 serves every network interface.")


@dataclass
class ExportConfig:
    dir: Optional[str] = _knob(
        None, "Folder the curated dataset is exported to. Null means WORKSPACE/curated-mnist.")
    png_compress_level: int = _knob(
        6, "zlib level of the PNG files (0 = none, 9 = smallest); pixels are lossless at every level.", min=0, max=9)
    workers: int = _knob(
        0, "Processes that encode the PNG files. 0 uses one per CPU core; 1 encodes in the main process.",
        min=0, max=256)


@dataclass
class Config:
    seed: int = _knob(0, "Seed for subsets, fold assignment, weight init, shuffling, UMAP and KMeans.", min=0, max=2**32 - 1)
    device: str = _knob("auto", "auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps.")
    num_threads: int = _knob(0, "CPU threads for torch. 0 keeps torch's default (one per core).", min=0, max=1024)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    candidates: CandidatesConfig = field(default_factory=CandidatesConfig)
    review: ReviewConfig = field(default_factory=ReviewConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section(self, *key_paths: str) -> dict[str, Any]:
        """Return the values of the given dotted key paths, for a stage's cache key."""
        as_dict = self.to_dict()
        picked = {}
        for key_path in key_paths:
            value: Any = as_dict
            for part in key_path.split("."):
                value = value[part]
            picked[key_path] = value
        return picked


def iter_keys(cls: type = Config, prefix: str = "") -> typing.Iterator[tuple[str, dataclasses.Field, Any]]:
    """Yield (dotted key path, field, type hint) for every leaf key of a config class."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from iter_keys(hint, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, hint


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        parts = [_describe(a) for a in typing.get_args(hint) if a is not type(None)]
        return " or ".join(parts) + " or null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin is list:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(hint, str(hint))


def _check_type(value: Any, hint: Any) -> tuple[bool, Any]:
    """Return (ok, coerced value) for a YAML value against a type hint."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        if value is None:
            return (type(None) in typing.get_args(hint)), None
        for arg in typing.get_args(hint):
            if arg is type(None):
                continue
            ok, coerced = _check_type(value, arg)
            if ok:
                return True, coerced
        return False, value
    if origin is list:
        if not isinstance(value, list):
            return False, value
        (item_hint,) = typing.get_args(hint)
        checked = [_check_type(item, item_hint) for item in value]
        return all(ok for ok, _ in checked), [v for _, v in checked]
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return (isinstance(value, int) and not isinstance(value, bool)), value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, value
        return math.isfinite(value), float(value)
    if hint is str:
        return isinstance(value, str), value
    raise TypeError(f"unsupported config type {hint!r}")


def _check_range(key_path: str, value: Any, f: dataclasses.Field) -> str | None:
    meta = f.metadata
    if value is None or isinstance(value, (list, str)) and meta.get("choices") is None:
        return None
    if meta.get("choices") is not None and value not in meta["choices"]:
        return f"{key_path}: found {value!r}, expected one of {', '.join(map(repr, meta['choices']))}"
    low, high = meta.get("min"), meta.get("max")
    if low is not None:
        too_low = value <= low if meta.get("min_exclusive") else value < low
        if too_low:
            bound = f"greater than {low}" if meta.get("min_exclusive") else f"at least {low}"
            return f"{key_path}: found {value!r}, expected {bound}"
    if high is not None and value > high:
        return f"{key_path}: found {value!r}, expected at most {high}"
    return None


def _build(cls: type, raw: dict[str, Any], prefix: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            suggestion = _closest(str(key), known)
            hint = f" (did you mean {prefix}{suggestion}?)" if suggestion else ""
            problems.append(f"{prefix}{key}: unknown key{hint}; known keys here: {', '.join(known)}")

    values = {}
    for name, f in known.items():
        hint = hints[name]
        key_path = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            section = raw.get(name, {})
            if section is None:
                section = {}
            if not isinstance(section, dict):
                problems.append(f"{key_path}: found {section!r}, expected a mapping of {hint.__name__} keys")
                section = {}
            values[name] = _build(hint, section, f"{key_path}.", problems)
            continue
        if name not in raw:
            continue
        ok, coerced = _check_type(raw[name], hint)
        if not ok:
            problems.append(f"{key_path}: found {raw[name]!r}, expected {_describe(hint)}")
            continue
        problem = _check_range(key_path, coerced, f)
        if problem:
            problems.append(problem)
            continue
        values[name] = coerced
    return cls(**values)


def _closest(key: str, known: dict) -> str | None:
    import difflib

    matches = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _check_relations(config: Config, problems: list[str]) -> None:
    if config.train.folds == 1:
        problems.append("train.folds: found 1, expected 0 (off) or at least 2, "
                        "because one fold leaves no data to train its model on")
    device = config.device
    if not (device in ("auto", "cpu", "mps", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
        problems.append(f"device: found {device!r}, expected auto, cpu, cuda, cuda:N or mps")


def config_from_dict(raw: Any, *, source: str = "config") -> Config:
    """Build and validate a Config from a parsed YAML mapping.

    Raises ConfigError listing every problem, each with its key path.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a YAML mapping of config keys, found {type(raw).__name__}")
    problems: list[str] = []
    config = _build(Config, raw, "", problems)
    if not problems:
        _check_relations(config, problems)
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"invalid config in {source}:\n{listing}\n"
                          "Every key with its type and default: examples/config.yaml in the mnist-curate source; "
                          "every key with its value: the config.yaml that each workspace saves.")
    return config


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a YAML config file into a mapping, with a clear message on failure."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: expected a mapping of keys, found {type(raw).__name__}")
    return raw or {}


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of a raw config mapping with dotted-path overrides set (None values skipped)."""
    merged = _deep_copy(raw)
    for key_path, value in overrides.items():
        if value is None:
            continue
        node = merged
        *parents, leaf = key_path.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value
    return merged


def _deep_copy(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in raw.items()}


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
