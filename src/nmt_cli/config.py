"""Every option once: its name, type, default, help and checks.

Options are dataclass fields made with `option(...)`. The command line is built from them
(`cli.py` turns each field into a flag whose help shows the default), option files are read into
them, and `config.json` beside every model is written from them. Checks that concern one value
live in its `option(...)`; checks that relate several values live in the class' `validate`.

Nothing here imports TensorFlow: `nmt --help` and the checks of a user's options stay fast.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Callable
from dataclasses import Field, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

from nmt_cli import __version__
from nmt_cli.architectures import ARCHITECTURE_NAMES, ARCHITECTURES, SCHEDULES, defaults_of, taking
from nmt_cli.distribute import DEFAULT_CLUSTER_TIMEOUT, STRATEGIES
from nmt_cli.engines import ENGINES, Sampling
from nmt_cli.errors import UserError

# How `nmt export` stores weights; int8 is what CPUs run fastest (README: its cost in BLEU).
QUANTIZATIONS = ("int8", "int8_float32", "float32")
DEFAULT_QUANTIZATION = "int8"
DEFAULT_DATA_DIR = Path("data/prepared")
# The groups `nmt train --help` lists its options in, in this order after the general ones.
PANELS = MODEL, BATCHES, OPTIMISATION, SAVING, PLACEMENT = (
    "Model",
    "Data and batches",
    "Optimisation",
    "Saving and stopping",
    "Precision and distribution",
)
DEFAULT_MODEL_DIR = Path("models/default")


@dataclass(frozen=True)
class Rules:
    """What one option accepts, and how the command line shows it."""

    help: str
    flag: str | None = None  # the flag's spelling when it is not --NAME (for example "--jit/--no-jit")
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    below: float | None = None  # an exclusive upper bound
    archs: tuple[str, ...] = ()  # the architectures the option applies to; empty: all
    by_arch: dict[str, Any] | None = None  # the default of each architecture, where it differs (field default: None)
    default_text: str | None = None  # how --help states the default, where the value alone would not say it
    panel: str | None = None  # the group --help lists it in

    def default_for(self, arch: str) -> Any:
        return (self.by_arch or {}).get(arch)

    def describe_by_arch(self) -> str:
        """ "1 for seq2seq and attention, 3 for transformer"."""
        archs_of: dict[Any, list[str]] = {}
        for arch, value in (self.by_arch or {}).items():
            archs_of.setdefault(value, []).append(arch)
        return ", ".join(f"{value} for {' and '.join(archs)}" for value, archs in archs_of.items())


def option(default: Any, help: str, **rules: Any) -> Any:
    """A dataclass field that is also a command-line option."""
    return field(default=default, metadata={"rules": Rules(help, **rules)})


def rules_of(item: Field) -> Rules:
    return item.metadata["rules"]


def cli_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def check(options: Any, spell: Callable[[str], str] = cli_name) -> None:
    """The per-value checks of every option of a dataclass instance: type, choices, range, finite.
    Messages name an option as `spell` spells it (default: as a flag)."""
    hints = get_type_hints(type(options))
    for item in fields(options):
        if "rules" not in item.metadata:
            continue
        rules, value, name = rules_of(item), getattr(options, item.name), spell(item.name)
        expected = hints[item.name]
        if value is None and _optional(expected):
            continue
        kind = _base_type(expected)
        if kind is Path and isinstance(value, str):
            continue
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            if not (kind is float and isinstance(value, int) and not isinstance(value, bool)):
                raise UserError(f"{name} must be {_type_word(kind)}, not {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{name} must be a finite number, not {value}")
        if rules.choices and value not in rules.choices:
            raise UserError(f"unknown {name} {value!r}; choose one of: {', '.join(rules.choices)}")
        if rules.minimum is not None and value < rules.minimum:
            raise UserError(f"{name} must be at least {_number(rules.minimum)}, not {value}")
        if rules.maximum is not None and value > rules.maximum:
            raise UserError(f"{name} must be at most {_number(rules.maximum)}, not {value}")
        if rules.below is not None and value >= rules.below:
            raise UserError(f"{name} must be below {_number(rules.below)}, not {value}")


def _optional(annotation: Any) -> bool:
    return type(None) in getattr(annotation, "__args__", ())


def _base_type(annotation: Any) -> type:
    args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    return args[0] if args else annotation


def _type_word(kind: type) -> str:
    return {int: "a whole number", float: "a number", bool: "true or false", str: "text", Path: "a path"}.get(
        kind, kind.__name__
    )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# ------------------------------------------------------------------------------------------------
# The model and how it is trained: saved in config.json
# ------------------------------------------------------------------------------------------------


def fill_arch_defaults(options: Any, arch: str) -> None:
    """Give every option left at None the default of `arch` (see `Rules.by_arch`)."""
    for item in fields(options):
        rules = item.metadata.get("rules")
        if rules is not None and rules.by_arch and getattr(options, item.name) is None:
            setattr(options, item.name, rules.default_for(arch))


@dataclass
class ModelConfig:
    arch: str = option("transformer", "The architecture.", choices=ARCHITECTURE_NAMES)
    units: int = option(256, "LSTM units, or the Transformer's width (d_model).", minimum=1)
    embedding_dim: int = option(256, "Embedding size.", minimum=1, archs=taking("embedding_dim"))
    layers: int | None = option(
        None,
        "Layers in the encoder and in the decoder.",
        minimum=1,
        by_arch=defaults_of("layers"),
    )
    heads: int = option(4, "Attention heads.", minimum=1, archs=taking("heads"))
    ff_units: int = option(1024, "Width of each feed-forward block.", minimum=1, archs=taking("ff_units"))
    tie_embeddings: bool = option(
        False,
        "Score the target vocabulary with the decoder's embedding matrix instead of a separate output layer.",
        flag="--tie-embeddings/--untied-embeddings",
        archs=taking("tie_embeddings"),
    )
    dropout: float | None = option(None, "Dropout rate.", minimum=0.0, below=1.0, by_arch=defaults_of("dropout"))
    bidirectional: bool = option(
        False, "A bidirectional encoder.", flag="--bidirectional/--unidirectional", archs=taking("bidirectional")
    )
    attention: str = option("luong", "The attention score.", choices=("luong", "bahdanau"), archs=taking("attention"))
    source_vocab_size: int = option(0, "Source vocabulary size (from the prepared data).", minimum=0)
    target_vocab_size: int = option(0, "Target vocabulary size (from the prepared data).", minimum=0)

    def __post_init__(self) -> None:
        fill_arch_defaults(self, self.arch)

    def validate(self, given: set[str] | None = None) -> None:
        """Check every value; `given` names the options the user set, which must suit the --arch."""
        check(self)
        for item in fields(self):
            archs = rules_of(item).archs
            set_here = item.name in given if given is not None else getattr(self, item.name) != item.default
            if archs and self.arch not in archs and set_here:
                raise UserError(f"{cli_name(item.name)} applies to --arch {' or '.join(archs)} only, not {self.arch}")
        if self.source_vocab_size < 1 or self.target_vocab_size < 1:
            raise UserError("vocabulary sizes must be at least 1: take them from a prepared --data-dir")
        if self.bidirectional and self.units % 2:
            raise UserError("--bidirectional splits --units between two directions: give an even number")
        if "heads" in ARCHITECTURES[self.arch].own_options and self.units % (2 * self.heads):
            raise UserError(
                f"--units {self.units} must split evenly into --heads {self.heads} heads of even width "
                f"(a multiple of {2 * self.heads})"
            )


PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
# More epochs than any corpus needs: a million steps of the smallest (one batch) corpus. Larger
# counts are typing mistakes.
MAX_EPOCHS = 1_000_000


@dataclass
class TrainingConfig:
    epochs: int = option(20, "Total epochs, counting those already done.", minimum=1, maximum=MAX_EPOCHS, panel=SAVING)
    save_every: int = option(
        5, "Save a checkpoint every N epochs; the last is always saved.", minimum=1, maximum=MAX_EPOCHS, panel=SAVING
    )
    save_every_steps: int = option(
        0,
        "Also save a resume point every N optimizer steps (the newest only), so that a kill costs at most N "
        "steps. 0: at epoch ends only.",
        minimum=0,
        panel=SAVING,
    )
    validate_every_steps: int = option(
        0,
        "Also validate every N optimizer steps: a history row, a chance to become best.keras, a resume point. "
        "0: at epoch ends only.",
        minimum=0,
        panel=SAVING,
    )
    time_budget: float = option(
        0.0,
        "Stop after this many minutes of wall clock, validation included, with a resumable checkpoint; "
        "a resumed run gets the budget afresh. 0: no limit.",
        minimum=0.0,
        panel=SAVING,
    )
    batch_size: int = option(64, "Sentence pairs per batch (when --batch-tokens is 0).", minimum=1, panel=BATCHES)
    batch_tokens: int | None = option(
        None,
        "Padded positions per batch: as many pairs as fit. 0: --batch-size pairs.",
        minimum=0,
        by_arch=defaults_of("batch_tokens"),
        panel=BATCHES,
    )
    learning_rate: float | None = option(
        None,
        "Adam's learning rate (the peak, after warm-up).",
        minimum=0.0,
        by_arch=defaults_of("learning_rate"),
        panel=OPTIMISATION,
    )
    schedule: str | None = option(
        None,
        "How the learning rate changes with the step count.",
        choices=SCHEDULES,
        by_arch=defaults_of("schedule"),
        panel=OPTIMISATION,
    )
    warmup: int | None = option(
        None,
        "Steps of linear warm-up to the learning rate.",
        minimum=0,
        by_arch=defaults_of("warmup"),
        panel=OPTIMISATION,
    )
    clipnorm: float = option(
        1.0, "Clip each gradient to this norm; 0 turns clipping off.", minimum=0.0, panel=OPTIMISATION
    )
    label_smoothing: float = option(0.1, "Label smoothing.", minimum=0.0, below=1.0, panel=OPTIMISATION)
    precision: str = option(
        "auto",
        "Keras' precision policy; the output layer and softmax stay float32. auto: mixed precision on a GPU "
        "(float16 on GPUs without bfloat16), mixed bfloat16 for the Transformer on a CPU with bfloat16 "
        "instructions, else float32.",
        choices=PRECISIONS,
        panel=PLACEMENT,
    )
    best_by: str = option(
        "bleu",
        "Which validation figure picks checkpoints/best.keras: dev BLEU (greedy search, at every validation) "
        "or loss (BLEU is then not computed).",
        choices=("bleu", "loss"),
        panel=SAVING,
    )
    patience: int = option(
        0,
        "Stop once the --best-by figure has not improved for this many validations (epoch ends, and every "
        "--validate-every-steps). 0: never.",
        minimum=0,
        panel=SAVING,
    )
    seed: int = option(
        1234,
        "Random seed: the same seed, data and options give the same losses.",
        minimum=0,
        maximum=2**32 - 1,
        panel=OPTIMISATION,
    )
    jit_compile: bool = option(
        False,
        "Compile training steps with XLA; runs are then not bit-reproducible, and on CPU it can be slower: "
        "measure first.",
        flag="--jit/--no-jit",
        panel=PLACEMENT,
    )

    def validate(self) -> None:
        check(self)
        if self.learning_rate == 0:
            raise UserError("--learning-rate must be positive")


MODEL_OPTIONS = tuple(item.name for item in fields(ModelConfig) if not item.name.endswith("_vocab_size"))
TRAINING_OPTIONS = tuple(item.name for item in fields(TrainingConfig))


@dataclass
class RunConfig:
    """Everything needed to rebuild, resume or reproduce a model: saved as config.json.

    `data_dir` is stored as the model directory sees it (relative to it when the data lies
    below the same parent, else absolute), so the model resolves its data from anywhere.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    data_dir: str = str(DEFAULT_DATA_DIR)
    data_manifest_sha256: str = ""
    tool_version: str = __version__
    parent: dict[str, str] | None = None  # fine-tuned from: {"model_dir", "checkpoint", "sha256"}

    def __post_init__(self) -> None:
        # How a model trains best depends on what it is: options left unset take the
        # architecture's defaults.
        fill_arch_defaults(self.training, self.model.arch)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        raw = json.loads(text)
        return cls(
            model=ModelConfig(**raw["model"]),
            training=TrainingConfig(**raw["training"]),
            data_dir=raw["data_dir"],
            data_manifest_sha256=raw["data_manifest_sha256"],
            tool_version=raw["tool_version"],
            parent=raw["parent"],
        )

    def with_data_dir(self, data_dir: Path, model_dir: Path) -> RunConfig:
        return replace(self, data_dir=_path_from(Path(model_dir), Path(data_dir)))

    def resolve_data_dir(self, model_dir: Path) -> Path:
        """The data directory, wherever the command runs."""
        stored = Path(self.data_dir)
        return stored if stored.is_absolute() else Path(os.path.normpath(Path(model_dir).absolute() / stored))


def _path_from(model_dir: Path, data_dir: Path) -> str:
    model_dir, data_dir = model_dir.absolute(), data_dir.absolute()
    try:
        return (
            os.path.relpath(data_dir, model_dir) if os.path.commonpath([model_dir, data_dir]) != "/" else str(data_dir)
        )
    except ValueError:  # different drives
        return str(data_dir)


def load_config(path: Path) -> RunConfig:
    try:
        config = RunConfig.from_json(Path(path).read_text(encoding="utf-8"))
        check(config.model, spell=str)  # as the file spells it
        check(config.training, spell=str)
    except FileNotFoundError:
        raise UserError(f"{path} not found: is this a model directory made by `nmt train`?") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"cannot read {path}: {error}") from None
    except UserError as error:  # a value no option accepts: the file was changed by hand, or damaged
        raise UserError(f"{path} is damaged: {error}; restore it, or retrain") from None
    return config


# ------------------------------------------------------------------------------------------------
# Options files (`nmt train --config FILE`)
# ------------------------------------------------------------------------------------------------

OPTIONS_FILE_NAMES = {*MODEL_OPTIONS, *TRAINING_OPTIONS, "data_dir"}


def read_options_file(path: Path) -> dict[str, Any]:
    """Options from a TOML or YAML file: option names as keys, flat or under [model]/[training]."""
    path = Path(path)
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise UserError(f"config file {path} must end in .toml, .yaml or .yml")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UserError(f"cannot read config file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not UTF-8 text") from None
    import yaml

    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else (yaml.safe_load(text) or {})
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        problem = " ".join(str(error).split())
        raise UserError(f"config file {path} is not valid: {problem}") from None
    if not isinstance(raw, dict):
        raise UserError(f"config file {path} must hold a mapping of option names to values")
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("model", "training") and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    options = {key.replace("-", "_"): value for key, value in flat.items()}
    unknown = sorted(set(options) - OPTIONS_FILE_NAMES)
    if unknown:
        raise UserError(f"config file {path}: unknown option {unknown[0]!r}")
    if not isinstance(options.get("data_dir", ""), str):
        raise UserError(f"config file {path}: data_dir must be a path in quotes")
    return options


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate a flat option mapping into ModelConfig and TrainingConfig keyword arguments."""
    return (
        {k: v for k, v in options.items() if k in MODEL_OPTIONS},
        {k: v for k, v in options.items() if k in TRAINING_OPTIONS},
    )


# ------------------------------------------------------------------------------------------------
# The options of each command that are not the model's
# ------------------------------------------------------------------------------------------------


def check_output_file(path: Path | None) -> None:
    """`--output` names a file to write (or a device or pipe), never a folder."""
    if path is not None and Path(path).is_dir():
        raise UserError(f"--output {path} is a folder: name a file to write, such as {Path(path) / 'out.txt'}")


def _model_dir(help: str = "The trained model directory.") -> Any:
    return option(DEFAULT_MODEL_DIR, help)


def _checkpoint() -> Any:
    return option("best", "Which weights: best, last or epoch-N.")


def _beam_size() -> Any:
    return option(5, "Beam width; 1 is greedy search.", minimum=1)


def _as_json() -> Any:
    return option(False, "Print the results as JSON.", flag="--json")


DEFAULT_LOG_INTERVAL = 30.0
N_BEST_FORMATS = ("tsv", "moses")


def _log_interval() -> Any:
    return option(
        DEFAULT_LOG_INTERVAL,
        "Seconds between progress lines when stderr is not a terminal (a batch job's log); "
        "on a terminal, progress bars.",
        minimum=0.0,
    )


def _length_penalty() -> Any:
    return option(
        1.0,
        "Rank hypotheses by log-probability over length**ALPHA: 1 is the mean per token, 0 the total "
        "(favours short ones), above 1 favours long ones.",
        minimum=0.0,
    )


def _sampling_topk() -> Any:
    return option(
        None,
        "Sample each token from the K most likely (0: from all) instead of searching: one draw per line, "
        "for back-translation; --sampling-topp, --sampling-temperature and --seed apply with it.",
        minimum=0,
        default_text="no sampling: beam search",
    )


def _sampling_topp() -> Any:
    return option(1.0, "Sample within the most likely tokens whose probability reaches P.", minimum=0.01, maximum=1.0)


def _sampling_temperature() -> Any:
    return option(1.0, "Divide log-probabilities by T before sampling: below 1 sharper, above flatter.", minimum=1e-3)


def _seed() -> Any:
    return option(0, "Seed of the draws: the same seed, input and model give the same samples.", minimum=0)


def sampling_of(options: Any) -> Sampling | None:
    """The `Sampling` that translate's or evaluate's options ask for, if any."""
    if options.sampling_topk is None:
        return None
    return Sampling(options.sampling_topk, options.sampling_topp, options.sampling_temperature, options.seed)


def _engine() -> Any:
    return option(
        "auto",
        "What translates: ctranslate2 (the model's CTranslate2 export, without TensorFlow), keras, or auto "
        "(ctranslate2 when the export holds the checkpoint asked for, else keras).",
        choices=ENGINES,
    )


def _threads() -> Any:
    return option(
        0,
        "CPU threads to translate with (CTranslate2 translates that many batches side by side).",
        minimum=0,
        default_text="every core this process may use",
    )


@dataclass
class PrepareOptions:
    source: str | None = option(
        None,
        "Folder or base URL holding {train,dev,test}.{SRC,TGT}.",
        default_text="download small_parallel_enja",
    )
    data_dir: Path = option(DEFAULT_DATA_DIR, "Where the prepared data goes.")
    src_lang: str = option("en", "Source language: the source files' suffix.")
    tgt_lang: str = option("ja", "Target language: the target files' suffix.")
    vocab_size: int = option(8000, "Upper bound of each language's SentencePiece vocabulary.", minimum=1)
    max_length: int = option(80, "Drop training pairs with more pieces than this on either side.", minimum=1)
    max_pairs: int | None = option(None, "Keep only the first N training pairs.", minimum=1, default_text="all")
    src_style: str | None = option(
        None,
        "How the source text is written: raw, en-words, en-words-lower or ja-words.",
        default_text="a known corpus' own, else raw",
    )
    tgt_style: str | None = option(
        None, "How the target text is written (as --src-style).", default_text="as --src-style"
    )
    tokenizers_from: Path | None = option(
        None,
        "Encode with this model directory's SentencePiece models instead of training new ones, so that "
        "the model can be fine-tuned on this data (nmt train --init-from); its languages and text styles apply.",
    )
    force: bool = option(False, "Rebuild even when the data directory is up to date.", flag="--force")


@dataclass
class TrainOptions:
    """What `nmt train` takes besides the model and training options."""

    data_dir: Path | None = option(
        None, "Prepared data.", default_text=f"{DEFAULT_DATA_DIR}, or the model's own when resuming", panel=BATCHES
    )
    model_dir: Path = _model_dir("Where checkpoints, config and history go.")
    config: Path | None = option(None, "TOML or YAML file of options; flags override it.")
    restart: bool = option(False, "Discard the model directory's checkpoints and start over.", flag="--restart")
    init_from: Path | None = option(
        None,
        "Start a new model from this model directory's weights (fine-tuning): same architecture and sizes, and "
        "data prepared with its tokenizers (nmt prepare --tokenizers-from); a fresh optimizer and schedule.",
    )
    init_checkpoint: str = option("best", "Which of --init-from's checkpoints: best, last or epoch-N.")
    distribute: str = option(
        "auto",
        "Where to train: none (this process), mirrored (every GPU of this machine), multi-worker (the "
        "machines TF_CONFIG or Slurm lists), or auto (mirrored with more than one GPU, else none).",
        choices=STRATEGIES,
        panel=PLACEMENT,
    )
    cluster_timeout: float = option(
        DEFAULT_CLUSTER_TIMEOUT,
        "Seconds a multi-worker run waits for every worker to start before it gives up.",
        minimum=1,
        panel=PLACEMENT,
    )
    log_interval: float = _log_interval()


@dataclass
class TranslateOptions:
    model_dir: Path = _model_dir()
    checkpoint: str = _checkpoint()
    input: Path | None = option(None, "Translate this file, one sentence per line.", default_text="arguments or stdin")
    output: Path | None = option(None, "Write translations here.", default_text="stdout")
    beam_size: int = _beam_size()
    length_penalty: float = _length_penalty()
    sampling_topk: int | None = _sampling_topk()
    sampling_topp: float = _sampling_topp()
    sampling_temperature: float = _sampling_temperature()
    seed: int = _seed()
    n_best: int = option(1, "Print the N best distinct translations of each input, with scores.", minimum=1)
    n_best_format: str = option(
        "tsv",
        "How --n-best rows read: tsv (RANK<TAB>SCORE<TAB>TEXT) or moses (LINE ||| TEXT ||| SCORE, 0-based "
        "line numbers, what reranking scripts read).",
        choices=N_BEST_FORMATS,
    )
    normalize: bool = option(True, "Bring raw input to the training corpus' form.", flag="--normalize/--no-normalize")
    tokenized: bool = option(False, "Keep the corpus' word spacing in the output.", flag="--tokenized")
    as_json: bool = option(False, "One JSON object per line: source, translation, score.", flag="--json")
    attention: bool = option(
        False,
        "With --json: add where the best translation looked, {source, target, weights}: the pieces "
        "and each target piece's attention weights over the source pieces.",
        flag="--attention",
    )
    plot_attention: Path | None = option(
        None, "Draw the attention of one line's translation as a heat-map to FILE.png or FILE.svg (needs matplotlib)."
    )
    engine: str = _engine()
    threads: int = _threads()

    def validate(self) -> None:
        check(self)
        if self.attention and not self.as_json:
            raise UserError(
                "--attention adds the attention to --json output: add --json, or draw it with --plot-attention FILE"
            )
        if self.n_best > self.beam_size:
            raise UserError(f"--n-best {self.n_best} needs --beam-size {self.n_best} or more")
        if self.n_best > 1 and self.sampling_topk is not None:
            raise UserError("--sampling-topk draws one translation per line: --n-best needs beam search")
        check_output_file(self.output)


@dataclass
class ScoreOptions:
    model_dir: Path = _model_dir()
    checkpoint: str = _checkpoint()
    source: Path | None = option(None, "Source sentences, one per line (with --target).", default_text="stdin")
    target: Path | None = option(
        None, "Their translations, line by line.", default_text="stdin: SOURCE<TAB>TARGET lines"
    )
    output: Path | None = option(None, "Write the scores here.", default_text="stdout")
    normalize: bool = option(True, "Bring both sides to the training corpus' form.", flag="--normalize/--no-normalize")
    as_json: bool = option(
        False, "One JSON object per line: source, target, log_prob, tokens, per_token, perplexity.", flag="--json"
    )
    engine: str = _engine()
    threads: int = _threads()

    def validate(self) -> None:
        check(self)
        if (self.source is None) != (self.target is None):
            raise UserError("give --source and --target together, or SOURCE<TAB>TARGET lines on stdin")
        for flag, path in (("--source", self.source), ("--target", self.target)):
            if path is not None and not path.is_file():
                raise UserError(f"{flag} {path} is not a file")
        check_output_file(self.output)


@dataclass
class EvaluateOptions:
    model_dir: Path = _model_dir()
    data_dir: Path | None = option(None, "Prepared data.", default_text="the one the model was trained on")
    split: str | None = option(
        None, "test or dev.", choices=("test", "dev"), default_text="test when prepared, else dev"
    )
    checkpoint: str = _checkpoint()
    all_checkpoints: bool = option(False, "Score every saved checkpoint and mark the best.", flag="--all-checkpoints")
    beam_size: int = _beam_size()
    length_penalty: float = _length_penalty()
    sampling_topk: int | None = _sampling_topk()
    sampling_topp: float = _sampling_topp()
    sampling_temperature: float = _sampling_temperature()
    seed: int = _seed()
    output: Path | None = option(None, "Hypotheses file.", default_text="MODEL_DIR/eval/SPLIT-CHECKPOINT-beamK.txt")
    hypotheses: Path | None = option(None, "Score this hypothesis file instead of translating (needs --references).")
    references: Path | None = option(None, "Reference file for --hypotheses.")
    tokenize: str | None = option(
        None,
        "sacreBLEU tokenizer for --hypotheses/--references scoring.",
        default_text="the one nmt evaluate scores --model-dir's target language with, else 13a",
    )
    engine: str = _engine()
    threads: int = _threads()
    as_json: bool = _as_json()
    log_interval: float = _log_interval()

    def validate(self) -> None:
        check(self)
        if (self.hypotheses is None) != (self.references is None):
            raise UserError("--hypotheses and --references go together")
        check_output_file(self.output)
        if self.all_checkpoints and self.output is not None:
            raise UserError(
                "--output names one hypotheses file; --all-checkpoints writes one per checkpoint into MODEL_DIR/eval"
            )
        if self.all_checkpoints and self.engine == "ctranslate2":
            raise UserError(
                "--all-checkpoints swaps the weights of every checkpoint into the Keras engine; "
                "drop --engine ctranslate2, whose export holds one checkpoint"
            )


@dataclass
class ExportOptions:
    model_dir: Path = _model_dir()
    checkpoint: str = _checkpoint()
    quantization: str = option(DEFAULT_QUANTIZATION, "How the weights are stored.", choices=QUANTIZATIONS)
    output: Path | None = option(
        None, "The CTranslate2 model directory to write.", default_text="MODEL_DIR/ctranslate2"
    )

    def validate(self) -> None:
        check(self)


@dataclass
class SummaryOptions:
    """What `nmt summary` takes besides the model options of an untrained model."""

    model_dir: Path | None = option(
        None, "A trained model directory.", default_text=f"{DEFAULT_MODEL_DIR}, unless model options are given"
    )
    data_dir: Path | None = option(None, "Prepared data, for the vocabulary sizes of an untrained model.")
    source_vocab_size: int | None = option(
        None, "Source vocabulary size of an untrained model (instead of --data-dir).", minimum=1
    )
    target_vocab_size: int | None = option(
        None, "Target vocabulary size of an untrained model (instead of --data-dir).", minimum=1
    )
    plot: Path | None = option(None, "Draw the graphs to FILE.svg or FILE.png (needs pydot and graphviz).")
    as_json: bool = _as_json()


@dataclass
class ServeOptions:
    model_dir: Path = _model_dir()
    checkpoint: str = _checkpoint()
    host: str = option(
        "127.0.0.1", "Address to listen on; any other than loopback should come with --api-key (0.0.0.0: all)."
    )
    port: int = option(
        5000, "Port to listen on (0: any free port, named in the listening line).", minimum=0, maximum=65535
    )
    engine: str = _engine()
    threads: int = _threads()
    api_key: str | None = option(
        None,
        "Every request that translates or reads the model must carry this key: LibreTranslate's api_key field, "
        "or an X-API-Key header.",
        default_text="$NMT_API_KEY, else none",
    )
    max_characters: int = option(20_000, "Most characters of text one request may hold (413 past it).", minimum=1)
    max_lines: int = option(200, "Most lines one request may hold (413 past it).", minimum=1)
    queue_lines: int = option(
        2048, "Most lines waiting to be translated; past it requests get 503 and Retry-After.", minimum=1
    )
    batch_lines: int = option(64, "Most lines translated together in one batch.", minimum=1)

    def validate(self) -> None:
        check(self)
        if not self.host.strip():
            raise UserError("--host is empty: give an address such as 127.0.0.1")
