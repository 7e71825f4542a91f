"""A trained model directory, opened once per command.

Opening reads `config.json`, the data manifest and the tokenizers once, finds the checkpoint the
user named, and chooses the engine that will translate with it; everything that uses the model
(`Translator`, evaluation) takes what it needs from here. Nothing here loads TensorFlow, so a
command answers a wrong directory, checkpoint or engine at once, and the CTranslate2 engine
never loads it at all.

The engine (`--engine`):

    keras        always possible
    ctranslate2  a Transformer whose export (`MODEL_DIR/ctranslate2/`) holds the checkpoint asked for
    auto         ctranslate2 where it is possible, else keras
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from nmt_cli.architectures import ARCHITECTURES
from nmt_cli.config import RunConfig
from nmt_cli.datadir import Manifest
from nmt_cli.errors import UserError
from nmt_cli.export import ExportStamp, read_stamp
from nmt_cli.migration import open_config
from nmt_cli.tokenizer import Tokenizer
from nmt_cli.workspace import Workspace


@dataclass(frozen=True)
class TrainedModel:
    workspace: Workspace
    checkpoint_name: str  # as the user gave it: best, last or epoch-N
    checkpoint: Path  # the file that names
    config: RunConfig
    manifest: Manifest
    source_tokenizer: Tokenizer
    target_tokenizer: Tokenizer
    requested_engine: str  # auto, ctranslate2 or keras
    engine_name: str  # the engine chosen: ctranslate2 or keras
    export: ExportStamp | None  # the model directory's export, whatever it holds

    @classmethod
    def open(cls, model_dir: Path, checkpoint: str = "best", engine: str = "auto") -> TrainedModel:
        workspace = Workspace(model_dir)
        path = workspace.resolve_checkpoint(checkpoint)
        config = open_config(workspace)
        manifest = workspace.read_manifest(config)
        export = read_stamp(workspace.export)
        return cls(
            workspace=workspace,
            checkpoint_name=checkpoint,
            checkpoint=path,
            config=config,
            manifest=manifest,
            source_tokenizer=Tokenizer.load(workspace.tokenizer(manifest.source_lang)),
            target_tokenizer=Tokenizer.load(workspace.tokenizer(manifest.target_lang)),
            requested_engine=engine,
            engine_name=_choose_engine(engine, workspace, config.model.arch, checkpoint, path, export),
            export=export,
        )

    def with_checkpoint(self, checkpoint: str) -> TrainedModel:
        """The same model directory at another checkpoint (the engine stays the one chosen)."""
        return replace(self, checkpoint_name=checkpoint, checkpoint=self.workspace.resolve_checkpoint(checkpoint))


def _choose_engine(
    requested: str, workspace: Workspace, arch: str, name: str, checkpoint: Path, export: ExportStamp | None
) -> str:
    if requested == "keras":
        return "keras"
    exportable = ARCHITECTURES[arch].exportable
    exported = exportable and export is not None and export.holds(checkpoint)
    if requested == "auto" or exported:
        return "ctranslate2" if exported else "keras"
    if not exportable:
        raise UserError(
            f"--engine ctranslate2 runs Transformer models, and {workspace.root} is --arch {arch} "
            "(CTranslate2 has no LSTM decoder): use --engine keras"
        )
    again = f"nmt export --model-dir {workspace.root}" + ("" if name == "best" else f" --checkpoint {name}")
    if export is None:
        raise UserError(f"{workspace.root} has no CTranslate2 export; make one with `{again}`, or use --engine keras")
    raise UserError(
        f"the CTranslate2 export in {workspace.export} holds {export.checkpoint} as it was then, not {name} as it "
        f"is now; export again with `{again}`, or use --engine keras"
    )
