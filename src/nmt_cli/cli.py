"""The `nmt` command line: parse options, call the core, render results.

TensorFlow is imported lazily inside the commands that need it, so `nmt --help` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from nmt_cli import __version__
from nmt_cli.errors import UserError

app = typer.Typer(
    help="Neural machine translation from the command line, built on the Keras functional API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nmt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    pass


@app.command()
def prepare(
    source: Optional[str] = typer.Option(
        None, help="Folder or base URL holding {train,dev,test}.{SRC,TGT}; default: download small_parallel_enja."
    ),
    data_dir: Path = typer.Option(Path("data/prepared"), help="Where the prepared data goes."),
    src_lang: str = typer.Option("en", help="Source language: the source files' suffix."),
    tgt_lang: str = typer.Option("ja", help="Target language: the target files' suffix."),
    vocab_size: int = typer.Option(8000, help="Upper bound of each language's SentencePiece vocabulary."),
    max_length: int = typer.Option(80, help="Drop training pairs with more pieces than this on either side."),
    max_pairs: Optional[int] = typer.Option(None, help="Keep only the first N training pairs."),
    src_style: Optional[str] = typer.Option(
        None, help="How the source text is written: raw, en-words, en-words-lower, ja-words (default: raw for your own corpus)."
    ),
    tgt_style: Optional[str] = typer.Option(None, help="How the target text is written (as --src-style)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when the data directory is up to date."),
) -> None:
    """Download or read a parallel corpus, train tokenizers and encode every split."""
    from nmt_cli import console
    from nmt_cli.prepare import PrepareOptions
    from nmt_cli.prepare import prepare as run_prepare

    options = PrepareOptions(
        data_dir=data_dir,
        source=source,
        src_lang=src_lang,
        tgt_lang=tgt_lang,
        vocab_size=vocab_size,
        max_length=max_length,
        max_pairs=max_pairs,
        src_style=src_style,
        tgt_style=tgt_style,
        force=force,
    )
    result = run_prepare(options, console.RichReporter())
    console.stdout.print(console.prepare_summary(result.manifest, result.rebuilt, str(data_dir)))


def _not_implemented(command: str) -> None:
    raise UserError(f"`nmt {command}` is not implemented yet")


@app.command()
def train() -> None:
    """Train an encoder-decoder on prepared data, saving checkpoints as it goes."""
    _not_implemented("train")


@app.command()
def evaluate() -> None:
    """Translate a split and score it with sacreBLEU (BLEU and chrF)."""
    _not_implemented("evaluate")


@app.command()
def summary() -> None:
    """Show a model's layers, shapes, parameter counts, vocabulary and training history."""
    _not_implemented("summary")


@app.command()
def translate() -> None:
    """Translate text given as arguments, a file, or lines on stdin."""
    _not_implemented("translate")


def main() -> None:
    try:
        app()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
