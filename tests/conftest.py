"""Shared fixtures: the real MNIST files and a small trained workspace.

MNIST is read from MNIST_CURATE_TEST_DATA, else from ../shared/data/mnist
beside the repository (where CI puts it). Tests never write there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"

REPO_ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("MNIST_CURATE_TEST_DATA", REPO_ROOT.parent / "shared" / "data" / "mnist"))

# The smallest run that still trains a useful model: 2,000 samples per split,
# one epoch at batch size 32 reaches about 80% test accuracy.
SMALL_RUN = ["--limit", "2000", "--epochs", "1", "--fold-epochs", "1", "--folds", "2", "--batch-size", "32"]


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
