"""Training throughput on the real corpus: non-padding target tokens per second, seconds per
epoch (extrapolated from the measured steps) and peak memory (RSS), one configuration per process.

    python bench/train_speed.py [--data-dir data/prepared] [--steps 150] [--warmup 30]

Prepare the data first (`nmt prepare --source $NMT_TEST_CORPUS`). Each configuration runs in its
own process so that its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

TUTORIAL = {"arch": "seq2seq", "units": 1024, "embedding_dim": 256}
# name: (model options, training options)
CONFIGS = {
    "default (attention, 256 units, embedding 256)": ({"arch": "attention"}, {}),
    "seq2seq, 256 units, embedding 256": ({"arch": "seq2seq"}, {}),
    "tutorial (seq2seq, 1024 units, embedding 256)": (TUTORIAL, {}),
}


def measure(data_dir: Path, model_options: dict, training_options: dict, steps: int, warmup: int) -> dict:
    from nmt_cli.backend import load_tensorflow

    load_tensorflow()
    from nmt_cli.config import ModelConfig, TrainingConfig
    from nmt_cli.datadir import DataDir
    from nmt_cli.dataset import ParallelBatches
    from nmt_cli.models import build_models
    from nmt_cli.training import compile_model, set_determinism

    data = DataDir(data_dir)
    manifest = data.manifest()
    config = ModelConfig(
        **model_options,
        source_vocab_size=manifest.vocab_size(manifest.source_lang),
        target_vocab_size=manifest.vocab_size(manifest.target_lang),
    )
    training = TrainingConfig(**training_options)
    set_determinism(training.seed, deterministic_ops=not training.jit_compile)
    models = build_models(config)
    compile_model(models.training, training)
    batches = ParallelBatches(*data.load_split("train"), training.batch_size, training.seed, shuffle=True)
    models.training.fit(batches.dataset().take(warmup), epochs=1, verbose=0)
    started = time.perf_counter()
    history = models.training.fit(batches.dataset(first_epoch=1).take(steps), epochs=1, verbose=0)
    seconds = time.perf_counter() - started
    tokens = history.history["target_tokens"][-1]
    rate = tokens / seconds
    return {
        "target_tokens_per_second": round(rate),
        "seconds_per_epoch": round(batches.target_tokens / rate, 1),
        "batches_per_epoch": batches.batches_per_epoch,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "parameters": models.training.count_params(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data/prepared"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--only", choices=list(CONFIGS), help="measure one configuration, in this process")
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure(args.data_dir, *CONFIGS[args.only], args.steps, args.warmup)))
        return
    for name in CONFIGS:
        run = subprocess.run(
            [
                sys.executable,
                __file__,
                "--data-dir",
                str(args.data_dir),
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
                "--only",
                name,
            ],
            capture_output=True,
            text=True,
        )
        if run.returncode:
            sys.exit(f"{name}: failed\n{run.stderr[-2000:]}")
        result = json.loads(run.stdout.strip().splitlines()[-1])
        print(
            f"{name}: {result['target_tokens_per_second']} target tokens/s, {result['seconds_per_epoch']} s/epoch "
            f"({result['batches_per_epoch']} batches), peak RSS {result['peak_rss_mb']} MB, "
            f"{result['parameters']:,} parameters",
            flush=True,
        )


if __name__ == "__main__":
    main()
