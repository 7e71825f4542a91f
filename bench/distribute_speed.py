"""Training speed across tf.distribute set-ups, with the `nmt train` command a user runs.

    python bench/distribute_speed.py --source ../shared/data/small_parallel_enja --work /tmp/dist \\
        [--pairs 10000] [--epochs 2] [--gpu]

Prints optimizer steps per second and target tokens per second (from the chief's history.csv,
so start-up is left out) for one worker and for two workers on 127.0.0.1 (MultiWorkerMirrored
Strategy, the same global batches). On a machine with a GPU, `--gpu` also measures one process
on it in float32 and in mixed precision. Everything is written below --work.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from timing import free_local_ports, timed

MODEL = ["--arch", "transformer", "--units", "256", "--heads", "4", "--ff-units", "1024", "--layers", "3"]


def speeds(model_dir: Path) -> tuple[float, float]:
    """(optimizer steps per second, target tokens per second) over the run's epochs."""
    with open(model_dir / "history.csv", newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    seconds = sum(float(row["seconds"]) for row in rows)
    tokens = sum(float(row["tokens_per_second"]) * float(row["seconds"]) for row in rows)
    return float(rows[-1]["steps"]) / seconds, tokens / seconds


def workers(nmt: str, count: int, train: list[str], model_dir: Path) -> tuple[float, float]:
    addresses = [f"127.0.0.1:{port}" for port in free_local_ports(count)]
    processes = []
    for index in range(count):
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config)}
        directory = model_dir if index == 0 else model_dir.with_name(f"{model_dir.name}-worker{index}")
        command = [nmt, "train", "--distribute", "multi-worker", *train, "--model-dir", str(directory)]
        processes.append(
            subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        )
    for process in processes:
        _, err = process.communicate(timeout=3600)
        if process.returncode:
            sys.exit(f"a worker failed ({process.returncode}):\n{err[-3000:]}")
    return speeds(model_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=10000, help="training pairs to prepare")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--gpu", action="store_true", help="also measure one GPU, float32 and mixed precision")
    args = parser.parse_args()
    nmt = shutil.which("nmt") or sys.exit("nmt is not on PATH: install the project first")
    data = args.work / "data"
    timed([nmt, "prepare", "--source", str(args.source), "--data-dir", str(data), "--max-pairs", str(args.pairs)])
    train = [
        "--data-dir",
        str(data),
        *MODEL,
        "--epochs",
        str(args.epochs),
        "--best-by",
        "loss",
        "--precision",
        "float32",
    ]
    for count in (1, 2):
        steps, tokens = workers(nmt, count, train, args.work / f"workers-{count}")
        print(f"{count} worker(s) on 127.0.0.1: {steps:.2f} steps/s, {tokens:,.0f} target tokens/s", flush=True)
    if args.gpu:
        for precision in ("float32", "auto"):
            model_dir = args.work / f"gpu-{precision}"
            command = [nmt, "train", *train[:-2], "--precision", precision, "--model-dir", str(model_dir)]
            timed(command, echo=True)
            steps, tokens = speeds(model_dir)
            print(f"one GPU, precision {precision}: {steps:.2f} steps/s, {tokens:,.0f} target tokens/s", flush=True)


if __name__ == "__main__":
    main()
