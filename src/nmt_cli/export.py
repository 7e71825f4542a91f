"""A Keras Transformer checkpoint as a CTranslate2 model directory, stamped with where it came from.

    MODEL_DIR/ctranslate2/model.bin, config.json, {source,target}_vocabulary.json   CTranslate2's own
    MODEL_DIR/ctranslate2/spm.SRC.model, spm.TGT.model, data-manifest.json           the tokenizers
    MODEL_DIR/ctranslate2/nmt-export.json   the stamp: which checkpoint (name and SHA-256), quantization

Our Transformer is CTranslate2's `TransformerSpec` almost one to one: pre-norm, a fused
query/key/value projection in self-attention, a query and a fused key/value projection in
attention over the encoder, ReLU feed-forward blocks, final layer norms, embeddings scaled by
sqrt(d). The spec is filled from the Keras layers by name (`models/transformer.py` names them),
and the sinusoidal position table is computed by the model's own function and written into the
spec, so no formula has to agree. The pieces of each SentencePiece model, in id order, are the
vocabularies; `<unk>`, `<s>` and `</s>` are the pieces of the fixed special ids.

The folder is built beside its place and swapped in whole, like every file here. Reading the
stamp (which `nmt translate` does to choose an engine) needs neither TensorFlow nor CTranslate2.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nmt_cli import __version__, files
from nmt_cli.architectures import ARCHITECTURES
from nmt_cli.checkpoints import epoch_held_by
from nmt_cli.config import DEFAULT_QUANTIZATION
from nmt_cli.datadir import Manifest
from nmt_cli.engines import LENGTH_RULE
from nmt_cli.errors import UserError
from nmt_cli.tokenizer import BOS_ID, EOS_ID, UNK_ID, Tokenizer
from nmt_cli.translation import longest_part

if TYPE_CHECKING:
    import keras

    from nmt_cli.config import ModelConfig
    from nmt_cli.workspace import Workspace

STAMP = "nmt-export.json"
LAYER_NORM_EPSILON = 1e-6  # models/transformer.py's LayerNormalization


@dataclass(frozen=True)
class ExportStamp:
    """Which checkpoint an export holds: its name then, and the file's digest, size and time."""

    checkpoint: str  # best, or epoch-N
    epoch: int | None  # the epoch whose weights these are, where known
    sha256: str
    bytes: int
    mtime_ns: int
    quantization: str
    tool_version: str = __version__
    # The decoder reports the last layer's attention with its heads averaged, as the Keras one
    # does; exports made before say nothing, and report one head.
    averaged_attention: bool = False

    def holds(self, checkpoint: Path) -> bool:
        """Whether the export was made from this very file. The digest decides; a file whose size
        and modification time are the stamp's is not read again."""
        try:
            stat = os.stat(checkpoint)
        except OSError:
            return False
        if (stat.st_size, stat.st_mtime_ns) == (self.bytes, self.mtime_ns):
            return True
        return stat.st_size == self.bytes and files.sha256(checkpoint) == self.sha256


def read_stamp(export_dir: Path) -> ExportStamp | None:
    """The stamp of an export, or None where there is none (or it is not one we wrote)."""
    try:
        raw = json.loads((Path(export_dir) / STAMP).read_text(encoding="utf-8"))
        return ExportStamp(**raw)
    except (OSError, ValueError, TypeError):
        return None


def export_size(export_dir: Path) -> int:
    return sum(path.stat().st_size for path in Path(export_dir).iterdir() if path.is_file())


def check_exportable(arch: str) -> None:
    if not ARCHITECTURES[arch].exportable:
        raise UserError(
            f"--arch {arch} cannot be exported: CTranslate2 runs Transformer models, and has no LSTM decoder; "
            "translate it with the Keras engine (the default for it)"
        )


def export(
    training_model: keras.Model,
    config: ModelConfig,
    workspace: Workspace,
    checkpoint: Path,
    name: str,
    epoch: int | None,
    quantization: str = DEFAULT_QUANTIZATION,
    output: Path | None = None,
    checkpoint_sha256: str | None = None,
) -> Path:
    """Write the CTranslate2 model of `training_model` (the weights of the file `checkpoint`,
    which `--checkpoint name` loads) to `output` (default: the model directory's export)."""
    from ctranslate2.converters import Converter

    check_exportable(config.arch)
    output = Path(output or workspace.export)
    output.parent.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.read(workspace.data_manifest)
    tokenizers = {lang: workspace.tokenizer(lang) for lang in (manifest.source_lang, manifest.target_lang)}
    source, target = (Tokenizer.load(path) for path in tokenizers.values())
    spec = transformer_spec(training_model, config, source, target, max_positions(manifest))

    class _FromKeras(Converter):
        def _load(self):
            return spec

    stat = os.stat(checkpoint)
    stamp = ExportStamp(
        checkpoint=name,
        epoch=epoch,
        sha256=checkpoint_sha256 or files.sha256(checkpoint),
        bytes=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        quantization=quantization,
        averaged_attention=True,
    )
    files.remove_folder_leftovers(output, STAMP)
    staging = files.staging_folder(output)
    try:
        built = staging / "out"
        _FromKeras().convert(str(built), quantization=quantization)
        for path in (*tokenizers.values(), workspace.data_manifest):
            shutil.copyfile(path, built / path.name)
        (built / STAMP).write_text(json.dumps(asdict(stamp), indent=2) + "\n", encoding="utf-8")
        files.swap_folder_into_place(built, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output


def transformer_spec(model: keras.Model, config: ModelConfig, source: Tokenizer, target: Tokenizer, positions: int):
    """CTranslate2's `TransformerSpec` holding the weights of our Keras Transformer, by layer name."""
    import numpy as np
    from ctranslate2.specs import common_spec, transformer_spec

    from nmt_cli.models.transformer import positional_encoding

    def weights(name: str) -> list[np.ndarray]:
        return [np.asarray(w, dtype=np.float32) for w in model.get_layer(name).get_weights()]

    def linear(spec, name: str) -> None:
        kernel, bias = weights(name)
        spec.weight, spec.bias = kernel.T.copy(), bias  # Keras keeps (in, out); CTranslate2 (out, in)

    def norm(spec, name: str) -> None:
        spec.gamma, spec.beta = weights(name)

    def feed_forward(spec, block: str) -> None:
        norm(spec.layer_norm, f"{block}_ffn_norm")
        linear(spec.linear_0, f"{block}_ffn_inner")
        linear(spec.linear_1, f"{block}_ffn_outer")

    def self_attention(spec, block: str) -> None:
        norm(spec.layer_norm, f"{block}_self_attention_norm")
        linear(spec.linear[0], f"{block}_self_attention_qkv")  # queries, keys, values: as CTranslate2 fuses them
        linear(spec.linear[1], f"{block}_self_attention_output")

    spec = transformer_spec.TransformerSpec.from_config(
        (config.layers, config.layers),
        config.heads,
        pre_norm=True,
        activation=common_spec.Activation.RELU,
        # Attention (`return_attention`) of the last layer (alignment_layer -1, the default), all
        # heads averaged (0; CTranslate2's default, 1, reports the first head alone).
        alignment_heads=0,
    )
    spec.config.layer_norm_epsilon = LAYER_NORM_EPSILON
    spec.config.unk_token, spec.config.bos_token, spec.config.eos_token = (
        target.piece(UNK_ID),
        target.piece(BOS_ID),
        target.piece(EOS_ID),
    )
    spec.config.decoder_start_token = target.piece(BOS_ID)
    table = np.asarray(positional_encoding(np.arange(positions)[None, :], config.units))[0]

    encoder, decoder = spec.encoder, spec.decoder
    encoder.embeddings[0].weight = weights("encoder_embedding")[0]
    encoder.position_encodings.encodings = table
    for i, layer in enumerate(encoder.layer, 1):
        self_attention(layer.self_attention, f"encoder_layer_{i}")
        feed_forward(layer.ffn, f"encoder_layer_{i}")
    norm(encoder.layer_norm, "encoder_norm")

    decoder.embeddings.weight = weights("decoder_embedding")[0]
    decoder.position_encodings.encodings = table
    for i, layer in enumerate(decoder.layer, 1):
        block = f"decoder_layer_{i}"
        self_attention(layer.self_attention, block)
        norm(layer.attention.layer_norm, f"{block}_cross_attention_norm")
        linear(layer.attention.linear[0], f"{block}_cross_attention_query")
        linear(layer.attention.linear[1], f"{block}_cross_attention_kv")  # keys, values
        linear(layer.attention.linear[2], f"{block}_cross_attention_output")
        feed_forward(layer.ffn, block)
    norm(decoder.layer_norm, "decoder_norm")
    if config.tie_embeddings:
        decoder.projection.weight = decoder.embeddings.weight
        decoder.projection.bias = np.zeros(config.target_vocab_size, np.float32)
    else:
        linear(decoder.projection, "output_projection")

    spec.register_source_vocabulary(source.vocabulary())
    spec.register_target_vocabulary(target.vocabulary())
    return spec


def max_positions(manifest: Manifest) -> int:
    """Rows of the position table: enough for the longest output of the longest source part."""
    return LENGTH_RULE.steps(longest_part(manifest.longest_training_source())) + 1


def export_checkpoint(
    workspace: Workspace, config: ModelConfig, name: str, quantization: str, output: Path | None = None
) -> tuple[Path, ExportStamp]:
    """`nmt export`: load the checkpoint `--checkpoint name` names and export it."""
    from nmt_cli.models import load_checkpoint

    checkpoint = workspace.resolve_checkpoint(name)
    epoch = epoch_held_by(workspace, checkpoint)
    training = load_checkpoint(checkpoint, config).training
    written = export(training, config, workspace, checkpoint, name, epoch, quantization, output)
    return written, read_stamp(written)
