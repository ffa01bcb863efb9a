"""Real processes interrupted mid-stage: kill -9, Ctrl-C and a second writer lose nothing."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, SMALL_RUN


def start_train(workspace: Path, mnist_dir: Path) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_curate", "train", "-w", str(workspace), "--data-dir", str(mnist_dir),
         "--verbose", *SMALL_RUN],
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
    first = start_train(workspace, mnist_dir)
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
