"""The decision file: parsing, every kind of bad file, round trips and merges."""

import time
from pathlib import Path

import pytest

from mnist_curate.decisions import (Decision, DecisionFileError, merge_decisions, read_decisions,
                                    write_decisions)
from mnist_curate.errors import BadInputError

GOOD_YAML = """\
version: 1
decisions:
  - {sample_id: train-00042, label: IDK, source: review, decided_at: "2026-12-04T20:00:00+00:00", note: "two digits"}
  - sample_id: test-00007
    label: 3
    source: manual
  - {sample_id: train-59999, label: "IDK", source: rule}
"""


def write(tmp_path, text, name="decisions.yaml", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def problems_of(path):
    with pytest.raises(DecisionFileError) as caught:
        read_decisions(path)
    return caught.value


def test_reads_flow_and_block_entries(tmp_path):
    decisions = read_decisions(write(tmp_path, GOOD_YAML))
    assert set(decisions) == {"train-00042", "test-00007", "train-59999"}
    assert decisions["train-00042"] == Decision("train-00042", "IDK", "review", "two digits",
                                                "2026-12-04T20:00:00+00:00")
    assert decisions["test-00007"].label == "3", "an unquoted digit is read as the label text"
    assert decisions["train-59999"].source == "rule"


def test_missing_source_means_manual(tmp_path):
    path = write(tmp_path, "version: 1\ndecisions:\n  - {sample_id: test-00001, label: 7}\n")
    assert read_decisions(path)["test-00001"].source == "manual"


def test_error_is_bad_input_with_exit_2(tmp_path):
    error = problems_of(write(tmp_path, "version: 1\ndecisions:\n  - {sample_id: test-1, label: 7}\n"))
    assert isinstance(error, BadInputError)
    assert error.exit_code == 2


def test_malformed_yaml_names_line(tmp_path):
    path = write(tmp_path, "version: 1\ndecisions:\n  - {sample_id: train-00001, label: IDK\n  - oops: [\n")
    error = problems_of(path)
    assert len(error.problems) == 1
    assert "not valid YAML" in str(error)
    assert f"{path}:4" in str(error) or f"{path}:3" in str(error)


def test_unknown_sample_id_names_line(tmp_path):
    path = write(tmp_path, "version: 1\ndecisions:\n  - {sample_id: train-00001, label: IDK}\n"
                           "  - {sample_id: train-60000, label: IDK}\n  - {sample_id: digit-7, label: 1}\n")
    error = problems_of(path)
    assert error.problems == [
        f"{path}:4: unknown sample id 'train-60000'; expected train-00000 ... train-59999 or test-00000 ... test-09999",
        f"{path}:5: unknown sample id 'digit-7'; expected train-00000 ... train-59999 or test-00000 ... test-09999",
    ]


@pytest.mark.parametrize("label", ["10", "idk?", "-1", "seven", "true", "3.0"])
def test_label_outside_digits_and_idk_is_rejected(tmp_path, label):
    path = write(tmp_path, f"version: 1\ndecisions:\n  - {{sample_id: test-00001, label: '{label}'}}\n")
    error = problems_of(path)
    assert f"{path}:3: label {label!r} is not valid; expected IDK or a digit 0-9" in error.problems


def test_same_id_with_different_labels_is_rejected(tmp_path):
    path = write(tmp_path, "version: 1\ndecisions:\n  - {sample_id: test-00001, label: IDK}\n"
                           "  - {sample_id: test-00002, label: 1}\n  - {sample_id: test-00001, label: 4}\n")
    error = problems_of(path)
    assert error.problems == [f"{path}:5: test-00001 has label 4, but line 3 gives it IDK; keep one of them"]


def test_same_id_with_same_label_is_accepted(tmp_path):
    path = write(tmp_path, "version: 1\ndecisions:\n  - {sample_id: test-00001, label: IDK}\n"
                           "  - {sample_id: test-00001, label: IDK, note: again}\n")
    assert read_decisions(path)["test-00001"].note == "again"


@pytest.mark.parametrize("version_line, expected", [
    ("version: 2\n", "version '2' is not supported"),
    ("version: one\n", "version 'one' is not supported"),
    ("", "missing `version: 1`"),
])
def test_wrong_or_missing_version_is_rejected(tmp_path, version_line, expected):
    path = write(tmp_path, version_line + "decisions:\n  - {sample_id: test-00001, label: IDK}\n")
    assert expected in str(problems_of(path))


def test_bad_source_timestamp_and_fields_are_listed_together(tmp_path):
    path = write(tmp_path, "version: 1\nextra: 1\ndecisions:\n"
                           "  - {sample_id: test-00001, label: IDK, source: robot}\n"
                           "  - {sample_id: test-00002, label: IDK, decided_at: yesterday}\n"
                           "  - {sample_id: test-00003, label: IDK, colour: red}\n"
                           "  - {label: IDK}\n"
                           "  - just-a-string\n")
    error = problems_of(path)
    text = str(error)
    assert "6 problems, nothing applied" in text
    assert f"{path}:2: unknown top-level key 'extra'" in text
    assert f"{path}:4: source 'robot' is not valid" in text
    assert f"{path}:5: decided_at 'yesterday' is not an ISO 8601 timestamp" in text
    assert f"{path}:6: unknown field(s) colour" in text
    assert f"{path}:7: missing sample_id" in text
    assert f"{path}:8: each decision must be a mapping" in text


def test_many_problems_list_first_20_and_count(tmp_path):
    entries = "".join(f"  - {{sample_id: test-{i:05d}, label: X}}\n" for i in range(35))
    error = problems_of(write(tmp_path, "version: 1\ndecisions:\n" + entries))
    assert len(error.problems) == 35
    text = str(error)
    assert "35 problems" in text
    assert "... and 15 more" in text
    assert text.count("label 'X' is not valid") == 20


def test_empty_file_has_no_decisions(tmp_path):
    assert read_decisions(write(tmp_path, "")) == {}
    assert read_decisions(write(tmp_path, "# nothing decided yet\n")) == {}
    assert read_decisions(write(tmp_path, "version: 1\ndecisions:\n")) == {}
    assert read_decisions(write(tmp_path, "", name="d.csv")) == {}


def test_top_level_list_is_rejected(tmp_path):
    error = problems_of(write(tmp_path, "- {sample_id: test-00001, label: IDK}\n"))
    assert "expected a mapping with `version: 1` and `decisions:`" in str(error)


def test_missing_file_is_bad_input(tmp_path):
    with pytest.raises(BadInputError, match="nowhere.yaml not found") as caught:
        read_decisions(tmp_path / "nowhere.yaml")
    assert not isinstance(caught.value, DecisionFileError), "a missing file has no lines to fix"


def test_crlf_bom_and_unicode_notes(tmp_path):
    text = GOOD_YAML.replace("two digits", "zwei Ziffern, 二つ ✓").replace("\n", "\r\n")
    path = write(tmp_path, "\ufeff" + text)
    decisions = read_decisions(path)
    assert decisions["train-00042"].note == "zwei Ziffern, 二つ ✓"
    assert len(decisions) == 3


def test_not_utf8_names_line(tmp_path):
    path = tmp_path / "decisions.yaml"
    path.write_bytes(b"version: 1\ndecisions:\n  - {sample_id: test-00001, label: IDK, note: \"caf\xe9\"}\n")
    assert f"{path}:3: not valid UTF-8" in str(problems_of(path))


def test_csv_is_read_with_line_numbers(tmp_path):
    path = write(tmp_path, "\ufeff# version: 1\r\nsample_id,label,source,note,decided_at\r\n"
                           "train-00042,IDK,review,\"two, digits\",2026-12-04T20:00:00+00:00\r\n"
                           "test-00007,3,manual,,\r\n", name="decisions.csv")
    decisions = read_decisions(path)
    assert decisions["train-00042"].note == "two, digits"
    assert decisions["test-00007"] == Decision("test-00007", "3", "manual")


def test_csv_problems_name_lines(tmp_path):
    path = write(tmp_path, "sample_id,label\ntrain-00042,IDK\ntest-00007,12\ntest-00008\ntrain-00042,5\n",
                 name="decisions.csv")
    error = problems_of(path)
    assert error.problems == [
        f"{path}:3: label '12' is not valid; expected IDK or a digit 0-9",
        f"{path}:4: 1 columns, expected 2 (sample_id,label)",
        f"{path}:5: train-00042 has label 5, but line 2 gives it IDK; keep one of them",
    ]


def test_csv_bad_header_and_version(tmp_path):
    error = problems_of(write(tmp_path, "# version: 9\nid,digit\n", name="d.csv"))
    assert "version '9' is not supported" in str(error)
    assert "header 'id,digit' is not valid" in str(error)


SAMPLE_DECISIONS = {
    "train-00042": Decision("train-00042", "IDK", "review", "zwei Ziffern \"quoted\" \\ back: {x}, 二",
                            "2026-12-04T20:00:00+00:00"),
    "test-00007": Decision("test-00007", "3", "manual"),
    "train-00001": Decision("train-00001", "IDK", "rule", "line\nbreak\u2028and\ttab # not a comment",
                            "2026-12-04T20:00:00Z"),
    "test-09999": Decision("test-09999", "0", "review", "- starts like a list: yes", ""),
}


@pytest.mark.parametrize("name", ["decisions.yaml", "decisions.csv"])
def test_round_trip_keeps_every_field(tmp_path, name):
    path = tmp_path / name
    assert write_decisions(path, SAMPLE_DECISIONS) is None
    assert read_decisions(path) == SAMPLE_DECISIONS


def test_written_yaml_is_one_line_per_decision_in_id_order(tmp_path):
    path = tmp_path / "decisions.yaml"
    write_decisions(path, SAMPLE_DECISIONS)
    entries = [line for line in path.read_text().splitlines() if line.startswith("  - ")]
    assert [line.split(",")[0] for line in entries] == [
        "  - {sample_id: train-00001", "  - {sample_id: train-00042",
        "  - {sample_id: test-00007", "  - {sample_id: test-09999"]


def test_write_keeps_previous_file_as_backup(tmp_path):
    path = tmp_path / "decisions.yaml"
    write_decisions(path, {"test-00007": SAMPLE_DECISIONS["test-00007"]})
    first = path.read_text()
    backup = write_decisions(path, SAMPLE_DECISIONS)
    assert backup == tmp_path / "decisions.yaml.bak"
    assert backup.read_text() == first
    assert read_decisions(path) == SAMPLE_DECISIONS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decisions.yaml", "decisions.yaml.bak"]


def test_write_through_symlink_keeps_link(tmp_path):
    tracked = tmp_path / "repo" / "decisions.yaml"
    tracked.parent.mkdir()
    write_decisions(tracked, {"test-00007": SAMPLE_DECISIONS["test-00007"]})
    link = tmp_path / "ws" / "decisions.yaml"
    link.parent.mkdir()
    link.symlink_to(tracked)
    write_decisions(link, SAMPLE_DECISIONS)
    assert link.is_symlink()
    assert read_decisions(tracked) == SAMPLE_DECISIONS

def test_empty_decisions_round_trip(tmp_path):
    path = tmp_path / "decisions.yaml"
    write_decisions(path, {})
    assert read_decisions(path) == {}


def all_sample_ids():
    return [f"train-{i:05d}" for i in range(60_000)] + [f"test-{i:05d}" for i in range(10_000)]


def test_every_sample_round_trips_quickly(tmp_path):
    decisions = {sample_id: Decision(sample_id, "IDK" if i % 3 else str(i % 10), "rule", f"note {i}",
                                     "2026-12-04T20:00:00+00:00")
                 for i, sample_id in enumerate(all_sample_ids())}
    path = tmp_path / "decisions.yaml"
    started = time.perf_counter()
    write_decisions(path, decisions)
    assert read_decisions(path) == decisions
    assert time.perf_counter() - started < 30, "70,000 decisions should take seconds, even on a busy machine"


def test_100000_line_block_style_file_is_read(tmp_path):
    entries = "".join(f"  - sample_id: {sample_id}\n    label: IDK\n    source: review\n    note: n\n"
                      for sample_id in all_sample_ids()[:25_000])
    path = write(tmp_path, "version: 1\ndecisions:\n" + entries)
    assert len(path.read_text().splitlines()) == 100_002
    decisions = read_decisions(path)
    assert len(decisions) == 25_000
    assert decisions["train-24999"].label == "IDK"


# Merging ----------------------------------------------------------------------

def test_merge_adds_new_and_keeps_unmentioned():
    existing = {"test-00001": Decision("test-00001", "IDK", "review")}
    result = merge_decisions(existing, [Decision("test-00002", "IDK", "rule")])
    assert result.added == ["test-00002"]
    assert result.decisions["test-00001"] == existing["test-00001"]
    assert len(result.decisions) == 2


def test_merge_rule_never_replaces_human_decision():
    existing = {"test-00001": Decision("test-00001", "7", "review", "clearly a 7"),
                "test-00002": Decision("test-00002", "IDK", "manual")}
    incoming = [Decision("test-00001", "IDK", "rule"), Decision("test-00002", "IDK", "rule")]
    result = merge_decisions(existing, incoming)
    assert result.decisions == existing
    assert result.kept == ["test-00001", "test-00002"]
    assert not result.modified


def test_merge_human_replaces_earlier_decision():
    existing = {"test-00001": Decision("test-00001", "IDK", "rule"),
                "test-00002": Decision("test-00002", "IDK", "review"),
                "test-00003": Decision("test-00003", "IDK", "rule")}
    incoming = [Decision("test-00001", "7", "review"), Decision("test-00002", "4", "manual"),
                Decision("test-00003", "IDK", "review", "confirmed")]
    result = merge_decisions(existing, incoming)
    assert result.changed == ["test-00001", "test-00002", "test-00003"]
    assert result.unchanged == []
    assert result.decisions["test-00001"].label == "7"
    assert result.decisions["test-00003"].source == "review", "a human confirmation replaces the rule entry"


def test_merge_same_rule_again_rewrites_nothing():
    existing = {"test-00001": Decision("test-00001", "IDK", "rule", decided_at="2026-01-01T00:00:00+00:00")}
    result = merge_decisions(existing, [Decision("test-00001", "IDK", "rule", decided_at="2026-12-04T00:00:00+00:00")])
    assert result.decisions == existing
    assert result.unchanged == ["test-00001"]
    assert not result.modified


def test_merge_then_write_and_read_loses_no_human_decision(tmp_path):
    path = tmp_path / "decisions.yaml"
    human = {f"train-{i:05d}": Decision(f"train-{i:05d}", str(i % 10), "review", f"looked at {i}")
             for i in range(50)}
    write_decisions(path, human)
    rule = [Decision(f"train-{i:05d}", "IDK", "rule") for i in range(25, 100)]
    result = merge_decisions(read_decisions(path), rule)
    write_decisions(path, result.decisions)
    merged = read_decisions(path)
    assert {k: merged[k] for k in human} == human
    assert len(merged) == 100
    assert len(result.kept) == 25
    assert len(result.added) == 50


def test_example_file_matches_mnist(mnist_dir):
    from mnist_curate.config import Config
    from mnist_curate.data import load_mnist

    decisions = read_decisions(Path(__file__).resolve().parents[1] / "examples" / "decisions.yaml")
    config = Config()
    config.data.dir = str(mnist_dir)
    data = load_mnist(config.data, seed=0)
    for sample_id, decision in decisions.items():
        split, index = sample_id.split("-")
        given = str(int(data.split(split).labels[int(index)]))
        if "keep" in decision.note or "still" in decision.note:
            assert decision.label == given, sample_id
        elif decision.label != "IDK":
            assert decision.label != given, f"{sample_id} is a correction, so its label must differ"


def test_review_confirming_rule_decision_takes_it_over():
    from mnist_curate.decisions import Decision, merge_decisions

    existing = {"train-00001": Decision("train-00001", "IDK", "rule")}
    merged = merge_decisions(existing, [Decision("train-00001", "IDK", "review")])
    assert merged.decisions["train-00001"].source == "review"
    assert merged.changed == ["train-00001"]
    assert merged.modified, "the file must be rewritten so that the source change is kept"


def test_non_ascii_digits_are_unknown_ids(tmp_path):
    path = write(tmp_path, "version: 1\ndecisions:\n- {sample_id: train-\u0660\u0660\u0665\u0660\u0668, label: IDK}\n")
    assert "unknown sample id" in str(problems_of(path))
