"""relabel and export through the CLI on a real MNIST subset."""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from conftest import invoke
from mnist_curate.config import config_from_dict
from mnist_curate.data import load_mnist
from mnist_curate.relabel import CLASS_NAMES, IDK_CLASS

pytestmark = pytest.mark.slow


@pytest.fixture()
def workspace(scored_workspace, tmp_path) -> Path:
    """A private copy of the subset workspace where every stage before relabel is done."""
    copy = tmp_path / "ws"
    shutil.copytree(scored_workspace, copy, ignore=shutil.ignore_patterns(".lock"))
    return copy


@pytest.fixture(scope="module")
def subset(scored_workspace):
    """The MNIST subset of the workspace: {"train": Split, "test": Split}."""
    config = config_from_dict(yaml.safe_load((scored_workspace / "config.yaml").read_text()))
    data = load_mnist(config.data, seed=config.seed)
    return {"train": data.train, "test": data.test}


def decisions_file(path: Path, subset, *, n_idk=6, n_corrected=3, n_kept=2) -> dict[str, str]:
    """Write a decision file for real samples of the subset; return {sample_id: label}."""
    train, test = subset["train"], subset["test"]
    chosen: dict[str, str] = {}
    for row in range(n_idk):
        split = train if row % 2 == 0 else test
        chosen[split.sample_ids[row]] = "IDK"
    for row in range(10, 10 + n_corrected):
        chosen[train.sample_ids[row]] = str((int(train.labels[row]) + 1) % 10)
    for row in range(20, 20 + n_kept):
        chosen[test.sample_ids[row]] = str(int(test.labels[row]))
    entries = "".join(f"  - {{sample_id: {sample_id}, label: {label}, source: review}}\n"
                      for sample_id, label in chosen.items())
    path.write_text("version: 1\ndecisions:\n" + entries)
    return chosen


def status_of(runner, workspace) -> dict:
    result = invoke(runner, "status", "-w", workspace, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# relabel ---------------------------------------------------------------------------------

def test_relabel_applies_decisions_and_keeps_given_labels(runner, workspace, subset, tmp_path):
    decisions = tmp_path / "decisions.yaml"
    chosen = decisions_file(decisions, subset)
    result = invoke(runner, "relabel", "-w", workspace, "--decisions", decisions)
    assert result.exit_code == 0, result.output
    assert "train -> IDK" in result.output
    assert "11 decisions from" in result.output

    folder = workspace / "relabel"
    sample_ids = np.load(folder / "sample_ids.npy").tolist()
    labels, curated = np.load(folder / "labels.npy"), np.load(folder / "curated_labels.npy")
    given = np.concatenate([subset["train"].labels, subset["test"].labels])
    assert np.array_equal(labels, given), "the given labels must never change"
    for sample_id, label in chosen.items():
        expected = IDK_CLASS if label == "IDK" else int(label)
        assert curated[sample_ids.index(sample_id)] == expected
    undecided = np.ones(len(curated), bool)
    undecided[[sample_ids.index(s) for s in chosen]] = False
    assert np.array_equal(curated[undecided], given[undecided])

    figures = json.loads((workspace / "stages" / "relabel.json").read_text())["figures"]
    assert figures["splits"]["train"]["n_idk"] == 3
    assert figures["splits"]["test"]["n_idk"] == 3
    assert figures["splits"]["train"]["n_corrected"] == 3
    assert figures["splits"]["test"]["n_kept"] == 2


def test_relabel_is_cached_until_file_content_changes(runner, workspace, subset, tmp_path):
    decisions = tmp_path / "decisions.yaml"
    decisions_file(decisions, subset)
    assert invoke(runner, "relabel", "-w", workspace, "--decisions", decisions).exit_code == 0

    decisions.write_text(decisions.read_text())  # same content, new modification time
    again = invoke(runner, "relabel", "-w", workspace, "--decisions", decisions)
    assert "relabel: cached" in again.output

    decisions_file(decisions, subset, n_idk=2)
    report = status_of(runner, workspace)
    assert report["relabel"]["state"] == "stale"
    assert "input decisions changed" in report["relabel"]["reason"]
    changed = invoke(runner, "relabel", "-w", workspace, "--decisions", decisions)
    assert "relabel: stale" in changed.output
    figures = json.loads((workspace / "stages" / "relabel.json").read_text())["figures"]
    assert figures["n_idk"] == 2


@pytest.mark.parametrize("quiet", [(), ("--quiet",)])
def test_relabel_dry_run_writes_nothing(runner, workspace, subset, tmp_path, quiet):
    decisions = tmp_path / "decisions.yaml"
    decisions_file(decisions, subset)
    result = invoke(runner, "relabel", "-w", workspace, "--decisions", decisions, "--dry-run", *quiet)
    assert result.exit_code == 0, result.output
    assert "nothing written" in result.output
    assert "train: 3 IDK, 3 corrected" in result.output
    assert not (workspace / "relabel").exists()
    assert not (workspace / "stages" / "relabel.json").exists()


def test_relabel_uses_workspace_decision_file(runner, workspace, subset):
    decisions_file(workspace / "decisions.yaml", subset)
    result = invoke(runner, "relabel", "-w", workspace)
    assert result.exit_code == 0, result.output
    assert str(workspace / "decisions.yaml") in result.output


def test_copied_workspace_reads_own_decisions(runner, workspace, subset, tmp_path):
    decisions_file(workspace / "decisions.yaml", subset)
    assert invoke(runner, "relabel", "-w", workspace).exit_code == 0
    copy = tmp_path / "copy"
    shutil.copytree(workspace, copy, ignore=shutil.ignore_patterns(".lock"))
    report = status_of(runner, copy)
    assert report["relabel"]["state"] == "done"
    assert report["relabel"]["decisions_path"] == str(copy / "decisions.yaml")

    decisions_file(copy / "decisions.yaml", subset, n_idk=2)
    assert status_of(runner, copy)["relabel"]["state"] == "stale"
    assert status_of(runner, workspace)["relabel"]["state"] == "done"
    result = invoke(runner, "relabel", "-w", copy)
    assert result.exit_code == 0, result.output
    assert str(copy / "decisions.yaml") in result.output
    assert json.loads((copy / "stages" / "relabel.json").read_text())["figures"]["n_idk"] == 2


def test_relabel_without_decision_file_says_how(runner, workspace):
    result = invoke(runner, "relabel", "-w", workspace)
    assert result.exit_code == 2
    assert "no decision file" in result.output
    assert "mnist-curate review" in result.output
    assert "--decisions" in result.output


def test_relabel_bad_file_exits_2_and_applies_nothing(runner, workspace, tmp_path):
    decisions = tmp_path / "decisions.yaml"
    decisions.write_text("version: 1\ndecisions:\n  - {sample_id: train-99999, label: IDK}\n"
                         "  - {sample_id: test-00001, label: eleven}\n")
    result = invoke(runner, "relabel", "-w", workspace, "--decisions", decisions)
    assert result.exit_code == 2
    assert f"{decisions}:3: unknown sample id 'train-99999'" in result.output
    assert f"{decisions}:4: label 'eleven' is not valid" in result.output
    assert "Traceback" not in result.output
    assert not (workspace / "stages" / "relabel.json").exists()


def test_relabel_ignores_ids_outside_subset(runner, workspace, subset, tmp_path):
    outside = next(f"train-{i:05d}" for i in range(60_000) if i not in set(subset["train"].index.tolist()))
    decisions = tmp_path / "decisions.yaml"
    decisions.write_text(f"version: 1\ndecisions:\n  - {{sample_id: {outside}, label: IDK}}\n"
                         f"  - {{sample_id: {subset['test'].sample_ids[0]}, label: IDK}}\n")
    result = invoke(runner, "relabel", "-w", workspace, "--decisions", decisions)
    assert result.exit_code == 0, result.output
    assert "1 decision(s)" in result.output
    assert "outside this run's --limit subset" in result.output
    figures = json.loads((workspace / "stages" / "relabel.json").read_text())["figures"]
    assert figures["n_ignored"] == 1
    assert figures["n_idk"] == 1


# export ----------------------------------------------------------------------------------

@pytest.fixture()
def relabelled(runner, workspace, subset, tmp_path):
    decisions = tmp_path / "decisions.yaml"
    decisions_file(decisions, subset)
    result = invoke(runner, "relabel", "-w", workspace, "--decisions", decisions)
    assert result.exit_code == 0, result.output
    return workspace


def read_manifest(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_export_tree_has_exact_mnist_pixels(runner, relabelled, subset, tmp_path):
    out = tmp_path / "curated"
    result = invoke(runner, "export", "-w", relabelled, "--out", out)
    assert result.exit_code == 0, result.output

    for split in ("train", "test"):
        assert sorted(p.name for p in (out / split).iterdir()) == sorted(CLASS_NAMES)
    manifest = read_manifest(out)
    assert len(manifest) == 4000
    assert len(list(out.glob("*/*/*.png"))) == 4000
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "no temporary folder is left"

    for row in manifest:
        split = subset[row["split"]]
        position = int(np.searchsorted(split.index, int(row["sample_id"].split("-")[1])))
        image = Image.open(out / row["path"])
        assert image.mode == "L"
        assert image.size == (28, 28)
        assert np.array_equal(np.asarray(image), split.images[position]), row["sample_id"]
        assert int(row["label"]) == int(split.labels[position])
        assert row["path"] == f"{row['split']}/{row['curated_label']}/{row['sample_id']}.png"


def test_export_manifest_has_labels_decisions_and_scores(runner, relabelled, tmp_path):
    out = tmp_path / "curated"
    assert invoke(runner, "export", "-w", relabelled, "--out", out).exit_code == 0
    manifest = read_manifest(out)
    for column in ("sample_id", "split", "label", "curated_label", "decision_source", "prediction",
                   "candidate", "suspicion", "hardness", "mistakenness", "uniqueness", "representativeness"):
        assert column in manifest[0], column
    decided = [row for row in manifest if row["decision_source"]]
    assert len(decided) == 11
    assert {row["decision_source"] for row in decided} == {"review"}
    assert sum(row["curated_label"] == "IDK" for row in manifest) == 6
    hardness = [float(row["hardness"]) for row in manifest]
    assert min(hardness) >= 0.0
    assert max(hardness) <= np.log(10) + 1e-5, "entropy over 10 classes is at most ln(10)"
    mistakenness = [float(row["mistakenness"]) for row in manifest]
    assert 0.0 <= min(mistakenness) <= max(mistakenness) <= 1.0
    assert {row["candidate"] for row in manifest} <= {"0", "1"}


def test_export_card_counts_match_manifest(runner, relabelled, tmp_path):
    out = tmp_path / "curated"
    assert invoke(runner, "export", "-w", relabelled, "--out", out).exit_code == 0
    manifest = read_manifest(out)
    card = (out / "README.md").read_text()
    front_matter = yaml.safe_load(card.split("---")[1])
    assert front_matter["license"] == "cc-by-sa-3.0"
    splits = {entry["name"]: entry["num_examples"] for entry in front_matter["dataset_info"]["splits"]}
    assert splits == {"train": 2000, "test": 2000}
    for name in CLASS_NAMES:
        counts = [sum(r["split"] == split and r["curated_label"] == name for r in manifest)
                  for split in ("train", "test")]
        assert f"| {name} | {counts[0]:,} | {counts[1]:,} |" in card
        for split, count in zip(("train", "test"), counts):
            assert len(list((out / split / name).glob("*.png"))) == count
    assert "LeCun" in card
    assert "CC BY-SA 3.0" in card
    assert "limit: 2000" in card, "the card carries the config used"


def test_export_loads_with_imagefolder_and_fiftyone(runner, relabelled, tmp_path, tmp_path_factory):
    out = tmp_path / "curated"
    assert invoke(runner, "export", "-w", relabelled, "--out", out).exit_code == 0
    manifest = read_manifest(out)

    from torchvision.datasets import ImageFolder

    for split in ("train", "test"):
        expected = {row["sample_id"]: row["curated_label"] for row in manifest if row["split"] == split}
        dataset = ImageFolder(str(out / split))
        assert sorted(dataset.classes) == sorted(CLASS_NAMES)
        assert len(dataset) == len(expected)
        for path, class_index in dataset.samples:
            assert dataset.classes[class_index] == expected[Path(path).stem]

    os.environ.setdefault("FIFTYONE_DATABASE_DIR", str(tmp_path_factory.mktemp("fiftyone-db")))
    import fiftyone.types as fot
    import fiftyone.utils.data as foud

    for split in ("train", "test"):
        expected = {row["sample_id"]: row["curated_label"] for row in manifest if row["split"] == split}
        importer = foud.build_dataset_importer(fot.ImageClassificationDirectoryTree,
                                               dataset_dir=str(out / split))[0]
        found = {}
        with importer:
            for image_path, _, label in importer:
                found[Path(image_path).stem] = label.label
        assert found == expected


def test_second_export_is_cached(runner, relabelled, tmp_path):
    out = tmp_path / "curated"
    assert invoke(runner, "export", "-w", relabelled, "--out", out).exit_code == 0
    again = invoke(runner, "export", "-w", relabelled)
    assert again.exit_code == 0, again.output
    assert "export: cached" in again.output
    assert status_of(runner, relabelled)["export"]["state"] == "done"


def test_deleted_export_folder_is_exported_again(runner, relabelled, tmp_path):
    out = tmp_path / "curated"
    assert invoke(runner, "export", "-w", relabelled, "--out", out).exit_code == 0
    shutil.rmtree(out / "test" / "3")
    report = status_of(runner, relabelled)
    assert report["export"]["state"] == "corrupt"
    assert "test/3 has 0 PNG files" in report["export"]["reason"]

    shutil.rmtree(out)
    assert "is missing" in status_of(runner, relabelled)["export"]["reason"]
    result = invoke(runner, "export", "-w", relabelled)
    assert result.exit_code == 0, result.output
    assert len(read_manifest(out)) == 4000
    assert len(list(out.glob("*/*/*.png"))) == 4000


def test_non_empty_folder_needs_overwrite(runner, relabelled, tmp_path):
    out = tmp_path / "curated"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = invoke(runner, "export", "-w", relabelled, "--out", out)
    assert result.exit_code == 2
    assert "is not empty; pass --overwrite" in result.output
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    assert not (relabelled / "stages" / "export.json").exists()

    replaced = invoke(runner, "export", "-w", relabelled, "--out", out, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert not (out / "precious.txt").exists()
    assert len(read_manifest(out)) == 4000


def test_own_previous_export_is_replaced_without_overwrite(runner, relabelled, subset, tmp_path):
    out = tmp_path / "curated"
    assert invoke(runner, "export", "-w", relabelled, "--out", out).exit_code == 0
    decisions = tmp_path / "decisions.yaml"
    decisions_file(decisions, subset, n_idk=1)
    assert invoke(runner, "relabel", "-w", relabelled, "--decisions", decisions).exit_code == 0
    result = invoke(runner, "export", "-w", relabelled)
    assert result.exit_code == 0, result.output
    assert sum(row["curated_label"] == "IDK" for row in read_manifest(out)) == 1


def test_re_export_links_unchanged_pngs_and_moves_changed(runner, relabelled, subset, tmp_path):
    out = tmp_path / "curated"
    assert invoke(runner, "export", "-w", relabelled, "--out", out).exit_code == 0
    decisions = tmp_path / "decisions.yaml"
    decisions_file(decisions, subset, n_idk=1)
    assert invoke(runner, "relabel", "-w", relabelled, "--decisions", decisions).exit_code == 0
    result = invoke(runner, "export", "-w", relabelled)
    assert result.exit_code == 0, result.output
    assert "reused 4,000 unchanged PNG files" in result.output

    manifest = read_manifest(out)
    assert len(list(out.glob("*/*/*.png"))) == 4000
    moved = [row for row in manifest if row["curated_label"] == "IDK"]
    assert len(moved) == 1
    row = moved[0]
    split = subset[row["split"]]
    position = int(np.searchsorted(split.index, int(row["sample_id"].split("-")[1])))
    assert np.array_equal(np.asarray(Image.open(out / row["path"])), split.images[position])
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "no temporary folder is left"


def test_own_export_with_added_files_needs_overwrite(runner, relabelled, tmp_path):
    out = tmp_path / "curated"
    assert invoke(runner, "export", "-w", relabelled, "--out", out).exit_code == 0
    (out / "notes.txt").write_text("my notes")
    decisions = tmp_path / "decisions.yaml"
    decisions.write_text("version: 1\ndecisions: []\n")
    assert invoke(runner, "relabel", "-w", relabelled, "--decisions", decisions).exit_code == 0
    result = invoke(runner, "export", "-w", relabelled)
    assert result.exit_code == 2
    assert "--overwrite" in result.output
    assert (out / "notes.txt").read_text() == "my notes"


def test_export_into_data_folder_is_rejected_even_with_overwrite(runner, relabelled, tmp_path, mnist_dir):
    data_copy = tmp_path / "data"
    data_copy.mkdir()
    for archive in (mnist_dir / "MNIST" / "raw").glob("*.gz"):
        (data_copy / archive.name).symlink_to(archive.absolute())
    (data_copy / "keep.bin").write_bytes(b"mnist")
    config = yaml.safe_load((relabelled / "config.yaml").read_text())
    config["data"]["dir"] = str(data_copy)
    (relabelled / "config.yaml").write_text(yaml.safe_dump(config))
    for out in (data_copy, data_copy / "inside"):
        result = invoke(runner, "export", "-w", relabelled, "--out", out, "--overwrite")
        assert result.exit_code == 2, result.output
        assert "MNIST data folder" in result.output
    assert (data_copy / "keep.bin").read_bytes() == b"mnist"


def test_export_under_a_file_exits_2(runner, relabelled, tmp_path):
    (tmp_path / "afile").write_text("x")
    result = invoke(runner, "export", "-w", relabelled, "--out", tmp_path / "afile" / "sub")
    assert result.exit_code == 2
    assert "which is a file" in result.output


def test_failed_export_keeps_old_folder_intact(runner, relabelled, tmp_path, monkeypatch):
    out = tmp_path / "curated"
    out.mkdir()
    (out / "old.txt").write_text("previous export")

    import mnist_curate.export as export_module

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_module, "dataset_card", fail)
    result = invoke(runner, "export", "-w", relabelled, "--out", out, "--overwrite")
    assert result.exit_code == 1
    assert f"no space left on the device of {tmp_path}" in result.output
    assert "the previous export is unchanged" in result.output
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert not (relabelled / "stages" / "export.json").exists()


def test_export_target_that_is_a_file_exits_2(runner, relabelled, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    result = invoke(runner, "export", "-w", relabelled, "--out", target)
    assert result.exit_code == 2
    assert "is not a folder" in result.output


def test_export_before_relabel_names_missing_stage(runner, workspace, tmp_path):
    result = invoke(runner, "export", "-w", workspace, "--out", tmp_path / "curated")
    assert result.exit_code == 2
    assert "relabel has not run" in result.output
    assert not (tmp_path / "curated").exists()


def test_copied_workspace_keeps_its_export_current(runner, curated_workspace, tmp_path):
    copy = tmp_path / "moved"
    shutil.copytree(curated_workspace, copy, ignore=shutil.ignore_patterns(".lock"))
    report = status_of(runner, copy)
    assert report["export"]["state"] == "done", report["export"]
    assert report["export"]["out"] == str(copy / "curated-mnist")
    result = invoke(runner, "export", "-w", copy)
    assert result.exit_code == 0, result.output
    assert "export: cached" in result.output
    assert f"export at {copy / 'curated-mnist'}: " in result.output


def test_plain_relabel_reapplies_last_file(runner, workspace, subset, tmp_path):
    reviewed = tmp_path / "reviewed.yaml"
    decisions_file(reviewed, subset, n_idk=2)
    assert invoke(runner, "relabel", "-w", workspace, "--decisions", reviewed).exit_code == 0
    decisions_file(workspace / "decisions.yaml", subset, n_idk=6)
    decisions_file(reviewed, subset, n_idk=4)

    result = invoke(runner, "relabel", "-w", workspace)
    assert result.exit_code == 0, result.output
    assert f"relabel: applying {reviewed}, the file that the last relabel read" in result.output
    figures = json.loads((workspace / "stages" / "relabel.json").read_text())["figures"]
    assert figures["decisions_path"] == str(reviewed)
    assert figures["n_idk"] == 4


def test_moved_decision_file_stays_current(runner, workspace, subset, tmp_path):
    first = tmp_path / "first.yaml"
    decisions_file(first, subset)
    assert invoke(runner, "relabel", "-w", workspace, "--decisions", first).exit_code == 0
    moved = tmp_path / "moved.yaml"
    first.rename(moved)
    assert status_of(runner, workspace)["relabel"]["state"] == "stale"

    result = invoke(runner, "relabel", "-w", workspace, "--decisions", moved)
    assert result.exit_code == 0, result.output
    assert "relabel: cached" in result.output
    assert status_of(runner, workspace)["relabel"]["state"] == "done"
    assert json.loads((workspace / "stages" / "relabel.json").read_text())["figures"]["decisions_path"] == str(moved)


def test_plain_relabel_after_move_names_the_fix(runner, workspace, subset, tmp_path):
    first = tmp_path / "first.yaml"
    decisions_file(first, subset)
    assert invoke(runner, "relabel", "-w", workspace, "--decisions", first).exit_code == 0
    first.rename(tmp_path / "moved.yaml")
    result = invoke(runner, "relabel", "-w", workspace)
    assert result.exit_code == 2
    assert f"the last relabel read the decision file {first}, which no longer exists" in result.output


def test_export_never_replaces_folder_with_decisions(runner, relabelled, subset, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    decisions = project / "decisions.yaml"
    decisions_file(decisions, subset)
    assert invoke(runner, "relabel", "-w", relabelled, "--decisions", decisions).exit_code == 0
    result = invoke(runner, "export", "-w", relabelled, "--out", project, "--overwrite")
    assert result.exit_code == 2
    assert f"export target {project} contains the decision file {decisions}" in result.output
    assert decisions.is_file()


def test_export_never_replaces_review_folder(runner, relabelled, tmp_path):
    review = relabelled / "review"
    review.mkdir()
    (review / "dataset.json").write_text("{}")
    result = invoke(runner, "export", "-w", relabelled, "--out", review, "--overwrite")
    assert result.exit_code == 2
    assert "is a folder of the workspace" in result.output
    assert (review / "dataset.json").read_text() == "{}"


def test_export_interrupted_after_move_is_own(runner, relabelled, tmp_path):
    out = tmp_path / "curated"
    assert invoke(runner, "export", "-w", relabelled, "--out", out).exit_code == 0
    # As after an interruption between moving the new export into place and writing its record.
    (relabelled / "stages" / "export.json").unlink()
    result = invoke(runner, "export", "-w", relabelled, "--out", out)
    assert result.exit_code == 0, result.output
    assert len(read_manifest(out)) == 4000


def test_damaged_own_export_is_exported_again(runner, relabelled, tmp_path):
    out = tmp_path / "curated"
    assert invoke(runner, "export", "-w", relabelled, "--out", out).exit_code == 0
    removed = next(out.glob("train/*/*.png"))
    removed.unlink()
    (out / "README.md").unlink()
    assert status_of(runner, relabelled)["export"]["state"] == "corrupt"

    result = invoke(runner, "export", "-w", relabelled)
    assert result.exit_code == 0, result.output
    assert "the saved result is damaged" in result.output
    assert removed.is_file()
    assert (out / "README.md").is_file()
    assert status_of(runner, relabelled)["export"]["state"] == "done"


def test_missing_card_makes_export_corrupt(runner, relabelled, tmp_path):
    out = tmp_path / "curated"
    assert invoke(runner, "export", "-w", relabelled, "--out", out).exit_code == 0
    (out / "README.md").unlink()
    report = status_of(runner, relabelled)
    assert report["export"]["state"] == "corrupt"
    assert "dataset card" in report["export"]["reason"]


def test_brackets_in_workspace_path_print_as_is(runner, workspace, subset, tmp_path):
    (tmp_path / "w[").mkdir()
    odd = tmp_path / "w[" / "x]"  # the path ends in w[/x], which rich would read as a closing tag
    workspace.rename(odd)
    decisions_file(odd / "decisions.yaml", subset)
    result = invoke(runner, "relabel", "-w", odd)
    assert result.exit_code == 0, result.output
    assert str(odd / "decisions.yaml") in result.output
    listed = invoke(CliRunner(env={"COLUMNS": "500"}), "status", "-w", odd)
    assert listed.exit_code == 0, listed.output
    assert f"workspace {odd}" in listed.output
