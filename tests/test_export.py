"""`nmt export` and the CTranslate2 engine: the same search as the Keras engine, without TensorFlow."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, nmt, reversal_pairs
from nmt_cli.checkpoints import BestStamp
from nmt_cli.datadir import DataDir
from nmt_cli.decoding import Searcher
from nmt_cli.engines import LengthRule
from nmt_cli.engines.ctranslate2 import CTranslate2Engine
from nmt_cli.export import STAMP, read_stamp
from nmt_cli.translation import Translator
from nmt_cli.workspace import Workspace


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def engines(request, trained_model, reversal_data, tmp_path_factory):
    """(Keras engine, CTranslate2 engine of a float32 export of the same best.keras, dev sources)."""
    model_dir = trained_model("transformer", tie_embeddings=request.param)
    output = tmp_path_factory.mktemp("export") / "float32"
    exported = nmt("export", "--model-dir", model_dir, "--quantization", "float32", "--output", output)
    assert exported.returncode == 0, exported.stderr
    keras_translator = Translator.open(model_dir, engine="keras")
    sources = [list(ids) for ids in DataDir(reversal_data).load_split("dev")[0]]
    held_out = keras_translator.source_tokenizer.encode([src for src, _ in reversal_pairs(100, seed=7)])
    return keras_translator.engine, CTranslate2Engine(output), sources + [list(ids) for ids in held_out]


def test_greedy_search_gives_the_keras_engines_ids_and_scores(engines):
    keras_engine, ctranslate2_engine, sources = engines
    expected = keras_engine.search_all(sources, beam_size=1)
    found = ctranslate2_engine.search_all(sources, beam_size=1)
    assert [hyps[0][0] for hyps in found] == [hyps[0][0] for hyps in expected]
    for (_, score), (_, reference) in zip((h[0] for h in found), (h[0] for h in expected)):
        assert score == pytest.approx(reference, abs=1e-3)


def test_beam_search_finds_the_keras_engines_best_hypothesis(engines):
    """Both search the same way (finished hypotheses leave the beam, K must finish, score over
    length), with float32 weights computed in another order: two hypotheses whose scores tie to
    within rounding may swap. A trained model rarely has such ties, so nearly all must agree."""
    keras_engine, ctranslate2_engine, sources = engines
    expected = keras_engine.search_all(sources, beam_size=5, n_best=5)
    found = ctranslate2_engine.search_all(sources, beam_size=5, n_best=5)
    same = sum(mine[0][0] == theirs[0][0] for mine, theirs in zip(found, expected))
    assert same >= 0.95 * len(sources), f"{same} of {len(sources)}"
    for mine, theirs in zip(found, expected):
        if mine[0][0] == theirs[0][0]:
            assert mine[0][1] == pytest.approx(theirs[0][1], abs=1e-3)
        assert len(mine) == len(theirs) == 5
        assert [score for _, score in mine] == sorted((score for _, score in mine), reverse=True)


@pytest.mark.parametrize("beam_size", [1, 5])
def test_attention_agrees_with_the_keras_engines(engines, beam_size):
    """The export's attention is the Keras decoder's (the last layer's, heads averaged), for every
    hypothesis both engines find. Both compute in float32 from the same weights, only in another
    order: a softmax output moves by about 1e-6 (measured), so 1e-4 is rounding, and any real
    difference (another layer, one head) is of the order of the weights themselves."""
    keras_engine, ctranslate2_engine, sources = engines
    expected = keras_engine.search_all(sources, beam_size, n_best=beam_size, attention=True)
    found = ctranslate2_engine.search_all(sources, beam_size, n_best=beam_size, attention=True)
    plain = ctranslate2_engine.search_all(sources, beam_size, n_best=beam_size)
    compared = 0
    for source, mine, theirs, without in zip(sources, found, expected, plain):
        assert [(ids, score) for ids, score, _ in mine] == without  # attention changes no result
        by_ids = {tuple(ids): weights for ids, _, weights in theirs}
        for ids, _, weights in mine:
            assert weights.shape == (len(ids) + 1, len(source))
            np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
            if tuple(ids) in by_ids:
                np.testing.assert_allclose(weights, by_ids[tuple(ids)], atol=1e-4)
                compared += 1
    assert compared >= 0.95 * len(sources) * beam_size


def test_a_hypothesis_cut_at_the_length_limit_gets_the_row_of_its_forced_eos(engines):
    """The Keras engine forces <eos> at the last step, with that step's row; CTranslate2 stops
    before it, and the row is fetched after it."""
    keras_engine, ctranslate2_engine, sources = engines
    rule = LengthRule(ratio=0.0, extra=3)  # two pieces, then <eos>: shorter than any reversal
    searcher = Searcher(keras_engine.searcher.encoder, keras_engine.searcher.decoder, rule)
    cut = CTranslate2Engine(ctranslate2_engine.export_dir, length_rule=rule)
    for beam_size in (1, 3):
        expected = searcher.search_all(sources[:8], beam_size, attention=True)
        found = cut.search_all(sources[:8], beam_size, attention=True)
        cut_short = 0
        for source, (ids, _, weights), (reference_ids, _, reference) in zip(
            sources, (f[0] for f in found), (e[0] for e in expected)
        ):
            assert len(ids) <= 2 and weights.shape == (len(ids) + 1, len(source))
            cut_short += len(ids) == 2
            if ids == reference_ids:
                np.testing.assert_allclose(weights, reference, atol=1e-4)
        assert cut_short  # some hypothesis was cut, or this tests nothing


def test_the_length_rule_bounds_the_output(engines):
    """An input unlike any training sentence: however the model runs on, 2n + 10 steps at most,
    the last one being <eos>."""
    _, ctranslate2_engine, _ = engines
    source = [5] * 3
    for beam_size in (1, 4):
        for ids, _ in ctranslate2_engine.search_all([source], beam_size, n_best=1)[0]:
            assert len(ids) <= 2 * len(source) + 10 - 1


# ----------------------------------------------------------------------------------------------
# Which engine translates
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def transformer_copy(trained_model, tmp_path) -> Path:
    """A copy of the trained Transformer's directory, free to damage."""
    return Path(shutil.copytree(trained_model("transformer"), tmp_path / "model"))


def test_training_exports_each_new_best_for_ctranslate2(trained_model):
    """The fixture trained with default options: its best.keras is exported in int8, and
    `--engine auto` chooses that export."""
    from nmt_cli.trained import TrainedModel

    workspace = Workspace(trained_model("transformer"))
    stamp = read_stamp(workspace.export)
    assert stamp is not None and stamp.quantization == "int8" and stamp.checkpoint == "best"
    assert stamp.epoch == BestStamp.read(workspace).epoch and stamp.holds(workspace.best)
    assert {"model.bin", "spm.en.model", "spm.ja.model", "data-manifest.json"} <= {
        path.name for path in workspace.export.iterdir()
    }
    assert TrainedModel.open(workspace.root).engine_name == "ctranslate2"
    assert TrainedModel.open(workspace.root, "last").engine_name == "keras"  # the export holds best, not last


_MODULES_AFTER = """
import sys
from nmt_cli import cli
try:
    cli.app(sys.argv[1:], standalone_mode=False)
finally:
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras", "ctranslate2"))
    print("LOADED", " ".join(loaded), file=sys.stderr)
"""


def _loaded_modules(*args, input=None) -> tuple[subprocess.CompletedProcess, set[str]]:
    completed = subprocess.run(
        [sys.executable, "-c", _MODULES_AFTER, *map(str, args)],
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
    )
    (line,) = [line for line in completed.stderr.splitlines() if line.startswith("LOADED")]
    return completed, {name.split(".")[0] for name in line.split()[1:]}


@pytest.mark.parametrize("command", ["translate", "evaluate"])
def test_the_ctranslate2_engine_never_imports_tensorflow(trained_model, command):
    model_dir = trained_model("transformer")
    args = ["--model-dir", model_dir, "--json"] + (["a b c"] if command == "translate" else ["--split", "dev"])
    completed, loaded = _loaded_modules(command, *args)
    assert completed.returncode == 0, completed.stderr
    assert loaded == {"ctranslate2"}
    completed, loaded = _loaded_modules(command, *args, "--engine", "keras")
    assert completed.returncode == 0, completed.stderr
    assert {"tensorflow", "keras"} <= loaded and "ctranslate2" not in loaded


def test_a_stale_export_is_never_used_by_auto(transformer_copy, reference):
    """best.keras changed after the export (here: another epoch's weights took its place)."""
    from nmt_cli.trained import TrainedModel

    workspace = Workspace(transformer_copy)
    shutil.copyfile(workspace.checkpoint(10), workspace.best)
    assert TrainedModel.open(transformer_copy).engine_name == "keras"
    completed, loaded = _loaded_modules("translate", "--model-dir", transformer_copy, "a b c")
    assert completed.returncode == 0 and "tensorflow" in loaded and "ctranslate2" not in loaded
    assert completed.stdout == reference(transformer_copy, ["a b c"], engine="keras")[0] + "\n"
    refused = nmt("translate", "--model-dir", transformer_copy, "--engine", "ctranslate2", "a b c")
    assert_one_line_error(refused, "holds best as it was then", f"nmt export --model-dir {transformer_copy}")


def test_an_export_made_before_attention_is_refused_with_what_to_do(transformer_copy):
    """Exports made before the heads were averaged report one head: they still translate, and
    attention from them is refused, naming the command that makes a new one, before TensorFlow
    could load."""
    stamp_path = Workspace(transformer_copy).export / STAMP
    stamp = json.loads(stamp_path.read_text())
    assert stamp.pop("averaged_attention") is True
    stamp_path.write_text(json.dumps(stamp))
    assert nmt("translate", "--model-dir", transformer_copy, "a b").returncode == 0
    refused = nmt("translate", "--model-dir", transformer_copy, "--json", "--attention", "a b", before_tensorflow=True)
    assert_one_line_error(refused, "made before exports kept attention", f"nmt export --model-dir {transformer_copy}")


def test_a_copied_model_directory_keeps_its_export(transformer_copy):
    """A copy has new file times: the digest decides that the export still holds best.keras."""
    from nmt_cli.trained import TrainedModel

    assert TrainedModel.open(transformer_copy).engine_name == "ctranslate2"


def test_a_damaged_export_falls_back_to_keras_with_a_warning(transformer_copy, reference):
    model_bin = Workspace(transformer_copy).export / "model.bin"
    model_bin.write_bytes(model_bin.read_bytes()[:1000])
    completed = nmt("translate", "--model-dir", transformer_copy, "a b c")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == reference(transformer_copy, ["a b c"], engine="keras")[0] + "\n"
    warnings = [line for line in completed.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and "does not load" in warnings[0] and "Keras engine instead" in warnings[0]
    refused = nmt("translate", "--model-dir", transformer_copy, "--engine", "ctranslate2", "a b c")
    assert_one_line_error(refused, "does not load")


def test_ctranslate2_without_an_export_is_refused_before_tensorflow_loads(transformer_copy):
    shutil.rmtree(Workspace(transformer_copy).export)
    refused = nmt("translate", "--model-dir", transformer_copy, "--engine", "ctranslate2", "x", before_tensorflow=True)
    assert_one_line_error(refused, "has no CTranslate2 export", f"nmt export --model-dir {transformer_copy}")
    refused = nmt("evaluate", "--model-dir", transformer_copy, "--engine", "ctranslate2", before_tensorflow=True)
    assert_one_line_error(refused, "has no CTranslate2 export")


def test_lstm_models_stay_on_keras_and_say_so(trained_model, tmp_path):
    model_dir = trained_model("attention")
    refused = nmt("export", "--model-dir", model_dir, "--output", tmp_path / "out", before_tensorflow=True)
    assert_one_line_error(refused, "--arch attention cannot be exported", "no LSTM decoder")
    assert not (tmp_path / "out").exists()
    refused = nmt("translate", "--model-dir", model_dir, "--engine", "ctranslate2", "a b", before_tensorflow=True)
    assert_one_line_error(refused, "--engine ctranslate2 runs Transformer models", "--engine keras")


def test_all_checkpoints_with_ctranslate2_is_refused(trained_model):
    refused = nmt(
        "evaluate", "--model-dir", trained_model("transformer"), "--all-checkpoints", "--engine", "ctranslate2"
    )
    assert_one_line_error(refused, "--all-checkpoints", "--engine ctranslate2")


# ----------------------------------------------------------------------------------------------
# nmt export
# ----------------------------------------------------------------------------------------------


def test_export_of_an_epoch_is_stamped_with_its_digest(transformer_copy):
    from nmt_cli import files
    from nmt_cli.trained import TrainedModel

    workspace = Workspace(transformer_copy)
    completed = nmt("export", "--model-dir", transformer_copy, "--checkpoint", "epoch-10", "--quantization", "float32")
    assert completed.returncode == 0, completed.stderr
    assert "exported epoch-10 (epoch 10)" in completed.stdout and "float32" in completed.stdout
    stamp = read_stamp(workspace.export)
    assert stamp.sha256 == files.sha256(workspace.checkpoint(10)) and stamp.epoch == 10
    assert json.loads((workspace.export / STAMP).read_text())["quantization"] == "float32"
    assert TrainedModel.open(transformer_copy, "epoch-10").engine_name == "ctranslate2"
    assert TrainedModel.open(transformer_copy).engine_name == "keras"  # best is not what it holds now
    assert [p.name for p in transformer_copy.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_an_export_replaced_by_a_killed_run_is_restored_or_cleared(transformer_copy):
    """A kill between moving the old export aside and renaming the new one into place leaves the
    old one under a hidden name: the next export puts it back first (then replaces it whole)."""
    workspace = Workspace(transformer_copy)
    workspace.export.rename(transformer_copy / ".ctranslate2.old-12345")
    (transformer_copy / ".ctranslate2.tmp-abc").mkdir()
    completed = nmt("export", "--model-dir", transformer_copy)
    assert completed.returncode == 0, completed.stderr
    assert read_stamp(workspace.export).holds(workspace.best)
    assert [p.name for p in transformer_copy.iterdir() if p.name.startswith(".")] == []


def test_summary_shows_the_export(trained_model):
    model_dir = trained_model("transformer")
    completed = nmt("summary", "--model-dir", model_dir, "--json")
    assert completed.returncode == 0, completed.stderr
    export = json.loads(completed.stdout)["export"]
    assert export["quantization"] == "int8" and export["checkpoint"] == "best" and export["current"] is True
    assert export["bytes"] > 0 and export["path"] == str(Workspace(model_dir).export)
    text = nmt("summary", "--model-dir", model_dir)
    assert "CTranslate2 export" in text.stdout and "int8" in text.stdout
