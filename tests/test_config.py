"""Config validation: every problem names the key path, the value found and what is expected."""

from pathlib import Path

import pytest
import yaml

from mnist_curate.config import Config, apply_overrides, config_from_dict, iter_keys, read_config_file
from mnist_curate.errors import ConfigError

EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "config.yaml"


def problems_of(raw) -> str:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(raw, source="test.yaml")
    return str(caught.value)


def test_empty_config_gives_defaults():
    assert config_from_dict({}) == Config()
    assert config_from_dict(None) == Config()


def test_unknown_key_is_named_with_suggestion():
    message = problems_of({"train": {"epoch": 3}})
    assert "train.epoch: unknown key" in message
    assert "did you mean train.epochs?" in message
    assert "test.yaml" in message


def test_unknown_top_level_section_is_rejected():
    assert "trian: unknown key" in problems_of({"trian": {"epochs": 3}})


def test_wrong_type_names_value_and_expected_type():
    message = problems_of({"train": {"epochs": "ten"}})
    assert "train.epochs: found 'ten', expected an integer" in message


def test_bool_is_not_accepted_as_integer():
    assert "train.folds: found True, expected an integer" in problems_of({"train": {"folds": True}})


@pytest.mark.parametrize("key, value, expected", [
    ("epochs", 0, "train.epochs: found 0, expected at least 1"),
    ("epochs", -3, "train.epochs: found -3, expected at least 1"),
    ("lr", 0.0, "train.lr: found 0.0, expected greater than 0.0"),
    ("batch_size", 10**9, "train.batch_size: found 1000000000, expected at most 65536"),
])
def test_out_of_range_values_are_rejected(key, value, expected):
    assert expected in problems_of({"train": {key: value}})


def test_one_fold_is_rejected_with_reason():
    message = problems_of({"train": {"folds": 1}})
    assert "train.folds: found 1, expected 0 (off) or at least 2" in message


def test_limit_larger_than_test_split_is_rejected():
    assert "data.limit: found 20000, expected at most 10000" in problems_of({"data": {"limit": 20000}})


def test_unknown_device_is_rejected():
    assert "device: found 'tpu'" in problems_of({"device": "tpu"})


def test_all_problems_are_listed_at_once():
    message = problems_of({"seed": -1, "train": {"epochs": 0, "lr": "fast"}})
    assert "seed:" in message
    assert "train.epochs:" in message
    assert "train.lr:" in message


def test_section_must_be_a_mapping():
    assert "train: found 5, expected a mapping" in problems_of({"train": 5})


def test_integer_is_accepted_where_float_expected():
    assert config_from_dict({"train": {"lr": 1}}).train.lr == 1.0


def test_overrides_set_nested_keys_and_skip_none():
    merged = apply_overrides({"train": {"epochs": 2}}, {"train.epochs": 5, "train.lr": None, "data.limit": 100})
    assert merged == {"train": {"epochs": 5}, "data": {"limit": 100}}


def test_read_config_file_reports_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        read_config_file(path)


def test_read_config_file_reports_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        read_config_file(tmp_path / "nope.yaml")


def test_example_config_documents_every_key_with_its_default():
    raw = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    assert config_from_dict(raw) == Config(), "examples/config.yaml must hold the defaults"

    def leaves(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    assert sorted(leaves(raw)) == sorted(path for path, _, _ in iter_keys())
