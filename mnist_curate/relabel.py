"""The relabel stage: apply a decision file to the given labels.

The given labels are never changed. The stage writes the curated labels next
to them in ``WORKSPACE/relabel/``, in the row order of every stage (training
samples, then test samples, each in sample-id order):

* ``sample_ids.npy``, ``splits.npy``, ``labels.npy``: (n,) the samples and their given labels.
* ``curated_labels.npy``: (n,) int64 curated label, ``IDK_CLASS`` (10) for IDK.
* ``decision_sources.npy``: (n,) str source of the sample's decision, "" for none.
* ``decided.csv``: one row per applied decision (sample_id, split, label,
  curated_label, source, note, decided_at).

Its cache key records the SHA-256 of the decision file's content, so editing
the file makes relabel (and export) stale, while moving it does not.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from mnist_curate.config import Config
from mnist_curate.data import DATA_FINGERPRINT, SPLITS, MnistData
from mnist_curate.decisions import IDK, Decision, file_digest, read_decisions
from mnist_curate.errors import BadInputError
from mnist_curate.pipeline import StageContext
from mnist_curate.ui import Reporter
from mnist_curate.workspace import CorruptRecordError, Workspace, atomic_write_text, save_npy

IDK_CLASS = 10
CLASS_NAMES = tuple(str(digit) for digit in range(10)) + (IDK,)
WORKSPACE_DECISIONS = "decisions.yaml"


def workspace_decisions_path(workspace: Workspace) -> Path:
    return workspace.root / WORKSPACE_DECISIONS


def resolve_decisions_path(workspace: Workspace, options: dict[str, Any]) -> Path | None:
    """Return the decision file of a relabel: ``options["decisions"]``, else the last relabel's, else the workspace's.

    Commands that do not take --decisions (status, export) thus keep using the
    file the last relabel read, so `relabel --decisions reviewed.yaml` followed
    by `export` does not count relabel as stale.
    """
    if options.get("decisions"):
        return Path(options["decisions"]).expanduser().absolute()
    try:
        record = workspace.read_record("relabel")
    except CorruptRecordError:
        record = None  # the stage state reports the damaged record
    if record is not None and record.figures.get("decisions_in_workspace"):
        # Recorded relative to the workspace, so a copied or moved workspace reads its own file.
        return workspace_decisions_path(workspace)
    if record is not None and record.figures.get("decisions_path"):
        return Path(record.figures["decisions_path"])
    default = workspace_decisions_path(workspace)
    return default if default.is_file() else None


def relabel_inputs(config: Config, workspace: Workspace, options: dict[str, Any]) -> dict[str, Any]:
    """Return the MNIST digests and the decision file's SHA-256 for relabel's cache key."""
    path = resolve_decisions_path(workspace, options)
    digest = file_digest(path) if path is not None and path.is_file() else None
    return {"mnist": DATA_FINGERPRINT, "decisions": digest}


def no_decisions_message(workspace: Workspace) -> str:
    if not workspace.exists():
        return (f"no workspace at {workspace.root} yet, so there is no decision file and nothing to relabel; "
                f"{workspace.command('all')} runs the whole chain, or pass the --workspace of an earlier run.")
    return (f"no decision file: {workspace_decisions_path(workspace)} does not exist and --decisions was not given. "
            f"Get one by reviewing the candidates ({workspace.command('review')}), by accepting them all as IDK "
            f"({workspace.command('all')} without --decisions), or pass --decisions FILE.")


# Applying decisions -------------------------------------------------------------

@dataclass
class RelabelResult:
    sample_ids: np.ndarray  # (n,) str
    splits: np.ndarray  # (n,) str
    labels: np.ndarray  # (n,) int64 given labels
    curated_labels: np.ndarray  # (n,) int64, IDK_CLASS for IDK
    decision_sources: np.ndarray  # (n,) str, "" where no decision applies
    applied: list[Decision]
    ignored: list[str]  # valid MNIST ids outside the --limit subset

    def summary(self) -> dict[str, Any]:
        """Count per split and given digit: moved to IDK, corrected, and reviewed and kept."""
        per_split: dict[str, Any] = {}
        for split in SPLITS:
            in_split = self.splits == split
            labels, curated = self.labels[in_split], self.curated_labels[in_split]
            decided = self.decision_sources[in_split] != ""
            to_idk = curated == IDK_CLASS
            corrected = (curated != labels) & ~to_idk
            kept = decided & (curated == labels)
            per_split[split] = {
                "n_samples": int(in_split.sum()),
                "n_idk": int(to_idk.sum()),
                "n_corrected": int(corrected.sum()),
                "n_kept": int(kept.sum()),
                "by_digit": {str(d): {"to_idk": int((to_idk & (labels == d)).sum()),
                                      "corrected": int((corrected & (labels == d)).sum())} for d in range(10)},
                "class_counts": {name: int((curated == k).sum()) for k, name in enumerate(CLASS_NAMES)},
            }
        return per_split


def apply_decisions(data: MnistData, decisions: dict[str, Decision]) -> RelabelResult:
    """Compute curated labels: the given label unless a decision sets IDK or another digit."""
    sample_ids = np.concatenate([data.train.sample_ids, data.test.sample_ids])
    splits = np.array(["train"] * len(data.train) + ["test"] * len(data.test))
    labels = np.concatenate([data.train.labels, data.test.labels]).astype(np.int64)
    curated_labels = labels.copy()
    decision_sources = np.full(len(labels), "", dtype="<U6")

    row_of = {sample_id: row for row, sample_id in enumerate(sample_ids.tolist())}
    applied, ignored = [], []
    for sample_id, decision in decisions.items():
        row = row_of.get(sample_id)
        if row is None:
            ignored.append(sample_id)
            continue
        curated_labels[row] = IDK_CLASS if decision.label == IDK else int(decision.label)
        decision_sources[row] = decision.source
        applied.append(decision)
    return RelabelResult(sample_ids, splits, labels, curated_labels, decision_sources, applied, ignored)


def load_decisions_for(workspace: Workspace, options: dict[str, Any]) -> tuple[Path, dict[str, Decision]]:
    path = resolve_decisions_path(workspace, options)
    if path is None:
        raise BadInputError(no_decisions_message(workspace))
    return path, read_decisions(path)


def choose_decisions(workspace: Workspace, given: Path | None) -> Path:
    """Return the decision file of the relabel command.

    That is the given one, else the file that the last relabel read, else
    WORKSPACE/decisions.yaml. So `relabel --decisions reviewed.yaml`, an edit
    of reviewed.yaml and a plain `relabel` apply the edited file. The file is
    validated here, before the command takes the workspace lock, so that an
    invalid file leaves the workspace as it was.
    """
    if given is not None:
        path = given.expanduser().absolute()
    else:
        path = resolve_decisions_path(workspace, {})
        if path is None:
            raise BadInputError(no_decisions_message(workspace))
        if not path.exists():
            raise BadInputError(f"the last relabel read the decision file {path}, which no longer exists; "
                                "pass --decisions FILE to name the file to apply (a moved file stays current "
                                "when its content is unchanged)")
    read_decisions(path)
    return path


def is_workspace_decisions(path: Path, workspace: Workspace) -> bool:
    """Tell whether ``path`` is WORKSPACE/decisions.yaml, through symlinks and `..` too."""
    return path.resolve() == workspace_decisions_path(workspace).resolve()


def refresh_relabel_record(workspace: Workspace, record: Any, options: dict[str, Any]) -> bool:
    """Point a current relabel record at the decision file given now; return whether it changed.

    The cache key contains only the file's content digest, so a moved or copied
    file with the same content leaves relabel cached. The record must then
    name the new path, or status and export would look for the old one.
    """
    if not options.get("decisions"):
        return False
    path = Path(options["decisions"]).expanduser().absolute()
    figures = {"decisions_path": str(path), "decisions_in_workspace": is_workspace_decisions(path, workspace)}
    if all(record.figures.get(key) == value for key, value in figures.items()):
        return False
    record.figures.update(figures)
    return True


def dry_run_relabel(config: Config, workspace: Workspace, options: dict[str, Any], reporter: Reporter) -> dict[str, Any]:
    """Read the decision file and count what relabel would change, without writing anything."""
    from mnist_curate.data import load_mnist
    from mnist_curate.pipeline import _cached_data

    path, decisions = load_decisions_for(workspace, options)
    result = apply_decisions(_cached_data(config, load_mnist), decisions)
    if result.ignored:
        reporter.warn(f"{len(result.ignored)} decision(s) in {path} name samples outside this run's "
                      f"--limit subset (e.g. {result.ignored[0]}); they would be ignored")
    return {"decisions_path": str(path), "n_applied": len(result.applied), "splits": result.summary()}


def run_relabel(context: StageContext) -> dict[str, Any]:
    """Apply the decision file and write the curated labels; return the stage's figures."""
    reporter = context.reporter
    path, decisions = load_decisions_for(context.workspace, context.options)
    if not decisions:
        reporter.warn(f"{path} contains no decisions, so every curated label equals the given label")
    result = apply_decisions(context.data, decisions)
    if result.ignored:
        reporter.warn(f"{len(result.ignored)} decision(s) in {path} name samples outside this run's "
                      f"--limit subset (e.g. {result.ignored[0]}); they were ignored")

    out = context.out_dir
    save_npy(out / "sample_ids.npy", result.sample_ids)
    save_npy(out / "splits.npy", result.splits)
    save_npy(out / "labels.npy", result.labels)
    save_npy(out / "curated_labels.npy", result.curated_labels)
    save_npy(out / "decision_sources.npy", result.decision_sources)
    atomic_write_text(out / "decided.csv", _decided_csv(result))

    return {
        "decisions_path": str(path),
        "decisions_in_workspace": is_workspace_decisions(path, context.workspace),
        "decisions_sha256": file_digest(path),
        "n_decisions": len(decisions),
        "n_applied": len(result.applied),
        "n_ignored": len(result.ignored),
        "n_idk": int((result.curated_labels == IDK_CLASS).sum()),
        "splits": result.summary(),
    }


def _decided_csv(result: RelabelResult) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("sample_id", "split", "label", "curated_label", "source", "note", "decided_at"))
    row_of = {sample_id: row for row, sample_id in enumerate(result.sample_ids.tolist())}
    for decision in sorted(result.applied, key=lambda d: row_of[d.sample_id]):
        row = row_of[decision.sample_id]
        writer.writerow((decision.sample_id, result.splits[row], int(result.labels[row]),
                         CLASS_NAMES[result.curated_labels[row]], decision.source, decision.note,
                         decision.decided_at))
    return buffer.getvalue()


def load_relabel(workspace: Workspace) -> dict[str, np.ndarray]:
    """Load the relabel stage's arrays: sample_ids, splits, labels, curated_labels, decision_sources."""
    folder = workspace.stage_dir("relabel")
    names = ("sample_ids", "splits", "labels", "curated_labels", "decision_sources")
    return {name: np.load(folder / f"{name}.npy") for name in names}


# Summary ------------------------------------------------------------------------

def summary_table(splits: dict[str, Any], *, title: str) -> Table:
    """Render per split and given digit how many samples moved to IDK and how many were corrected."""
    table = Table(title=title)
    table.add_column("given label", justify="right")
    for split in SPLITS:
        table.add_column(f"{split} -> IDK", justify="right")
        table.add_column(f"{split} corrected", justify="right")
    for digit in map(str, range(10)):
        row = [digit]
        for split in SPLITS:
            counts = splits[split]["by_digit"][digit]
            row += [f"{counts['to_idk']:,}", f"{counts['corrected']:,}"]
        table.add_row(*row)
    total = ["all"]
    for split in SPLITS:
        total += [f"{splits[split]['n_idk']:,}", f"{splits[split]['n_corrected']:,}"]
    table.add_row(*total, style="bold")
    return table


def summary_line(figures: dict[str, Any]) -> str:
    parts = []
    for split in SPLITS:
        counts = figures["splits"][split]
        parts.append(f"{split}: {counts['n_idk']:,} IDK, {counts['n_corrected']:,} corrected, "
                     f"{counts['n_kept']:,} reviewed and kept of {counts['n_samples']:,}")
    return f"{figures['n_applied']:,} decisions from {figures['decisions_path']} applied; " + "; ".join(parts)
