"""`nmt summary`: what a model is made of, what it was trained on and how training went.

The architecture view is built from the config alone (no weights are loaded), so it is the
same before and after training and takes seconds.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from nmt_cli import files
from nmt_cli.checkpoints import BestStamp
from nmt_cli.config import DEFAULT_MODEL_DIR, ModelConfig, RunConfig, SummaryOptions
from nmt_cli.datadir import DataDir, Manifest
from nmt_cli.errors import UserError
from nmt_cli.export import export_size, read_stamp
from nmt_cli.history import read_history
from nmt_cli.migration import open_config
from nmt_cli.models import build_models
from nmt_cli.workspace import Workspace

if TYPE_CHECKING:  # Keras loads only once the user's options and files are known to be good
    import keras

    from nmt_cli.models.base import Seq2SeqModels


def _shape(tensor) -> list:
    return list(tensor.shape)


def layer_rows(model: keras.Model) -> list[dict]:
    """Name, type, output shape, parameters and inputs of every layer, for this graph only.

    The three models share layer objects, so a layer has call nodes in several graphs; like
    Keras' own `model.summary`, keep the nodes that belong to this model.
    """
    import keras

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
    import keras

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


def _data_view(manifest: Manifest) -> dict:
    langs = manifest.languages
    return {
        "languages": langs,
        "vocabulary": {side: manifest.vocab_size(lang) for side, lang in langs.items()},
        "special_ids": manifest.special_ids,
        "splits": manifest.splits,
        "token_lengths": manifest.token_lengths,
    }


def is_untrained(options: SummaryOptions, model_options: dict) -> bool:
    """Whether the user asks about an idea (model options) rather than a trained model directory."""
    untrained = bool(model_options) or options.source_vocab_size is not None or options.target_vocab_size is not None
    untrained = untrained or (options.data_dir is not None and options.model_dir is None)
    if (untrained or options.data_dir is not None) and options.model_dir is not None:
        raise UserError(
            "give either --model-dir (a trained model) or model options and --data-dir (an untrained one), not both"
        )
    return untrained


def check_sources(options: SummaryOptions, model_options: dict) -> None:
    """The files a summary reads exist and parse, and a plot can be drawn: before TensorFlow loads."""
    if options.plot is not None:
        check_plot(options.plot)
    if is_untrained(options, model_options):
        ModelConfig(**model_options, source_vocab_size=1, target_vocab_size=1).validate(given=set(model_options))
        if options.data_dir is not None:
            DataDir(options.data_dir).manifest()
        return
    workspace = Workspace(options.model_dir or DEFAULT_MODEL_DIR)
    if not workspace.root.is_dir():
        raise UserError(
            f"model directory {workspace.root} does not exist; "
            "train one, or give model options to see an untrained model"
        )
    open_config(workspace)
    Manifest.read(workspace.data_manifest)


def summarize(options: SummaryOptions, model_options: dict) -> tuple[dict, Seq2SeqModels]:
    if is_untrained(options, model_options):
        config = ModelConfig(
            **model_options,
            source_vocab_size=options.source_vocab_size or 0,
            target_vocab_size=options.target_vocab_size or 0,
        )
        return summarize_untrained(config, options.data_dir, given=set(model_options))
    return summarize_model_dir(options.model_dir or DEFAULT_MODEL_DIR)


def summarize_model_dir(model_dir: Path) -> tuple[dict, Seq2SeqModels]:
    workspace = Workspace(model_dir)
    if not workspace.root.is_dir():
        raise UserError(
            f"model directory {model_dir} does not exist; train one, or give model options to see an untrained model"
        )
    config = open_config(workspace)
    models = build_models(config.model)
    manifest = Manifest.read(workspace.data_manifest)
    history = read_history(workspace.history)
    checkpoints = sorted(workspace.checkpoints.glob("*.keras")) if workspace.checkpoints.is_dir() else []
    view = {
        "model_dir": str(model_dir),
        "config": json.loads(config.to_json()),
        "models": architecture(models),
        "data": _data_view(manifest),
        "history": [asdict(row) for row in history],
        "best_epoch": best.epoch if (best := BestStamp.read(workspace)) is not None else None,
        "checkpoints": [{"name": p.name, "bytes": p.stat().st_size} for p in checkpoints],
        "export": _export_view(workspace),
    }
    return view, models


def _export_view(workspace: Workspace) -> dict | None:
    """The CTranslate2 export: what it holds, and whether that checkpoint is still as exported."""
    stamp = read_stamp(workspace.export)
    if stamp is None:
        return None
    try:
        current = stamp.holds(workspace.resolve_checkpoint(stamp.checkpoint))
    except UserError:
        current = False
    return {
        "path": str(workspace.export),
        "checkpoint": stamp.checkpoint,
        "epoch": stamp.epoch,
        "quantization": stamp.quantization,
        "bytes": export_size(workspace.export),
        "current": current,
    }


def summarize_untrained(
    model: ModelConfig, data_dir: Path | None, given: set[str] | None = None
) -> tuple[dict, Seq2SeqModels]:
    """The architecture of a model not yet trained; vocabulary sizes from `data_dir` or `model`."""
    data = None
    if data_dir is not None:
        data = _data_view(DataDir(data_dir).manifest())
        model.source_vocab_size = model.source_vocab_size or data["vocabulary"]["source"]
        model.target_vocab_size = model.target_vocab_size or data["vocabulary"]["target"]
    if not (model.source_vocab_size and model.target_vocab_size):
        raise UserError(
            "give --data-dir, or both --source-vocab-size and --target-vocab-size, to size the vocabularies"
        )
    model.validate(given=given)
    models = build_models(model)
    view = {
        "model_dir": None,
        "config": json.loads(RunConfig(model=model).to_json())["model"],
        "models": architecture(models),
        "data": data,
        "history": [],
        "best_epoch": None,
        "checkpoints": [],
        "export": None,
    }
    return view, models


def check_plot(path: Path) -> None:
    """What `--plot` needs, checked before anything is built: a known format, pydot and graphviz."""
    if Path(path).suffix not in (".svg", ".png"):
        raise UserError(f"--plot {path} must end in .svg or .png")
    if importlib.util.find_spec("pydot") is None:
        raise UserError("--plot needs pydot, which is not installed: pip install 'nmt-cli[plot]'")
    if shutil.which("dot") is None:
        raise UserError(
            "--plot needs graphviz, whose `dot` program is not on PATH: "
            "install graphviz (for example apt-get install graphviz)"
        )


def plot(models: Seq2SeqModels, path: Path) -> list[Path]:
    """Draw the three graphs: PATH for the training model, PATH-encoder / PATH-decoder beside it."""
    import keras

    path = Path(path)
    check_plot(path)
    written = []
    for name in ("training", "encoder", "decoder"):
        target = path if name == "training" else path.with_name(f"{path.stem}-{name}{path.suffix}")
        model = getattr(models, name)
        files.write_with(
            lambda partial, model=model: keras.utils.plot_model(
                model, to_file=str(partial), show_shapes=True, show_layer_names=True
            ),
            target,
        )
        written.append(target)
    return written
