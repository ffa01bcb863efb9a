"""The FiftyOne dataset of a workspace: built from the stage outputs, kept in step, and read back as decisions.

One persistent dataset per workspace has one sample per MNIST image with its
given label, the model's prediction, every score, the candidate flag and
reasons, the current decision and the curated label. The PCA and UMAP maps of
``embed`` are registered as visualization runs, so the App's Embeddings panel
shows them without recomputing anything.

The build is cached by its own state file, ``WORKSPACE/review/dataset.json``,
because the dataset lives in MongoDB, not in a stage folder. The file records
which inputs each group of fields was last written from. Only stale groups
are rewritten in place; the dataset is rebuilt only when the set of samples
changed. A group is marked stale in the file before its fields are touched,
so an interrupted build is finished by the next run and never taken as
complete.

Reviewers mark samples with tags in the App (see ``REVIEW_TAGS``), and
``sync_tags`` turns the tags into decisions in the decision file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from mnist_curate.config import Config
from mnist_curate.errors import CurateError, PrerequisiteError
from mnist_curate.fiftyone_env import dataset_name, review_dir, user_database_uri
from mnist_curate.ui import Reporter, format_duration
from mnist_curate.workspace import TEMP_MARK, Workspace, atomic_write_json

# Bump when the dataset's fields or their meaning change, so old datasets are rebuilt.
DATASET_FORMAT = 1
UPSTREAM_STAGES = ("embed", "score", "candidates")
SCORE_FIELDS = ("hardness", "mistakenness", "uniqueness", "representativeness", "margin", "self_confidence")
MAPS = ("umap", "pca")
IDK = "IDK"
IDK_TAG = "IDK"
KEEP_TAG = "keep"
DIGIT_TAG_PREFIX = "is:"
REVIEW_TAGS = (IDK_TAG, KEEP_TAG) + tuple(f"{DIGIT_TAG_PREFIX}{digit}" for digit in range(10))
UPDATE_BATCH = 5_000
IMAGE_SIDE = 28


@dataclass(frozen=True)
class SavedView:
    name: str
    description: str


SAVED_VIEWS = (
    SavedView("IDK candidates", "candidates for the IDK class, most suspicious first"),
    SavedView("still undecided candidates", "candidates without a decision or a review tag, most suspicious first"),
    SavedView("decided so far", "samples with a decision in the decision file or a review tag"),
    SavedView("most mistaken", "all samples by mistakenness, highest first"),
    SavedView("hardest", "all samples by hardness, highest first"),
    SavedView("most unique", "all samples by uniqueness, highest first"),
    SavedView("least representative", "all samples by representativeness, lowest first"),
    SavedView("misclassified", "prediction differs from the given label, most confident first"),
    SavedView("label issues", "confident-learning label issues, lowest self-confidence first"),
)
CANDIDATES_VIEW = SAVED_VIEWS[0].name


# Inputs ------------------------------------------------------------------------------

@dataclass
class ReviewInputs:
    """Per-sample arrays in the shared row order (training samples, then test samples, by sample id)."""

    sample_ids: np.ndarray
    splits: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    confidence: np.ndarray
    score_logits: np.ndarray  # out-of-fold logits for training rows when train had folds, else the final model's
    maps: dict[str, np.ndarray]  # "umap", "pca": (n, 2)
    scores: dict[str, np.ndarray]
    label_issue: np.ndarray
    candidate_mask: np.ndarray
    suspicion: np.ndarray
    reasons: dict[str, list[str]]
    stage_keys: dict[str, str]

    def __len__(self) -> int:
        return len(self.sample_ids)


def check_upstream(config: Config, workspace: Workspace) -> dict[str, str]:
    """Return the cache keys of the stages review reads, or raise if any is not done."""
    from mnist_curate.pipeline import STAGES, prerequisite_message, stage_states

    states = stage_states(config, workspace)
    missing = [name for name in UPSTREAM_STAGES if name not in STAGES]
    if missing:
        raise CurateError(f"internal error: review needs the stages {', '.join(missing)}, "
                          "which this mnist-curate does not have")
    needed = [name for name in STAGES if name in _with_upstream(UPSTREAM_STAGES, STAGES)]
    blocking = [states[name] for name in needed if states[name].state != "done"]
    if blocking:
        raise PrerequisiteError(prerequisite_message(_ReviewStage(), blocking, workspace))
    return {name: states[name].key for name in UPSTREAM_STAGES}


@dataclass(frozen=True)
class _ReviewStage:
    """Stands in for a Stage in prerequisite messages; review is not a pipeline stage."""

    name: str = "review"


def _with_upstream(names: Iterable[str], stages: dict) -> set[str]:
    needed: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name not in needed:
            needed.add(name)
            pending.extend(stages[name].upstream)
    return needed


def load_review_inputs(workspace: Workspace, stage_keys: dict[str, str]) -> ReviewInputs:
    """Load what the dataset shows from the embed, score and candidates folders."""
    from mnist_curate.embed import load_embed, score_logits
    from mnist_curate.scores import load_scores

    arrays = load_embed(workspace.root, mmap=False)
    scores = load_scores(workspace.root)
    candidates_dir = workspace.stage_dir("candidates")
    return ReviewInputs(
        sample_ids=arrays["sample_ids"].astype(str),
        splits=arrays["splits"].astype(str),
        labels=arrays["labels"].astype(np.int64),
        predictions=arrays["predictions"].astype(np.int64),
        confidence=arrays["confidence"].astype(np.float64),
        score_logits=score_logits(arrays["logits"], arrays["oof_logits"]).astype(np.float32),
        maps={name: arrays[name].astype(np.float32) for name in MAPS},
        scores={name: scores[name].astype(np.float64) for name in SCORE_FIELDS},
        label_issue=scores["label_issue"].astype(bool),
        candidate_mask=np.load(candidates_dir / "candidate_mask.npy").astype(bool),
        suspicion=np.load(candidates_dir / "suspicion.npy").astype(np.float64),
        reasons=json.loads((candidates_dir / "reasons.json").read_text(encoding="utf-8")),
        stage_keys=stage_keys,
    )


# Review images -----------------------------------------------------------------------

def images_dir(workspace: Workspace) -> Path:
    return review_dir(workspace) / "images"


def image_paths(workspace: Workspace, sample_ids: Iterable[str]) -> list[str]:
    folder = images_dir(workspace)
    return [str(folder / f"{sample_id}.png") for sample_id in sample_ids]


def write_missing_images(workspace: Workspace, config: Config, sample_ids: np.ndarray, reporter: Reporter) -> int:
    """Write a PNG per sample that has none yet; return how many were written.

    Each file is written under a temporary name and renamed, so after a
    crash or kill of this process a file that exists is complete, and every
    later build reuses it.
    NOTE: the files are not fsynced one by one (that made 70,000 files take
    minutes), so after a power loss a file may exist but be empty; delete
    WORKSPACE/review/images to have them written again.
    """
    paths = image_paths(workspace, sample_ids)
    missing_idx = [i for i, path in enumerate(paths) if not os.path.exists(path)]
    if not missing_idx:
        return 0

    from mnist_curate.data import load_mnist

    data = load_mnist(config.data, seed=config.seed)
    row_of = {}
    for split in (data.train, data.test):
        row_of.update({(split.name, int(index)): (split, row) for row, index in enumerate(split.index)})
    images_dir(workspace).mkdir(parents=True, exist_ok=True)

    jobs = []
    for i in missing_idx:
        split_name, _, number = str(sample_ids[i]).partition("-")
        split, row = row_of[(split_name, int(number))]
        jobs.append((paths[i], split.images[row]))

    with reporter.progress() as progress, ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        task = progress.add_task("review images", total=len(jobs), status="")
        for _ in pool.map(_write_png, jobs, chunksize=256):
            progress.advance(task)
    return len(jobs)


def _write_png(job: tuple[str, np.ndarray]) -> None:
    from PIL import Image

    path, image = job
    folder, name = os.path.split(path)
    # A hidden name with the workspace's temporary mark, which the next locked run removes if left behind.
    temp = os.path.join(folder, f".{name}{TEMP_MARK}{os.getpid()}")
    Image.fromarray(image, mode="L").save(temp, format="PNG")
    os.replace(temp, path)


# Build state -------------------------------------------------------------------------

def state_path(workspace: Workspace) -> Path:
    return review_dir(workspace) / "dataset.json"


def read_state(workspace: Workspace) -> dict[str, Any] | None:
    try:
        state = json.loads(state_path(workspace).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not isinstance(state.get("groups"), dict):
        return None
    return state


def write_state(workspace: Workspace, state: dict[str, Any]) -> None:
    atomic_write_json(state_path(workspace), state)


def _digest(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def decisions_digest(path: Path) -> str:
    return _digest(str(path), hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent")


def group_keys(workspace: Workspace, inputs: ReviewInputs, decisions_path: Path) -> dict[str, str]:
    """Return a key per group of fields: it changes exactly when that group's values may change."""
    return {
        "samples": _digest(str(DATASET_FORMAT), *inputs.sample_ids.tolist(), *map(str, inputs.labels.tolist())),
        "paths": _digest(str(images_dir(workspace))),
        "embed": inputs.stage_keys["embed"],
        "score": inputs.stage_keys["score"],
        "candidates": inputs.stage_keys["candidates"],
        "decisions": decisions_digest(decisions_path),
    }


# Building the dataset ----------------------------------------------------------------

@dataclass
class BuildResult:
    dataset: Any
    rebuilt: bool
    updated_groups: list[str]
    n_samples: int
    n_candidates: int
    n_images_written: int
    seconds: float
    synced_before_rebuild: "SyncResult | None" = None


def build_dataset(fo: Any, workspace: Workspace, config: Config, reporter: Reporter, *,
                  decisions_path: Path) -> BuildResult:
    """Create the workspace's dataset, or update in place the fields whose inputs changed."""
    started = time.perf_counter()
    step = _StepTimer(reporter)
    inputs = load_review_inputs(workspace, check_upstream(config, workspace))
    step.done("inputs read")
    keys = group_keys(workspace, inputs, decisions_path)
    state = read_state(workspace)
    dataset = load_workspace_dataset(fo, workspace)
    name = dataset.name if dataset is not None else dataset_name(workspace)

    n_images_written = write_missing_images(workspace, config, inputs.sample_ids, reporter)
    step.done(f"{n_images_written:,} review images written")

    synced = None
    carried_tags: dict[str, list[str]] = {}
    rebuilt = _needs_rebuild(dataset, state, keys, len(inputs))
    if rebuilt:
        if dataset is not None:
            synced = _save_tags_before_rebuild(dataset, decisions_path, reporter)
            keys["decisions"] = decisions_digest(decisions_path)
            carried_tags = _reviewer_tags(dataset)
            fo.delete_dataset(name)
        name = dataset_name(workspace)
        if fo.dataset_exists(name):
            fo.delete_dataset(name)  # left by a build that never recorded it, so it has no review tags
        state = {"dataset": name, "build_id": uuid.uuid4().hex, "groups": {}}
        write_state(workspace, state)
        reporter.info(f"review: building the FiftyOne dataset {name} ({len(inputs):,} samples)")
        dataset, ids = _create_dataset(fo, name, state["build_id"], workspace, inputs, carried_tags)
        step.done("samples added")

    stale = [group for group in ("samples", "paths", "embed", "score", "candidates", "decisions")
             if state["groups"].get(group) != keys[group]]
    if "embed" not in stale and not set(MAPS) <= set(dataset.list_brain_runs()):
        stale.insert(0, "embed")
    if stale:
        for group in stale:
            state["groups"].pop(group, None)
        write_state(workspace, state)
        if not rebuilt:
            reporter.info(f"review: updating {', '.join(stale)} fields in place")
            ids = _fiftyone_ids(dataset, inputs.sample_ids)
        columns = _columns(fo, stale, workspace, inputs, _decisions_for(decisions_path, inputs.sample_ids))
        write_ids = ids
        if not rebuilt:
            write_ids, columns = _changed_rows(dataset, ids, columns)
        step.done(f"field values prepared ({len(write_ids):,} samples to write)")
        set_columns(fo, dataset, write_ids, columns)
        step.done(f"fields written: {', '.join(columns)}")
        if "embed" in stale:
            register_maps(dataset, ids, inputs.maps)
            step.done("maps registered")
        for group in stale:
            state["groups"][group] = keys[group]
        write_state(workspace, state)

    save_views(fo, dataset)
    configure_app(fo, dataset)
    step.done("views saved")
    return BuildResult(dataset, rebuilt, stale, len(inputs), int(inputs.candidate_mask.sum()), n_images_written,
                       time.perf_counter() - started, synced)


class _StepTimer:
    """Report the time of each build step under --verbose."""

    def __init__(self, reporter: Reporter):
        self.reporter = reporter
        self.last = time.perf_counter()

    def done(self, step: str) -> None:
        now = time.perf_counter()
        self.reporter.detail(f"review: {step} ({format_duration(now - self.last)})")
        self.last = now


def load_workspace_dataset(fo: Any, workspace: Workspace) -> Any | None:
    """Return the dataset that the workspace's state file records, or None when there is none.

    The recorded name is used even when the workspace folder was moved or
    copied, so the reviewer's tags stay with it. In a database shared
    through FIFTYONE_DATABASE_URI, a dataset recorded by a copy's original is
    not taken over: the copy gets its own.
    """
    state = read_state(workspace)
    name = state.get("dataset") if state else None
    if not name or not fo.dataset_exists(name):
        return None
    dataset = fo.load_dataset(name)
    if user_database_uri() is not None and dataset.info.get("mnist_curate_workspace") != str(workspace.root):
        return None
    return dataset


def _needs_rebuild(dataset: Any, state: dict[str, Any] | None, keys: dict[str, str], n_samples: int) -> bool:
    if dataset is None or state is None:
        return True
    if dataset.info.get("mnist_curate_build_id") != state.get("build_id"):
        return True  # another database, or a dataset that this state file did not record
    if state["groups"].get("samples") != keys["samples"]:
        return True
    return len(dataset) != n_samples  # samples deleted by hand in the App or in Python


def _save_tags_before_rebuild(dataset: Any, decisions_path: Path, reporter: Reporter) -> "SyncResult | None":
    """Sync review tags into the decision file before the dataset that has them is deleted."""
    if not dataset.has_sample_field("sample_id") or not dataset.match_tags(list(REVIEW_TAGS)).count():
        return None
    reporter.info("review: the samples changed, so the dataset is rebuilt; saving its review tags first")
    result = sync_tags(dataset, decisions_path, reporter, update_dataset=False)
    report_sync(result, reporter)
    return result


def _reviewer_tags(dataset: Any) -> dict[str, list[str]]:
    """Return {sample_id: tags other than the split} of the samples that have any."""
    return {sample_id: extra for sample_id, tags in zip(*dataset.values(["sample_id", "tags"]))
            if sample_id and (extra := [tag for tag in tags or [] if tag not in ("train", "test")])}


def _create_dataset(fo: Any, name: str, build_id: str, workspace: Workspace, inputs: ReviewInputs,
                    carried_tags: dict[str, list[str]]) -> tuple[Any, list[str]]:
    """Create the dataset with one sample per image (media and tags); return it and the samples' ids in row order.

    Every other field, even the sample id, is written afterwards by
    set_columns: a ``fiftyone.Sample`` costs more per field than the
    database write. Tags of a replaced dataset are carried over to the
    samples that are still there, so conflicts and tags that were not review
    tags survive a rebuild too.
    """
    dataset = fo.Dataset(name, persistent=True)
    dataset.info["mnist_curate_build_id"] = build_id
    dataset.info["mnist_curate_workspace"] = str(workspace.root)
    dataset.save()
    declare_fields(fo, dataset)

    paths = image_paths(workspace, inputs.sample_ids)
    samples = (fo.Sample(filepath=path, tags=[str(split), *carried_tags.get(str(sample_id), [])])
               for path, sample_id, split in zip(paths, inputs.sample_ids, inputs.splits))
    ids = dataset.add_samples(samples, progress=False)
    for path in ("sample_id", "suspicion", *SCORE_FIELDS):
        dataset.create_index(path)
    return dataset, ids


def declare_fields(fo: Any, dataset: Any) -> None:
    """Add every field to the schema with its type, so that values written in bulk need no inference."""
    classification = dict(ftype=fo.EmbeddedDocumentField, embedded_doc_type=fo.Classification)
    fields = {
        "sample_id": dict(ftype=fo.StringField, description="MNIST sample id, e.g. train-00042"),
        "split": dict(ftype=fo.StringField, description="train or test"),
        "ground_truth": classification | dict(description="the given MNIST label"),
        "prediction": classification | dict(
            description="LeNet-5 prediction from out-of-fold logits (training samples) or the final model"),
        **{name: dict(ftype=fo.FloatField) for name in SCORE_FIELDS},
        "label_issue": dict(ftype=fo.BooleanField, description="confident-learning label issue"),
        "candidate": dict(ftype=fo.BooleanField, description="IDK candidate"),
        "suspicion": dict(ftype=fo.FloatField, description="combined rank of the candidate scores; higher is more suspicious"),
        "reasons": dict(ftype=fo.ListField, subfield=fo.StringField, description="why the sample is a candidate"),
        "decision": dict(ftype=fo.StringField, description="label in the decision file: IDK or a digit"),
        "decision_source": dict(ftype=fo.StringField, description="review, rule or manual"),
        "curated_label": classification | dict(description="the decision's label, else the given label"),
        "synced_tags": dict(ftype=fo.ListField, subfield=fo.StringField,
                            description="review tags at the last sync"),
    }
    for name, spec in fields.items():
        if not dataset.has_sample_field(name):
            dataset.add_sample_field(name, **spec)


def _fiftyone_ids(dataset: Any, sample_ids: np.ndarray) -> list[str]:
    """Return the FiftyOne id of each sample, in the order of ``sample_ids``."""
    found = dict(zip(*dataset.values(["sample_id", "id"])))
    missing = [sample_id for sample_id in sample_ids if sample_id not in found]
    if missing:
        raise CurateError(f"internal error: the FiftyOne dataset {dataset.name} lacks {len(missing)} samples "
                          f"(e.g. {missing[0]}) although it has as many samples as the workspace")
    return [found[sample_id] for sample_id in sample_ids]


# Field values ------------------------------------------------------------------------

def _decisions_for(decisions_path: Path, sample_ids: np.ndarray) -> dict[str, Any]:
    """Return the decisions of the given samples (none when the decision file does not exist yet)."""
    if not decisions_path.is_file():
        return {}
    from mnist_curate.decisions import read_decisions

    present = set(sample_ids.tolist())
    return {sample_id: decision for sample_id, decision in read_decisions(decisions_path).items()
            if sample_id in present}


def _columns(fo: Any, groups: list[str], workspace: Workspace, inputs: ReviewInputs,
             decisions: dict[str, Any]) -> dict[str, list]:
    """Return {field: one stored value per sample} for the given groups of fields."""
    builder = _DocBuilder(fo)
    columns: dict[str, list] = {}
    if "samples" in groups:
        columns["sample_id"] = inputs.sample_ids.tolist()
        columns["split"] = inputs.splits.tolist()
        columns["metadata"] = [builder.metadata() for _ in range(len(inputs))]
    if "paths" in groups and "samples" not in groups:
        # The workspace folder moved: point the samples at the images where they are now.
        columns["filepath"] = image_paths(workspace, inputs.sample_ids)
    if "embed" in groups or "samples" in groups:
        columns["ground_truth"] = [builder.classification(str(label)) for label in inputs.labels.tolist()]
        columns["prediction"] = [
            builder.classification(str(label), confidence=confidence, logits=logits)
            for label, confidence, logits in zip(inputs.predictions.tolist(), inputs.confidence.tolist(),
                                                 inputs.score_logits)]
    if "score" in groups:
        for name in SCORE_FIELDS:
            columns[name] = _floats(inputs.scores[name])
        columns["label_issue"] = inputs.label_issue.tolist()
    if "candidates" in groups:
        columns["candidate"] = inputs.candidate_mask.tolist()
        columns["suspicion"] = _floats(inputs.suspicion)
        columns["reasons"] = [list(inputs.reasons.get(sample_id, [])) for sample_id in inputs.sample_ids.tolist()]
    if "decisions" in groups:
        columns.update(decision_columns(builder, inputs.sample_ids, inputs.labels, decisions))
    return columns


# Fields compared with the stored values before an in-place update; label
# documents get fresh ids, so they are compared through these fields instead.
_COMPARED_FIELDS = {*SCORE_FIELDS, "label_issue", "candidate", "suspicion", "reasons", "decision", "decision_source"}


def _changed_rows(dataset: Any, ids: list[str], columns: dict[str, list]) -> tuple[list[str], dict[str, list]]:
    """Keep only the samples whose new values differ from the stored ones, when every field can be compared.

    A changed score threshold moves a few dozen candidates out of 70,000, so
    reading the stored values costs less than writing every sample again.
    """
    compared = [name for name in columns if name in _COMPARED_FIELDS]
    uncompared = set(columns) - _COMPARED_FIELDS - {"curated_label"}
    if not compared or uncompared:
        return ids, columns
    stored = dict(zip(dataset.values("id"), zip(*dataset.values(compared))))
    keep = [i for i, sample_id in enumerate(ids)
            if stored.get(sample_id) != tuple(columns[name][i] for name in compared)]
    return [ids[i] for i in keep], {name: [values[i] for i in keep] for name, values in columns.items()}


def decision_columns(builder: "_DocBuilder", sample_ids: np.ndarray, labels: np.ndarray,
                     decisions: dict[str, Any]) -> dict[str, list]:
    chosen = [decisions.get(sample_id) for sample_id in sample_ids.tolist()]
    return {
        "decision": [d.label if d else None for d in chosen],
        "decision_source": [d.source if d else None for d in chosen],
        "curated_label": [builder.classification(d.label if d else str(label))
                          for d, label in zip(chosen, labels.tolist())],
    }


def _floats(values: np.ndarray) -> list[float | None]:
    """Return plain floats, with None for NaN and infinities (the App cannot filter on them)."""
    return [value if np.isfinite(value) else None for value in values.astype(np.float64).tolist()]


class _DocBuilder:
    """Build stored FiftyOne label documents quickly from templates made by FiftyOne itself.

    Creating a ``fiftyone.Classification`` object per sample costs about
    0.1 ms, and three per sample dominated a full build. Copying a template
    that FiftyOne serialised, with a fresh id, gives the same stored document.
    """

    def __init__(self, fo: Any):
        from bson import ObjectId

        self._object_id = ObjectId
        self._plain = dict(fo.Classification(label="0").to_mongo())
        self._scored = dict(fo.Classification(label="0", confidence=0.0, logits=np.zeros(10, np.float32)).to_mongo())
        self._logits_field = fo.Classification._fields["logits"]
        self._metadata = dict(fo.ImageMetadata(width=IMAGE_SIDE, height=IMAGE_SIDE, num_channels=1,
                                               mime_type="image/png").to_mongo())

    def metadata(self) -> dict:
        return dict(self._metadata)

    def classification(self, label: str, *, confidence: float | None = None, logits: np.ndarray | None = None) -> dict:
        if confidence is None:
            return {**self._plain, "_id": self._object_id(), "label": label}
        return {**self._scored, "_id": self._object_id(), "label": label, "confidence": confidence,
                "logits": self._logits_field.to_mongo(logits)}


def set_columns(fo: Any, dataset: Any, ids: list[str], columns: dict[str, list]) -> None:
    """Write several fields of every sample with one database update per sample.

    ``set_values`` makes one pass over the collection per field, which took
    about 3 s per field for 70,000 samples on two busy CPU cores. Writing all
    fields of a sample together is several times faster.
    NOTE: this writes through ``dataset._sample_collection`` (pymongo), which
    is private in fiftyone 1.22; values must already be in stored form (see
    _DocBuilder), and every field must be declared (declare_fields).
    """
    if not columns:
        return
    from bson import ObjectId
    from pymongo import UpdateOne

    names = list(columns)
    collection = dataset._sample_collection
    now = datetime.utcnow()
    for start in range(0, len(ids), UPDATE_BATCH):
        stop = start + UPDATE_BATCH
        values = [columns[name][start:stop] for name in names]
        operations = [UpdateOne({"_id": ObjectId(sample_id)},
                                {"$set": {**dict(zip(names, row)), "last_modified_at": now}})
                      for sample_id, *row in zip(ids[start:stop], *values)]
        collection.bulk_write(operations, ordered=False)
    dataset.reload()


def register_maps(dataset: Any, ids: list[str], maps: dict[str, np.ndarray]) -> None:
    """Register the embed stage's 2-D maps as visualization runs, for the App's Embeddings panel."""
    import fiftyone.brain as fob

    for key, points in maps.items():
        if key in dataset.list_brain_runs():
            dataset.delete_brain_run(key)
        if dataset.has_sample_field(key):
            dataset.delete_sample_field(key)
        # Given points, the Brain stores them as they are: nothing is recomputed.
        fob.compute_visualization(dataset, points=dict(zip(ids, points)), brain_key=key, points_field=key,
                                  create_index=True, progress=False)


# Saved views and App settings --------------------------------------------------------

def saved_view_stages(fo: Any, dataset: Any) -> dict[str, Any]:
    from fiftyone import ViewField as F

    tagged = F("tags").contains(list(REVIEW_TAGS))
    decided = F("decision").exists()
    return {
        "IDK candidates": dataset.match(F("candidate")).sort_by("suspicion", reverse=True),
        "still undecided candidates": dataset.match(F("candidate") & ~decided & ~tagged)
                                             .sort_by("suspicion", reverse=True),
        "decided so far": dataset.match(decided | tagged),
        "most mistaken": dataset.sort_by("mistakenness", reverse=True),
        "hardest": dataset.sort_by("hardness", reverse=True),
        "most unique": dataset.sort_by("uniqueness", reverse=True),
        "least representative": dataset.sort_by("representativeness"),
        "misclassified": dataset.match(F("prediction.label") != F("ground_truth.label"))
                                .sort_by("prediction.confidence", reverse=True),
        "label issues": dataset.match(F("label_issue")).sort_by("self_confidence"),
    }


def save_views(fo: Any, dataset: Any) -> None:
    views = saved_view_stages(fo, dataset)
    for saved in SAVED_VIEWS:
        dataset.save_view(saved.name, views[saved.name], description=saved.description, overwrite=True)


def configure_app(fo: Any, dataset: Any) -> None:
    """Group the sidebar by purpose and show the labels and review tags on the grid."""
    from fiftyone.core.odm.dataset import ActiveFields, SidebarGroupDocument

    groups = {
        "review": ["tags", "decision", "decision_source", "curated_label", "candidate", "reasons", "suspicion"],
        "labels": ["ground_truth", "prediction"],
        "scores": [*SCORE_FIELDS, "label_issue"],
        "metadata": ["sample_id", "split", "filepath", "id", "metadata", "created_at", "last_modified_at"],
        "maps": list(MAPS),
        "other": ["synced_tags"],
    }
    dataset.app_config.sidebar_groups = [SidebarGroupDocument(name=name, paths=paths, expanded=name != "other")
                                         for name, paths in groups.items()]
    dataset.app_config.active_fields = ActiveFields(paths=["tags", "ground_truth", "prediction"])
    dataset.save()


# Tags to decisions -------------------------------------------------------------------

@dataclass
class Verdict:
    sample_id: str
    label: str | None  # IDK or a digit; None when the tags conflict or there are no review tags
    tags: list[str]
    conflict: str = ""


def verdict_from_tags(sample_id: str, given_label: str, tags: Iterable[str]) -> Verdict:
    """Read a reviewer's verdict from a sample's tags.

    ``IDK`` means the IDK class, ``keep`` means the given label, ``is:N``
    means digit N. Tags that name two different labels (IDK and keep, or two
    digits) are a conflict: the sample stays undecided.
    """
    review = [tag for tag in tags if tag in REVIEW_TAGS]
    labels: dict[str, list[str]] = {}
    for tag in review:
        if tag == IDK_TAG:
            label = IDK
        elif tag == KEEP_TAG:
            label = given_label
        else:
            label = tag[len(DIGIT_TAG_PREFIX):]
        labels.setdefault(label, []).append(tag)
    if len(labels) > 1:
        return Verdict(sample_id, None, review, conflict=" + ".join(review))
    return Verdict(sample_id, next(iter(labels), None), review)


def misspelt_review_tags(tags: Iterable[str]) -> list[str]:
    """Return tags that look like review tags but are not (e.g. 'idk', 'Keep', 'is:12'), so none is lost unnoticed."""
    near = []
    for tag in tags:
        if tag in REVIEW_TAGS:
            continue
        lowered = tag.strip().lower()
        if lowered in ("idk", "keep", "kept") or lowered.startswith(("is:", "is-", "digit")):
            near.append(tag)
    return near


@dataclass
class SyncResult:
    path: Path
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    conflicts: list[Verdict] = field(default_factory=list)
    # Tags that name another label than a hand-written ("manual") decision in the file; the file's one is kept.
    hand_edits: list[tuple[Verdict, str]] = field(default_factory=list)
    untagged: list[str] = field(default_factory=list)  # review decisions whose tags were removed since the last sync
    misspelt: dict[str, list[str]] = field(default_factory=dict)  # tag -> sample ids
    backup: Path | None = None
    written: bool = False


def sync_tags(dataset: Any, decisions_path: Path, reporter: Reporter, *, update_dataset: bool = True) -> SyncResult:
    """Merge the review tags of a dataset into the decision file, keeping every earlier decision.

    A tag removed in the App since the last sync does not delete the
    decision it made: the sample is reported in ``untagged`` and its decision
    stays until someone edits the decision file. The file is written only
    when a decision was added or changed (atomically, with a backup).
    """
    from mnist_curate.decisions import Decision, merge_decisions, now_timestamp, read_decisions, write_decisions

    dataset.reload()
    sample_ids, tag_lists, given, synced = dataset.values(["sample_id", "tags", "ground_truth.label", "synced_tags"])
    existing = read_decisions(decisions_path) if decisions_path.is_file() else {}
    result = SyncResult(decisions_path)

    decided_at = now_timestamp()
    incoming = []
    for sample_id, tags, given_label, last_tags in zip(sample_ids, tag_lists, given, synced):
        tags = tags or []
        for tag in misspelt_review_tags(tags):
            result.misspelt.setdefault(tag, []).append(sample_id)
        verdict = verdict_from_tags(sample_id, given_label, tags)
        if verdict.conflict:
            result.conflicts.append(verdict)
            continue
        if verdict.label is None:
            if last_tags and sample_id in existing and existing[sample_id].source == "review":
                result.untagged.append(sample_id)
            continue
        current = existing.get(sample_id)
        if current is not None and current.is_human and current.label == verdict.label:
            # Re-sending it would only rewrite its timestamp.
            result.unchanged.append(sample_id)
            continue
        if current is not None and current.source == "manual":
            # Someone edited the file by hand, maybe while the App was open; a tag must not overwrite that.
            result.hand_edits.append((verdict, current.label))
            continue
        incoming.append(Decision(sample_id, verdict.label, "review", decided_at=decided_at))

    merged = merge_decisions(existing, incoming)
    result.added, result.changed, result.kept = merged.added, merged.changed, merged.kept
    result.unchanged += merged.unchanged
    if merged.modified or (incoming and not decisions_path.exists()):
        result.backup = write_decisions(decisions_path, merged.decisions)
        result.written = True

    if update_dataset:
        _update_decision_fields(dataset, sample_ids, merged.decisions, tag_lists)
    return result


def _update_decision_fields(dataset: Any, sample_ids: list[str], decisions: dict[str, Any],
                            tag_lists: list[list[str] | None]) -> None:
    """Show the merged decisions in the dataset and remember which review tags were synced.

    Only samples whose decision or synced tags differ from what the dataset
    shows are written, so a sync after a short review takes a moment.
    """
    import fiftyone as fo

    ids, labels, shown_labels, shown_sources, shown_tags = dataset.values(
        ["id", "ground_truth.label", "decision", "decision_source", "synced_tags"])
    columns = decision_columns(_DocBuilder(fo), np.array(sample_ids), np.array(labels, dtype=np.int64), decisions)
    columns["synced_tags"] = [[tag for tag in (tags or []) if tag in REVIEW_TAGS] for tags in tag_lists]
    changed_idx = [i for i in range(len(ids))
                   if (columns["decision"][i], columns["decision_source"][i], columns["synced_tags"][i])
                   != (shown_labels[i], shown_sources[i], shown_tags[i] or [])]
    set_columns(fo, dataset, [ids[i] for i in changed_idx],
                {name: [values[i] for i in changed_idx] for name, values in columns.items()})


def report_sync(result: SyncResult, reporter: Reporter) -> None:
    where = f"{result.path}" + (f" (previous version in {result.backup.name})" if result.backup else "")
    counts = (f"{len(result.added)} added, {len(result.changed)} changed, {len(result.unchanged)} unchanged, "
              f"{len(result.conflicts) + len(result.hand_edits)} conflicts")
    if result.written:
        reporter.info(f"[green]review sync[/green]: {counts}; wrote {where}")
    else:
        reporter.info(f"[green]review sync[/green]: {counts}; {result.path} left as it was")
    for verdict in result.conflicts[:20]:
        reporter.warn(f"conflict on {verdict.sample_id}: tags {verdict.conflict} name different labels; left "
                      "undecided. Remove one of the tags in the App and sync again.")
    if len(result.conflicts) > 20:
        reporter.warn(f"... and {len(result.conflicts) - 20} more conflicts (see the 'decided so far' view)")
    for verdict, file_label in result.hand_edits[:20]:
        reporter.warn(f"conflict on {verdict.sample_id}: its tags say {verdict.label}, but the hand-written "
                      f"(manual) decision in {result.path} says {file_label}; the file's decision is kept. Change "
                      "the tags in the App or the entry in the file, then sync again.")
    if len(result.hand_edits) > 20:
        reporter.warn(f"... and {len(result.hand_edits) - 20} more tags that differ from hand-written decisions")
    if result.kept:
        reporter.info(f"{len(result.kept)} human decisions were kept against rule decisions")
    if result.untagged:
        listed = ", ".join(result.untagged[:10]) + (" ..." if len(result.untagged) > 10 else "")
        reporter.warn(f"{len(result.untagged)} samples lost their review tags since the last sync ({listed}); "
                      f"their decisions are kept. To withdraw one, delete its entry from {result.path}.")
    for tag, sample_ids in result.misspelt.items():
        reporter.warn(f"tag {tag!r} on {len(sample_ids)} samples (e.g. {sample_ids[0]}) is not a review tag and "
                      f"was ignored; the review tags are {', '.join(REVIEW_TAGS[:3])} ... is:9")


def describe_build(result: BuildResult) -> str:
    if result.rebuilt:
        action = "built"
    elif result.updated_groups:
        action = f"updated ({', '.join(result.updated_groups)})"
    else:
        action = "up to date"
    return (f"review: dataset {result.dataset.name} {action} in {format_duration(result.seconds)}: "
            f"{result.n_samples:,} samples, {result.n_candidates:,} IDK candidates")
