"""`mnist-curate all`: every stage in order, each cached, from MNIST to the exported dataset.

The decisions step sits between the stages that find candidates and relabel.
A given decision file (the reviewed one kept in git) is used as it is and
never written. Without one, the candidates are accepted as IDK by merging
"rule" decisions into ``WORKSPACE/decisions.yaml``, which never overrides a
human decision already there.
"""

from __future__ import annotations

import dataclasses

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from rich.table import Table

from mnist_curate.config import Config
from mnist_curate.data import SPLITS
from mnist_curate.decisions import file_digest as decisions_file_digest
from mnist_curate.decisions import IDK, merge_decisions, read_decisions, rule_decisions, write_decisions
from mnist_curate.errors import BadInputError, CurateError
from mnist_curate.export import figures_in, precheck_export
from mnist_curate.pipeline import STAGES, StageOutcome, check_can_run, run_stage
from mnist_curate.relabel import workspace_decisions_path
from mnist_curate.ui import Reporter, format_duration
from mnist_curate.workspace import Workspace, command_line

# Passes over WORKSPACE/decisions.yaml before giving up when it changes during every merge.
MERGE_ATTEMPTS = 3


@dataclass
class ChainResult:
    outcomes: list[StageOutcome] = field(default_factory=list)
    decisions: dict[str, Any] = field(default_factory=dict)  # where the decisions came from
    seconds: float = 0.0

    def figures(self, stage: str) -> dict[str, Any]:
        for outcome in self.outcomes:
            if outcome.stage == stage:
                return outcome.record.figures
        return {}


def run_all(*, config: Config, workspace: Workspace, reporter: Reporter, decisions_path: Path | None,
            overwrite: bool, force: bool, after_stage: Callable[[], None] = lambda: None) -> ChainResult:
    """Run every registered stage in order, with the decisions step before relabel.

    Bad input (the decision file, the export target, the data) is found
    before any stage runs. ``after_stage`` is called after each stage that is
    current, e.g. to save the config.
    """
    started = time.perf_counter()
    # Validate the decision file before hours of work, not after.
    if decisions_path is not None:
        decisions_path = decisions_path.expanduser().absolute()
        read_decisions(decisions_path)
    elif workspace_decisions_path(workspace).exists():
        read_decisions(workspace_decisions_path(workspace))
    names = list(STAGES)
    options = {"decisions": str(decisions_path or workspace_decisions_path(workspace)), "overwrite": overwrite}
    # Checked even when export is current now, because the decisions step may make it stale.
    precheck_export(config, workspace, options)
    check_can_run(names, config=config, workspace=workspace, options=options, force=force)

    result = ChainResult()
    with workspace.locked(command_line()) as lock:
        if lock.recovered_from:
            reporter.warn(f"recovered a stale workspace lock left by {lock.recovered_from.describe()}")
        for name in names:
            if name == "relabel":
                result.decisions = (_use_decision_file(decisions_path, reporter) if decisions_path
                                    else accept_candidates(workspace, reporter))
            outcome = run_stage(name, config=config, workspace=workspace, reporter=reporter, force=force,
                                options=options)
            result.outcomes.append(outcome)
            after_stage()
    result.seconds = time.perf_counter() - started
    return result


def _use_decision_file(path: Path, reporter: Reporter) -> dict[str, Any]:
    reporter.info(f"decisions: {path} (used as it is)")
    return {"source": "file", "path": str(path)}


def accept_candidates(workspace: Workspace, reporter: Reporter) -> dict[str, Any]:
    """Merge an IDK "rule" decision for every candidate into WORKSPACE/decisions.yaml.

    Human decisions already in the file win over the rule ones. Rule
    decisions for samples that are no longer candidates (after a threshold
    change) are withdrawn, because the old rules made them and no person
    did; human decisions are never withdrawn. The file is
    rewritten only when a decision was added, changed or withdrawn, so a
    rerun with the same candidates leaves relabel cached.
    """
    folder = workspace.stage_dir("candidates")
    if "candidates" not in STAGES or not (folder / "candidate_mask.npy").is_file():
        raise BadInputError("there are no candidates to accept in this workspace; pass --decisions FILE")
    candidate_mask = np.load(folder / "candidate_mask.npy")
    sample_ids = np.load(workspace.stage_dir("embed") / "sample_ids.npy")
    reasons_path = folder / "reasons.json"
    reasons = json.loads(reasons_path.read_text(encoding="utf-8")) if reasons_path.is_file() else {}
    incoming = rule_decisions(sample_ids[candidate_mask].tolist(), reasons=reasons)

    path = workspace_decisions_path(workspace)
    candidate_ids = {decision.sample_id for decision in incoming}
    for _attempt in range(MERGE_ATTEMPTS):
        read_digest = _digest_or_none(path)
        existing = read_decisions(path) if read_digest else {}
        # A rule decision is always IDK, so a rule entry with another label was edited by hand: keep it as manual.
        hand_edited = sorted(sample_id for sample_id, decision in existing.items()
                             if decision.source == "rule" and decision.label != IDK)
        for sample_id in hand_edited:
            existing[sample_id] = dataclasses.replace(existing[sample_id], source="manual")
        if hand_edited and _attempt == 0:
            reporter.warn(f"{len(hand_edited):,} rule decisions in {path} were edited to a digit by hand "
                          f"({', '.join(hand_edited[:5])}{' ...' if len(hand_edited) > 5 else ''}); they are kept "
                          "as manual decisions")
        withdrawn = sorted(sample_id for sample_id, decision in existing.items()
                           if decision.source == "rule" and sample_id not in candidate_ids)
        merged = merge_decisions({k: v for k, v in existing.items() if k not in withdrawn}, incoming)
        # A hand edit saved while this merge ran is merged on the next pass instead of being overwritten.
        # NOTE: an edit saved between this check and the rename (microseconds) still only reaches the backup.
        if _digest_or_none(path) == read_digest:
            break
    else:
        raise CurateError(f"{path} kept changing while the candidates were merged into it; "
                          "rerun once nobody is editing it")
    backup = None
    if merged.modified or withdrawn or hand_edited or not path.exists():
        backup = write_decisions(path, merged.decisions)
    withdrawn_text = f", {len(withdrawn):,} rule decisions withdrawn (no longer candidates)" if withdrawn else ""
    reporter.warn(f"no --decisions given: the {len(incoming):,} candidates were accepted as IDK without review "
                  f"({merged.describe()}{withdrawn_text} in {path}). Review them with {workspace.command('review')}, "
                  "or pass the reviewed file with --decisions.")
    if backup is not None:
        reporter.detail(f"previous decision file kept as {backup}")
    return {"source": "accepted candidates", "path": str(path), "n_candidates": len(incoming),
            "added": len(merged.added), "changed": len(merged.changed), "unchanged": len(merged.unchanged),
            "kept": len(merged.kept), "withdrawn": len(withdrawn)}


def _digest_or_none(path: Path) -> str | None:
    try:
        return decisions_file_digest(path)
    except FileNotFoundError:
        return None


# Summary ---------------------------------------------------------------------------

def summary(result: ChainResult, workspace: Workspace) -> dict[str, Any]:
    """Return the machine-readable summary of a run: stages, accuracy, candidates, IDK counts, export."""
    relabel = result.figures("relabel")
    export = result.figures("export")
    report: dict[str, Any] = {
        "stages": [{"stage": o.stage, "ran": o.ran, "seconds": round(o.seconds, 3)} for o in result.outcomes],
        "cached": all(not o.ran for o in result.outcomes),
        "seconds": round(result.seconds, 3),
        "test_accuracy": result.figures("train").get("test_accuracy"),
        "candidates": _candidates_per_split(workspace),
        "decisions": result.decisions,
    }
    if relabel:
        report["idk"] = {split: relabel["splits"][split]["n_idk"] for split in SPLITS}
        report["corrected"] = {split: relabel["splits"][split]["n_corrected"] for split in SPLITS}
    if export:
        report["export"] = {"path": figures_in(workspace, export)["out"], "n_files": export["n_files"],
                            "class_counts": export["class_counts"]}
    return report


def _candidates_per_split(workspace: Workspace) -> dict[str, int] | None:
    mask_path = workspace.stage_dir("candidates") / "candidate_mask.npy"
    splits_path = workspace.stage_dir("embed") / "splits.npy"
    if not (mask_path.is_file() and splits_path.is_file()):
        return None
    candidate_mask, splits = np.load(mask_path), np.load(splits_path)
    return {split: int((candidate_mask & (splits == split)).sum()) for split in SPLITS}


def timing_table(result: ChainResult) -> Table:
    table = Table(title="stages")
    table.add_column("stage")
    table.add_column("result")
    table.add_column("time", justify="right")
    for outcome in result.outcomes:
        state = "[yellow]ran[/yellow]" if outcome.ran else "[green]cached[/green]"
        table.add_row(outcome.stage, state, format_duration(outcome.seconds))
    table.add_row("all", "", format_duration(result.seconds), style="bold")
    return table


def summary_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    if report.get("test_accuracy") is not None:
        lines.append(f"test accuracy: {report['test_accuracy']:.2%}")
    if report.get("candidates"):
        lines.append("candidates: " + ", ".join(f"{split} {n:,}" for split, n in report["candidates"].items()))
    decisions = report.get("decisions") or {}
    if decisions:
        lines.append(f"decisions: {decisions['path']} ({decisions['source']})")
    if "idk" in report:
        lines.append("IDK: " + ", ".join(f"{split} {n:,}" for split, n in report["idk"].items())
                     + "; corrected: " + ", ".join(f"{split} {n:,}" for split, n in report["corrected"].items()))
    if "export" in report:
        lines.append(f"export: {report['export']['path']} ({report['export']['n_files']:,} PNG files)")
    return lines
