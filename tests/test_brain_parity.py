"""Our four Brain scores against fiftyone.brain 0.25 on a real FiftyOne dataset (real MongoDB).

FiftyOne runs in a subprocess on a private mongod (FIFTYONE_DATABASE_URI), so the
test never touches ~/.fiftyone and leaves no mongod behind.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_curate import scores
from mnist_curate.embed import load_embed, score_logits
from mnist_curate.fiftyone_env import start_mongod

BENCHMARKS = Path(__file__).resolve().parent / "benchmarks"
N_PARITY_SAMPLES = 300


@pytest.fixture(scope="module")
def parity(scored_workspace, tmp_path_factory):
    """Ours and Brain's scores of the first 300 training samples of the scored subset."""
    folder = tmp_path_factory.mktemp("parity")
    arrays = load_embed(scored_workspace, mmap=False)
    rows = np.flatnonzero(arrays["splits"] == "train")[:N_PARITY_SAMPLES]
    logits = score_logits(arrays["logits"], arrays["oof_logits"])[rows].astype(np.float32)
    labels, embeddings = arrays["labels"][rows], arrays["embeddings"][rows]
    np.savez(folder / "inputs.npz", logits=logits, labels=labels, embeddings=embeddings)

    # A private mongod, because FiftyOne's own database service would attach to
    # any FiftyOne database that this user already runs.
    server = start_mongod(folder / "db")
    try:
        environment = os.environ | {"FIFTYONE_DATABASE_URI": server.uri, "FIFTYONE_DO_NOT_TRACK": "true"}
        completed = subprocess.run(
            [sys.executable, str(BENCHMARKS / "brain_reference.py"), str(folder / "inputs.npz"),
             str(folder / "brain.npz")],
            env=environment, capture_output=True, text=True, timeout=600)
    finally:
        server.stop()
    assert completed.returncode == 0, completed.stderr[-3000:]

    brain = dict(np.load(folder / "brain.npz"))
    ours_representativeness, ours_brain_value = scores.representativeness(embeddings, n_clusters=20)
    ours = {
        "hardness": scores.hardness(logits),
        "mistakenness": scores.mistakenness(logits, labels),
        "uniqueness": scores.uniqueness(embeddings),
        "representativeness": ours_representativeness,
        "brain_representativeness": ours_brain_value,
        "mistaken_mask": logits.argmax(1) != labels,
    }
    return ours, brain


def test_parity_subset_has_mistakes(parity):
    ours, _ = parity
    assert ours["mistaken_mask"].any(), "the subset should contain misclassified samples to test mistakenness"


def test_hardness_equals_brain(parity):
    ours, brain = parity
    assert np.abs(ours["hardness"] - brain["hardness"]).max() < 1e-6


def test_mistakenness_equals_brain(parity):
    ours, brain = parity
    assert np.abs(ours["mistakenness"] - brain["mistakenness"]).max() < 1e-6


def test_uniqueness_equals_brain(parity):
    ours, brain = parity
    assert np.abs(ours["uniqueness"] - brain["uniqueness"]).max() < 1e-6


def test_representativeness_is_one_minus_brain(parity):
    ours, brain = parity
    assert np.abs(ours["brain_representativeness"] - brain["representativeness"]).max() < 1e-6
    assert np.abs(ours["representativeness"] - (1.0 - brain["representativeness"])).max() < 1e-6


def test_brain_representativeness_scores_outliers_highest(parity):
    # The documented inversion: Brain's value is the normalised distance to the cluster centre.
    ours, brain = parity
    assert np.corrcoef(ours["uniqueness"], brain["representativeness"])[0, 1] > 0
    assert np.isclose(brain["representativeness"].max(), 1.0)
