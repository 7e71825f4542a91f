"""Fine-tuning: a model that reverses letter sequences goes on to learn to copy them, from data
encoded with its own tokenizers (`nmt prepare --tokenizers-from`, `nmt train --init-from`)."""

from __future__ import annotations

import json

import pytest

from conftest import _write_split, assert_one_line_error, nmt, reversal_pairs, run_training
from nmt_cli.config import PrepareOptions
from nmt_cli.datadir import DataDir
from nmt_cli.evaluation import evaluate
from nmt_cli.plan import TrainRequest
from nmt_cli.prepare import prepare
from nmt_cli.translation import Translator

# The parent's options (conftest's trained_model("transformer")), and a short second run.
FINE_TUNING = {"epochs": 4, "save_every": 4, "batch_tokens": 0, "batch_size": 32, "learning_rate": 0.005, "warmup": 50}
FINE_TUNING.update(label_smoothing=0.0, best_by="loss", precision="float32")


def copy_corpus(folder):
    """The second domain: the same letters, copied instead of reversed."""
    _write_split(folder, "train", [(source, source) for source, _ in reversal_pairs(2000, seed=11)])
    _write_split(folder, "dev", [(source, source) for source, _ in reversal_pairs(100, seed=12)])
    return folder


@pytest.fixture(scope="module")
def copying(tmp_path_factory, trained_model):
    """(parent model directory, the copy domain prepared with the parent's tokenizers)."""
    parent = trained_model("transformer")
    root = tmp_path_factory.mktemp("copy")
    corpus = copy_corpus(root / "corpus")
    prepare(PrepareOptions(data_dir=root / "prepared", source=str(corpus), tokenizers_from=parent))
    return parent, root / "prepared"


def dev_bleu(model_dir, data) -> float:
    return evaluate(Translator.open(model_dir, engine="keras"), DataDir(data), "dev", beam_size=1).scores.bleu


def test_prepared_with_a_models_tokenizers_the_data_records_them(copying):
    parent, data = copying
    manifest = json.loads((data / "manifest.json").read_text())
    for lang in ("en", "ja"):
        assert (data / f"spm.{lang}.model").read_bytes() == (parent / f"spm.{lang}.model").read_bytes()
        assert manifest["vocabulary"][lang]["from"] == str(parent.resolve())
    assert manifest["styles"] == json.loads((parent / "data-manifest.json").read_text())["styles"]


def test_fine_tuning_learns_the_new_domain_from_the_parents_weights(tmp_path, copying):
    parent, data = copying
    before = dev_bleu(parent, data)
    model_dir = tmp_path / "copier"
    run_training(TrainRequest(model_dir=model_dir, data_dir=data, training=FINE_TUNING, init_from=parent))
    config = json.loads((model_dir / "config.json").read_text())
    assert config["parent"]["model_dir"] == str(parent.resolve()) and config["parent"]["checkpoint"] == "best"
    assert config["model"] == json.loads((parent / "config.json").read_text())["model"]
    # A reversal model copies only sequences that read the same both ways; four epochs from its
    # weights copy most (measured: BLEU about 15 before, above 90 after).
    assert dev_bleu(model_dir, data) > before + 40


def test_what_cannot_be_fine_tuned_is_refused_in_one_line(tmp_path, copying):
    parent, _ = copying
    own = tmp_path / "own"
    prepare(PrepareOptions(data_dir=own, source=str(copy_corpus(tmp_path / "corpus")), vocab_size=290))
    completed = nmt(
        "train", "--init-from", parent, "--data-dir", own, "--model-dir", tmp_path / "m", before_tensorflow=True
    )
    assert_one_line_error(completed, "was not encoded with", f"nmt prepare --tokenizers-from {parent}")
    completed = nmt(
        "train", "--init-from", parent, "--units", "8", "--model-dir", tmp_path / "m", before_tensorflow=True
    )
    assert_one_line_error(completed, "--units 8 differs from the 32 of", "keeps its architecture and sizes")
    completed = nmt(
        "prepare", "--source", tmp_path / "corpus", "--data-dir", tmp_path / "d", "--tokenizers-from", parent,
        "--src-style", "raw", before_tensorflow=True,
    )  # fmt: skip
    assert_one_line_error(completed, "--src-style raw is not how")
