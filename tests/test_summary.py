"""`nmt summary`: parameter counts, layer names, data, history, checkpoints, plots and errors.

Most tests run the typer app in-process with CliRunner (TensorFlow is imported once per
session); the error-path tests run the real entry point in a subprocess, because the one-line
"error:" rendering and the exit code come from `nmt_cli.cli.main`.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import assert_one_line_error, nmt
from nmt_cli.cli import app
from nmt_cli.errors import UserError

VIEWS = ("training", "encoder", "decoder")
COMMON_LAYERS = ("encoder_embedding", "encoder_lstm", "decoder_embedding", "decoder_lstm", "output_projection")
CHECKPOINTS = {"epoch-010.keras", "epoch-020.keras", "best.keras"}

# Small untrained models, as (ModelConfig keyword arguments, the same as CLI flags).
TINY = {"units": 32, "embedding_dim": 16, "dropout": 0.0, "source_vocab_size": 50, "target_vocab_size": 60}
CONFIGS = {
    "seq2seq": {"arch": "seq2seq", **TINY},
    "seq2seq-2-layers": {"arch": "seq2seq", "layers": 2, **TINY},
    "attention": {"arch": "attention", **TINY},
    "attention-bidirectional": {"arch": "attention", "bidirectional": True, **TINY},
    "attention-bahdanau": {"arch": "attention", "attention": "bahdanau", **TINY},
}


def flags(options: dict) -> list[str]:
    out = []
    for key, value in options.items():
        name = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(name if value else "--unidirectional")
        else:
            out += [name, str(value)]
    return out


def invoke(*args: str):
    """Run `nmt ARGS` in-process on a wide terminal, so rich does not wrap layer names."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "NO_COLOR": "1"})


def ok(result):
    assert result.exit_code == 0, (result.exception, result.output)
    return result


def as_json(result) -> dict:
    ok(result)
    return json.loads(result.stdout)


def built(options: dict):
    """Fresh models for `options`, built independently of the summary code."""
    from nmt_cli import backend

    backend.load_tensorflow()
    from nmt_cli.config import ModelConfig
    from nmt_cli.models import build_models

    return build_models(ModelConfig(**options))


def table_layer_names(output: str) -> list[str]:
    """The `name (Type)` first cells of the layer tables in the human output."""
    return re.findall(r"^│ ([A-Za-z0-9_]+) \([A-Za-z0-9_]+\)\s+│", output, flags=re.MULTILINE)


def read_csv_history(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path, monkeypatch):
    """Run every in-process test away from the repository's own models/ and data/ folders."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


# --------------------------------------------------------------------------------------------
# Parameter counts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
def test_core_counts_equal_count_params(name):
    from nmt_cli.config import ModelConfig
    from nmt_cli.summary import summarize_untrained

    options = CONFIGS[name]
    view, models = summarize_untrained(ModelConfig(**options), None)
    fresh = built(options)
    for key in VIEWS:
        model_view = view["models"][key]
        expected = getattr(fresh, key).count_params()
        assert expected > 0
        assert model_view["total_params"] == expected == getattr(models, key).count_params(), key
        assert model_view["trainable_params"] + model_view["non_trainable_params"] == model_view["total_params"], key
        assert sum(row["params"] for row in model_view["layers"]) == expected, key
        # every layer of the Keras model is listed, once
        names = [row["name"] for row in model_view["layers"]]
        assert names == [layer.name for layer in getattr(fresh, key).layers], key
        assert len(names) == len(set(names)), key


def test_seq2seq_counts_match_the_formula():
    """Guard against a model and its summary agreeing on a wrong count: count by hand."""
    from nmt_cli.config import ModelConfig
    from nmt_cli.summary import summarize_untrained

    view, _ = summarize_untrained(ModelConfig(**CONFIGS["seq2seq"]), None)
    src, tgt, emb, units = 50, 60, 16, 32
    lstm = 4 * units * (emb + units + 1)
    projection = units * tgt + tgt
    assert view["models"]["training"]["total_params"] == src * emb + lstm + tgt * emb + lstm + projection
    assert view["models"]["encoder"]["total_params"] == src * emb + lstm
    assert view["models"]["decoder"]["total_params"] == tgt * emb + lstm + projection
    params = {row["name"]: row["params"] for row in view["models"]["training"]["layers"]}
    assert params["encoder_embedding"] == src * emb
    assert params["decoder_lstm"] == lstm
    assert params["output_projection"] == projection


@pytest.mark.parametrize("name", ["seq2seq", "attention", "attention-bidirectional"])
def test_json_totals_equal_count_params(name):
    options = CONFIGS[name]
    view = as_json(invoke("summary", *flags(options), "--json"))
    fresh = built(options)
    assert view["model_dir"] is None
    assert view["data"] is None
    assert view["history"] == [] and view["checkpoints"] == [] and view["best_epoch"] is None
    assert view["config"]["arch"] == options["arch"]
    assert view["config"]["source_vocab_size"] == 50 and view["config"]["target_vocab_size"] == 60
    for key in VIEWS:
        model_view = view["models"][key]
        expected = getattr(fresh, key).count_params()
        assert model_view["total_params"] == expected, key
        assert model_view["trainable_params"] + model_view["non_trainable_params"] == expected, key
        assert sum(row["params"] for row in model_view["layers"]) == expected, key


# --------------------------------------------------------------------------------------------
# Human output
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["seq2seq", "attention", "attention-bidirectional"])
def test_human_output_names_the_layers_and_totals(name):
    options = CONFIGS[name]
    result = ok(invoke("summary", *flags(options)))
    names = table_layer_names(result.stdout)
    for layer in COMMON_LAYERS:
        assert layer in names, (layer, result.stdout)
    if options["arch"] == "attention":
        assert "attention" in names
    else:
        assert not any(n.startswith("attention") for n in names)
    fresh = built(options)
    for key in VIEWS:
        model = getattr(fresh, key)
        total = model.count_params()
        assert f"total {total:,} parameters: {total:,} trainable, 0 non-trainable" in result.stdout, key
    # the three tables: each names its model
    for title in ("training model:", "encoder inference model: encoder", "decoder inference model (one step): decoder"):
        assert title in result.stdout
    assert "untrained: no history or checkpoints yet" in result.stdout


# --------------------------------------------------------------------------------------------
# Untrained models: vocabulary sizes from flags or from a data directory
# --------------------------------------------------------------------------------------------


def test_untrained_needs_no_data_directory(_empty_cwd):
    assert not (_empty_cwd / "data").exists()
    view = as_json(
        invoke(
            "summary",
            "--arch",
            "seq2seq",
            "--units",
            "16",
            "--source-vocab-size",
            "50",
            "--target-vocab-size",
            "60",
            "--json",
        )
    )
    assert view["data"] is None and view["model_dir"] is None
    params = {row["name"]: row["params"] for row in view["models"]["training"]["layers"]}
    assert params["encoder_embedding"] == 50 * 256  # default embedding size
    assert params["decoder_embedding"] == 60 * 256


def test_untrained_without_vocabulary_sizes_says_what_to_give():
    result = invoke("summary", "--arch", "seq2seq", "--units", "16", "--source-vocab-size", "50")
    assert isinstance(result.exception, UserError)
    assert "--data-dir" in str(result.exception) and "--target-vocab-size" in str(result.exception)


def manifest_of(data_dir: Path) -> dict:
    return json.loads((data_dir / "manifest.json").read_text(encoding="utf-8"))


def test_data_dir_gives_the_vocabulary_sizes(reversal_data):
    manifest = manifest_of(reversal_data)
    langs = manifest["languages"]
    src_vocab = manifest["vocabulary"][langs["source"]]["actual"]
    tgt_vocab = manifest["vocabulary"][langs["target"]]["actual"]
    view = as_json(
        invoke(
            "summary",
            "--data-dir",
            str(reversal_data),
            "--arch",
            "attention",
            "--units",
            "16",
            "--embedding-dim",
            "8",
            "--json",
        )
    )
    assert view["config"]["source_vocab_size"] == src_vocab
    assert view["config"]["target_vocab_size"] == tgt_vocab
    assert view["data"]["vocabulary"] == {"source": src_vocab, "target": tgt_vocab}
    assert view["data"]["special_ids"] == manifest["special_ids"]
    params = {row["name"]: row["params"] for row in view["models"]["training"]["layers"]}
    assert params["encoder_embedding"] == src_vocab * 8
    assert params["decoder_embedding"] == tgt_vocab * 8
    assert params["output_projection"] == 16 * tgt_vocab + tgt_vocab
    fresh = built(
        {
            "arch": "attention",
            "units": 16,
            "embedding_dim": 8,
            "source_vocab_size": src_vocab,
            "target_vocab_size": tgt_vocab,
        }
    )
    for key in VIEWS:
        assert view["models"][key]["total_params"] == getattr(fresh, key).count_params()


def test_data_dir_alone_is_an_untrained_summary(reversal_data):
    manifest = manifest_of(reversal_data)
    result = ok(invoke("summary", "--data-dir", str(reversal_data)))
    langs = manifest["languages"]
    vocab = {side: manifest["vocabulary"][lang]["actual"] for side, lang in langs.items()}
    assert f"vocabulary: {langs['source']} {vocab['source']}, {langs['target']} {vocab['target']}" in result.stdout
    assert "untrained: no history or checkpoints yet" in result.stdout


def test_explicit_vocabulary_size_wins_over_the_data_dir(reversal_data):
    view = as_json(
        invoke("summary", "--data-dir", str(reversal_data), "--units", "16", "--source-vocab-size", "77", "--json")
    )
    assert view["config"]["source_vocab_size"] == 77
    assert view["config"]["target_vocab_size"] == manifest_of(reversal_data)["vocabulary"]["ja"]["actual"]


# --------------------------------------------------------------------------------------------
# Trained model directories
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_dir(trained_model) -> Path:
    return trained_model("attention")


def test_trained_json_has_history_best_epoch_checkpoints_and_data(trained_dir):
    view = as_json(invoke("summary", "--model-dir", str(trained_dir), "--json"))
    assert view["model_dir"] == str(trained_dir)

    rows = read_csv_history(trained_dir / "history.csv")
    assert [int(row["epoch"]) for row in view["history"]] == list(range(1, 21))
    assert [row["val_loss"] for row in view["history"]] == [float(row["val_loss"]) for row in rows]
    best = min(rows, key=lambda row: float(row["val_loss"]))
    assert view["best_epoch"] == int(best["epoch"])

    checkpoints = {item["name"]: item["bytes"] for item in view["checkpoints"]}
    assert set(checkpoints) == CHECKPOINTS
    for name, size in checkpoints.items():
        assert size > 0
        assert size == (trained_dir / "checkpoints" / name).stat().st_size

    manifest = json.loads((trained_dir / "data-manifest.json").read_text(encoding="utf-8"))
    langs = manifest["languages"]
    assert view["data"]["languages"] == langs
    assert view["data"]["vocabulary"] == {side: manifest["vocabulary"][lang]["actual"] for side, lang in langs.items()}
    assert view["data"]["special_ids"] == manifest["special_ids"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    assert view["config"]["model"]["source_vocab_size"] == view["data"]["vocabulary"]["source"]
    assert view["config"]["model"]["target_vocab_size"] == view["data"]["vocabulary"]["target"]
    assert view["config"]["model"]["arch"] == "attention" and view["config"]["model"]["units"] == 64


def test_trained_counts_equal_the_saved_checkpoint(trained_dir):
    """The architecture is rebuilt from config.json: its counts must be those of the trained weights."""
    view = as_json(invoke("summary", "--model-dir", str(trained_dir), "--json"))
    from nmt_cli.config import load_config
    from nmt_cli.models import load_checkpoint

    config = load_config(trained_dir / "config.json")
    loaded = load_checkpoint(trained_dir / "checkpoints" / "best.keras", config.model)
    fresh = built(vars(config.model))
    for key in VIEWS:
        expected = getattr(loaded, key).count_params()
        assert view["models"][key]["total_params"] == expected == getattr(fresh, key).count_params(), key
        assert sum(row["params"] for row in view["models"][key]["layers"]) == expected, key


def test_trained_human_output_marks_the_best_epoch_and_lists_checkpoints(trained_dir):
    result = ok(invoke("summary", "--model-dir", str(trained_dir)))
    out = result.stdout
    rows = read_csv_history(trained_dir / "history.csv")
    best = int(min(rows, key=lambda row: float(row["val_loss"]))["epoch"])  # trained with --best-by loss

    assert "training history (* best.keras: the lowest validation loss)" in out
    history_rows = re.findall(
        r"^│\s+(\d+)( \*)?\s+│\s+([0-9.]+)\s+│\s+([0-9.]+)\s+│\s+([0-9.]+)\s+│", out, flags=re.MULTILINE
    )
    assert [int(r[0]) for r in history_rows] == list(range(1, 21))
    marked = [int(r[0]) for r in history_rows if r[1]]
    assert marked == [best]
    for printed, row in zip(history_rows, rows):
        assert printed[4] == f"{float(row['val_loss']):.4f}"

    assert "checkpoints" in out
    listed = re.findall(r"^│ ((?:epoch-\d{3}|best)\.keras)\s+│\s+([0-9.]+) MB\s+│", out, flags=re.MULTILINE)
    assert {name for name, _ in listed} == CHECKPOINTS
    for name, megabytes in listed:
        assert float(megabytes) == pytest.approx((trained_dir / "checkpoints" / name).stat().st_size / 1e6, abs=0.05)
    assert "untrained" not in out
    for layer in (*COMMON_LAYERS, "attention"):
        assert layer in table_layer_names(out)


def test_trained_summary_with_model_dir_default(trained_dir, _empty_cwd):
    """No options: models/default under the working directory."""
    (_empty_cwd / "models").mkdir()
    (_empty_cwd / "models" / "default").symlink_to(trained_dir, target_is_directory=True)
    view = as_json(invoke("summary", "--json"))
    assert view["model_dir"] == str(Path("models/default"))
    assert {item["name"] for item in view["checkpoints"]} == CHECKPOINTS


# --------------------------------------------------------------------------------------------
# --plot
# --------------------------------------------------------------------------------------------


def is_svg(path: Path) -> bool:
    text = path.read_text(encoding="utf-8", errors="replace")
    return text.startswith("<?xml") or "<svg" in text


@pytest.mark.parametrize("name", ["seq2seq", "attention"])
def test_plot_writes_three_svg_files(name, tmp_path, graphviz):
    target = tmp_path / "graph.svg"
    result = ok(invoke("summary", *flags(CONFIGS[name]), "--plot", str(target)))
    written = [target, tmp_path / "graph-encoder.svg", tmp_path / "graph-decoder.svg"]
    for path in written:
        assert path.is_file() and path.stat().st_size > 0, path
        assert is_svg(path), path
        assert f"drew {path}" in result.stdout
    # the drawing is of this model: its layer names are in it
    text = target.read_text(encoding="utf-8")
    for layer in COMMON_LAYERS:
        assert layer in text
    assert "total " in result.stdout and "output_projection" in result.stdout


def test_plot_png_and_json_lists_the_files(tmp_path, graphviz):
    target = tmp_path / "graph.png"
    view = as_json(invoke("summary", *flags(CONFIGS["seq2seq"]), "--plot", str(target), "--json"))
    written = [target, tmp_path / "graph-encoder.png", tmp_path / "graph-decoder.png"]
    assert view["plots"] == [str(p) for p in written]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


def test_plot_other_suffix_is_a_user_error(tmp_path):
    result = invoke("summary", *flags(CONFIGS["seq2seq"]), "--plot", str(tmp_path / "graph.pdf"))
    assert isinstance(result.exception, UserError)
    assert ".svg or .png" in str(result.exception)
    assert not (tmp_path / "graph.pdf").exists()


def test_plot_without_graphviz_is_refused_at_once(tmp_path):
    # A PATH with no `dot` on it: the real entry point, as a user without graphviz runs it.
    no_dot = tmp_path / "bin"
    no_dot.mkdir()
    target = tmp_path / "graph.svg"
    completed = nmt(
        "summary", *flags(CONFIGS["seq2seq"]), "--plot", target, env={"PATH": str(no_dot)}, before_tensorflow=True
    )
    line = assert_one_line_error(completed)
    assert "graphviz" in line and "apt-get install graphviz" in line
    assert completed.stdout == "" and not list(tmp_path.glob("graph*"))


def test_plot_without_pydot_is_refused_with_the_install_hint_intact(tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pydot" else find_spec(name, *a))
    target = tmp_path / "graph.svg"
    result = invoke("summary", *flags(CONFIGS["seq2seq"]), "--plot", str(target), "--json")
    assert isinstance(result.exception, UserError)
    assert "pydot" in str(result.exception) and "pip install 'nmt-cli[plot]'" in str(result.exception)
    assert result.stdout == "" and not list(tmp_path.glob("graph*"))


# --------------------------------------------------------------------------------------------
# Errors, through the real entry point
# --------------------------------------------------------------------------------------------


def test_missing_model_directory_is_a_one_line_error(tmp_path):
    missing = tmp_path / "no-such-model"
    line = assert_one_line_error(nmt("summary", "--model-dir", str(missing), cwd=tmp_path))
    assert str(missing) in line and "does not exist" in line


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"{not json", id="invalid-json"),
        pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
        pytest.param(b'{"model": {}}', id="missing-keys"),
        pytest.param(b"[1, 2]", id="not-a-mapping"),
        pytest.param(None, id="a-directory"),
    ],
)
def test_unreadable_config_is_a_one_line_error(tmp_path, content):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    if content is None:
        (model_dir / "config.json").mkdir()
    else:
        (model_dir / "config.json").write_bytes(content)
    line = assert_one_line_error(nmt("summary", "--model-dir", str(model_dir), cwd=tmp_path))
    assert "config.json" in line


@pytest.mark.parametrize(
    "model",
    [
        pytest.param({}, id="zero-vocabulary"),
        pytest.param({"source_vocab_size": -5, "target_vocab_size": 5}, id="negative-vocabulary"),
        pytest.param({"units": "abc", "source_vocab_size": 5, "target_vocab_size": 5}, id="wrong-type"),
    ],
)
def test_config_of_no_buildable_model_is_a_one_line_error(tmp_path, model):
    """config.json parses, but its model cannot be built: still one line, no traceback."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    config = {"model": model, "training": {}, "data_dir": "x", "data_manifest_sha256": "", "tool_version": "0"}
    (model_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert_one_line_error(nmt("summary", "--model-dir", str(model_dir), cwd=tmp_path))


def test_non_positive_vocabulary_size_option_is_a_one_line_error(tmp_path):
    line = assert_one_line_error(
        nmt("summary", "--source-vocab-size", "-5", "--target-vocab-size", "60", "--units", "8", cwd=tmp_path)
    )
    assert "vocab" in line


@pytest.mark.parametrize(
    "options",
    [
        ["--units", "32"],
        ["--arch", "seq2seq"],
        ["--source-vocab-size", "50", "--target-vocab-size", "60"],
        ["--unidirectional"],
    ],
    ids=["units", "arch", "vocab", "bool-flag"],
)
def test_model_dir_and_model_options_together_are_refused(tmp_path, options):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    line = assert_one_line_error(nmt("summary", "--model-dir", str(model_dir), *options, cwd=tmp_path))
    assert "not both" in line
