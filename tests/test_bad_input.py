"""Bad input through the CLI: exit code 2, a message that names what, where and the fix, and no change.

Each case runs a real command on a private copy of a workspace where every
stage has run, and compares the workspace's files (names and digests)
before and after (all but the lock file, see ``conftest.snapshot``).
"""

import contextlib
import gzip
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import invoke, mounted_tmpfs, snapshot
from mnist_curate.data import MNIST_FILES
from mnist_curate.workspace import file_digest

pytestmark = pytest.mark.slow


def assert_rejected(result, *fragments: str, exit_code: int = 2) -> None:
    assert result.exit_code == exit_code, result.output
    for fragment in fragments:
        assert fragment in result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("error: ") or "\nerror: " in result.output, result.output


# Data -------------------------------------------------------------------------------------------

def copy_gz(mnist_dir: Path, folder: Path) -> Path:
    folder.mkdir()
    for f in MNIST_FILES:
        shutil.copy(mnist_dir / "MNIST" / "raw" / f"{f.name}.gz", folder)
    return folder


def edit_unpacked(folder: Path, name: str, edit) -> None:
    path = folder / f"{name}.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    path.write_bytes(gzip.compress(bytes(edit(raw))))


def set_bytes(start: int, value: bytes):
    def edit(raw: bytearray) -> bytearray:
        raw[start:start + len(value)] = value
        return raw
    return edit


def break_nothing(folder: Path) -> Path:
    return folder


def remove_labels(folder: Path) -> Path:
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    return folder


def truncate_archive(folder: Path) -> Path:
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100_000])
    return folder


def wrong_magic(folder: Path) -> Path:
    edit_unpacked(folder, "t10k-labels-idx1-ubyte", set_bytes(3, b"\x03"))
    return folder


def wrong_count(folder: Path) -> Path:
    edit_unpacked(folder, "t10k-images-idx3-ubyte",
                  lambda raw: set_bytes(4, (9_000).to_bytes(4, "big"))(raw)[:16 + 9_000 * 784])
    return folder


def label_out_of_range(folder: Path) -> Path:
    edit_unpacked(folder, "t10k-labels-idx1-ubyte", set_bytes(100, b"\x0c"))
    return folder


DATA_CASES = {
    "folder does not exist": (lambda folder: folder / "nowhere", "does not exist"),
    "missing file": (remove_labels, "t10k-labels-idx1-ubyte[.gz]"),
    "truncated archive": (truncate_archive, "is not a complete gzip archive"),
    "wrong magic number": (wrong_magic, "magic number 2051, expected 2049"),
    "wrong image count": (wrong_count, "header says 9000 images, expected 10000"),
    # The MD5 check catches a changed label before the range check would.
    "label out of range": (label_out_of_range, "not the content of the MNIST release"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_exits_2_and_changes_nothing(runner, curated_copy, mnist_dir, tmp_path, case):
    damage, expected = DATA_CASES[case]
    data_dir = damage(copy_gz(mnist_dir, tmp_path / "data"))
    before = snapshot(curated_copy)
    result = invoke(runner, "train", "-w", curated_copy, "--data-dir", data_dir, "--force")
    assert_rejected(result, expected, str(data_dir))
    assert snapshot(curated_copy) == before


def test_bad_data_creates_no_workspace(runner, mnist_dir, tmp_path):
    data_dir = truncate_archive(copy_gz(mnist_dir, tmp_path / "data"))
    result = invoke(runner, "train", "-w", tmp_path / "new", "--data-dir", data_dir, "--limit", "100")
    assert_rejected(result, "is not a complete gzip archive")
    assert not (tmp_path / "new").exists()


def test_read_only_data_folder_trains_and_is_not_written(runner, mnist_dir, tmp_path):
    data_dir = copy_gz(mnist_dir, tmp_path / "data")
    before = {path.name: file_digest(path) for path in data_dir.iterdir()}
    data_dir.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        result = invoke(runner, "train", "-w", tmp_path / "ws", "--data-dir", data_dir, "--limit", "100",
                        "--epochs", "1", "--folds", "0")
    finally:
        data_dir.chmod(0o755)
    assert result.exit_code == 0, result.output
    assert {path.name: file_digest(path) for path in data_dir.iterdir()} == before


# Config -----------------------------------------------------------------------------------------

CONFIG_CASES = {
    "unknown key": ("train:\n  epochz: 3\n", "train.epochz: unknown key (did you mean train.epochs?)"),
    "wrong type": ("train:\n  epochs: three\n", "train.epochs: found 'three', expected an integer"),
    "zero epochs": ("train:\n  epochs: 0\n", "train.epochs: found 0, expected at least 1"),
    "negative epochs": ("train:\n  epochs: -2\n", "train.epochs: found -2, expected at least 1"),
    "one fold": ("train:\n  folds: 1\n", "train.folds: found 1, expected 0 (off) or at least 2"),
    "limit larger than a split": ("data:\n  limit: 20000\n", "data.limit: found 20000, expected at most 10000"),
    "not a mapping": ("- epochs\n", "expected a mapping of keys, found list"),
    "not YAML": ("train: [\n", "is not valid YAML"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_exits_2_and_changes_nothing(runner, curated_copy, tmp_path, case):
    text, expected = CONFIG_CASES[case]
    config_file = tmp_path / "bad.yaml"
    config_file.write_text(text)
    before = snapshot(curated_copy)
    result = invoke(runner, "all", "-w", curated_copy, "--config", config_file)
    assert_rejected(result, expected, str(config_file))
    assert "command-line options" not in result.output
    assert snapshot(curated_copy) == before


@pytest.mark.parametrize("options, expected", [
    (("--device", "cuda"), "device 'cuda' is not available here"),
    (("--device", "tpu"), "device: found 'tpu', expected auto, cpu, cuda, cuda:N or mps"),
    (("--epochs", "0"), "train.epochs: found 0, expected at least 1"),
    (("--folds", "1"), "train.folds: found 1"),
    (("--limit", "10"), "data.limit: found 10, expected at least 20"),
])
def test_bad_option_exits_2_and_changes_nothing(runner, curated_copy, options, expected):
    before = snapshot(curated_copy)
    result = invoke(runner, "train", "-w", curated_copy, *options, "--force")
    assert_rejected(result, expected)
    if "found" in expected:
        assert f"invalid config in the command-line options {' '.join(options)} (applied over" in result.output
    assert snapshot(curated_copy) == before


def test_damaged_saved_config_names_the_ways_out(runner, curated_copy):
    (curated_copy / "config.yaml").write_text("train: [\n")
    before = snapshot(curated_copy)
    result = invoke(runner, "all", "-w", curated_copy)
    assert_rejected(result, f"{curated_copy / 'config.yaml'} is not valid YAML",
                    "delete it to start from the defaults, or pass --config FILE")
    assert snapshot(curated_copy) == before


# Decision files ---------------------------------------------------------------------------------

DECISION_CASES = {
    "not YAML": ("version: 1\ndecisions: [\n", ":3: not valid YAML"),
    "unknown sample id": ("version: 1\ndecisions:\n  - {sample_id: train-60000, label: IDK}\n",
                          ":3: unknown sample id 'train-60000'"),
    "label out of range": ("version: 1\ndecisions:\n  - {sample_id: test-00001, label: 11}\n",
                           ":3: label '11' is not valid; expected IDK or a digit 0-9"),
    "conflicting duplicate": ("version: 1\ndecisions:\n  - {sample_id: test-00001, label: IDK}\n"
                              "  - {sample_id: test-00001, label: 3}\n", ":4: test-00001 has label 3, but line 3"),
    "missing version": ("decisions:\n  - {sample_id: test-00001, label: IDK}\n", ":1: missing `version: 1`"),
    "future version": ("version: 2\ndecisions: []\n", ":1: version '2' is not supported"),
    "bad source": ("version: 1\ndecisions:\n  - {sample_id: test-00001, label: IDK, source: robot}\n",
                   ":3: source 'robot' is not valid"),
    "bad timestamp": ("version: 1\ndecisions:\n  - {sample_id: test-00001, label: IDK, decided_at: soon}\n",
                      ":3: decided_at 'soon' is not an ISO 8601 timestamp"),
    "top-level list": ("- {sample_id: test-00001, label: IDK}\n", ":1: expected a mapping with `version: 1`"),
    "not UTF-8": (b"version: 1\ndecisions:\n  - {sample_id: test-00001, label: IDK, note: caf\xe9}\n",
                  ":3: not valid UTF-8"),
}


@pytest.mark.parametrize("case", list(DECISION_CASES))
def test_bad_decision_file_exits_2_and_changes_nothing(runner, curated_copy, tmp_path, case):
    content, expected = DECISION_CASES[case]
    path = tmp_path / "decisions.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = snapshot(curated_copy)
    result = invoke(runner, "relabel", "-w", curated_copy, "--decisions", path)
    assert_rejected(result, f"invalid decision file {path}", f"{path}{expected}", "nothing applied")
    assert snapshot(curated_copy) == before


def test_bad_csv_header_exits_2_and_changes_nothing(runner, curated_copy, tmp_path):
    path = tmp_path / "decisions.csv"
    path.write_text("id,verdict\ntest-00001,IDK\n")
    before = snapshot(curated_copy)
    result = invoke(runner, "relabel", "-w", curated_copy, "--decisions", path)
    assert_rejected(result, f"{path}:1: header 'id,verdict' is not valid")
    assert snapshot(curated_copy) == before


def test_missing_decision_file_exits_2(runner, curated_copy, tmp_path):
    before = snapshot(curated_copy)
    result = invoke(runner, "relabel", "-w", curated_copy, "--decisions", tmp_path / "nowhere.yaml")
    assert_rejected(result, f"decision file {tmp_path / 'nowhere.yaml'} not found; check the path given to --decisions")
    assert "invalid decision file" not in result.output
    assert snapshot(curated_copy) == before


def test_invalid_workspace_decision_file_is_kept_by_all(runner, curated_copy):
    """`all` without --decisions merges into WORKSPACE/decisions.yaml; an invalid one is never overwritten."""
    path = curated_copy / "decisions.yaml"
    path.write_text("version: 1\ndecisions:\n  - {sample_id: test-00001, label: IDK, note: human work}\n  - [\n")
    before = snapshot(curated_copy)
    result = invoke(runner, "all", "-w", curated_copy)
    assert_rejected(result, f"invalid decision file {path}")
    assert snapshot(curated_copy) == before


def test_empty_decision_file_warns_and_keeps_given_labels(runner, curated_copy, tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    result = invoke(runner, "relabel", "-w", curated_copy, "--decisions", path)
    assert result.exit_code == 0, result.output
    assert f"{path} contains no decisions, so every curated label equals the given label" in result.output
    status = json.loads(invoke(runner, "status", "-w", curated_copy, "--json").stdout)
    assert status["relabel"]["n_idk"] == 0


def test_crlf_bom_unicode_decision_file_is_applied(runner, curated_copy, tmp_path):
    sample_id = str(np.load(curated_copy / "relabel" / "sample_ids.npy")[-1])
    label = int(np.load(curated_copy / "relabel" / "labels.npy")[-1])
    path = tmp_path / "windows.yaml"
    note = "zwei Ziffern, 二つ ✓"
    text = f"version: 1\r\ndecisions:\r\n  - {{sample_id: {sample_id}, label: IDK, note: \"{note}\"}}\r\n"
    path.write_bytes("\ufeff".encode() + text.encode())
    result = invoke(runner, "relabel", "-w", curated_copy, "--decisions", path)
    assert result.exit_code == 0, result.output
    decided = (curated_copy / "relabel" / "decided.csv").read_text(encoding="utf-8")
    assert f'{sample_id},test,{label},IDK,manual,"{note}",' in decided


def test_100000_line_decision_file_is_applied(runner, curated_copy, tmp_path):
    # 70,000 one-line entries plus 30,000 comment lines: the largest file a full review can produce, and more.
    lines = ["version: 1", "decisions:"]
    for split, size in (("train", 60_000), ("test", 10_000)):
        for index in range(size):
            lines.append(f"  - {{sample_id: {split}-{index:05d}, label: IDK, source: review}}")
            if index % 7 < 3:
                lines.append("  # looked at twice")
    lines += ["# end of the review"] * max(0, 100_000 - len(lines))
    path = tmp_path / "huge.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert len(path.read_text().splitlines()) >= 100_000
    result = invoke(runner, "relabel", "-w", curated_copy, "--decisions", path)
    assert result.exit_code == 0, result.output
    status = json.loads(invoke(runner, "status", "-w", curated_copy, "--json").stdout)
    assert status["relabel"]["n_idk"] == 4000
    assert status["relabel"]["n_ignored"] == 66_000


# Commands before their prerequisites ------------------------------------------------------------------

@pytest.mark.parametrize("command, expected", [
    (("embed",), "embed needs up-to-date results of train, but train has not run. Run `mnist-curate train -w "),
    (("score",), "score needs up-to-date results of train, embed, but train has not run; embed has not run. "
                 "Run `mnist-curate train -w "),
    (("export",), "export needs up-to-date results of train, embed, score, candidates, relabel"),
    (("relabel",), "no workspace at "),
])
def test_command_before_prerequisites_names_stage_and_creates_nothing(runner, tmp_path, command, expected):
    workspace = tmp_path / "new"
    result = invoke(runner, *command, "-w", workspace)
    assert_rejected(result, expected)
    if "Run `" in expected:
        assert f"-w {workspace}` first, or `mnist-curate all -w {workspace}` for the whole chain" in result.output
    assert not workspace.exists()


def test_export_before_relabel_names_relabel(runner, scored_copy):
    before = snapshot(scored_copy)
    result = invoke(runner, "export", "-w", scored_copy)
    assert_rejected(result, "export needs up-to-date results of relabel, but relabel has not run. "
                            f"Run `mnist-curate relabel -w {scored_copy}` first")
    assert snapshot(scored_copy) == before


def test_score_after_damaged_embed_names_embed(runner, scored_copy):
    embeddings = scored_copy / "embed" / "embeddings.npy"
    embeddings.write_bytes(embeddings.read_bytes()[:1000])
    result = invoke(runner, "score", "-w", scored_copy, "--force")
    assert_rejected(result, f"embed is corrupt ({embeddings} has 1000 bytes",
                    f"Run `mnist-curate embed -w {scored_copy}` first")


# Command line and workspace ---------------------------------------------------------------------

def test_workspace_that_is_a_file_exits_2(runner, tmp_path, mnist_dir):
    workspace = tmp_path / "file"
    workspace.write_text("not a folder")
    result = invoke(runner, "train", "-w", workspace, "--data-dir", mnist_dir, "--limit", "100")
    assert_rejected(result, f"workspace path {workspace} exists and is not a folder")
    assert workspace.read_text() == "not a folder"


def test_export_target_that_is_a_file_changes_nothing(runner, curated_copy, tmp_path):
    target = tmp_path / "file"
    target.write_text("keep me")
    before = snapshot(curated_copy)
    result = invoke(runner, "export", "-w", curated_copy, "--out", target)
    assert_rejected(result, f"export target {target} exists and is not a folder")
    assert snapshot(curated_copy) == before
    assert target.read_text() == "keep me"



@contextlib.contextmanager
def unwritable_folder(folder: Path):
    """Create ``folder`` empty and not writable: mode 555, or for root (who ignores modes) a read-only tmpfs."""
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    with mounted_tmpfs(folder, "ro,size=1m"):
        yield folder


def test_export_to_unwritable_folder_exits_2(runner, curated_copy, tmp_path):
    before = snapshot(curated_copy)
    with unwritable_folder(tmp_path / "locked") as locked:
        result = invoke(runner, "export", "-w", curated_copy, "--out", locked / "curated")
        assert_rejected(result, f"export target {locked / 'curated'}: cannot write in {locked}", "Pass another --out")
        assert list(locked.iterdir()) == []
    assert snapshot(curated_copy) == before


def test_export_to_immutable_folder_exits_2(runner, curated_copy, tmp_path):
    target = tmp_path / "immutable"
    target.mkdir()
    chattr = subprocess.run(["chattr", "+i", str(target)], capture_output=True, text=True)
    if chattr.returncode != 0:
        pytest.skip(f"cannot make a folder immutable ({chattr.stderr.strip()}); chattr needs root and ext4 or similar")
    before = snapshot(curated_copy)
    try:
        result = invoke(runner, "export", "-w", curated_copy, "--out", target)
    finally:
        subprocess.run(["chattr", "-i", str(target)], check=True)
    assert_rejected(result, f"cannot write the export {target}: Operation not permitted",
                    f"{target} is unchanged.")
    assert list(target.iterdir()) == []
    assert not list(tmp_path.glob(".immutable*")), "the temporary export is removed"
    assert snapshot(curated_copy) == before

def test_status_of_file_exits_2(runner, tmp_path):
    workspace = tmp_path / "file"
    workspace.write_text("not a folder")
    assert_rejected(invoke(runner, "status", "-w", workspace), f"workspace path {workspace} exists and is not a folder")


def test_status_of_missing_folder_hints(runner, tmp_path):
    missing = tmp_path / "my ws"
    result = invoke(runner, "status", "-w", missing)
    assert result.exit_code == 0, result.output
    assert f"no workspace at {missing} yet; `mnist-curate all -w '{missing}'` creates it" in result.output
    assert not missing.exists()


@pytest.mark.parametrize("args", [("--no-launch",), ("--sync",)])
def test_review_of_a_missing_workspace_creates_nothing(runner, tmp_path, args):
    typo = tmp_path / "wokrspace"
    result = invoke(runner, "review", "-w", typo, *args)
    assert_rejected(result, "mnist-curate")
    assert not typo.exists()
    assert sorted(tmp_path.iterdir()) == []


def test_relative_data_dir_is_saved_absolute(runner, scored_copy, mnist_dir, tmp_path, monkeypatch):
    decisions = tmp_path / "decisions.yaml"
    decisions.write_text("version: 1\ndecisions: []\n")
    data = mnist_dir.absolute()
    monkeypatch.chdir(data.parent)
    result = invoke(runner, "relabel", "-w", scored_copy, "--decisions", decisions, "--data-dir", data.name)
    assert result.exit_code == 0, result.output
    saved = Path(yaml.safe_load((scored_copy / "config.yaml").read_text())["data"]["dir"])
    assert saved.is_absolute()
    assert saved.resolve() == data.resolve()

@pytest.mark.parametrize("args", [("train", "--epochz", "3"), ("train", "--limit", "many"), ("status", "extra")])
def test_malformed_command_line_exits_2(runner, tmp_path, args):
    result = invoke(runner, *args, "-w", tmp_path / "ws")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert not (tmp_path / "ws").exists()


def test_bad_device_is_rejected_when_cached(runner, scored_copy):
    before = snapshot(scored_copy)
    result = invoke(runner, "train", "-w", scored_copy, "--device", "cuda")
    assert_rejected(result, "device 'cuda' is not available here")
    assert snapshot(scored_copy) == before


def test_missing_data_dir_is_rejected_when_cached(runner, scored_copy, tmp_path):
    before = snapshot(scored_copy)
    result = invoke(runner, "score", "-w", scored_copy, "--data-dir", tmp_path / "nowhere")
    assert_rejected(result, f"data folder {tmp_path / 'nowhere'} does not exist")
    assert snapshot(scored_copy) == before


def test_config_file_paths_are_taken_from_its_folder(runner, scored_copy, mnist_dir, tmp_path, monkeypatch):
    config = yaml.safe_load((scored_copy / "config.yaml").read_text())
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "data").symlink_to(mnist_dir.absolute())
    config["data"]["dir"] = "data"
    (folder / "curate.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    result = invoke(runner, "score", "-w", scored_copy, "--config", folder / "curate.yaml")
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((scored_copy / "config.yaml").read_text())
    assert saved["data"]["dir"] == str(folder / "data")


def test_quiet_stage_prints_key_figures(runner, scored_copy):
    result = invoke(runner, "score", "-w", scored_copy, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("score: cached; n_label_issues ")
    assert "candidates: cached; n_candidates " in result.output
