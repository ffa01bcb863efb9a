"""Smoke test of the chain benchmark on a small subset, so that the script cannot rot unnoticed."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.slow

BENCH_CHAIN = REPO_ROOT / "tests" / "benchmarks" / "bench_chain.py"


def test_chain_benchmark_writes_report(tmp_path, mnist_dir):
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, str(BENCH_CHAIN), "--data-dir", str(mnist_dir), "--out", str(out), "--parts", "chain,train",
         "--limit", "500", "--workdir", str(tmp_path / "work"), "--train-steps", "4", "--train-repeats", "1",
         "--train-option=--epochs=1", "--train-option=--fold-epochs=1", "--train-option=--folds=2",
         "--train-option=--batch-size=64"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    report = json.loads((out / "report.json").read_text())
    chain = report["chain"]
    cold_stages = {stage["stage"]: stage for stage in chain["cold"]["stages"]}
    assert all(stage["ran"] for stage in cold_stages.values()), "every stage computes in a fresh workspace"
    assert all(stage["peak_rss_mb"] > 0 for stage in cold_stages.values()), "each stage has a memory figure"
    assert not any(stage["ran"] for stage in chain["warm"]["stages"]), "the second run is fully cached"

    changed = {stage["stage"]: stage["ran"] for stage in chain["knob_change"]["stages"]}
    for upstream in ("train", "embed", "score"):
        assert not changed[upstream], f"{upstream} does not depend on a candidate threshold"
    assert changed["candidates"], "a candidate threshold change reruns the candidates stage"
    assert chain["train_samples_per_s"] > 0

    train = report["train"]
    assert train["ours_samples_per_s"] > 0
    assert train["dataloader_samples_per_s"] > 0

    markdown = (out / "report.md").read_text()
    assert "| train |" in markdown
    assert "DataLoader" in markdown


def test_chain_benchmark_rejects_unknown_part(tmp_path, mnist_dir):
    result = subprocess.run([sys.executable, str(BENCH_CHAIN), "--data-dir", str(mnist_dir), "--out",
                             str(tmp_path / "report"), "--parts", "chain,gpu"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "unknown part(s) gpu" in result.stderr
    assert not (tmp_path / "report" / "report.json").exists()
