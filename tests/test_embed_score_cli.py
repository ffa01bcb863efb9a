"""embed and score through the CLI on a real MNIST subset: arrays, CSVs, pictures, caching, errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import invoke
from mnist_curate import scores
from mnist_curate.candidates import REASONS
from mnist_curate.embed import EMBED_ARRAYS, load_embed, score_logits

N_TRAIN = N_TEST = 2000
N = N_TRAIN + N_TEST


def stage_record(workspace: Path, stage: str) -> dict:
    return json.loads((workspace / "stages" / f"{stage}.json").read_text())


def test_embed_arrays_have_shapes_and_ids(scored_workspace):
    arrays = load_embed(scored_workspace)
    assert set(arrays) == set(EMBED_ARRAYS)
    assert arrays["embeddings"].shape == (N, 84)
    assert arrays["embeddings"].dtype == np.float32
    assert arrays["logits"].shape == (N, 10)
    assert arrays["pca"].shape == arrays["umap"].shape == (N, 2)
    assert arrays["sample_ids"][0].startswith("train-")
    assert arrays["sample_ids"][-1].startswith("test-")
    assert (arrays["splits"][:N_TRAIN] == "train").all()
    assert (arrays["splits"][N_TRAIN:] == "test").all()
    assert len(set(arrays["sample_ids"].tolist())) == N


def test_embed_oof_logits_only_for_train_rows(scored_workspace):
    arrays = load_embed(scored_workspace)
    assert np.isfinite(arrays["oof_logits"][:N_TRAIN]).all()
    assert np.isnan(arrays["oof_logits"][N_TRAIN:]).all()
    oof_predictions = arrays["oof_logits"][:N_TRAIN].argmax(1)
    assert (arrays["predictions"][:N_TRAIN] == oof_predictions).all()
    assert (arrays["predictions"][N_TRAIN:] == arrays["logits"][N_TRAIN:].argmax(1)).all()


def test_embed_labels_match_ids(scored_workspace, mnist_dir):
    from mnist_curate.config import DataConfig
    from mnist_curate.data import load_mnist

    data = load_mnist(DataConfig(dir=str(mnist_dir), limit=2000), seed=0)
    arrays = load_embed(scored_workspace)
    assert arrays["sample_ids"][:N_TRAIN].tolist() == data.train.sample_ids.tolist()
    assert (arrays["labels"][:N_TRAIN] == data.train.labels).all()


def test_embed_writes_map_pictures(scored_workspace):
    for name in ("pca.png", "umap.png"):
        assert (scored_workspace / "embed" / name).stat().st_size > 10_000


def test_embed_maps_are_repeatable(runner, scored_copy):
    before = {name: np.load(scored_copy / "embed" / f"{name}.npy") for name in ("umap", "pca", "embeddings")}
    result = invoke(runner, "embed", "-w", scored_copy, "--force")
    assert result.exit_code == 0, result.output
    for name, array in before.items():
        assert np.array_equal(np.load(scored_copy / "embed" / f"{name}.npy"), array), name


def test_score_arrays_match_functions(scored_workspace):
    arrays = load_embed(scored_workspace, mmap=False)
    logits = score_logits(arrays["logits"], arrays["oof_logits"])
    stored = scores.load_scores(scored_workspace)
    for name in scores.SCORE_NAMES:
        assert stored[name].shape == (N,)
        assert stored[name].dtype == np.float32
    assert np.allclose(stored["hardness"], scores.hardness(logits), atol=1e-6)
    assert np.allclose(stored["mistakenness"], scores.mistakenness(logits, arrays["labels"]), atol=1e-6)
    test_mask = arrays["splits"] == "test"
    assert np.allclose(stored["uniqueness"][test_mask], scores.uniqueness(arrays["embeddings"][test_mask]),
                       atol=1e-6)
    # Uniqueness is normalised within each split, so each split reaches 1.
    assert stored["uniqueness"][~test_mask].max() == pytest.approx(1.0)
    assert stored["uniqueness"][test_mask].max() == pytest.approx(1.0)
    assert stored["label_issue"].dtype == bool


def test_scores_csv_has_one_row_per_sample(scored_workspace):
    frame = pd.read_csv(scored_workspace / "candidates" / "scores.csv", keep_default_na=False)
    assert len(frame) == N
    for column in ("sample_id", "split", "label", "prediction", "confidence", *scores.SCORE_NAMES,
                   "label_issue", "suspicion", "candidate", "reasons"):
        assert column in frame.columns
    assert len(pd.read_csv(scored_workspace / "score" / "scores.csv")) == N


def test_candidates_have_reasons_sorted_by_suspicion(scored_workspace):
    frame = pd.read_csv(scored_workspace / "candidates" / "candidates.csv", keep_default_na=False)
    assert len(frame) > 0
    assert (frame["reasons"] != "").all()
    for reasons in frame["reasons"]:
        assert set(reasons.split(";")) <= set(REASONS)
    assert (np.diff(frame["suspicion"].to_numpy()) <= 0).all()
    reasons_by_id = json.loads((scored_workspace / "candidates" / "reasons.json").read_text())
    assert list(reasons_by_id) == frame["sample_id"].tolist()
    mask = np.load(scored_workspace / "candidates" / "candidate_mask.npy")
    assert mask.sum() == len(frame)


def test_candidate_figures_count_per_split(scored_workspace):
    figures = stage_record(scored_workspace, "candidates")["figures"]
    assert figures["n_candidates"] == figures["n_candidates_train"] + figures["n_candidates_test"]
    assert figures["by_reason_test"]["outlier"] == 2  # ceil(0.001 * 2000)


def test_score_writes_pictures(scored_workspace):
    assert (scored_workspace / "score" / "histograms.png").stat().st_size > 10_000
    assert (scored_workspace / "candidates" / "montage.png").stat().st_size > 5_000


def test_rerun_is_cached(runner, scored_copy):
    result = invoke(runner, "embed", "-w", scored_copy)
    assert result.exit_code == 0
    assert "embed: cached" in result.output
    result = invoke(runner, "score", "-w", scored_copy)
    assert result.exit_code == 0
    assert "score: cached" in result.output
    assert "candidates: cached" in result.output


def test_threshold_change_reruns_only_candidates(runner, scored_copy):
    before = {stage: stage_record(scored_copy, stage)["finished_at"] for stage in ("train", "embed", "score")}
    config = yaml.safe_load((scored_copy / "config.yaml").read_text())
    config["candidates"]["top_uniqueness"] = 0.01
    changed = scored_copy / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))

    result = invoke(runner, "score", "-w", scored_copy, "--config", changed)
    assert result.exit_code == 0, result.output
    assert "score: cached" in result.output
    assert "candidates: stale (candidates.top_uniqueness 0.001 -> 0.01)" in result.output
    after = {stage: stage_record(scored_copy, stage)["finished_at"] for stage in ("train", "embed", "score")}
    assert after == before
    figures = stage_record(scored_copy, "candidates")["figures"]
    assert figures["by_reason_test"]["outlier"] == 20


def test_score_top_prints_table(runner, scored_copy):
    result = invoke(runner, "score", "-w", scored_copy, "--top", "5")
    assert result.exit_code == 0
    assert "top 5 IDK candidates by suspicion" in result.output
    first_id = pd.read_csv(scored_copy / "candidates" / "candidates.csv")["sample_id"][0]
    assert first_id in result.output


def test_score_before_embed_exits_2_naming_embed(runner, workspace_copy):
    result = invoke(runner, "score", "-w", workspace_copy)
    assert result.exit_code == 2
    assert "embed has not run" in result.output
    assert f"Run `mnist-curate embed -w {workspace_copy}` first" in result.output
    assert not (workspace_copy / "score").exists()


def test_embed_before_train_exits_2_naming_train(runner, tmp_path, mnist_dir):
    result = invoke(runner, "embed", "-w", tmp_path / "ws", "--data-dir", mnist_dir)
    assert result.exit_code == 2
    assert f"Run `mnist-curate train -w {tmp_path / 'ws'}` first" in result.output


def test_invalid_threshold_exits_2(runner, scored_copy):
    bad = scored_copy / "bad.yaml"
    bad.write_text("candidates:\n  top_hardness: 1.5\n")
    result = invoke(runner, "score", "-w", scored_copy, "--config", bad)
    assert result.exit_code == 2
    assert "candidates.top_hardness: found 1.5, expected at most 1.0" in result.output


def test_benchmark_script_runs_on_small_subset(scored_workspace, tmp_path):
    script = Path(__file__).resolve().parent / "benchmarks" / "bench_scores.py"
    environment = {"FIFTYONE_DATABASE_DIR": str(tmp_path / "db"), "FIFTYONE_DO_NOT_TRACK": "true",
                   "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    import os

    completed = subprocess.run([sys.executable, str(script), str(scored_workspace), "--subset", "200", "--full"],
                               env=os.environ | environment, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "speed-up" in completed.stdout
    assert "ours on all 4,000 samples" in completed.stdout
    for name in ("hardness", "mistakenness", "uniqueness", "representativeness"):
        line = next(line for line in completed.stdout.splitlines() if line.startswith(name))
        assert float(line.split()[-1]) < 1e-6, line
