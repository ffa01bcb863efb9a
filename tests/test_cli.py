"""The command line on a real MNIST subset: train, status, caching and error exits."""

import json

import numpy as np
import pytest
import yaml

from conftest import SMALL_RUN, invoke

COMMANDS = ["train", "embed", "score", "review", "status", "relabel", "export", "all"]


def test_root_help_lists_every_command(runner):
    result = invoke(runner, "--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(runner, command):
    result = invoke(runner, command, "--help")
    assert result.exit_code == 0
    assert "--workspace" in result.stdout


def test_version(runner):
    from mnist_curate import __version__

    result = invoke(runner, "--version")
    assert result.exit_code == 0
    assert __version__ in result.stdout


def test_train_on_subset_stores_oof_logits_and_figures(runner, trained_workspace):
    oof_logits = np.load(trained_workspace / "train" / "oof_logits.npy", mmap_mode="r")
    fold_ids = np.load(trained_workspace / "train" / "fold_ids.npy")
    assert oof_logits.shape == (2000, 10)
    assert np.isfinite(oof_logits).all(), "every training sample needs out-of-fold logits"
    assert sorted(np.unique(fold_ids).tolist()) == [0, 1]
    assert (trained_workspace / "train" / "model.pt").is_file()

    result = invoke(runner, "status", "-w", trained_workspace, "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["train"]["state"] == "done"
    assert report["train"]["test_accuracy"] > 0.5, "one epoch on 2,000 digits should be far above chance (0.1)"
    assert report["train"]["oof_accuracy"] > 0.3
    assert report["train"]["n_train"] == 2000


def test_second_train_is_cached(runner, workspace_copy, mnist_dir):
    result = invoke(runner, "train", "-w", workspace_copy, "--data-dir", mnist_dir)
    assert result.exit_code == 0
    assert "train: cached" in result.output


def test_changed_epochs_make_train_stale(runner, workspace_copy):
    config = yaml.safe_load((workspace_copy / "config.yaml").read_text())
    config["train"]["epochs"] = 2
    changed = workspace_copy / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    result = invoke(runner, "status", "-w", workspace_copy, "--config", changed, "--json")
    report = json.loads(result.stdout)
    assert report["train"]["state"] == "stale"
    assert "train.epochs 1 -> 2" in report["train"]["reason"]


def test_training_is_deterministic(runner, trained_workspace, tmp_path, mnist_dir):
    again = tmp_path / "again"
    result = invoke(runner, "train", "-w", again, "--data-dir", mnist_dir, *SMALL_RUN)
    assert result.exit_code == 0
    for name in ("oof_logits.npy", "fold_ids.npy"):
        assert np.array_equal(np.load(trained_workspace / "train" / name), np.load(again / "train" / name))
    first = json.loads((trained_workspace / "stages" / "train.json").read_text())["figures"]
    second = json.loads((again / "stages" / "train.json").read_text())["figures"]
    assert first["test_accuracy"] == second["test_accuracy"]


def test_status_of_empty_workspace_says_missing(runner, tmp_path):
    result = invoke(runner, "status", "-w", tmp_path / "new", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["train"] == {"state": "missing"}


def test_bad_config_exits_2_and_leaves_workspace_untouched(runner, tmp_path, mnist_dir):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 0\n  foldz: 3\n")
    workspace = tmp_path / "ws"
    result = invoke(runner, "train", "-w", workspace, "--config", bad, "--data-dir", mnist_dir)
    assert result.exit_code == 2
    assert "train.epochs: found 0, expected at least 1" in result.output
    assert "train.foldz: unknown key" in result.output
    assert "Traceback" not in result.output
    assert not workspace.exists()


def test_unavailable_device_exits_2(runner, tmp_path, mnist_dir):
    result = invoke(runner, "train", "-w", tmp_path / "ws", "--data-dir", mnist_dir, "--limit", "100",
                    "--device", "cuda")
    assert result.exit_code == 2
    assert "device 'cuda' is not available" in result.output
    assert not (tmp_path / "ws" / "stages").exists()


def test_missing_data_dir_exits_2_with_fix(runner, tmp_path):
    result = invoke(runner, "train", "-w", tmp_path / "ws", "--data-dir", tmp_path / "nowhere")
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert "MNIST_CURATE_DATA_DIR" in result.output


def test_one_fold_on_command_line_exits_2(runner, tmp_path, mnist_dir):
    result = invoke(runner, "train", "-w", tmp_path / "ws", "--data-dir", mnist_dir, "--folds", "1")
    assert result.exit_code == 2
    assert "train.folds: found 1" in result.output


def test_unknown_option_exits_2(runner, tmp_path):
    result = invoke(runner, "train", "--epochz", "3")
    assert result.exit_code == 2


def test_empty_saved_config_exits_2_instead_of_defaults(runner, workspace_copy):
    (workspace_copy / "config.yaml").write_text("")
    result = invoke(runner, "train", "-w", workspace_copy)
    assert result.exit_code == 2
    assert "is empty" in result.output
    assert "delete it to start from the defaults" in result.output
