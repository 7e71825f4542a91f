"""The whole flow as a user runs it, timed: prepare from a local folder, train under a time budget,
evaluate on dev (greedy and beam 5). Prints one results-table row and the commands behind it.

    python bench/recipe.py --source ../shared/data/small_parallel_enja --work /tmp/recipe \\
        [--budget 45] [--name default] [-- NMT TRAIN OPTIONS...]

Everything is written below --work. Give train options after `--` to measure another recipe
(for example `-- --arch attention`); with none, `nmt train`'s defaults are measured.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import shutil
import sys
from pathlib import Path

from timing import timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="folder holding train.* and dev.*")
    parser.add_argument("--work", type=Path, required=True, help="where the data and model go")
    parser.add_argument("--budget", type=float, default=45.0, help="--time-budget in minutes")
    parser.add_argument("--name", default="default", help="the row's name")
    parser.add_argument("train_options", nargs="*", help="options for nmt train (after --)")
    args = parser.parse_args()
    nmt = shutil.which("nmt") or sys.exit("nmt is not on PATH: install the project first")
    data, model = args.work / "data", args.work / "model"

    timed([nmt, "prepare", "--source", str(args.source), "--data-dir", str(data)], echo=True)
    train = [nmt, "train", "--data-dir", str(data), "--model-dir", str(model), "--time-budget", str(args.budget)]
    train += args.train_options
    train_seconds, _ = timed(train, echo=True)
    results = {}
    for beam in (1, 5):
        seconds, out = timed(
            [nmt, "evaluate", "--model-dir", str(model), "--split", "dev", "--beam-size", str(beam), "--json"]
        )
        results[beam] = (seconds, json.loads(out))
    _, out = timed([nmt, "summary", "--model-dir", str(model), "--json"])
    summary = json.loads(out)

    with open(model / "history.csv", newline="", encoding="utf-8") as stream:
        history = list(csv.DictReader(stream))
    config = summary["config"]
    epochs = float(history[-1]["epoch"]) if history else 0.0
    rate = sum(float(row["tokens_per_second"]) * float(row["seconds"]) for row in history) / max(
        sum(float(row["seconds"]) for row in history), 1e-9
    )
    row = {
        "name": args.name,
        "arch": config["model"]["arch"],
        "parameters": summary["models"]["training"]["total_params"],
        "precision": config["training"]["precision"],
        "epochs": epochs,
        "steps": int(float(history[-1]["steps"])) if history else 0,
        "train_minutes": round(train_seconds / 60, 1),
        "bleu_greedy": results[1][1]["scores"]["bleu"],
        "chrf_greedy": results[1][1]["scores"]["chrf"],
        "bleu_beam5": results[5][1]["scores"]["bleu"],
        "chrf_beam5": results[5][1]["scores"]["chrf"],
        "train_tokens_per_second": round(rate),
        "evaluate_beam5_seconds": round(results[5][0], 2),
    }
    print(json.dumps(row))
    print(
        f"| {row['name']} | {row['arch']} | {row['parameters'] / 1e6:.1f}M | {row['precision']} | "
        f"{row['epochs']:g} ({row['steps']}) | {row['bleu_greedy']:.1f} / {row['chrf_greedy']:.1f} | "
        f"{row['bleu_beam5']:.1f} / {row['chrf_beam5']:.1f} | {row['train_tokens_per_second']:,} | "
        f"{row['evaluate_beam5_seconds']:.1f} s | `{shlex.join(['nmt', *train[1:]])}` |"
    )


if __name__ == "__main__":
    main()
