"""Whole-process decoding speed of the `nmt` command, as a user sees it.

    python bench/translate_speed.py [--model-dir models/default] [--runs 3]

Times `nmt evaluate --split dev` (500 sentences on small_parallel_enja) with beam 1 and beam 5,
and a one-sentence `nmt translate "text"` from a cold start. Needs a trained model directory.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

from timing import timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/default"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    nmt = shutil.which("nmt") or sys.exit("nmt is not on PATH: install the project first")
    for beam in (1, 5):
        times, report = [], {}
        for _ in range(args.runs):
            seconds, out = timed(
                [
                    nmt,
                    "evaluate",
                    "--model-dir",
                    str(args.model_dir),
                    "--split",
                    "dev",
                    "--beam-size",
                    str(beam),
                    "--json",
                ]
            )
            times.append(seconds)
            report = json.loads(out)
        sentences = report["scores"]["sentences"]
        wall = statistics.median(times)
        print(
            f"nmt evaluate, beam {beam}: {sentences} sentences in {wall:.2f} s whole process "
            f"({sentences / wall:.1f} sentences/s; decoding alone {report['seconds']:.2f} s, "
            f"{report['sentences_per_second']:.1f} sentences/s), BLEU {report['scores']['bleu']:.2f}"
        )
    times = [
        timed([nmt, "translate", "--model-dir", str(args.model_dir), "I can't tell who will arrive first."])[0]
        for _ in range(args.runs)
    ]
    print(
        f"nmt translate, one sentence, cold start: median {statistics.median(times):.2f} s "
        f"(min {min(times):.2f}, max {max(times):.2f})"
    )


if __name__ == "__main__":
    main()
