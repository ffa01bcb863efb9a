"""Real processes interrupted mid-stage: kill -9, Ctrl-C and a second writer lose nothing."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
from typer.testing import CliRunner

from conftest import REPO_ROOT, SMALL_RUN, invoke, mounted_tmpfs, snapshot


def start_train(workspace: Path, mnist_dir: Path, *extra: str) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_curate", "train", "-w", str(workspace), "--data-dir", str(mnist_dir),
         "--verbose", *SMALL_RUN, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_line(process: subprocess.Popen, fragment: str) -> list[str]:
    """Read stderr until a line contains the fragment; return the lines read."""
    lines = []
    for line in process.stderr:
        lines.append(line)
        if fragment in line:
            return lines
    raise AssertionError(f"process ended before printing {fragment!r}:\n{''.join(lines)}")


def leftovers(workspace: Path) -> list[str]:
    return [p.name for p in workspace.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]


def rerun_and_compare(workspace: Path, reference: Path, mnist_dir: Path) -> None:
    rerun = start_train(workspace, mnist_dir)
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    for name in ("oof_logits.npy", "fold_ids.npy"):
        assert np.array_equal(np.load(workspace / "train" / name), np.load(reference / "train" / name)), name
    assert leftovers(workspace) == []


def test_kill_9_mid_training_then_rerun_matches(tmp_path, mnist_dir, trained_workspace):
    workspace = tmp_path / "ws"
    process = start_train(workspace, mnist_dir)
    # The first fold model has finished an epoch, so the stage is mid-way through the second model.
    wait_for_line(process, "fold 1/2 epoch 1/1")
    process.kill()
    process.wait()

    assert not (workspace / "stages" / "train.json").exists()
    assert not (workspace / "train").exists()
    rerun_and_compare(workspace, trained_workspace, mnist_dir)


def test_ctrl_c_mid_training_exits_130_with_one_line(tmp_path, mnist_dir, trained_workspace):
    workspace = tmp_path / "ws"
    process = start_train(workspace, mnist_dir)
    wait_for_line(process, "fold 1/2 epoch 1/1")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 130
    assert "interrupted" in stderr
    assert "Traceback" not in stderr
    assert not (workspace / "stages" / "train.json").exists()
    assert leftovers(workspace) == []
    rerun_and_compare(workspace, trained_workspace, mnist_dir)


def test_second_writer_fails_fast_naming_the_holder(tmp_path, mnist_dir):
    workspace = tmp_path / "ws"
    # Long enough to hold the lock while the second process starts, even on idle cores.
    first = start_train(workspace, mnist_dir, "--epochs", "50")
    try:
        wait_for_line(first, "data:")
        second = subprocess.run(
            [sys.executable, "-m", "mnist_curate", "train", "-w", str(workspace), "--data-dir", str(mnist_dir),
             *SMALL_RUN],
            capture_output=True, text=True, timeout=120, env=os.environ | {"PYTHONPATH": str(REPO_ROOT)})
        assert second.returncode == 1
        assert f"pid {first.pid}" in second.stderr
        assert "running `mnist-curate train" in second.stderr
    finally:
        first.kill()
        first.wait()


# Every stage, interrupted by kill -9 or Ctrl-C in a real process ------------------------------------

def start_command(workspace: Path, *args: str | os.PathLike, log: Path) -> subprocess.Popen:
    """Start `mnist-curate ARGS -w WORKSPACE --verbose` in its own process group, output to a log file.

    Its own group lets a test send Ctrl-C's SIGINT to the command and its worker
    processes together, as a terminal does.
    """
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
    with open(log, "w") as output:
        return subprocess.Popen([sys.executable, "-m", "mnist_curate", *map(str, args), "-w", str(workspace),
                                 "--verbose"], stdout=output, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def wait_until(process: subprocess.Popen, ready, log: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"the command ended (exit {process.returncode}) before the trigger:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no trigger after {timeout_s} s:\n{log.read_text()}")
        time.sleep(0.01)


def forget(workspace: Path, *stages: str) -> None:
    """Remove stages' records and folders, as if they had never run."""
    for stage in stages:
        (workspace / "stages" / f"{stage}.json").unlink()
        shutil.rmtree(workspace / stage)


def same_files(folder: Path, reference: Path, pattern: str) -> None:
    names = sorted(p.relative_to(folder).as_posix() for p in folder.glob(pattern))
    assert names == sorted(p.relative_to(reference).as_posix() for p in reference.glob(pattern))
    assert names, f"no {pattern} in {folder}"
    for name in names:
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), name


@dataclass
class StageFault:
    """How to interrupt one stage: the workspace it starts from, its command and when it is mid-way."""

    stage: str
    base: str  # the shared fixture to copy
    forget: tuple[str, ...]  # stages removed from the copy, so that they compute
    command: tuple[str, ...]
    trigger_glob: str  # exists once the stage is writing
    delay_s: float  # wait after the trigger, to be well inside the stage
    compare: tuple[str, ...]  # globs of files that must equal an uninterrupted run's


STAGE_FAULTS = {
    "embed": StageFault("embed", "trained_workspace", (), ("embed",), ".embed.tmp-*", 3.0,
                        ("embed/*.npy",)),
    "score": StageFault("score", "scored_workspace", ("score", "candidates"), ("score",), ".score.tmp-*", 0.5,
                        ("score/*.npy", "candidates/*.npy", "candidates/*.json")),
    # relabel reads the 70,000-line decision file inside the stage, which takes about a second.
    "relabel": StageFault("relabel", "curated_workspace", ("relabel", "export"), ("relabel",), ".relabel.tmp-*",
                          0.0, ("relabel/*",)),
    "export": StageFault("export", "curated_workspace", ("export",), ("export",),
                         ".curated-mnist.tmp-*/train/*/*.png", 0.0, ("curated-mnist/**/*.png", "export/*")),
}


def fault_workspace(request, fault: StageFault, tmp_path: Path) -> tuple[Path, Path]:
    """Return a private workspace where the fault's stage must compute, and the shared reference."""
    reference = request.getfixturevalue(fault.base)
    workspace = tmp_path / "ws"
    shutil.copytree(reference, workspace, ignore=shutil.ignore_patterns(".lock", "curated-mnist"))
    forget(workspace, *fault.forget)
    if fault.stage == "embed":
        reference = request.getfixturevalue("scored_workspace")
    return workspace, reference


def relabel_args(fault: StageFault, reference: Path) -> list[str]:
    if fault.stage != "relabel":
        return []
    record = json.loads((reference / "stages" / "relabel.json").read_text())
    return ["--decisions", record["figures"]["decisions_path"]]


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGINT"])
@pytest.mark.parametrize("stage", list(STAGE_FAULTS))
def test_interrupted_stage_reruns_to_same_result(request, tmp_path, stage, signal_name):
    fault = STAGE_FAULTS[stage]
    if stage == "embed" and signal_name == "SIGKILL":
        pytest.skip("kill -9 mid-embed is covered by test_two_all_runs_then_kill_9_recovers")
    workspace, reference = fault_workspace(request, fault, tmp_path)
    log = tmp_path / "interrupted.log"
    process = start_command(workspace, *fault.command, *relabel_args(fault, reference), log=log)
    try:
        wait_until(process, lambda: any(workspace.glob(fault.trigger_glob)), log)
        time.sleep(fault.delay_s)
        workers = psutil.Process(process.pid).children(recursive=True)
        os.killpg(process.pid, getattr(signal, signal_name))
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    output = log.read_text()

    if signal_name == "SIGINT":
        assert process.returncode == 130, output
        assert [line for line in output.splitlines() if line.startswith("interrupted")] == [
            "interrupted: stopped before finishing; the workspace keeps only complete results, so rerun the same "
            "command to go on."]
        assert "Traceback" not in output
        assert leftovers(workspace) == []
    else:
        assert process.returncode == -signal.SIGKILL
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == [], f"worker processes outlived the command: {alive}"
    assert not (workspace / "stages" / f"{stage}.json").exists()
    assert not (workspace / stage).exists()
    assert not (workspace / "curated-mnist").exists(), "an interrupted export must not look complete"

    rerun = invoke(CliRunner(), *fault.command, *relabel_args(fault, reference), "-w", workspace)
    assert rerun.exit_code == 0, rerun.output
    for pattern in fault.compare:
        same_files(workspace, reference, pattern)
    assert leftovers(workspace) == []


@pytest.mark.slow
def test_two_all_runs_then_kill_9_recovers(tmp_path, trained_workspace, scored_workspace):
    workspace = tmp_path / "ws"
    shutil.copytree(trained_workspace, workspace, ignore=shutil.ignore_patterns(".lock"))
    log = tmp_path / "first.log"
    first = start_command(workspace, "all", log=log)
    try:
        wait_until(first, lambda: any(workspace.glob(".embed.tmp-*")), log)
        started = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "mnist_curate", "all", "-w", str(workspace)],
                                capture_output=True, text=True, timeout=120,
                                env=os.environ | {"PYTHONPATH": str(REPO_ROOT)})
        assert time.monotonic() - started < 60, "the second run must fail fast, not wait for the first"
        assert second.returncode == 1
        assert f"is in use by pid {first.pid}" in second.stderr
        assert "running `mnist-curate all -w" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.kill()
        first.wait()

    rerun = invoke(CliRunner(), "all", "-w", workspace)
    assert rerun.exit_code == 0, rerun.output
    assert f"recovered a stale workspace lock left by pid {first.pid}" in rerun.output
    same_files(workspace, scored_workspace, "embed/*.npy")
    same_files(workspace, scored_workspace, "score/*.npy")
    assert leftovers(workspace) == []


# Damaged workspace files are found and recomputed ------------------------------------------------

def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def scramble(path: Path) -> None:
    path.write_bytes(bytes(255 - byte for byte in path.read_bytes()))


def garbage_json(path: Path) -> None:
    path.write_text('{"sample_id": [1, 2')


DAMAGES = {
    # case: (file, damage, stage warned about, files that must equal the undamaged run's)
    "truncated model": ("train/model.pt", truncate, "train", "train/*.npy"),
    "truncated embeddings": ("embed/embeddings.npy", truncate, "embed", "embed/*.npy"),
    "scrambled score array": ("score/hardness.npy", scramble, "score", "score/*.npy"),
    "garbage candidate JSON": ("candidates/reasons.json", garbage_json, "candidates", "candidates/*.json"),
    "garbage stage record": ("stages/score.json", garbage_json, "score", "score/*.npy"),
    "deleted curated labels": ("relabel/curated_labels.npy", Path.unlink, "relabel", "relabel/*.npy"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(DAMAGES))
def test_damaged_file_is_recomputed_with_warning(runner, curated_workspace, curated_copy, case):
    relative, damage, stage, compare = DAMAGES[case]
    damage(curated_copy / relative)
    decisions = json.loads((curated_workspace / "stages" / "relabel.json").read_text())["figures"]["decisions_path"]

    result = invoke(runner, "all", "-w", curated_copy, "--decisions", decisions)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert any(line.startswith(f"warning: {stage}: the saved result is damaged (") for line in warnings), warnings
    if relative.startswith("stages/"):
        assert "unreadable record" in result.output
    else:
        assert str(curated_copy / relative) in result.output
    assert "Traceback" not in result.output
    same_files(curated_copy, curated_workspace, compare)
    assert leftovers(curated_copy) == []


# A full disk during export ----------------------------------------------------------------------

@pytest.fixture()
def small_tmpfs(tmp_path) -> Path:
    """A 2 MB tmpfs, far too small for the subset's 4,000 PNG files (skipped where mount is not allowed)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    with mounted_tmpfs(mount_point, "size=2m"):
        yield mount_point


@pytest.mark.slow
def test_full_disk_during_export_leaves_nothing(runner, curated_copy, small_tmpfs):
    before = snapshot(curated_copy)
    out = small_tmpfs / "curated-mnist"
    result = invoke(runner, "export", "-w", curated_copy, "--out", out)

    assert result.exit_code == 1, result.output
    assert f"error: no space left on the device of {small_tmpfs} while exporting 4,000 PNG files" in result.output
    assert "nothing was left in place" in result.output
    assert "Traceback" not in result.output
    assert list(small_tmpfs.iterdir()) == [], "no partial export or temporary folder may stay behind"
    assert snapshot(curated_copy) == before
    assert leftovers(curated_copy) == []


# Hand edits of the decision file while a command merges into it ------------------------------------

def test_hand_edit_during_candidate_merge_is_kept(scored_copy, monkeypatch):
    from mnist_curate import chain
    from mnist_curate.decisions import read_decisions
    from mnist_curate.ui import Reporter
    from mnist_curate.workspace import Workspace

    workspace = Workspace(scored_copy)
    path = scored_copy / "decisions.yaml"
    real_merge = chain.merge_decisions
    n_merges = []

    def merge_while_someone_saves(existing, incoming):
        n_merges.append(1)
        if len(n_merges) == 1:
            path.write_text("version: 1\ndecisions:\n"
                            "  - {sample_id: test-00000, label: '3', source: manual, note: typed during the merge}\n")
        return real_merge(existing, incoming)

    monkeypatch.setattr(chain, "merge_decisions", merge_while_someone_saves)
    chain.accept_candidates(workspace, Reporter(quiet=True))

    decisions = read_decisions(path)
    assert decisions["test-00000"].note == "typed during the merge"
    assert decisions["test-00000"].label == "3"
    assert len(n_merges) == 2
    assert any(decision.source == "rule" for decision in decisions.values())
