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

    def check_attention(self) -> None:
        """Refuse, before any engine loads, attention this model cannot show: an architecture
        without it, or a CTranslate2 export made before exports kept it."""
        arch = self.config.model.arch
        if not ARCHITECTURES[arch].attends:
            raise UserError(
                f"--arch {arch} has no attention to show: its decoder reads only the encoder's final state "
                "(--arch attention and transformer have it)"
            )
        if self.engine_name == "ctranslate2" and not self.export.averaged_attention:
            raise UserError(
                f"the CTranslate2 export in {self.workspace.export} was made before exports kept attention; "
                f"export again with `{_export_command(self.workspace, self.checkpoint_name)}`, or use --engine keras"
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
    again = _export_command(workspace, name)
    if export is None:
        raise UserError(f"{workspace.root} has no CTranslate2 export; make one with `{again}`, or use --engine keras")
    raise UserError(
        f"the CTranslate2 export in {workspace.export} holds {export.checkpoint} as it was then, not {name} as it "
        f"is now; export again with `{again}`, or use --engine keras"
    )


def _export_command(workspace: Workspace, checkpoint_name: str) -> str:
    """The `nmt export` that exports the checkpoint `--checkpoint checkpoint_name` names."""
    checkpoint = "" if checkpoint_name == "best" else f" --checkpoint {checkpoint_name}"
    return f"nmt export --model-dir {workspace.root}{checkpoint}"
