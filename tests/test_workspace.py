"""Workspace mechanics: atomic writes, the lock, stage records and cache states."""

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from mnist_curate import pipeline
from mnist_curate.config import Config
from mnist_curate.errors import PrerequisiteError, WorkspaceLockedError
from mnist_curate.pipeline import Stage, run_stage, stage_states
from mnist_curate.ui import Reporter
from mnist_curate.workspace import Workspace, atomic_write_bytes, save_npy

HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from mnist_curate.workspace import Workspace
    with Workspace(sys.argv[1]).locked("mnist-curate all --holder") as lock:
        print("locked", flush=True)
        if sys.argv[2] == "crash":
            import os; os._exit(9)
        time.sleep(60)
""")


def start_holder(workspace: Path, mode: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(workspace), mode],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_atomic_write_keeps_old_content_when_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    target.write_text("old")

    def failing_replace(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_write_bytes(target, b"new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_killed_writer_leaves_old_file_and_temp_is_cleaned(tmp_path):
    target = tmp_path / "ws" / "big.npy"
    save_npy(target, np.zeros(10))
    # A writer killed halfway through its temp file, as kill -9 would leave it.
    code = textwrap.dedent(f"""
        import os
        from pathlib import Path
        temp = Path({str(target)!r}).with_name(".big.npy.tmp-" + str(os.getpid()))
        with open(temp, "wb") as handle:
            handle.write(b"partial")
            handle.flush()
            os.kill(os.getpid(), 9)
    """)
    subprocess.run([sys.executable, "-c", code])
    assert np.load(target).shape == (10,)
    workspace = Workspace(tmp_path / "ws")
    with workspace.locked("test"):
        pass
    assert sorted(p.name for p in (tmp_path / "ws").iterdir()) == [".lock", "big.npy"]


def test_second_process_is_refused_with_holder_details(tmp_path):
    workspace = tmp_path / "ws"
    holder = start_holder(workspace, "hold")
    try:
        with pytest.raises(WorkspaceLockedError) as caught:
            with Workspace(workspace).locked("mnist-curate train"):
                pass
        message = str(caught.value)
        assert f"pid {holder.pid}" in message
        assert "mnist-curate all --holder" in message
        assert "since" in message
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_dead_process_is_recovered(tmp_path):
    workspace = tmp_path / "ws"
    holder = start_holder(workspace, "crash")
    holder.wait()
    with Workspace(workspace).locked("mnist-curate train") as lock:
        assert lock.recovered_from is not None
        assert lock.recovered_from.pid == holder.pid


@pytest.fixture()
def toy_stages(monkeypatch):
    """Two cheap stages with the real runner and records, in place of the real chain."""
    calls = []

    def produce(context):
        calls.append(context.stage.name)
        (context.out_dir / "values.txt").write_text(f"{context.stage.name} seed={context.config.seed}")
        return {"n": len(calls)}

    module = sys.modules[__name__]
    monkeypatch.setattr(module, "_toy_produce", produce, raising=False)
    stages = {
        "first": Stage("first", "first toy stage", (), ("seed",), f"{__name__}:_toy_produce"),
        "second": Stage("second", "second toy stage", ("first",), ("train.lr",), f"{__name__}:_toy_produce"),
    }
    monkeypatch.setattr(pipeline, "STAGES", stages)
    return calls


def run_toy(workspace: Workspace, name: str, config: Config, **kwargs):
    with workspace.locked("test"):
        return run_stage(name, config=config, workspace=workspace, reporter=Reporter(quiet=True), **kwargs)


def test_stage_is_cached_until_its_config_changes(tmp_path, toy_stages):
    workspace, config = Workspace(tmp_path / "ws"), Config()
    assert run_toy(workspace, "first", config).ran
    assert not run_toy(workspace, "first", config).ran
    assert run_toy(workspace, "first", config, force=True).ran

    changed = Config(seed=7)
    states = stage_states(changed, workspace)
    assert states["first"].state == "stale"
    assert "seed 0 -> 7" in states["first"].reason
    assert run_toy(workspace, "first", changed).ran


def test_upstream_change_makes_downstream_stale(tmp_path, toy_stages):
    workspace, config = Workspace(tmp_path / "ws"), Config()
    run_toy(workspace, "first", config)
    run_toy(workspace, "second", config)
    changed = Config(seed=3)
    run_toy(workspace, "first", changed)
    states = stage_states(changed, workspace)
    assert states["second"].state == "stale"
    assert "first was recomputed" in states["second"].reason


def test_downstream_before_upstream_names_stage_to_run(tmp_path, toy_stages):
    with pytest.raises(PrerequisiteError, match=r"second needs .*first has not run.*mnist-curate first"):
        run_toy(Workspace(tmp_path / "ws"), "second", Config())
    assert toy_stages == []


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
def test_damaged_output_is_detected_and_recomputed(tmp_path, toy_stages, damage):
    workspace, config = Workspace(tmp_path / "ws"), Config()
    run_toy(workspace, "first", config)
    output = workspace.stage_dir("first") / "values.txt"
    if damage == "truncate":
        output.write_text(output.read_text()[:3])
    elif damage == "garbage":
        output.write_text("x" * len(output.read_text()))
    else:
        output.unlink()
    assert stage_states(config, workspace)["first"].state == "corrupt"
    reporter = Reporter(quiet=True)
    with workspace.locked("test"):
        outcome = run_stage("first", config=config, workspace=workspace, reporter=reporter)
    assert outcome.ran
    assert any("damaged" in w for w in reporter.warnings)
    assert output.read_text() == "first seed=0"


def test_garbage_record_counts_as_corrupt_not_crash(tmp_path, toy_stages):
    workspace, config = Workspace(tmp_path / "ws"), Config()
    run_toy(workspace, "first", config)
    workspace.record_path("first").write_text("{not json")
    assert stage_states(config, workspace)["first"].state == "corrupt"
    assert run_toy(workspace, "first", config).ran
    assert json.loads(workspace.record_path("first").read_text())["stage"] == "first"


def test_failed_stage_keeps_no_record_and_no_temp_folder(tmp_path, toy_stages, monkeypatch):
    workspace, config = Workspace(tmp_path / "ws"), Config()

    def explode(context):
        (context.out_dir / "half.txt").write_text("half")
        raise RuntimeError("boom")

    monkeypatch.setattr(sys.modules[__name__], "_toy_produce", explode, raising=False)
    with pytest.raises(RuntimeError):
        run_toy(workspace, "first", config)
    assert stage_states(config, workspace)["first"].state == "missing"
    with workspace.locked("test"):
        pass
    assert not [p for p in workspace.root.iterdir() if ".tmp-" in p.name]


def test_ctrl_c_during_commit_waits_for_it(tmp_path, toy_stages, monkeypatch):
    """A SIGINT that arrives between the renames of a commit is raised only once the record is written."""
    workspace, config = Workspace(tmp_path / "ws"), Config()
    real_replace = os.replace

    def replace_then_interrupt(src, dst):
        real_replace(src, dst)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_toy(workspace, "first", config)
    monkeypatch.setattr(os, "replace", real_replace)
    assert stage_states(config, workspace)["first"].state == "done"
    assert not [p for p in workspace.root.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_command_hint_quotes_workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Workspace(Path("mnist-curate-workspace")).command("all") == "`mnist-curate all`"
    assert Workspace(tmp_path / "ws").command("review --sync") == f"`mnist-curate review --sync -w {tmp_path / 'ws'}`"
    quoted_path = tmp_path / "it's here"
    assert Workspace(quoted_path).command("train") == f"`mnist-curate train -w {shlex.quote(str(quoted_path))}`"
    assert shlex.split(Workspace(quoted_path).command("train").strip("`"))[-1] == str(quoted_path)


def test_command_hint_follows_workspace_variable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MNIST_CURATE_WORKSPACE", str(tmp_path / "shared-ws"))
    assert Workspace(tmp_path / "shared-ws").command("all") == "`mnist-curate all`"
    default = Workspace(Path("mnist-curate-workspace")).command("all")
    assert default == f"`mnist-curate all -w {tmp_path / 'mnist-curate-workspace'}`"
