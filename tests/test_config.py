"""nmt_cli.config: options files (TOML/YAML), the saved config.json and its loading."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from nmt_cli import __version__
from nmt_cli.config import (
    ModelConfig,
    RunConfig,
    TrainingConfig,
    load_config,
    read_options_file,
    split_options,
)
from nmt_cli.errors import UserError

# --------------------------------------------------------------------------------------------
# read_options_file
# --------------------------------------------------------------------------------------------


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_toml_flat_keys(tmp_path):
    path = write(tmp_path, "options.toml", 'arch = "seq2seq"\nunits = 32\nlearning_rate = 0.01\ndata_dir = "d"\n')
    assert read_options_file(path) == {"arch": "seq2seq", "units": 32, "learning_rate": 0.01, "data_dir": "d"}


def test_toml_dashed_keys(tmp_path):
    path = write(tmp_path, "options.toml", '"embedding-dim" = 64\nbatch-size = 8\nlabel-smoothing = 0.0\n')
    assert read_options_file(path) == {"embedding_dim": 64, "batch_size": 8, "label_smoothing": 0.0}


def test_toml_sections(tmp_path):
    text = """
epochs = 3

[model]
arch = "attention"
attention = "bahdanau"
bidirectional = true

[training]
batch-size = 16
jit_compile = true
"""
    options = read_options_file(write(tmp_path, "options.toml", text))
    assert options == {
        "epochs": 3,
        "arch": "attention",
        "attention": "bahdanau",
        "bidirectional": True,
        "batch_size": 16,
        "jit_compile": True,
    }
    model, training = split_options(options)
    assert model == {"arch": "attention", "attention": "bahdanau", "bidirectional": True}
    assert training == {"epochs": 3, "batch_size": 16, "jit_compile": True}
    ModelConfig(**model, source_vocab_size=10, target_vocab_size=10).validate()
    TrainingConfig(**training).validate()


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_yaml_flat_dashed_and_sections(tmp_path, suffix):
    text = """
seed: 7
save-every: 2
model:
  units: 64
  embedding-dim: 32
  dropout: 0.1
training:
  learning_rate: 0.0005
  clipnorm: 0.0
"""
    options = read_options_file(write(tmp_path, "options" + suffix, text))
    assert options == {
        "seed": 7,
        "save_every": 2,
        "units": 64,
        "embedding_dim": 32,
        "dropout": 0.1,
        "learning_rate": 0.0005,
        "clipnorm": 0.0,
    }


def test_empty_yaml_and_toml_give_no_options(tmp_path):
    assert read_options_file(write(tmp_path, "empty.yaml", "")) == {}
    assert read_options_file(write(tmp_path, "empty.toml", "")) == {}


@pytest.mark.parametrize(
    "name, text, unknown",
    [
        ("options.toml", "unitz = 3\n", "unitz"),
        ("options.toml", "[model]\nheadz = 4\n", "headz"),
        ("options.toml", "[training]\nbatch-sise = 4\n", "batch_sise"),
        ("options.toml", "[optimizer]\nlearning_rate = 0.1\n", "optimizer"),
        ("options.yaml", "model:\n  layerz: 2\n", "layerz"),
        ("options.yaml", "epochs: 2\nfoo: 1\n", "foo"),
    ],
)
def test_unknown_option_is_a_user_error(tmp_path, name, text, unknown):
    with pytest.raises(UserError, match=unknown):
        read_options_file(write(tmp_path, name, text))


@pytest.mark.parametrize("name", ["options.json", "options.ini", "options", "options.toml.bak"])
def test_bad_suffix_is_a_user_error(tmp_path, name):
    with pytest.raises(UserError, match=r"\.toml"):
        read_options_file(write(tmp_path, name, "units = 3\n"))


def test_missing_options_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        read_options_file(tmp_path / "nope.toml")


def test_invalid_toml_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not valid"):
        read_options_file(write(tmp_path, "options.toml", "units = = 3\n"))


@pytest.mark.parametrize("text", ["- units\n- 3\n", "just a string\n"])
def test_yaml_that_is_not_a_mapping_is_a_user_error(tmp_path, text):
    with pytest.raises(UserError, match="mapping"):
        read_options_file(write(tmp_path, "options.yaml", text))


# --------------------------------------------------------------------------------------------
# RunConfig and load_config
# --------------------------------------------------------------------------------------------


def sample_run_config() -> RunConfig:
    return RunConfig(
        model=ModelConfig(
            arch="attention",
            units=32,
            embedding_dim=16,
            layers=2,
            dropout=0.3,
            bidirectional=True,
            attention="bahdanau",
            source_vocab_size=123,
            target_vocab_size=456,
        ),
        training=TrainingConfig(
            epochs=7,
            save_every=2,
            batch_size=16,
            learning_rate=5e-4,
            clipnorm=0.5,
            label_smoothing=0.05,
            seed=99,
            jit_compile=True,
        ),
        data_dir="somewhere/prepared",
        data_manifest_sha256="ab" * 32,
    )


def test_run_config_json_round_trip():
    config = sample_run_config()
    text = config.to_json()
    assert text.endswith("\n")
    again = RunConfig.from_json(text)
    assert again == config
    assert isinstance(again.model, ModelConfig) and isinstance(again.training, TrainingConfig)
    assert again.to_json() == text
    raw = json.loads(text)
    assert raw["model"]["units"] == 32 and raw["training"]["jit_compile"] is True
    assert raw["tool_version"] == __version__


def test_default_run_config_round_trip():
    config = RunConfig()
    assert RunConfig.from_json(config.to_json()) == config


def test_load_config_reads_a_saved_file(tmp_path):
    config = sample_run_config()
    path = tmp_path / "config.json"
    path.write_text(config.to_json(), encoding="utf-8")
    assert load_config(path) == config


def test_load_config_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "config.json")


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        "[]",
        json.dumps({"model": {}}),  # no training section
        json.dumps({**asdict(RunConfig()), "model": {"units": 3, "headz": 2}}),  # unknown field
        json.dumps({**asdict(RunConfig()), "model": ["attention"]}),
    ],
)
def test_load_config_corrupt_file_is_a_user_error(tmp_path, content):
    path = tmp_path / "config.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match="config.json"):
        load_config(path)


def test_load_config_binary_garbage_is_a_user_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError):
        load_config(path)


def test_load_config_on_a_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        load_config(tmp_path)


@pytest.mark.parametrize(("field", "value"), [("seed", -1), ("seed", 2**32), ("clipnorm", -0.5)])
def test_out_of_range_training_options_are_refused(field, value):
    with pytest.raises(UserError, match=field):
        TrainingConfig(**{field: value}).validate()


@pytest.mark.parametrize(
    ("section", "name", "value", "says"),
    [
        ("model", "units", "sixty-four", "units must be a whole number, not 'sixty-four'"),
        ("training", "epochs", -3, "epochs must be at least 1"),
        ("model", "arch", "gru", "unknown arch 'gru'"),
    ],
)
def test_a_config_json_value_no_option_accepts_is_reported_as_damage(tmp_path, section, name, value, says):
    raw = json.loads(RunConfig().to_json())
    raw[section][name] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(UserError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path} is damaged: {says}") and "--" not in str(error.value).split(":")[1]


def test_absurd_epoch_counts_are_refused_in_one_line(tmp_path):
    from conftest import assert_one_line_error, nmt

    for flag in ("--epochs", "--save-every"):
        completed = nmt("train", "--model-dir", tmp_path / "m", flag, "100000000000000000000", before_tensorflow=True)
        assert_one_line_error(completed, f"{flag} must be at most 1000000")
    options = tmp_path / "options.toml"
    options.write_text("epochs = 1e20\n")
    completed = nmt("train", "--model-dir", tmp_path / "m", "--config", options, before_tensorflow=True)
    assert_one_line_error(completed, "--epochs must be a whole number")
