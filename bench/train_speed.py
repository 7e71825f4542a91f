"""Training throughput on the real corpus: non-padding target tokens per second, seconds per
epoch (extrapolated from the measured steps) and peak memory (RSS), one configuration per
process; and this machine's matrix-multiply peak (float32 and bfloat16), measured in the same
run, with the share of it each configuration reaches.

    python bench/train_speed.py [--data-dir data/prepared] [--steps 150] [--warmup 30] [--only NAME]

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
JOEYNMT_SIZE = {"arch": "transformer", "units": 256, "heads": 4, "ff_units": 1024, "layers": 3}
# name: (model options, training options)
CONFIGS = {
    "attention, 256 units, embedding 256": ({"arch": "attention"}, {}),
    "seq2seq, 256 units, embedding 256": ({"arch": "seq2seq"}, {}),
    "tutorial (seq2seq, 1024 units, embedding 256)": (TUTORIAL, {}),
    "transformer, JoeyNMT size, float32": (JOEYNMT_SIZE, {}),
    "transformer, JoeyNMT size, mixed_bfloat16": (JOEYNMT_SIZE, {"precision": "mixed_bfloat16"}),
}


def matmul_peak(dtype: str, size: int = 2048, repeats: int = 20) -> float:
    """GFLOP/s of a large square matrix product on this machine."""
    import tensorflow as tf

    a = tf.cast(tf.random.normal((size, size)), dtype)
    b = tf.cast(tf.random.normal((size, size)), dtype)
    product = tf.function(lambda a, b: tf.linalg.matmul(a, b))
    product(a, b).numpy()
    started = time.perf_counter()
    for _ in range(repeats):
        result = product(a, b)
    result.numpy()
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def flops_per_target_token(config, source_per_target: float) -> float:
    """Forward + backward multiply-adds (x2) of the weight matrices per real target token.

    Attention scores and softmax are left out (a few per cent at these lengths); backward costs
    twice the forward.
    """
    if config.arch != "transformer":
        return float("nan")
    d, ff = config.units, config.ff_units
    encoder = config.layers * (4 * d * d + 2 * d * ff)
    decoder = config.layers * (8 * d * d + 2 * d * ff) + d * config.target_vocab_size
    return 3 * 2 * (encoder * source_per_target + decoder)


def measure(data_dir: Path, model_options: dict, training_options: dict, steps: int, warmup: int) -> dict:
    from nmt_cli.backend import load_tensorflow

    load_tensorflow()
    import keras

    from nmt_cli.config import ModelConfig, RunConfig, TrainingConfig
    from nmt_cli.datadir import DataDir
    from nmt_cli.dataset import ParallelBatches
    from nmt_cli.models import build_models
    from nmt_cli.training import compile_model, make_optimizer, set_determinism

    data = DataDir(data_dir)
    manifest = data.manifest()
    config = ModelConfig(
        **model_options,
        source_vocab_size=manifest.vocab_size(manifest.source_lang),
        target_vocab_size=manifest.vocab_size(manifest.target_lang),
    )
    # Each row names its precision: float32 unless it says otherwise, whatever this CPU would choose.
    training = RunConfig(model=config, training=TrainingConfig(**{"precision": "float32", **training_options})).training
    keras.mixed_precision.set_dtype_policy(training.precision)
    set_determinism(training.seed, deterministic_ops=not training.jit_compile)
    models = build_models(config)
    compile_model(models.training, training, make_optimizer(training, training.precision))
    source, target = data.load_split("train")
    batches = ParallelBatches(
        source, target, training.batch_size, training.seed, shuffle=True, batch_tokens=training.batch_tokens
    )
    models.training.fit(batches.dataset().take(warmup), epochs=1, verbose=0)
    started = time.perf_counter()
    history = models.training.fit(batches.dataset(1).take(steps), epochs=1, verbose=0)
    seconds = time.perf_counter() - started
    tokens = history.history["target_tokens"][-1]
    rate = tokens / seconds
    epoch_tokens = sum(len(t) + 1 for t in target)  # real target tokens, <eos> included
    source_per_target = sum(len(s) for s in source) / epoch_tokens
    return {
        "target_tokens_per_second": round(rate),
        "seconds_per_epoch": round(epoch_tokens / rate, 1),
        "batches_per_epoch": batches.batches_per_epoch,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "parameters": models.training.count_params(),
        "gflops": flops_per_target_token(config, source_per_target) * rate / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data/prepared"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--only", choices=list(CONFIGS), help="measure one configuration")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process:
        print(json.dumps(measure(args.data_dir, *CONFIGS[args.only], args.steps, args.warmup)))
        return
    from nmt_cli.backend import load_tensorflow

    load_tensorflow()
    from nmt_cli.distribute import cpu_has_bfloat16

    # Without bfloat16 instructions (or under an ONEDNN_MAX_CPU_ISA cap below them) oneDNN has no
    # bfloat16 matmul, and asking for one aborts the process.
    dtypes = ("float32", "bfloat16") if cpu_has_bfloat16() else ("float32",)
    peaks = {dtype: matmul_peak(dtype) for dtype in dtypes}
    bfloat16 = f"{peaks['bfloat16']:.0f} GFLOP/s" if "bfloat16" in peaks else "unavailable"
    print(f"matmul peak: float32 {peaks['float32']:.0f} GFLOP/s, bfloat16 {bfloat16}", flush=True)
    for name in [args.only] if args.only else CONFIGS:
        command = [sys.executable, __file__, "--data-dir", str(args.data_dir), "--steps", str(args.steps)]
        run = subprocess.run(
            [*command, "--warmup", str(args.warmup), "--only", name, "--in-process"], capture_output=True, text=True
        )
        if run.returncode:
            sys.exit(f"{name}: failed\n{run.stderr[-2000:]}")
        result = json.loads(run.stdout.strip().splitlines()[-1])
        share = ""
        if result["gflops"] == result["gflops"]:  # not NaN: a Transformer, whose work is counted
            share = f", {result['gflops']:.0f} GFLOP/s = {result['gflops'] / peaks['float32']:.0%} of the float32 peak"
            if "bfloat16" in peaks:
                share += f", {result['gflops'] / peaks['bfloat16']:.0%} of the bfloat16 peak"
        print(
            f"{name}: {result['target_tokens_per_second']} target tokens/s, {result['seconds_per_epoch']} s/epoch "
            f"({result['batches_per_epoch']} batches), peak RSS {result['peak_rss_mb']} MB, "
            f"{result['parameters']:,} parameters{share}",
            flush=True,
        )


if __name__ == "__main__":
    main()
