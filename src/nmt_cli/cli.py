"""The `nmt` command line: parse options, call the core, render results.

TensorFlow is imported lazily inside the commands that need it, so `nmt --help` stays fast.
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
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


# Model options, shared by `train` and `summary` (None: not given, so the default or saved value holds).
ARCH = typer.Option(None, help="seq2seq or attention (default: attention).")
UNITS = typer.Option(None, help="LSTM units (default: 256).")
EMBEDDING_DIM = typer.Option(None, help="Embedding size (default: 256).")
LAYERS = typer.Option(None, help="LSTM layers in encoder and decoder (default: 1).")
DROPOUT = typer.Option(None, help="Dropout rate (default: 0.2).")
BIDIRECTIONAL = typer.Option(None, "--bidirectional/--unidirectional", help="Bidirectional encoder (attention only).")
ATTENTION = typer.Option(None, help="luong or bahdanau (default: luong).")


@app.command()
def train(
    data_dir: Optional[Path] = typer.Option(None, help="Prepared data (default: data/prepared, or the model's own when resuming)."),
    model_dir: Path = typer.Option(Path("models/default"), help="Where checkpoints, config and history go."),
    config: Optional[Path] = typer.Option(None, help="TOML or YAML file of options; flags override it."),
    arch: Optional[str] = ARCH,
    units: Optional[int] = UNITS,
    embedding_dim: Optional[int] = EMBEDDING_DIM,
    layers: Optional[int] = LAYERS,
    dropout: Optional[float] = DROPOUT,
    bidirectional: Optional[bool] = BIDIRECTIONAL,
    attention: Optional[str] = ATTENTION,
    epochs: Optional[int] = typer.Option(None, help="Total epochs, counting those already done (default: 20)."),
    save_every: Optional[int] = typer.Option(None, help="Save a checkpoint every N epochs; the last is always saved (default: 5)."),
    batch_size: Optional[int] = typer.Option(None, help="Sentence pairs per batch (default: 64)."),
    learning_rate: Optional[float] = typer.Option(None, help="Adam learning rate (default: 0.001)."),
    clipnorm: Optional[float] = typer.Option(None, help="Clip each gradient to this norm; 0 turns clipping off (default: 1.0)."),
    label_smoothing: Optional[float] = typer.Option(None, help="Label smoothing (default: 0.1)."),
    seed: Optional[int] = typer.Option(None, help="Random seed: the same seed, data and options give the same losses (default: 1234)."),
    jit_compile: Optional[bool] = typer.Option(None, "--jit/--no-jit", help="Compile training steps with XLA; runs are then not bit-reproducible, and on CPU it can be slower: measure first (default: off)."),
    restart: bool = typer.Option(False, "--restart", help="Discard the model directory's checkpoints and start over."),
) -> None:
    """Train an encoder-decoder on prepared data, saving checkpoints as it goes."""
    given = {key: value for key, value in locals().items() if value is not None}
    from nmt_cli.config import read_options_file, split_options

    options = read_options_file(config) if config else {}
    options.update({key: value for key, value in given.items() if key not in ("config", "model_dir", "restart")})
    model_options, training_options = split_options(options)

    from nmt_cli import backend, console

    backend.load_tensorflow()
    from nmt_cli.training import TrainRequest
    from nmt_cli.training import train as run_training

    request = TrainRequest(
        model_dir=model_dir,
        data_dir=Path(options["data_dir"]) if "data_dir" in options else None,
        model=model_options,
        training=training_options,
        restart=restart,
    )
    result = run_training(request, console.RichReporter())
    console.say(console.training_summary(result, str(model_dir)))


@app.command()
def evaluate(
    model_dir: Path = typer.Option(Path("models/default"), help="The trained model directory."),
    data_dir: Optional[Path] = typer.Option(None, help="Prepared data (default: the one the model was trained on)."),
    split: Optional[str] = typer.Option(None, help="test or dev (default: test when prepared, else dev)."),
    checkpoint: str = typer.Option("best", help="best, last or epoch-N."),
    all_checkpoints: bool = typer.Option(False, "--all-checkpoints", help="Score every saved checkpoint and mark the best."),
    beam_size: int = typer.Option(5, help="Beam width; 1 is greedy search."),
    output: Optional[Path] = typer.Option(None, help="Hypotheses file (default: MODEL_DIR/eval/SPLIT-CHECKPOINT-beamK.txt)."),
    hypotheses: Optional[Path] = typer.Option(None, help="Score this hypothesis file instead of translating (needs --references)."),
    references: Optional[Path] = typer.Option(None, help="Reference file for --hypotheses."),
    tokenize: str = typer.Option("13a", help="sacreBLEU tokenizer for --hypotheses/--references scoring."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Translate a split and score it with sacreBLEU (BLEU and chrF)."""
    import json

    from nmt_cli import console

    if hypotheses or references:
        if not (hypotheses and references):
            raise UserError("--hypotheses and --references go together")
        from nmt_cli.evaluation import score_files

        scores = score_files(hypotheses, references, tokenize)
        if as_json:
            console.stdout.print_json(json.dumps(vars(scores)))
        else:
            console.say(console.scores_text(scores))
        return
    if beam_size < 1:
        raise UserError("--beam-size must be at least 1")
    if all_checkpoints and output is not None:
        raise UserError("--output names one hypotheses file; --all-checkpoints writes one per checkpoint into MODEL_DIR/eval")

    from nmt_cli import backend

    backend.load_tensorflow()
    from nmt_cli.evaluation import default_split
    from nmt_cli.evaluation import evaluate as run_evaluation
    from nmt_cli.translation import Translator
    from nmt_cli.workspace import Workspace

    choices = [f"epoch-{e}" for e in Workspace(model_dir).saved_epochs()] if all_checkpoints else [checkpoint]
    if not choices:
        Workspace(model_dir).resolve_checkpoint("last")  # says what is missing
    results = []
    for choice in choices:
        translator = Translator(model_dir, choice)
        data = data_dir or Path(translator.config.data_dir)
        results.append(run_evaluation(translator, data, split or default_split(data), beam_size, None if all_checkpoints else output))
    if as_json:
        payload = [r.to_dict() for r in results] if all_checkpoints else results[0].to_dict()
        console.stdout.print_json(json.dumps(payload))
    elif all_checkpoints:
        console.stdout.print(console.checkpoint_table(results))
        console.say(f"BLEU {results[0].scores.bleu_signature}")
    else:
        console.say(console.evaluation_text(results[0]))


@app.command()
def summary(
    model_dir: Optional[Path] = typer.Option(None, help="A trained model directory (default: models/default, unless model options are given)."),
    data_dir: Optional[Path] = typer.Option(None, help="Prepared data, for the vocabulary sizes of an untrained model."),
    arch: Optional[str] = ARCH,
    units: Optional[int] = UNITS,
    embedding_dim: Optional[int] = EMBEDDING_DIM,
    layers: Optional[int] = LAYERS,
    dropout: Optional[float] = DROPOUT,
    bidirectional: Optional[bool] = BIDIRECTIONAL,
    attention: Optional[str] = ATTENTION,
    source_vocab_size: Optional[int] = typer.Option(None, help="Source vocabulary size of an untrained model (instead of --data-dir)."),
    target_vocab_size: Optional[int] = typer.Option(None, help="Target vocabulary size of an untrained model (instead of --data-dir)."),
    plot: Optional[Path] = typer.Option(None, help="Draw the graphs to FILE.svg or FILE.png (needs pydot and graphviz)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Show a model's layers, shapes, parameter counts, vocabulary and training history."""
    given = {key: value for key, value in locals().items() if value is not None}
    from nmt_cli.config import split_options

    model_options, _ = split_options(given)
    untrained = bool(model_options) or (data_dir is not None and model_dir is None)
    if (untrained or data_dir is not None) and model_dir is not None:
        raise UserError(
            "give either --model-dir (a trained model) or model options and --data-dir (an untrained one), not both"
        )

    from nmt_cli import backend, console

    backend.load_tensorflow()
    from nmt_cli import summary as summaries
    from nmt_cli.config import ModelConfig

    if untrained:
        view, models = summaries.summarize_untrained(ModelConfig(**model_options), data_dir)
    else:
        view, models = summaries.summarize_model_dir(model_dir or Path("models/default"))
    if plot is not None:
        try:
            written = summaries.plot(models, plot)
            view["plots"] = [str(p) for p in written]
        except ImportError:
            console.stderr.print(
                "[yellow]warning:[/] --plot needs pydot and graphviz: pip install 'nmt-cli[plot]' and install "
                "graphviz (for example apt-get install graphviz); the summary follows without the drawing"
            )
    if as_json:
        import json

        console.stdout.print_json(json.dumps(view))
    else:
        console.print_summary(view)


@app.command()
def translate(
    texts: Optional[list[str]] = typer.Argument(None, help="Sentences to translate; none or - reads stdin."),
    model_dir: Path = typer.Option(Path("models/default"), help="The trained model directory."),
    checkpoint: str = typer.Option("best", help="best, last or epoch-N."),
    input_file: Optional[Path] = typer.Option(None, "--input", help="Translate this file, one sentence per line."),
    output_file: Optional[Path] = typer.Option(None, "--output", help="Write translations here instead of stdout."),
    beam_size: int = typer.Option(5, help="Beam width; 1 is greedy search."),
    n_best: int = typer.Option(1, help="Print the N best translations of each input, with scores."),
    normalize: bool = typer.Option(True, "--normalize/--no-normalize", help="Bring raw input to the training corpus' form."),
    tokenized: bool = typer.Option(False, "--tokenized", help="Keep the corpus' word spacing in the output."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line: source, translation, score."),
) -> None:
    """Translate text given as arguments, a file, or lines on stdin."""
    if beam_size < 1 or n_best < 1:
        raise UserError("--beam-size and --n-best must be at least 1")
    if n_best > beam_size:
        raise UserError(f"--n-best {n_best} needs --beam-size {n_best} or more")
    if texts and input_file:
        raise UserError("give sentences as arguments or --input FILE, not both")
    if input_file is not None and not input_file.is_file():
        raise UserError(f"--input {input_file} is not a file")
    if texts and "-" in texts and texts != ["-"]:
        raise UserError("- (read stdin) cannot be mixed with sentences given as arguments")
    if input_file is not None and output_file is not None and input_file.resolve() == output_file.resolve():
        raise UserError("--output must not be the --input file: it would be overwritten while being read")

    from nmt_cli import backend, console

    backend.load_tensorflow()
    from nmt_cli.translation import Translator

    translator = Translator(model_dir, checkpoint)

    def warn_long(line: str, pieces: int, trained: int) -> None:
        excerpt = line if len(line) <= 40 else line[:37] + "..."
        console.stderr.print(
            f"warning: {excerpt!r} has {pieces} pieces, more than any training sentence ({trained}); "
            "it is translated whole, but quality may suffer",
            markup=False,
            highlight=False,
        )

    reading_stdin = input_file is None and not (texts and texts != ["-"])
    with ExitStack() as stack:
        if input_file is not None:
            lines = _utf8_lines(stack.enter_context(open(input_file, "rb")), str(input_file))
        elif not reading_stdin:
            lines = iter(texts)
        else:
            lines = _utf8_lines(sys.stdin.buffer, "stdin")
        results = translator.translate(
            lines,
            beam_size=beam_size,
            n_best=n_best,
            normalize_input=normalize,
            tokenized_output=tokenized,
            on_long_input=warn_long,
            # Someone typing wants each answer at once; a pipe is translated in large batches.
            chunk_lines=1 if reading_stdin and sys.stdin.isatty() else None,
        )
        if output_file is None:
            for result in results:
                sys.stdout.write(console.translation_lines(result, n_best, as_json))
                sys.stdout.flush()
        else:
            _write_atomic_lines(output_file, (console.translation_lines(r, n_best, as_json) for r in results))


def _utf8_lines(stream, name: str):
    """Lines split on \\n only (as `nmt prepare` reads files), without their line ends."""
    for number, raw in enumerate(stream, 1):
        try:
            yield raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise UserError(f"{name} line {number} is not valid UTF-8; convert the input to UTF-8") from None


def _write_atomic_lines(path: Path, chunks) -> None:
    """Write to a temporary name beside `path` and rename when complete."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        with open(partial, "w", encoding="utf-8") as out:
            for chunk in chunks:
                out.write(chunk)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def main() -> None:
    code: int | str | None = 0
    try:
        app()
    except SystemExit as done:
        code = done.code
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        code = error.exit_code
    except OSError as error:
        # A file the system refused (permissions, disk full, a missing folder): the user can fix it.
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        code = 2
    _leave(code)


def _leave(code: int | str | None) -> None:
    """Exit; once TensorFlow is loaded, skip interpreter teardown.

    Tearing down an interpreter that holds TensorFlow takes about 0.6 s here, a fifth of a
    one-sentence `nmt translate`. Every file we wrote is closed by now, so only the standard
    streams need flushing.
    """
    if "tensorflow" not in sys.modules:
        sys.exit(code)
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
