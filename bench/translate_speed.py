"""Whole-process translation speed, quality and memory of each engine, as a user sees them.

    python bench/translate_speed.py [--model-dir models/default] [--runs 3]

On one trained Transformer, side by side: the Keras engine, and CTranslate2 exports of the same
best.keras in float32 and int8. For each it times `nmt evaluate --split dev` (500 sentences on
small_parallel_enja) with beam 1 and beam 5 and a cold one-sentence `nmt translate "text"`,
reports BLEU, the peak memory of the translate process, and how many greedy lines equal the
Keras engine's. The model directory is not written to: each engine gets a folder of links to
it (in a temporary folder) with its own export. An LSTM model is measured on Keras alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from timing import machine, timed, timed_with_memory

SENTENCE = "I can't tell who will arrive first."


def linked_model(model_dir: Path, folder: Path) -> Path:
    """A model directory of links to every file of `model_dir` but its export."""
    folder.mkdir(parents=True)
    for path in model_dir.iterdir():
        if path.name not in ("ctranslate2", "eval", "train.lock"):
            (folder / path.name).symlink_to(path.resolve())
    return folder


def measure(nmt: str, model_dir: Path, data_dir: Path, engine: str, runs: int) -> dict:
    row = {}
    for beam in (1, 5):
        times, report = [], {}
        for _ in range(runs):
            command = [nmt, "evaluate", "--model-dir", str(model_dir), "--data-dir", str(data_dir), "--split", "dev"]
            command += ["--engine", engine]
            seconds, out = timed([*command, "--beam-size", str(beam), "--json"])
            times.append(seconds)
            report = json.loads(out)
        row[f"beam{beam}"] = {
            "seconds": statistics.median(times),
            "decoding_seconds": report["seconds"],
            "bleu": report["scores"]["bleu"],
            "chrf": report["scores"]["chrf"],
            "sentences": report["scores"]["sentences"],
            "hypotheses": Path(report["hypotheses_file"]).read_text(encoding="utf-8").splitlines(),
            "engine": report["engine"],
        }
    cold = [
        timed_with_memory([nmt, "translate", "--model-dir", str(model_dir), "--engine", engine, SENTENCE])
        for _ in range(runs)
    ]
    row["translate_seconds"] = [seconds for seconds, _, _ in cold]
    row["translate_peak_mb"] = max(memory for _, _, memory in cold)
    return row


def float32_agreement(model_dir: Path, export_dir: Path, data_dir: Path) -> tuple[int, int]:
    """Greedy search of the same weights in float32 on both engines: how faithful the export is,
    apart from the precision the Keras models were trained in (mixed bfloat16 computes in bfloat16)."""
    from nmt_cli import backend

    backend.load_tensorflow()
    import keras

    from nmt_cli.datadir import DataDir
    from nmt_cli.decoding import Searcher
    from nmt_cli.engines.ctranslate2 import CTranslate2Engine
    from nmt_cli.models import build_models
    from nmt_cli.trained import TrainedModel

    keras.mixed_precision.set_dtype_policy("float32")
    model = TrainedModel.open(model_dir, engine="keras")
    models = build_models(model.config.model)
    models.training.load_weights(model.checkpoint)
    sources = [list(ids) for ids in DataDir(data_dir).load_split("dev")[0]]
    expected = Searcher(models.encoder, models.decoder).search_all(sources, beam_size=1)
    found = CTranslate2Engine(export_dir).search_all(sources, beam_size=1)
    return sum(a[0][0] == b[0][0] for a, b in zip(found, expected)), len(sources)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/default"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    nmt = shutil.which("nmt") or sys.exit("nmt is not on PATH: install the project first")
    model_dir = args.model_dir.resolve()
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    data_dir = (model_dir / config["data_dir"]).resolve()  # as the model directory sees it
    print(f"machine: {machine()}")
    print(f"model: {model_dir} (--arch {config['model']['arch']}), {args.runs} runs each, medians")
    engines = {"keras": ("keras", None)}
    if config["model"]["arch"] == "transformer":
        engines.update({"ctranslate2 float32": ("ctranslate2", "float32"), "ctranslate2 int8": ("ctranslate2", "int8")})
    rows = {}
    with tempfile.TemporaryDirectory(prefix="nmt-translate-speed-") as scratch:
        for label, (engine, quantization) in engines.items():
            folder = linked_model(model_dir, Path(scratch) / label.replace(" ", "-"))
            if quantization:
                timed([nmt, "export", "--model-dir", str(folder), "--quantization", quantization])
            rows[label] = measure(nmt, folder, data_dir, engine, args.runs)
        if len(rows) > 1:
            float32_export = Path(scratch) / "ctranslate2-float32" / "ctranslate2"
            same, total = float32_agreement(model_dir, float32_export, data_dir)
            print(f"greedy ids of the float32 export = those of the Keras models in float32: {same} of {total} lines")
    keras_greedy = rows["keras"]["beam1"]["hypotheses"]
    print(
        "| engine | evaluate 500, beam 1 | evaluate 500, beam 5 | one sentence, cold | peak memory, translate "
        "| BLEU / chrF greedy | BLEU / chrF beam 5 | greedy lines = Keras |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, row in rows.items():
        greedy, beam = row["beam1"], row["beam5"]
        same = sum(a == b for a, b in zip(greedy["hypotheses"], keras_greedy))
        print(
            f"| {label} | {greedy['seconds']:.2f} s | {beam['seconds']:.2f} s "
            f"| {statistics.median(row['translate_seconds']):.2f} s | {row['translate_peak_mb']:.0f} MB "
            f"| {greedy['bleu']:.2f} / {greedy['chrf']:.2f} | {beam['bleu']:.2f} / {beam['chrf']:.2f} "
            f"| {same} of {len(keras_greedy)} |"
        )
    if len(rows) > 1:
        keras_row, int8 = rows["keras"], rows["ctranslate2 int8"]
        print(
            "int8 against Keras: one sentence "
            f"{statistics.median(keras_row['translate_seconds']) / statistics.median(int8['translate_seconds']):.1f}x, "
            f"evaluate beam 5 {keras_row['beam5']['seconds'] / int8['beam5']['seconds']:.1f}x faster; "
            f"BLEU beam 5 {int8['beam5']['bleu'] - keras_row['beam5']['bleu']:+.2f}, "
            f"float32 {rows['ctranslate2 float32']['beam5']['bleu'] - keras_row['beam5']['bleu']:+.2f}"
        )


if __name__ == "__main__":
    main()
