"""Stages, their cache keys, and the runner that skips what is up to date.

Each stage declares the config keys it reads and the stages it reads from. Its
cache key hashes those config values, the keys of its upstream stages, extra
inputs (e.g. the MNIST file digests) and the package version, so a key is a
pure function of the config and inputs: changing ``train.epochs`` changes the
key of train and, through the chain, of every stage after it.

Where a stage computes (device, thread count, data folder path) is not part
of its key: the same MNIST files give a cache hit from any folder.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from mnist_curate import __version__
from mnist_curate.config import Config
from mnist_curate.errors import PrerequisiteError
from mnist_curate.ui import Reporter, format_duration
from mnist_curate.workspace import CorruptRecordError, StageRecord, Workspace, atomic_write_json, now_iso


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    upstream: tuple[str, ...]
    config_keys: tuple[str, ...]
    runner: str  # "module:function" taking a StageContext and returning figures
    key_figures: tuple[str, ...] = ()
    # "module:function(config, workspace, options) -> dict" for inputs that are
    # not config values, such as file digests.
    inputs: str | None = None
    # "module:function(workspace, record) -> str | None" that checks results
    # kept outside the workspace (the export folder); a returned problem
    # makes the stage corrupt, so the next run recomputes it.
    verify: str | None = None
    # Whether the runner loads MNIST, so that check_can_run verifies the data first.
    reads_data: bool = False
    # "module:function(config, workspace, options)" that check_can_run calls
    # to reject bad input (such as the export target) before the lock is taken.
    precheck: str | None = None
    # "module:function(workspace, record, options) -> bool" that updates a
    # current record's figures for an input outside the cache key, such as
    # the decision file's path. run_stage saves the record when it returns True.
    refresh: str | None = None

    def load_runner(self) -> Callable[["StageContext"], dict[str, Any]]:
        return _load(self.runner)


def _load(target: str) -> Callable:
    module_name, _, function_name = target.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


def data_inputs(config: Config, workspace: Workspace, options: dict[str, Any]) -> dict[str, Any]:
    from mnist_curate.data import DATA_FINGERPRINT

    return {"mnist": DATA_FINGERPRINT}


STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage(
            name="train",
            summary="LeNet-5 on the original labels, with out-of-fold logits for training samples",
            upstream=(),
            config_keys=("seed", "data.limit", "train"),
            runner="mnist_curate.train:run_train",
            reads_data=True,
            key_figures=("test_accuracy", "oof_accuracy", "samples_per_s"),
            inputs="mnist_curate.pipeline:data_inputs",
        ),
        Stage(
            name="embed",
            summary="84-d embeddings, logits and joint PCA/UMAP maps of both splits from the final model",
            upstream=("train",),
            config_keys=("embed",),
            runner="mnist_curate.embed:run_embed",
            reads_data=True,
            key_figures=("n_samples", "n_misclassified"),
        ),
        Stage(
            name="score",
            summary="hardness, mistakenness, uniqueness, representativeness, margin and label issues",
            upstream=("embed",),
            config_keys=("score",),
            runner="mnist_curate.scores:run_score",
            key_figures=("n_label_issues", "seconds_metrics"),
        ),
        Stage(
            name="candidates",
            summary="IDK candidates picked by the rules, ranked by suspicion",
            upstream=("score",),
            config_keys=("candidates",),
            runner="mnist_curate.candidates:run_candidates",
            key_figures=("n_candidates", "n_candidates_train", "n_candidates_test"),
        ),
        # Curated labels depend only on the data and the decision file, not on
        # the model, so relabel reads no other stage.
        Stage(
            name="relabel",
            summary="the decision file applied to the given labels",
            upstream=(),
            config_keys=("seed", "data.limit"),
            runner="mnist_curate.relabel:run_relabel",
            reads_data=True,
            key_figures=("n_applied", "n_idk", "n_ignored"),
            inputs="mnist_curate.relabel:relabel_inputs",
            refresh="mnist_curate.relabel:refresh_relabel_record",
        ),
        Stage(
            name="export",
            summary="PNG folder tree per split and curated class, manifest.csv and dataset card",
            upstream=("relabel", "candidates"),
            config_keys=("seed", "data.limit", "export.png_compress_level"),
            runner="mnist_curate.export:run_export",
            reads_data=True,
            key_figures=("out", "n_files"),
            inputs="mnist_curate.export:export_inputs",
            verify="mnist_curate.export:verify_export",
            precheck="mnist_curate.export:precheck_export",
        ),
    )
}


# Keys and states ----------------------------------------------------------------

def key_material(stage: Stage, config: Config, workspace: Workspace, options: dict[str, Any],
                 upstream_keys: dict[str, str]) -> dict[str, Any]:
    inputs = _load(stage.inputs)(config, workspace, options) if stage.inputs else {}
    return {
        "stage": stage.name,
        "version": __version__,
        "config": config.section(*stage.config_keys),
        "upstream": {name: upstream_keys[name] for name in stage.upstream},
        "inputs": inputs,
    }


def hash_material(material: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:24]


@dataclass
class StageState:
    stage: str
    state: str  # done, stale, missing, corrupt
    key: str
    material: dict[str, Any]
    record: StageRecord | None = None
    reason: str = ""


def _changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Describe what differs between an old and a new key material, for stale messages."""
    if old.get("version") != new.get("version"):
        return f"mnist-curate version changed ({old.get('version')} -> {new.get('version')})"
    changed = []
    old_config, new_config = _flatten(old.get("config", {})), _flatten(new.get("config", {}))
    for key in sorted(set(old_config) | set(new_config)):
        if old_config.get(key) != new_config.get(key):
            changed.append(f"{key} {old_config.get(key)!r} -> {new_config.get(key)!r}")
    for name, key in new.get("upstream", {}).items():
        if old.get("upstream", {}).get(name) != key:
            changed.append(f"{name} was recomputed")
    for name, value in new.get("inputs", {}).items():
        if old.get("inputs", {}).get(name) != value:
            changed.append(f"input {name} changed")
    return "; ".join(changed) or "its inputs changed"


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def stage_states(config: Config, workspace: Workspace, options: dict[str, Any] | None = None,
                 *, verify: bool = True) -> dict[str, StageState]:
    """Compute every stage's expected key and compare it with its record."""
    options = options or {}
    keys: dict[str, str] = {}
    states: dict[str, StageState] = {}
    for stage in STAGES.values():
        material = key_material(stage, config, workspace, options, keys)
        key = keys[stage.name] = hash_material(material)
        states[stage.name] = _state_of(stage, key, material, workspace, verify=verify)
    return states


def _state_of(stage: Stage, key: str, material: dict[str, Any], workspace: Workspace, *, verify: bool) -> StageState:
    try:
        record = workspace.read_record(stage.name)
    except CorruptRecordError as error:
        return StageState(stage.name, "corrupt", key, material, None, f"unreadable record ({error})")
    if record is None:
        return StageState(stage.name, "missing", key, material)
    if record.key != key:
        return StageState(stage.name, "stale", key, material, record, _changes(record.inputs, material))
    if verify:
        problem = workspace.verify_outputs(record)
        if not problem and stage.verify:
            problem = _load(stage.verify)(workspace, record)
        if problem:
            return StageState(stage.name, "corrupt", key, material, record, problem)
    return StageState(stage.name, "done", key, material, record)


# Running --------------------------------------------------------------------------

@dataclass
class StageContext:
    """What a stage's runner gets: the config, where to write, and its upstream stages' folders."""

    stage: Stage
    config: Config
    workspace: Workspace
    out_dir: Path
    reporter: Reporter
    options: dict[str, Any] = field(default_factory=dict)

    def upstream_dir(self, name: str) -> Path:
        return self.workspace.stage_dir(name)

    @cached_property
    def data(self):
        from mnist_curate.data import load_mnist

        return _cached_data(self.config, load_mnist)

    @cached_property
    def device(self) -> str:
        from mnist_curate.data import resolve_device

        return resolve_device(self.config.device)


_DATA_CACHE: dict[str, Any] = {}


def _cached_data(config: Config, loader: Callable) -> Any:
    """Load MNIST once per process and settings, since several stages of `all` read it."""
    cache_key = json.dumps([config.data.__dict__, config.seed], sort_keys=True, default=str)
    if cache_key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[cache_key] = loader(config.data, seed=config.seed)
    return _DATA_CACHE[cache_key]


@dataclass
class StageOutcome:
    stage: str
    ran: bool
    record: StageRecord
    seconds: float  # wall time of this call, including the cache check


def prerequisite_message(stage: Stage, blocking: list[StageState], workspace: Workspace) -> str:
    parts = []
    for state in blocking:
        if state.state == "missing":
            parts.append(f"{state.stage} has not run")
        elif state.state == "stale":
            parts.append(f"{state.stage} is stale ({state.reason})")
        else:
            parts.append(f"{state.stage} is {state.state} ({state.reason})")
    first = blocking[0].stage
    return (f"{stage.name} needs up-to-date results of {', '.join(s.stage for s in blocking)}, but "
            f"{'; '.join(parts)}. Run {workspace.command(first)} first, "
            f"or {workspace.command('all')} for the whole chain.")


def run_stage(name: str, *, config: Config, workspace: Workspace, reporter: Reporter,
              force: bool = False, options: dict[str, Any] | None = None) -> StageOutcome:
    """Run one stage unless its record is current; the caller must hold the workspace lock."""
    started = time.perf_counter()
    options = options or {}
    stage = STAGES[name]
    states = stage_states(config, workspace, options)

    blocking = [states[u] for u in _all_upstream(stage) if states[u].state != "done"]
    if blocking:
        raise PrerequisiteError(prerequisite_message(stage, blocking, workspace))

    state = states[name]
    if state.state == "done" and not force:
        record = state.record
        assert record is not None
        if stage.refresh and _load(stage.refresh)(workspace, record, options):
            atomic_write_json(workspace.record_path(name), record.__dict__)
        reporter.info(f"[green]{name}: cached[/green] (computed {record.finished_at} in "
                      f"{format_duration(record.duration_s)})")
        return StageOutcome(name, False, record, time.perf_counter() - started)
    if state.state == "corrupt":
        reporter.warn(f"{name}: the saved result is damaged ({state.reason}); recomputing")
    elif state.state == "stale":
        reporter.info(f"{name}: stale ({state.reason}); recomputing")

    reporter.info(f"[bold]{name}[/bold]: {stage.summary}")
    out_dir = workspace.start_stage(name)
    started_at = now_iso()
    stage_started = time.perf_counter()
    context = StageContext(stage, config, workspace, out_dir, reporter, options)
    try:
        figures = stage.load_runner()(context)
    except BaseException:
        # A failed or interrupted stage leaves nothing behind; after kill -9 the next run cleans up.
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    duration = time.perf_counter() - stage_started

    record = StageRecord(stage=name, key=state.key, version=__version__, started_at=started_at,
                         finished_at=now_iso(), duration_s=round(duration, 3), inputs=state.material,
                         figures=figures, outputs={})
    workspace.commit_stage(out_dir, record)
    reporter.info(f"[green]{name}: done[/green] in {format_duration(duration)}")
    return StageOutcome(name, True, record, time.perf_counter() - started)


def check_can_run(names: list[str], *, config: Config, workspace: Workspace,
                  options: dict[str, Any] | None = None, force: bool = False) -> None:
    """Fail early, before the workspace is touched, when stages that must compute cannot.

    Checks that every stage these stages read from, other than the ones in
    ``names``, has run; that the device exists; and, when a stage that reads
    MNIST must compute, that the files in ``data.dir`` are present and intact.
    The data stays in the process cache, so the stage does not read it again.
    Without ``data.dir`` the stage downloads MNIST, so nothing is checked here.
    """
    from mnist_curate.data import load_mnist, locate_files, resolve_device

    workspace.check_is_folder()
    # Checked even when every stage is cached, because the command saves the config for later commands.
    resolve_device(config.device)
    if config.data.dir:
        locate_files(Path(config.data.dir).expanduser())
    states = stage_states(config, workspace, options, verify=False)
    pending = [name for name in names if force or states[name].state != "done"]
    if not pending:
        return
    for name in names:
        blocking = [states[u] for u in _all_upstream(STAGES[name]) if u not in names and states[u].state != "done"]
        if blocking:
            raise PrerequisiteError(prerequisite_message(STAGES[name], blocking, workspace))
    for name in pending:
        if STAGES[name].precheck:
            _load(STAGES[name].precheck)(config, workspace, options or {})
    if config.data.dir and any(STAGES[name].reads_data for name in pending):
        _cached_data(config, load_mnist)


def _all_upstream(stage: Stage) -> list[str]:
    """Return every stage this one depends on, directly or not, in pipeline order."""
    needed: set[str] = set()
    pending = list(stage.upstream)
    while pending:
        name = pending.pop()
        if name not in needed:
            needed.add(name)
            pending.extend(STAGES[name].upstream)
    return [name for name in STAGES if name in needed]
