"""`nmt summary`: what a model is made of, what it was trained on and how training went.

The architecture view is built from the config alone (no weights are loaded), so it is the
same before and after training and takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras

from nmt_cli.config import ModelConfig, RunConfig, load_config
from nmt_cli.errors import UserError
from nmt_cli.models import Seq2SeqModels, build_models
from nmt_cli.prepare import load_manifest, read_manifest
from nmt_cli.workspace import Workspace, read_history


def _shape(tensor) -> list:
    return list(tensor.shape)


def layer_rows(model: keras.Model) -> list[dict]:
    """Name, type, output shape, parameters and inputs of every layer, for this graph only.

    The three models share layer objects, so a layer has call nodes in several graphs; like
    Keras' own `model.summary`, keep the nodes that belong to this model.
    """
    graph_nodes = {id(node) for nodes in model._nodes_by_depth.values() for node in nodes}
    rows = []
    for layer in model.layers:
        nodes = [node for node in layer._inbound_nodes if id(node) in graph_nodes]
        shapes = [[_shape(t) for t in node.output_tensors] for node in nodes]
        # Only layers: the mask operations between them (`not_equal_N`) are plumbing, not parts.
        connected = sorted(
            {
                t._keras_history.operation.name
                for node in nodes
                for t in node.input_tensors
                if isinstance(getattr(t, "_keras_history", (None,))[0], keras.layers.Layer)
            }
        )
        flat = [s for node_shapes in shapes for s in node_shapes]
        rows.append(
            {
                "name": layer.name,
                "type": layer.__class__.__name__,
                "output_shape": flat[0] if len(flat) == 1 else flat,
                "params": layer.count_params() if layer.built else 0,
                "connected_to": connected,
            }
        )
    return rows


def model_view(model: keras.Model) -> dict:
    trainable = sum(int(keras.ops.size(w)) for w in model.trainable_weights)
    non_trainable = sum(int(keras.ops.size(w)) for w in model.non_trainable_weights)
    return {
        "name": model.name,
        "layers": layer_rows(model),
        "trainable_params": trainable,
        "non_trainable_params": non_trainable,
        "total_params": trainable + non_trainable,
    }


def architecture(models: Seq2SeqModels) -> dict:
    return {name: model_view(getattr(models, name)) for name in ("training", "encoder", "decoder")}


def _data_view(manifest: dict) -> dict:
    langs = manifest["languages"]
    return {
        "languages": langs,
        "vocabulary": {side: manifest["vocabulary"][lang]["actual"] for side, lang in langs.items()},
        "special_ids": manifest["special_ids"],
        "splits": manifest["splits"],
        "token_lengths": manifest["token_lengths"],
    }


def summarize_model_dir(model_dir: Path) -> tuple[dict, Seq2SeqModels]:
    workspace = Workspace(model_dir)
    if not workspace.root.is_dir():
        raise UserError(f"model directory {model_dir} does not exist; train one, or give model options to see an untrained model")
    config = load_config(workspace.config)
    models = build_models(config.model)
    manifest = read_manifest(workspace.data_manifest)
    history = read_history(workspace.history)
    best = min(history, key=lambda row: row["val_loss"])["epoch"] if history else None
    checkpoints = sorted(workspace.checkpoints.glob("*.keras")) if workspace.checkpoints.is_dir() else []
    view = {
        "model_dir": str(model_dir),
        "config": json.loads(config.to_json()),
        "models": architecture(models),
        "data": _data_view(manifest),
        "history": history,
        "best_epoch": int(best) if best is not None else None,
        "checkpoints": [{"name": p.name, "bytes": p.stat().st_size} for p in checkpoints],
    }
    return view, models


def summarize_untrained(model: ModelConfig, data_dir: Path | None) -> tuple[dict, Seq2SeqModels]:
    """The architecture of a model not yet trained; vocabulary sizes from `data_dir` or `model`."""
    data = None
    if data_dir is not None:
        manifest = load_manifest(data_dir)
        data = _data_view(manifest)
        model.source_vocab_size = model.source_vocab_size or data["vocabulary"]["source"]
        model.target_vocab_size = model.target_vocab_size or data["vocabulary"]["target"]
    if not (model.source_vocab_size and model.target_vocab_size):
        raise UserError("give --data-dir, or both --source-vocab-size and --target-vocab-size, to size the vocabularies")
    models = build_models(model)
    view = {
        "model_dir": None,
        "config": json.loads(RunConfig(model=model).to_json())["model"],
        "models": architecture(models),
        "data": data,
        "history": [],
        "best_epoch": None,
        "checkpoints": [],
    }
    return view, models


def plot(models: Seq2SeqModels, path: Path) -> list[Path]:
    """Draw the three graphs: PATH for the training model, PATH-encoder / PATH-decoder beside it."""
    path = Path(path)
    if path.suffix not in (".svg", ".png"):
        raise UserError(f"--plot {path} must end in .svg or .png")
    written = []
    for name in ("training", "encoder", "decoder"):
        target = path if name == "training" else path.with_name(f"{path.stem}-{name}{path.suffix}")
        keras.utils.plot_model(getattr(models, name), to_file=str(target), show_shapes=True, show_layer_names=True)
        written.append(target)
    return written
