"""The `nmt` command line: parse options, call the core, render results.

Every option comes from its definition in `config.py`: the flags, their help and defaults are
built from those dataclass fields. Each command checks the user's paths and options first and
imports TensorFlow only after, so `nmt --help` and a user's mistakes are answered at once.
"""

from __future__ import annotations

import inspect
import io
import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from dataclasses import MISSING, Field, fields
from itertools import zip_longest
from pathlib import Path
from typing import Any, Literal, get_type_hints

import typer
from typer._click.exceptions import NoArgsIsHelpError, NoSuchOption, UsageError
from typer.core import TyperCommand, TyperGroup

from nmt_cli import __version__
from nmt_cli.config import (
    MODEL,
    MODEL_OPTIONS,
    PANELS,
    EvaluateOptions,
    ExportOptions,
    ModelConfig,
    PrepareOptions,
    ScoreOptions,
    ServeOptions,
    SummaryOptions,
    TrainingConfig,
    TrainOptions,
    TranslateOptions,
    cli_name,
    rules_of,
    sampling_of,
)
from nmt_cli.errors import UserError


class _FlagHelp:
    """`--help` is a flag: show it without a value type (Typer 0.29 shows `<bool>`)."""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class _Command(_FlagHelp, TyperCommand):
    pass


class _Group(_FlagHelp, TyperGroup):
    pass


app = typer.Typer(
    help="Neural machine translation from the command line, built on the Keras functional API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=_Group,
)


# ------------------------------------------------------------------------------------------------
# Options from their definitions
# ------------------------------------------------------------------------------------------------


def _help(item: Field) -> str:
    rules = rules_of(item)
    text = rules.help
    if rules.archs:
        text += f" (--arch {' or '.join(rules.archs)})"
    if rules.default_text is not None:
        shown = rules.default_text
    elif rules.by_arch:
        shown = rules.describe_by_arch()
    elif item.default is None:
        return text
    elif isinstance(item.default, bool):
        if not rules.flag or "/" not in rules.flag:
            return text  # an on/off flag is off unless given
        on, off = rules.flag.split("/")
        shown = on if item.default else off
    else:
        shown = str(item.default)
    # Square brackets would be read as rich markup in --help, so the default goes in parentheses.
    return f"{text} (default: {shown})"


def _parameters(
    cls: type, *, only: tuple[str, ...] | None = None, track_given: bool = False, panel: str | None = None
) -> list[inspect.Parameter]:
    """One command-line option per field of `cls`, listed by --help in its panel (else `panel`).
    With `track_given`, an option the user did not give arrives as None, so a saved or file value
    can take its place."""
    hints = get_type_hints(cls)
    parameters = []
    for item in fields(cls):
        if only is not None and item.name not in only:
            continue
        rules = rules_of(item)
        is_flag = hints[item.name] is bool
        declarations = [rules.flag or cli_name(item.name)]
        default = None if track_given else (item.default if item.default is not MISSING else None)
        kind = Literal[rules.choices] if rules.choices else hints[item.name]  # --help and completion offer them
        annotation = kind | None if track_given or default is None else kind
        option = typer.Option(
            default,
            *declarations,
            help=_help(item),
            show_default=False,
            metavar="" if is_flag else None,
            rich_help_panel=rules.panel or panel,
        )
        parameters.append(
            inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
        )
    return parameters


def _with_options(*groups: list[inspect.Parameter]) -> Callable:
    """Give a `def command(**values)` the parameters Typer reads its options from."""

    def decorate(function: Callable) -> Callable:
        parameters = [p for group in groups for p in group]
        # --help lists the panels in the order of their first options: the general ones first.
        parameters.sort(key=lambda p: (PANELS.index(p.default.rich_help_panel) + 1) if p.default.rich_help_panel else 0)
        function.__signature__ = inspect.Signature(parameters)
        return function

    return decorate


def _options_from(cls: type, values: dict[str, Any]) -> Any:
    return cls(**{item.name: values[item.name] for item in fields(cls) if item.name in values})


def _given_by_user(values: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: values[name] for name in names if values.get(name) is not None}


def _load_tensorflow() -> None:
    from nmt_cli import backend

    backend.load_tensorflow()


# ------------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------------


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nmt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit.", metavar=""
    ),
) -> None:
    pass


@app.command(cls=_Command)
@_with_options(_parameters(PrepareOptions))
def prepare(**values: Any) -> None:
    """Download or read a parallel corpus, train tokenizers and encode every split."""
    from nmt_cli import console
    from nmt_cli.prepare import prepare as run_prepare

    options = _options_from(PrepareOptions, values)
    result = run_prepare(options, console.RichReporter())
    console.stdout.print(console.prepare_summary(result.manifest, result.rebuilt, str(options.data_dir)))


@app.command(cls=_Command)
@_with_options(
    _parameters(TrainOptions),
    _parameters(ModelConfig, only=MODEL_OPTIONS, track_given=True, panel=MODEL),
    _parameters(TrainingConfig, track_given=True),
)
def train(**values: Any) -> None:
    """Train an encoder-decoder on prepared data, saving checkpoints as it goes."""
    started = time.monotonic()  # a --time-budget counts from here
    from nmt_cli import console
    from nmt_cli.config import read_options_file, split_options
    from nmt_cli.distribute import this_task
    from nmt_cli.plan import TrainRequest, plan_training
    from nmt_cli.workspace import Workspace

    options = _options_from(TrainOptions, values)
    chosen = read_options_file(options.config) if options.config else {}
    chosen.update(_given_by_user(values, (*MODEL_OPTIONS, *(item.name for item in fields(TrainingConfig)))))
    model_options, training_options = split_options(chosen)
    data_dir = options.data_dir or (Path(chosen["data_dir"]) if "data_dir" in chosen else None)
    # Several workers train one model: the chief holds the directory, the others never write to it.
    chief = this_task(options.distribute).is_chief
    request = TrainRequest(
        options.model_dir,
        data_dir,
        model_options,
        training_options,
        options.restart,
        chief,
        options.init_from,
        options.init_checkpoint,
    )
    with Workspace(options.model_dir).lock() if chief else nullcontext():
        result = _run_training(plan_training(request), started, options)
    console.say(console.training_summary(result, str(options.model_dir)))


def _run_training(plan, started: float, options: TrainOptions):
    from nmt_cli import console
    from nmt_cli.distribute import StoppedWaiting

    _load_tensorflow()
    from nmt_cli.training import Interrupted
    from nmt_cli.training import train as run_training

    try:
        reporter = console.RichReporter(log_interval=options.log_interval)
        return run_training(plan, reporter, started, options.distribute, options.cluster_timeout)
    except StoppedWaiting as stop:
        console.tell(f"stopped by {stop} while waiting for the other workers: nothing was trained")
        raise SystemExit(128 + stop.signal_number) from None
    except Interrupted as stop:
        console.tell(
            f"stopped by {signal.Signals(stop.signal_number).name} at {stop.position}: saved {stop.checkpoint}; "
            "run the same `nmt train` command to resume from there"
        )
        raise SystemExit(128 + stop.signal_number) from None


@app.command(cls=_Command)
@_with_options(_parameters(EvaluateOptions))
def evaluate(**values: Any) -> None:
    """Translate a split and score it with sacreBLEU (BLEU and chrF)."""
    import json

    from nmt_cli import console
    from nmt_cli.checkpoints import BestStamp
    from nmt_cli.datadir import DataDir
    from nmt_cli.workspace import Workspace

    options = _options_from(EvaluateOptions, values)
    options.validate()
    if options.hypotheses is not None:
        from nmt_cli.evaluation import score_files

        scores = score_files(options.hypotheses, options.references, options.tokenize, Workspace(options.model_dir))
        if options.as_json:
            console.stdout.print_json(json.dumps(vars(scores)))
        else:
            console.say(console.scores_text(scores))
        return
    from nmt_cli.trained import TrainedModel

    workspace = Workspace(options.model_dir)
    if options.all_checkpoints:
        workspace.resolve_checkpoint("last")  # one at least
        checkpoints = [f"epoch-{epoch}" for epoch in workspace.saved_epochs()]
    else:
        checkpoints = [options.checkpoint]
    # Every checkpoint is swapped into one Keras engine; an export holds only one.
    engine = "keras" if options.all_checkpoints else options.engine
    model = TrainedModel.open(options.model_dir, checkpoints[0], engine)
    data = DataDir(options.data_dir or model.config.resolve_data_dir(options.model_dir))
    data.check_exists()

    from nmt_cli.engines import open_engine
    from nmt_cli.evaluation import evaluate_checkpoints
    from nmt_cli.translation import Translator

    translator = Translator(
        model, open_engine(model, options.threads, console.tell, options.length_penalty, sampling_of(options))
    )
    results = evaluate_checkpoints(
        translator,
        checkpoints,
        data,
        options.split,
        options.beam_size,
        options.output,
        console.RichReporter(log_interval=options.log_interval),
    )
    if options.as_json:
        payload = [r.to_dict() for r in results] if options.all_checkpoints else results[0].to_dict()
        console.stdout.print_json(json.dumps(payload))
    elif options.all_checkpoints:
        table = console.checkpoint_table(results, BestStamp.read(workspace), model.config.training.best_by)
        console.stdout.print(table)
        console.say(f"BLEU {results[0].scores.bleu_signature}")
    else:
        console.say(console.evaluation_text(results[0]))


@app.command(cls=_Command)
@_with_options(_parameters(ExportOptions))
def export(**values: Any) -> None:
    """Write a Transformer checkpoint as a CTranslate2 model: translation without TensorFlow."""
    from nmt_cli import console
    from nmt_cli.export import check_exportable
    from nmt_cli.migration import open_config
    from nmt_cli.workspace import Workspace

    options = _options_from(ExportOptions, values)
    options.validate()
    workspace = Workspace(options.model_dir)
    workspace.resolve_checkpoint(options.checkpoint)
    config = open_config(workspace)
    check_exportable(config.model.arch)
    workspace.read_manifest(config)

    _load_tensorflow()
    from nmt_cli.export import export_checkpoint, export_size

    written, stamp = export_checkpoint(
        workspace, config.model, options.checkpoint, options.quantization, options.output
    )
    console.say(console.export_text(written, stamp, export_size(written)))


@app.command(cls=_Command)
@_with_options(_parameters(SummaryOptions), _parameters(ModelConfig, only=MODEL_OPTIONS, track_given=True))
def summary(**values: Any) -> None:
    """Show a model's layers, shapes, parameter counts, vocabulary and training history."""
    from nmt_cli import console
    from nmt_cli.summary import check_sources

    options = _options_from(SummaryOptions, values)
    model_options = _given_by_user(values, MODEL_OPTIONS)
    check_sources(options, model_options)

    _load_tensorflow()
    from nmt_cli import summary as summaries

    view, models = summaries.summarize(options, model_options)
    if options.plot is not None:
        view["plots"] = [str(p) for p in summaries.plot(models, options.plot)]
    if options.as_json:
        import json

        console.stdout.print_json(json.dumps(view))
    else:
        console.print_summary(view)


_TEXTS = inspect.Parameter(
    "texts",
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    default=typer.Argument(None, help="Sentences to translate; none or - reads stdin."),
    annotation=list[str] | None,
)


_ONE_LINE_TO_PLOT = "--plot-attention draws the attention of one line, and {count} were given: give one sentence"


@app.command(cls=_Command)
@_with_options([_TEXTS], _parameters(TranslateOptions))
def translate(texts: list[str] | None = None, **values: Any) -> None:
    """Translate text given as arguments, a file, or lines on stdin."""
    from nmt_cli.trained import TrainedModel

    options = _options_from(TranslateOptions, values)
    options.validate()
    if texts and options.input:
        raise UserError("give sentences as arguments or --input FILE, not both")
    if options.input is not None and not options.input.is_file():
        raise UserError(f"--input {options.input} is not a file")
    if texts and "-" in texts and texts != ["-"]:
        raise UserError("- (read stdin) cannot be mixed with sentences given as arguments")
    if options.input is not None and options.output is not None and options.input.resolve() == options.output.resolve():
        raise UserError("--output must not be the --input file: it would be overwritten while being read")
    if options.output is None and isinstance(sys.stdout, _ClosedStdout):
        raise UserError(_STDOUT_CLOSED)
    if options.plot_attention is not None:
        from nmt_cli.attention_plot import check_plot_attention

        check_plot_attention(options.plot_attention)
        if texts and texts != ["-"] and len(texts) != 1:
            raise UserError(_ONE_LINE_TO_PLOT.format(count=len(texts)))
    model = TrainedModel.open(options.model_dir, options.checkpoint, options.engine)
    attention = options.attention or options.plot_attention is not None
    if attention:
        model.check_attention()

    from nmt_cli import console, files
    from nmt_cli.engines import open_engine
    from nmt_cli.translation import MAX_PARTS, Translator

    def warn_long(line: str, pieces: int, trained: int, parts: int) -> None:
        excerpt = line if len(line) <= 40 else line[:37] + "..."
        how = "whole, but quality may suffer" if parts == 1 else f"in {parts} parts split at sentence ends"
        if parts > MAX_PARTS:
            how = (
                f"in parts split at sentence ends, the first {MAX_PARTS} of its {parts} parts only "
                f"(at most {MAX_PARTS} a line): split such text into lines"
            )
        console.tell(
            f"warning: {excerpt!r} has {pieces} pieces, more than any training sentence ({trained}); translated {how}"
        )

    reading_stdin = options.input is None and not (texts and texts != ["-"])
    with ExitStack() as stack:
        if options.input is not None:
            lines = _utf8_lines(stack.enter_context(open(options.input, "rb")), str(options.input))
        elif not reading_stdin:
            # Arguments that were not UTF-8 reach Python with their bytes escaped (surrogateescape).
            arguments = (text.encode("utf-8", "surrogateescape") for text in texts)
            lines = _utf8_lines((raw + b"\n" for raw in arguments), "argument")
        else:
            lines = _utf8_lines(sys.stdin.buffer, "stdin")
        if options.plot_attention is not None:
            lines = list(lines)
            if len(lines) != 1:
                raise UserError(_ONE_LINE_TO_PLOT.format(count=len(lines)))
            if not lines[0].strip():
                raise UserError("--plot-attention has nothing to draw: the line to translate is empty")
        # The Keras engine loads TensorFlow here; the CTranslate2 engine never does.
        translator = Translator(
            model, open_engine(model, options.threads, console.tell, options.length_penalty, sampling_of(options))
        )
        results = translator.translate(
            lines,
            beam_size=options.beam_size,
            n_best=options.n_best,
            normalize_input=options.normalize,
            tokenized_output=options.tokenized,
            on_long_input=warn_long,
            # Someone typing wants each answer at once; a pipe is translated in large batches.
            chunk_lines=1 if reading_stdin and sys.stdin.isatty() else None,
            attention=attention,
        )
        if options.output is not None:
            options.output.parent.mkdir(parents=True, exist_ok=True)
        output = sys.stdout if options.output is None else stack.enter_context(files.atomic_writer(options.output))
        try:
            for line, result in enumerate(results):
                output.write(
                    console.translation_lines(
                        result, options.n_best, options.as_json, options.n_best_format, line, options.attention
                    )
                )
                if options.output is None:
                    output.flush()
                if options.plot_attention is not None and result.attention is not None:
                    from nmt_cli.attention_plot import plot_attention

                    plot_attention(result.attention, options.plot_attention)
        except BrokenPipeError:
            # The reader went away (`nmt translate ... | head -1`): stop quietly, as a writer
            # killed by SIGPIPE does; nothing more may reach the closed stdout.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(128 + signal.SIGPIPE) from None


@app.command(cls=_Command)
@_with_options(_parameters(ScoreOptions))
def score(**values: Any) -> None:
    """How likely the model finds given translations: log-probability, per token, perplexity."""
    from nmt_cli.trained import TrainedModel

    options = _options_from(ScoreOptions, values)
    options.validate()
    if options.output is None and isinstance(sys.stdout, _ClosedStdout):
        raise UserError(_STDOUT_CLOSED)
    model = TrainedModel.open(options.model_dir, options.checkpoint, options.engine)

    from nmt_cli import console, files
    from nmt_cli.engines import open_engine
    from nmt_cli.scoring import score_pairs
    from nmt_cli.translation import Translator

    translator = Translator(model, open_engine(model, options.threads, warn=console.tell))
    with ExitStack() as stack:
        if options.source is not None:
            sources = _utf8_lines(stack.enter_context(open(options.source, "rb")), str(options.source))
            targets = _utf8_lines(stack.enter_context(open(options.target, "rb")), str(options.target))
            pairs = _aligned(sources, targets, options.source, options.target)
        else:
            pairs = _tab_separated(_utf8_lines(sys.stdin.buffer, "stdin"))

        def skipped(source: str, why: str) -> None:
            console.tell(f"warning: {source[:40]!r} was not scored: {why}")

        scores = score_pairs(translator, pairs, options.normalize, on_skipped=skipped)
        if options.output is not None:
            options.output.parent.mkdir(parents=True, exist_ok=True)
        output = sys.stdout if options.output is None else stack.enter_context(files.atomic_writer(options.output))
        for result in scores:
            output.write(console.score_line(result, options.as_json))


@app.command(cls=_Command)
@_with_options(_parameters(ServeOptions))
def serve(**values: Any) -> None:
    """Serve translations over HTTP: a LibreTranslate-compatible API, a native one, and a web page."""
    from dataclasses import replace

    from nmt_cli.trained import TrainedModel

    options = _options_from(ServeOptions, values)
    options = replace(options, api_key=options.api_key or os.environ.get("NMT_API_KEY") or None)
    options.validate()
    model = TrainedModel.open(options.model_dir, options.checkpoint, options.engine)

    from nmt_cli import console
    from nmt_cli.engines import open_engine
    from nmt_cli.serve import server
    from nmt_cli.translation import Translator

    if options.api_key is None and not server.is_loopback(options.host):
        console.tell(
            f"warning: --host {options.host} lets other machines translate without a key; "
            "give --api-key (or NMT_API_KEY) to require one"
        )
    listening = server.listen(options.host, options.port)

    def open_translator() -> Translator:
        # The Keras engine loads TensorFlow here, on the server's translation thread.
        return Translator(model, open_engine(model, options.threads, console.tell))

    server.run(
        model,
        options,
        listening,
        open_translator,
        on_listening=lambda: console.say(console.listening_line(server.url_of(listening), model)),
        on_ready=lambda translator: console.tell(f"ready: translating with {translator.engine_label}"),
    )


def _aligned(sources, targets, source_file: Path, target_file: Path):
    for number, (source, target) in enumerate(zip_longest(sources, targets), 1):
        if source is None or target is None:
            shorter = source_file if source is None else target_file
            raise UserError(f"{shorter} ends at line {number - 1}: --source and --target must align line by line")
        yield source, target


def _tab_separated(lines):
    for number, line in enumerate(lines, 1):
        source, tab, target = line.partition("\t")
        if not tab:
            raise UserError(f"stdin line {number} has no TAB: give SOURCE<TAB>TARGET lines, or --source and --target")
        yield source, target


def _utf8_lines(stream, name: str):
    """Lines split on \\n only (as `nmt prepare` reads files), without their line ends.

    Bytes that are not UTF-8 become U+FFFD, with a warning naming the line: the line is still
    translated (one line out for each line in), and so is every other.
    """
    from nmt_cli import console

    for number, raw in enumerate(stream, 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
            console.tell(f"warning: {name} {number} is not valid UTF-8: its invalid bytes were replaced with U+FFFD")
        yield text.rstrip("\r\n")


_STDOUT_CLOSED = "standard output is closed: redirect it (> FILE), or give --output FILE"


class _ClosedStdout(io.TextIOBase):
    """Standard output when the process started without one (`nmt ... >&-`): writing to it is a
    user's mistake, answered in one line."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise UserError(_STDOUT_CLOSED)


def main() -> None:
    _leave(run())


def run() -> int | str | None:
    """Run the command `sys.argv` names and return its exit status; a mistake is one line."""
    code: int | str | None = 0
    if sys.stdout is None:  # Python's stand-in for a closed file descriptor 1
        sys.stdout = _ClosedStdout()
    try:
        code = app(standalone_mode=False)
    except SystemExit as done:
        code = done.code
    except NoArgsIsHelpError as help_asked:
        help_asked.show()
        code = help_asked.exit_code
    except UsageError as mistake:  # an option Typer could not read: one line, as for every mistake
        message = mistake.format_message().replace("Value error, ", "").rstrip(".")
        where = f"; see `{mistake.ctx.command_path} --help`" if mistake.ctx is not None else ""
        looks_like_text = isinstance(mistake, NoSuchOption) and not mistake.option_name.startswith("--")
        if looks_like_text and mistake.ctx is not None and mistake.ctx.info_name == "translate":
            where = (
                "; to translate text that starts with '-', put -- before it "
                f'(nmt translate -- "{mistake.option_name} ...") or give it on stdin'
            )
        print(f"error: {message}{where}", file=sys.stderr)
        code = mistake.exit_code
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        code = error.exit_code
    except OSError as error:
        # A file the system refused (permissions, disk full, a missing folder): the user can fix it.
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        code = 2
    return code


def _leave(code: int | str | None) -> None:
    """Exit; once TensorFlow is loaded, skip interpreter teardown.

    Tearing down an interpreter that holds TensorFlow is a noticeable share of a one-sentence
    `nmt translate` (bench/translate_speed.py). Every file we wrote is closed by now, so only
    the standard streams need flushing.
    """
    if "tensorflow" not in sys.modules:
        sys.exit(code)
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            pass
    os._exit(code or 0)
