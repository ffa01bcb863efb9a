"""`mnist-curate all` end to end on a real MNIST subset, then again fully cached."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import SMALL_RUN, invoke
from mnist_curate.decisions import read_decisions
from mnist_curate.pipeline import STAGES

pytestmark = pytest.mark.slow


def manifest_rows(out):
    with open(out / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def run_all(runner, workspace, *args):
    result = invoke(runner, "all", "-w", workspace, *args, "--json")
    assert result.exit_code == 0, result.output
    return result, json.loads(result.stdout)


def test_all_accepts_candidates_then_is_cached(runner, workspace_copy, mnist_dir):
    out = workspace_copy.parent / "curated"
    result, report = run_all(runner, workspace_copy, "--data-dir", mnist_dir, *SMALL_RUN, "--out", out)

    assert [stage["stage"] for stage in report["stages"]] == list(STAGES)
    ran = {stage["stage"]: stage["ran"] for stage in report["stages"]}
    assert ran["train"] is False, "train was cached in the copied workspace"
    assert all(ran[name] for name in STAGES if name != "train")
    assert "accepted as IDK without review" in result.output
    assert "stages" in result.output, "the timing table is printed"

    decisions = read_decisions(workspace_copy / "decisions.yaml")
    n_candidates = sum(report["candidates"].values())
    assert n_candidates > 0
    assert len(decisions) == n_candidates
    assert {d.source for d in decisions.values()} == {"rule"}
    assert {d.label for d in decisions.values()} == {"IDK"}
    assert report["idk"] == report["candidates"]
    assert report["decisions"]["source"] == "accepted candidates"

    assert report["export"]["path"] == str(out)
    assert report["export"]["n_files"] == 4000
    rows = manifest_rows(out)
    assert sum(row["curated_label"] == "IDK" for row in rows) == n_candidates
    assert len(list(out.glob("*/IDK/*.png"))) == n_candidates
    assert 0.5 < report["test_accuracy"] <= 1.0

    # A second run with no options reuses the saved config and computes nothing.
    decisions_text = (workspace_copy / "decisions.yaml").read_text()
    _, cached = run_all(runner, workspace_copy)
    assert cached["cached"] is True
    assert all(stage["ran"] is False for stage in cached["stages"])
    assert cached["seconds"] < 10
    assert cached["idk"] == report["idk"]
    assert (workspace_copy / "decisions.yaml").read_text() == decisions_text
    assert not (workspace_copy / "decisions.yaml.bak").exists(), "nothing changed, so nothing was rewritten"


def test_all_keeps_human_decision_over_candidate(runner, workspace_copy, mnist_dir):
    out = workspace_copy.parent / "curated"
    _, first = run_all(runner, workspace_copy, "--data-dir", mnist_dir, *SMALL_RUN, "--out", out)
    path = workspace_copy / "decisions.yaml"
    decisions = read_decisions(path)
    sample_id = next(iter(decisions))
    row = next(r for r in manifest_rows(out) if r["sample_id"] == sample_id)

    # A reviewer keeps one candidate's given label.
    text = path.read_text().replace(f"{{sample_id: {sample_id}, label: IDK, source: rule",
                                    f"{{sample_id: {sample_id}, label: {row['label']}, source: review")
    path.write_text(text)
    _, second = run_all(runner, workspace_copy)
    assert read_decisions(path)[sample_id].label == row["label"]
    assert read_decisions(path)[sample_id].source == "review"
    assert second["decisions"]["kept"] == 1
    assert sum(second["idk"].values()) == sum(first["idk"].values()) - 1
    ran = {stage["stage"]: stage["ran"] for stage in second["stages"]}
    assert ran["relabel"] and ran["export"]
    assert not ran["train"]
    kept_row = next(r for r in manifest_rows(out) if r["sample_id"] == sample_id)
    assert kept_row["curated_label"] == row["label"]
    assert kept_row["decision_source"] == "review"


def test_all_keeps_rule_entry_edited_to_a_digit(runner, workspace_copy, mnist_dir):
    out = workspace_copy.parent / "curated"
    run_all(runner, workspace_copy, "--data-dir", mnist_dir, *SMALL_RUN, "--out", out)
    path = workspace_copy / "decisions.yaml"
    sample_id = sorted(read_decisions(path))[0]
    # The user changes the label but leaves `source: rule` as it was.
    path.write_text(path.read_text().replace(f"{{sample_id: {sample_id}, label: IDK, source: rule",
                                             f"{{sample_id: {sample_id}, label: 5, source: rule"))
    result, _ = run_all(runner, workspace_copy)
    assert "edited to a digit by hand" in result.output
    kept = read_decisions(path)[sample_id]
    assert kept.label == "5"
    assert kept.source == "manual"


def test_all_withdraws_rule_decisions_after_threshold_change(runner, workspace_copy, mnist_dir, tmp_path):
    out = workspace_copy.parent / "curated"
    _, first = run_all(runner, workspace_copy, "--data-dir", mnist_dir, *SMALL_RUN, "--out", out)
    path = workspace_copy / "decisions.yaml"
    human_id = sorted(read_decisions(path))[0]
    path.write_text(path.read_text().replace(f"{{sample_id: {human_id}, label: IDK, source: rule",
                                             f"{{sample_id: {human_id}, label: IDK, source: manual"))

    # Stricter rules: no outliers, no label issues, far fewer mistaken or hard samples.
    config = yaml.safe_load((workspace_copy / "config.yaml").read_text())
    config["candidates"] |= {"top_uniqueness": 0.0, "label_issues": False,
                             "top_mistakenness": 0.0005, "top_hardness": 0.0005}
    stricter = tmp_path / "stricter.yaml"
    stricter.write_text(yaml.safe_dump(config))
    _, second = run_all(runner, workspace_copy, "--config", stricter, "--overwrite")

    n_candidates = sum(second["candidates"].values())
    assert n_candidates < sum(first["candidates"].values())
    assert second["decisions"]["withdrawn"] > 0
    decisions = read_decisions(path)
    assert decisions[human_id].source == "manual", "a human decision is never withdrawn"
    assert sum(d.source == "rule" for d in decisions.values()) <= n_candidates
    ran = {stage["stage"]: stage["ran"] for stage in second["stages"]}
    assert not ran["train"] and not ran["embed"] and not ran["score"]
    assert sum(second["idk"].values()) == len(decisions)


def test_all_with_decision_file_uses_it_as_is(runner, workspace_copy, mnist_dir, tmp_path):
    decisions = tmp_path / "reviewed.yaml"
    # Samples of the 2,000-per-split subset: its first training and test ids.
    from mnist_curate.config import config_from_dict
    from mnist_curate.data import load_mnist

    config = config_from_dict(yaml.safe_load((workspace_copy / "config.yaml").read_text()))
    data = load_mnist(config.data, seed=config.seed)
    relabel_ids = [data.train.sample_ids[0], data.train.sample_ids[1], data.test.sample_ids[0]]
    decisions.write_text("version: 1\ndecisions:\n" + "".join(
        f"  - {{sample_id: {sample_id}, label: IDK, source: review}}\n" for sample_id in relabel_ids))
    before = decisions.read_bytes()

    out = tmp_path / "curated"
    _, report = run_all(runner, workspace_copy, "--data-dir", mnist_dir, *SMALL_RUN, "--out", out,
                        "--decisions", decisions)
    assert decisions.read_bytes() == before, "a given decision file is never written"
    assert not (workspace_copy / "decisions.yaml").exists()
    assert report["decisions"] == {"source": "file", "path": str(decisions)}
    assert report["idk"] == {"train": 2, "test": 1}
    assert sorted(p.stem for p in out.glob("*/IDK/*.png")) == sorted(relabel_ids)


def test_all_bad_decisions_exit_2_early(runner, workspace_copy, mnist_dir, tmp_path):
    decisions = tmp_path / "reviewed.yaml"
    decisions.write_text("version: 1\ndecisions:\n  - {sample_id: test-10000, label: IDK}\n")
    result = invoke(runner, "all", "-w", workspace_copy, "--data-dir", mnist_dir, "--decisions", decisions,
                    "--json")
    assert result.exit_code == 2
    assert f"{decisions}:3: unknown sample id 'test-10000'" in result.output
    assert result.stdout == ""
    assert sorted(p.name for p in (workspace_copy / "stages").iterdir()) == ["train.json"]


def test_all_non_empty_out_exits_2_early(runner, workspace_copy, mnist_dir, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = invoke(runner, "all", "-w", workspace_copy, "--data-dir", mnist_dir, "--out", out)
    assert result.exit_code == 2
    assert "is not empty; pass --overwrite" in result.output
    assert sorted(p.name for p in (workspace_copy / "stages").iterdir()) == ["train.json"]
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_all_out_with_decisions_exits_2(runner, workspace_copy, mnist_dir, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    decisions = project / "decisions.yaml"
    decisions.write_text("version: 1\ndecisions: []\n")
    result = invoke(runner, "all", "-w", workspace_copy, "--data-dir", mnist_dir, "--decisions", decisions,
                    "--out", project, "--overwrite")
    assert result.exit_code == 2
    assert f"export target {project} contains the decision file {decisions}" in result.output
    assert sorted(p.name for p in (workspace_copy / "stages").iterdir()) == ["train.json"]
    assert decisions.read_text() == "version: 1\ndecisions: []\n"

def test_ci_curation_script_passes(workspace_copy, mnist_dir, tmp_path):
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "curated"
    env = os.environ | {
        "MNIST_CURATE_DATA_DIR": str(mnist_dir), "CURATION_WORKSPACE": str(workspace_copy), "OUT": str(out),
        "MNIST_CURATE": f"{sys.executable} -m mnist_curate", "PYTHON": sys.executable, "PYTHONPATH": str(repo)}
    result = subprocess.run(["bash", "examples/ci-curation.sh", *SMALL_RUN], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "curation check passed: 4,000 images" in result.stdout
    assert (out / "manifest.csv").is_file()
