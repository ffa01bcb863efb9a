"""Shared fixtures: the real MNIST files and a small trained workspace.

MNIST is read from MNIST_CURATE_TEST_DATA, else from ../shared/data/mnist
beside the repository (where CI puts it). Tests never write there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"

REPO_ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("MNIST_CURATE_TEST_DATA", REPO_ROOT.parent / "shared" / "data" / "mnist"))

# The smallest run that still trains a useful model: 2,000 samples per split,
# one epoch at batch size 32 reaches about 80% test accuracy.
SMALL_RUN = ["--limit", "2000", "--epochs", "1", "--fold-epochs", "1", "--folds", "2", "--batch-size", "32"]


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, options: str):
    """Mount a tmpfs with ``options`` on an existing folder for the block (skipped where mount is not allowed)."""
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({mounted.stderr.strip()}); it needs root or CAP_SYS_ADMIN")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "MNIST" / "raw").is_dir():
        pytest.fail(f"MNIST not found at {MNIST_DIR}; set MNIST_CURATE_TEST_DATA to the folder with MNIST/raw/")
    return MNIST_DIR


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: str | os.PathLike):
    from mnist_curate.cli import app

    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def snapshot(workspace: Path) -> dict[str, str]:
    """Return {relative path: digest} of every file in a workspace except the lock file.

    The lock file is created on first use and emptied on release, and never
    unlinked, because a lock file that disappears lets two processes hold
    "the" lock at once.
    """
    from mnist_curate.workspace import file_digest

    return {path.relative_to(workspace).as_posix(): file_digest(path)
            for path in sorted(workspace.rglob("*")) if path.is_file() and path.name != ".lock"}


@pytest.fixture(scope="session")
def trained_workspace(tmp_path_factory, mnist_dir) -> Path:
    """A workspace where train has run on the small subset (shared: copy it before changing it)."""
    workspace = tmp_path_factory.mktemp("trained") / "ws"
    result = invoke(CliRunner(), "train", "-w", workspace, "--data-dir", mnist_dir, *SMALL_RUN)
    assert result.exit_code == 0, result.output
    return workspace


@pytest.fixture()
def workspace_copy(trained_workspace, tmp_path) -> Path:
    """A private copy of the trained workspace."""
    copy = tmp_path / "ws"
    shutil.copytree(trained_workspace, copy, ignore=shutil.ignore_patterns(".lock"))
    return copy


@pytest.fixture(scope="session")
def scored_workspace(tmp_path_factory, trained_workspace) -> Path:
    """A copy of the trained workspace where embed and score have run (shared: copy it before changing it)."""
    workspace = tmp_path_factory.mktemp("scored") / "ws"
    shutil.copytree(trained_workspace, workspace, ignore=shutil.ignore_patterns(".lock"))
    for command in ("embed", "score"):
        result = invoke(CliRunner(), command, "-w", workspace)
        assert result.exit_code == 0, result.output
    return workspace


@pytest.fixture()
def scored_copy(scored_workspace, tmp_path) -> Path:
    """A private copy of the scored workspace."""
    copy = tmp_path / "scored"
    shutil.copytree(scored_workspace, copy, ignore=shutil.ignore_patterns(".lock"))
    return copy


def write_all_sample_decisions(path: Path) -> Path:
    """Write a decision file with an IDK decision for all 70,000 MNIST samples (about 1 s to read)."""
    from mnist_curate.data import SPLIT_SIZES, make_sample_ids
    from mnist_curate.decisions import rule_decisions, write_decisions

    sample_ids = [sample_id for split, size in SPLIT_SIZES.items() for sample_id in make_sample_ids(split, range(size))]
    write_decisions(path, {d.sample_id: d for d in rule_decisions(sample_ids, decided_at="2026-12-04T20:00:00+00:00")})
    return path


@pytest.fixture(scope="session")
def curated_workspace(tmp_path_factory, scored_workspace) -> Path:
    """A copy of the scored workspace where relabel (with a decision for every MNIST sample) and export have run.

    Shared: copy it before changing it. The decision file lies beside the workspace.
    """
    root = tmp_path_factory.mktemp("curated")
    workspace = root / "ws"
    shutil.copytree(scored_workspace, workspace, ignore=shutil.ignore_patterns(".lock"))
    decisions = write_all_sample_decisions(root / "all-samples.yaml")
    for args in (("relabel", "--decisions", decisions), ("export",)):
        result = invoke(CliRunner(), *args, "-w", workspace)
        assert result.exit_code == 0, result.output
    return workspace


@pytest.fixture()
def curated_copy(curated_workspace, tmp_path) -> Path:
    """A private copy of the curated workspace."""
    copy = tmp_path / "curated"
    shutil.copytree(curated_workspace, copy, ignore=shutil.ignore_patterns(".lock"))
    return copy
