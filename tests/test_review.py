"""`mnist-curate review` on a real MNIST subset, with real FiftyOne, a real mongod and a real App server.

Every test uses the workspace's own database folder (a private mongod on
loopback) or one mongod started here; none touches ~/.fiftyone.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from conftest import REPO_ROOT, invoke, snapshot
from mnist_curate.fiftyone_env import database_dir, fiftyone_for, free_loopback_port, start_mongod
from mnist_curate.review import (REVIEW_TAGS, SAVED_VIEWS, SCORE_FIELDS, images_dir, misspelt_review_tags,
                                 read_state, verdict_from_tags)
from mnist_curate.workspace import Workspace

N_SAMPLES = 4000  # the scored subset: 2,000 per split
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture(autouse=True)
def _workspace_database(monkeypatch):
    """Use the workspace's own database even when the person running the tests set FIFTYONE_DATABASE_URI."""
    monkeypatch.delenv("FIFTYONE_DATABASE_URI", raising=False)


@pytest.fixture(scope="module")
def reviewed_workspace(scored_workspace, tmp_path_factory) -> Path:
    """A scored workspace whose review dataset was built once (shared: copy it before changing it)."""
    workspace = tmp_path_factory.mktemp("review") / "ws"
    shutil.copytree(scored_workspace, workspace, ignore=shutil.ignore_patterns(".lock"))
    os.environ.pop("FIFTYONE_DATABASE_URI", None)
    result = invoke_review(workspace, "--no-launch")
    assert result.exit_code == 0, result.output
    return workspace


@pytest.fixture()
def review_copy(reviewed_workspace, tmp_path) -> Path:
    """A private copy of the reviewed workspace, database included."""
    copy = tmp_path / "reviewed"
    shutil.copytree(reviewed_workspace, copy, ignore=shutil.ignore_patterns(".lock", "mongod.lock"))
    return copy


def invoke_review(workspace: Path, *args: str):
    return invoke(CliRunner(), "review", "-w", workspace, *args)


@contextlib.contextmanager
def open_dataset(workspace: Path):
    ws = Workspace(workspace)
    with fiftyone_for(ws) as fo:
        yield fo, fo.load_dataset(read_state(ws)["dataset"])


def decisions_in(path: Path) -> dict[str, dict]:
    """Return the decision file's entries by sample id, with labels as text (YAML reads `label: 4` as a number)."""
    raw = yaml.safe_load(path.read_text())
    return {entry["sample_id"]: entry | {"label": str(entry["label"])} for entry in raw["decisions"] or []}


# Building the dataset ----------------------------------------------------------------

def test_build_has_every_sample_and_field(reviewed_workspace):
    arrays = {name: np.load(reviewed_workspace / "embed" / f"{name}.npy") for name in ("sample_ids", "labels",
                                                                                        "predictions")}
    hardness = np.load(reviewed_workspace / "score" / "hardness.npy")
    with open_dataset(reviewed_workspace) as (fo, dataset):
        assert len(dataset) == N_SAMPLES
        schema = dataset.get_field_schema()
        for name in ("sample_id", "split", "ground_truth", "prediction", *SCORE_FIELDS, "label_issue", "candidate",
                     "suspicion", "reasons", "decision", "decision_source", "curated_label", "umap", "pca"):
            assert name in schema, name
        assert dataset.count_sample_tags() == {"train": N_SAMPLES // 2, "test": N_SAMPLES // 2}

        row = 123
        sample = dataset.match(fo.ViewField("sample_id") == str(arrays["sample_ids"][row])).first()
        assert sample.ground_truth.label == str(arrays["labels"][row])
        assert sample.prediction.label == str(arrays["predictions"][row])
        assert len(sample.prediction.logits) == 10
        assert sample.hardness == pytest.approx(float(hardness[row]), abs=1e-6)
        assert sample.curated_label.label == sample.ground_truth.label
        assert sample.decision is None
        assert Path(sample.filepath) == images_dir(Workspace(reviewed_workspace)) / f"{sample.sample_id}.png"
    assert len(list(images_dir(Workspace(reviewed_workspace)).glob("*.png"))) == N_SAMPLES


def test_build_saves_views_sorted_by_score(reviewed_workspace):
    candidate_mask = np.load(reviewed_workspace / "candidates" / "candidate_mask.npy")
    with open_dataset(reviewed_workspace) as (fo, dataset):
        assert dataset.list_saved_views() == [view.name for view in SAVED_VIEWS]
        candidates = dataset.load_saved_view("IDK candidates")
        assert len(candidates) == int(candidate_mask.sum())
        suspicion = candidates.values("suspicion")
        assert suspicion == sorted(suspicion, reverse=True)
        assert len(dataset.load_saved_view("still undecided candidates")) == len(candidates)
        assert len(dataset.load_saved_view("decided so far")) == 0
        mistakenness = dataset.load_saved_view("most mistaken").limit(50).values("mistakenness")
        assert mistakenness == sorted(mistakenness, reverse=True)
        misclassified = dataset.load_saved_view("misclassified")
        assert all(p != g for p, g in zip(*misclassified.values(["prediction.label", "ground_truth.label"])))


def test_build_registers_maps_as_visualizations(reviewed_workspace):
    umap = np.load(reviewed_workspace / "embed" / "umap.npy")
    with open_dataset(reviewed_workspace) as (fo, dataset):
        assert set(dataset.list_brain_runs(type="visualization")) == {"umap", "pca"}
        results = dataset.load_brain_results("umap")
        assert results.points.shape == (N_SAMPLES, 2)
        first = dataset.first()
        assert first.umap == pytest.approx(umap[0].tolist(), abs=1e-5)


def test_second_build_updates_in_place(review_copy):
    with open_dataset(review_copy) as (fo, dataset):
        build_id = dataset.info["mnist_curate_build_id"]
        dataset.take(3, seed=1).tag_samples("kept-by-me")
    png = images_dir(Workspace(review_copy)) / f"{sample_ids_of(review_copy, 1)[0]}.png"
    png_mtime = png.stat().st_mtime_ns

    result = invoke_review(review_copy, "--no-launch")
    assert result.exit_code == 0, result.output
    assert "updated (paths, decisions)" in result.output, "a copied workspace's samples must point at its own images"
    with open_dataset(review_copy) as (fo, dataset):
        assert Path(dataset.first().filepath).parent == images_dir(Workspace(review_copy))

    result = invoke_review(review_copy, "--no-launch")
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output

    config = yaml.safe_load((review_copy / "config.yaml").read_text())
    config["candidates"]["top_uniqueness"] = 0.01
    (review_copy / "more.yaml").write_text(yaml.safe_dump(config))
    assert invoke(CliRunner(), "score", "-w", review_copy, "--config", review_copy / "more.yaml").exit_code == 0
    result = invoke_review(review_copy, "--no-launch")
    assert result.exit_code == 0, result.output
    assert "updated (candidates)" in result.output

    candidate_mask = np.load(review_copy / "candidates" / "candidate_mask.npy")
    with open_dataset(review_copy) as (fo, dataset):
        assert dataset.info["mnist_curate_build_id"] == build_id
        assert len(dataset.match_tags("kept-by-me")) == 3
        assert len(dataset.load_saved_view("IDK candidates")) == int(candidate_mask.sum())
    assert png.stat().st_mtime_ns == png_mtime


def test_interrupted_update_is_finished_next_time(review_copy, monkeypatch):
    from mnist_curate import review
    from mnist_curate.cli import resolve_config
    from mnist_curate.ui import Reporter

    state = read_state(Workspace(review_copy))
    state["groups"]["score"] = "from an older score run"
    (review_copy / "review" / "dataset.json").write_text(json.dumps(state))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    ws = Workspace(review_copy)
    config = resolve_config(ws, None, {})
    with fiftyone_for(ws) as fo:
        monkeypatch.setattr(review, "set_columns", interrupted)
        with pytest.raises(KeyboardInterrupt):
            review.build_dataset(fo, ws, config, Reporter(quiet=True), decisions_path=review_copy / "decisions.yaml")
    assert "score" not in read_state(ws)["groups"], "an interrupted group must not be recorded as written"

    monkeypatch.undo()
    result = invoke_review(review_copy, "--no-launch")
    assert result.exit_code == 0, result.output
    assert "updated (paths, score, decisions)" in result.output
    assert "score" in read_state(ws)["groups"]


def test_review_before_score_exits_2(workspace_copy):
    result = invoke_review(workspace_copy, "--no-launch")
    assert result.exit_code == 2
    assert "review needs up-to-date results of embed" in result.output
    assert "Traceback" not in result.output
    assert not (workspace_copy / "review" / "dataset.json").exists()


def test_user_database_uri_keeps_workspace_database_unused(scored_copy, tmp_path, monkeypatch):
    server = start_mongod(tmp_path / "own-mongo")
    try:
        monkeypatch.setenv("FIFTYONE_DATABASE_URI", server.uri)
        result = invoke_review(scored_copy, "--no-launch")
        assert result.exit_code == 0, result.output
        with open_dataset(scored_copy) as (fo, dataset):
            assert len(dataset) == N_SAMPLES
    finally:
        server.stop()
    assert not (database_dir(Workspace(scored_copy)) / "WiredTiger").exists()


def test_mongod_failure_says_why_and_how_to_fix(scored_copy):
    db_dir = database_dir(Workspace(scored_copy))
    db_dir.mkdir(parents=True)
    # A data folder written by another storage engine: mongod refuses to start on it.
    (db_dir / "storage.bson").write_bytes(b"not a storage file")
    result = invoke_review(scored_copy, "--no-launch")
    assert result.exit_code == 1
    assert "MongoDB (mongod) for FiftyOne did not start" in result.output
    assert "FIFTYONE_DATABASE_URI" in result.output
    assert "Traceback" not in result.output


# Tags to decisions -------------------------------------------------------------------

@pytest.mark.parametrize(("tags", "label", "conflict"), [
    (["IDK"], "IDK", ""),
    (["keep", "train"], "3", ""),
    (["is:5"], "5", ""),
    (["keep", "is:3"], "3", ""),
    (["IDK", "keep"], None, "IDK + keep"),
    (["is:1", "is:7"], None, "is:1 + is:7"),
    (["train", "something"], None, ""),
])
def test_verdict_from_tags(tags, label, conflict):
    verdict = verdict_from_tags("train-00001", "3", tags)
    assert verdict.label == label
    assert verdict.conflict == conflict


def test_misspelt_review_tags_are_found():
    assert misspelt_review_tags(["idk", "Keep", "is:12", "digit-3", "IDK", "train", "blurry"]) == [
        "idk", "Keep", "is:12", "digit-3"]


def tag_samples(workspace: Path, tags_by_sample: dict[str, list[str]]) -> None:
    """Tag samples through the FiftyOne API, as the App does when a reviewer tags them."""
    with open_dataset(workspace) as (fo, dataset):
        for sample_id, tags in tags_by_sample.items():
            view = dataset.match(fo.ViewField("sample_id") == sample_id)
            view.untag_samples(list(REVIEW_TAGS))
            if tags:
                view.tag_samples(tags)


def sample_ids_of(workspace: Path, n_samples: int) -> list[str]:
    return np.load(workspace / "embed" / "sample_ids.npy")[:n_samples].tolist()


def given_label(workspace: Path, sample_id: str) -> str:
    sample_ids = np.load(workspace / "embed" / "sample_ids.npy").tolist()
    return str(np.load(workspace / "embed" / "labels.npy")[sample_ids.index(sample_id)])


def test_sync_merges_tags_and_keeps_earlier_decisions(review_copy):
    idk_a, idk_b, kept, corrected, both, earlier, retagged = sample_ids_of(review_copy, 7)
    other_digit = str((int(given_label(review_copy, corrected)) + 1) % 10)
    decisions_path = review_copy / "decisions.yaml"
    decisions_path.write_text(
        "version: 1\ndecisions:\n"
        f"  - {{sample_id: {earlier}, label: IDK, source: manual, decided_at: '2026-01-01T00:00:00+00:00'}}\n"
        f"  - {{sample_id: {retagged}, label: IDK, source: review, decided_at: '2026-01-01T00:00:00+00:00'}}\n")
    tag_samples(review_copy, {idk_a: ["IDK"], idk_b: ["IDK"], kept: ["keep"], corrected: [f"is:{other_digit}"],
                              both: ["IDK", "keep"], retagged: ["keep"]})

    result = invoke_review(review_copy, "--sync")
    assert result.exit_code == 0, result.output
    assert "4 added, 1 changed, 0 unchanged, 1 conflicts" in result.output
    assert f"conflict on {both}" in result.output

    decisions = decisions_in(decisions_path)
    assert decisions[idk_a]["label"] == decisions[idk_b]["label"] == "IDK"
    assert decisions[kept]["label"] == given_label(review_copy, kept)
    assert decisions[corrected]["label"] == other_digit
    assert decisions[retagged]["label"] == given_label(review_copy, retagged)
    assert decisions[idk_a]["source"] == "review"
    assert both not in decisions
    assert decisions[earlier] == {"sample_id": earlier, "label": "IDK", "source": "manual",
                                  "decided_at": "2026-01-01T00:00:00+00:00"}
    assert (review_copy / "decisions.yaml.bak").is_file()

    with open_dataset(review_copy) as (fo, dataset):
        decided = dataset.load_saved_view("decided so far")
        assert set(decided.values("sample_id")) == {idk_a, idk_b, kept, corrected, both, earlier, retagged}
        sample = dataset.match(fo.ViewField("sample_id") == corrected).first()
        assert (sample.decision, sample.decision_source, sample.curated_label.label) == (other_digit, "review",
                                                                                         other_digit)


def test_second_sync_changes_nothing(review_copy):
    idk, kept = sample_ids_of(review_copy, 2)
    tag_samples(review_copy, {idk: ["IDK"], kept: ["keep"]})
    assert invoke_review(review_copy, "--sync").exit_code == 0
    written = (review_copy / "decisions.yaml").read_bytes()

    result = invoke_review(review_copy, "--sync")
    assert result.exit_code == 0, result.output
    assert "0 added, 0 changed, 2 unchanged, 0 conflicts" in result.output
    assert "left as it was" in result.output
    assert (review_copy / "decisions.yaml").read_bytes() == written


def test_removed_tag_keeps_its_decision(review_copy):
    (idk,) = sample_ids_of(review_copy, 1)
    tag_samples(review_copy, {idk: ["IDK"]})
    assert invoke_review(review_copy, "--sync").exit_code == 0
    tag_samples(review_copy, {idk: []})

    result = invoke_review(review_copy, "--sync")
    assert result.exit_code == 0, result.output
    assert f"1 samples lost their review tags since the last sync ({idk})" in result.output
    assert decisions_in(review_copy / "decisions.yaml")[idk]["label"] == "IDK"


def test_misspelt_tag_is_reported_not_applied(review_copy):
    (sample_id,) = sample_ids_of(review_copy, 1)
    tag_samples(review_copy, {sample_id: ["idk"]})
    result = invoke_review(review_copy, "--sync")
    assert result.exit_code == 0, result.output
    assert "tag 'idk' on 1 samples" in result.output
    assert not (review_copy / "decisions.yaml").exists()


def test_sync_into_given_decision_file(review_copy, tmp_path):
    (sample_id,) = sample_ids_of(review_copy, 1)
    tag_samples(review_copy, {sample_id: ["IDK"]})
    target = tmp_path / "reviewed.csv"
    result = invoke_review(review_copy, "--sync", "--decisions", target)
    assert result.exit_code == 0, result.output
    assert f"{sample_id},IDK,review" in target.read_text()


def test_sync_rejects_invalid_decision_file_and_keeps_it(review_copy):
    (sample_id,) = sample_ids_of(review_copy, 1)
    tag_samples(review_copy, {sample_id: ["IDK"]})
    broken = "version: 1\ndecisions:\n  - {sample_id: train-99999x, label: IDK}\n"
    (review_copy / "decisions.yaml").write_text(broken)
    result = invoke_review(review_copy, "--sync")
    assert result.exit_code == 2
    assert "review --sync" in result.output
    assert (review_copy / "decisions.yaml").read_text() == broken


def test_sync_without_dataset_exits_2(scored_copy):
    result = invoke_review(scored_copy, "--sync")
    assert result.exit_code == 2
    assert f"run `mnist-curate review -w {scored_copy}` first" in result.output


# The App -----------------------------------------------------------------------------

def server_environment() -> dict[str, str]:
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("FIFTYONE_DATABASE_URI", "DISPLAY", "WAYLAND_DISPLAY")}
    return environment | {"FIFTYONE_DO_NOT_TRACK": "true", "PYTHONPATH": str(REPO_ROOT)}


@contextlib.contextmanager
def review_server(workspace: Path, port: int):
    """Run `mnist-curate review --remote` in a subprocess until it waits for the reviewer.

    Yields the process and the lines it printed so far.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "mnist_curate", "review", "--remote", "--port", str(port), "--address", "127.0.0.1",
         "-w", str(workspace)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=server_environment(), cwd=REPO_ROOT)
    try:
        printed = wait_for_line(process, "Press Ctrl-C to end the review")
        yield process, printed
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_for_line(process: subprocess.Popen, fragment: str) -> list[str]:
    lines = []
    for line in process.stdout:
        lines.append(line)
        if fragment in line:
            return lines
    raise AssertionError(f"review exited with {process.wait()} before printing {fragment!r}:\n{''.join(lines)}")


def app_version(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/fiftyone", timeout=10) as response:
        return json.loads(response.read())["version"]


def end_review(process: subprocess.Popen, printed: list[str], signum: int) -> str:
    process.send_signal(signum)
    output, _ = process.communicate(timeout=120)
    return "".join(printed) + output


def test_remote_review_serves_until_ctrl_c_then_syncs(review_copy):
    port = free_loopback_port()
    with review_server(review_copy, port) as (process, printed):
        import fiftyone

        assert app_version(port) == fiftyone.__version__
        output = end_review(process, printed, signal.SIGINT)
    assert process.returncode == 0, output
    assert f"ssh -N -L {port}:127.0.0.1:{port}" in output
    assert "review sync: 0 added" in output
    assert "Traceback" not in output


def test_no_launch_serves_nothing(review_copy):
    port = free_loopback_port()
    completed = subprocess.run(
        [sys.executable, "-m", "mnist_curate", "review", "--no-launch", "--port", str(port), "-w", str(review_copy)],
        capture_output=True, text=True, env=server_environment(), cwd=REPO_ROOT, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert "review: dataset mnist-curate-ws" in completed.stderr
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_port_in_use_exits_2_with_message(review_copy):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = invoke_review(review_copy, "--remote", "--port", str(port))
    assert result.exit_code == 2
    assert f"port {port} is already in use" in result.output
    assert "--port" in result.output
    assert "Traceback" not in result.output


def test_port_in_use_is_found_before_the_build(scored_copy):
    before = snapshot(scored_copy)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = invoke_review(scored_copy, "--remote", "--port", str(port))
    assert result.exit_code == 2
    assert f"port {port} is already in use" in result.output
    assert snapshot(scored_copy) == before, "a port in use is bad input, so nothing is built"
    assert not (scored_copy / "review").exists()

def chromium_or_skip() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("MNIST_CURATE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{CHROMIUM} not found, and MNIST_CURATE_REQUIRE_BROWSER=1 requires the browser test")
    pytest.skip(f"{CHROMIUM} not found; install Debian's chromium to run the browser test")


@pytest.mark.browser
def test_app_in_chromium_shows_dataset_and_saved_views(review_copy):
    chromium_or_skip()
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    port = free_loopback_port()
    name = read_state(Workspace(review_copy))["dataset"]
    n_candidates = int(np.load(review_copy / "candidates" / "candidate_mask.npy").sum())
    with review_server(review_copy, port) as (process, printed):
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            # The App keeps an event stream open, so the network never goes idle; wait for content instead.
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load", timeout=120_000)
            dataset_selector = page.locator("[data-cy=selector-dataset]")
            expect(dataset_selector).to_have_value(name, timeout=120_000)
            view_selector = page.locator("[data-cy=saved-views-selection]")
            view_selector.get_by_text("IDK candidates").wait_for(timeout=60_000)
            page.get_by_text(f"{n_candidates} samples").first.wait_for(timeout=60_000)
            # FiftyOne shows an advertisement popover once; it covers the grid and the view selector.
            dismiss = page.get_by_text("Dismiss", exact=True)
            with contextlib.suppress(PlaywrightTimeout):
                dismiss.first.click(timeout=10_000)
            time.sleep(3)  # the grid draws its tiles after the count appears
            page.screenshot(path=str(ARTIFACTS / "review-candidates.png"))

            view_selector.locator("[role=combobox]").click()
            page.get_by_role("option", name="label issues").wait_for(timeout=30_000)
            listed = page.get_by_role("option").all_inner_texts()
            page.screenshot(path=str(ARTIFACTS / "review-saved-views.png"))
            browser.close()
        output = end_review(process, printed, signal.SIGTERM)
    assert process.returncode == 0, output
    assert "review sync" in output
    for view in SAVED_VIEWS:
        assert view.name in listed
    assert (ARTIFACTS / "review-candidates.png").stat().st_size > 20_000
