"""SIGKILL `nmt train` at random moments, many times over one model directory, and check after
each kill that no complete best model was lost, that `nmt translate` works, and that the next
run resumes from where the kill left it.

    python bench/kill_at_random.py [--runs 30] [--seed 0] [--keep DIR]

Half the kills land while a file is being saved (the script watches the model directory for a
save's temporary or staged files and kills on sight), the other half at a random moment. The
model is a tiny Transformer on a synthetic letter-reversal task, so that an epoch ends, a best
model is saved and exported every few seconds. After each kill the script does what the next
`nmt train` does first under its lock (`finish_saves`), then checks:

- best model kept: the complete best model is the one from before the kill, or a newer one;
- translate: `nmt translate` succeeds once a best model exists;
- resumed: the next run starts from the newest complete checkpoint, never from scratch once a
  checkpoint exists, and the history keeps a row for every epoch before that point.

It exits non-zero if any check failed in any run.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nmt_cli.checkpoints import complete_best_position, finish_saves, resume_points
from nmt_cli.history import read_history
from nmt_cli.workspace import Workspace
from timing import machine

MODEL = ["--arch", "transformer", "--units", "32", "--heads", "2", "--ff-units", "64", "--layers", "1"]
TRAINING = ["--batch-tokens", "0", "--batch-size", "16", "--best-by", "loss", "--save-every", "5", "--epochs", "100000"]
SAVING = (".partial", ".next.", ".staging")  # names a save in progress writes (files.py, checkpoints.py)


def reversal_corpus(folder: Path, seed: int) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for split, count in (("train", 2000), ("dev", 100)):
        pairs = [[rng.choice("abcdefghij") for _ in range(rng.randint(3, 6))] for _ in range(count)]
        (folder / f"{split}.en").write_text("".join(" ".join(p) + "\n" for p in pairs), encoding="utf-8")
        (folder / f"{split}.ja").write_text("".join(" ".join(reversed(p)) + "\n" for p in pairs), encoding="utf-8")


def nmt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nmt_cli", *args], capture_output=True, text=True, timeout=600)


def being_saved(model_dir: Path) -> str | None:
    """The name of a file or folder a save in progress is writing, if any."""
    try:
        names = [entry.name for folder in (model_dir, model_dir / "checkpoints") for entry in os.scandir(folder)]
    except FileNotFoundError:
        return None
    return next((name for name in names if any(marker in name for marker in SAVING)), None)


def kill_during_a_save(process: subprocess.Popen, model_dir: Path, rng: random.Random) -> str:
    """SIGKILL on sight of the k-th save of the run (k from 1 to 12), or after 120 s."""
    wanted, seen, was_saving = rng.randint(1, 12), 0, False
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        saving = being_saved(model_dir)
        if saving and not was_saving:
            seen += 1
            if seen == wanted:
                process.send_signal(signal.SIGKILL)
                return f"during save {seen} ({saving})"
        was_saving = bool(saving)
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    return "after 120 s, no save seen"


def kill_at_random(process: subprocess.Popen, rng: random.Random) -> str:
    delay = rng.uniform(4, 25)
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
    return f"at {delay:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="work here (kept) instead of in a temporary folder")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = args.keep or Path(tempfile.mkdtemp(prefix="nmt-kill-"))
    print(f"machine: {machine()}", flush=True)
    corpus, data, model_dir = work / "corpus", work / "data", work / "model"
    reversal_corpus(corpus, args.seed)
    prepared = nmt("prepare", "--source", str(corpus), "--data-dir", str(data), "--vocab-size", "300")
    if prepared.returncode:
        sys.exit(prepared.stderr)
    workspace, failures = Workspace(model_dir), []
    best_kept, start_expected = None, None  # the complete best, and where the next run must start
    try:
        for run in range(1, args.runs + 1):
            command = [sys.executable, "-m", "nmt_cli", "train", "--data-dir", str(data), "--model-dir", str(model_dir)]
            process = subprocess.Popen(
                [*command, *MODEL, *TRAINING], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            moment = kill_during_a_save(process, model_dir, rng) if run % 2 else kill_at_random(process, rng)
            _, err = process.communicate(timeout=60)
            problems = []
            began = "resuming from" in err or "tok/s" in err  # a kill may come before TensorFlow has loaded
            if start_expected is not None and began and f"resuming from {start_expected} of" not in err:
                problems.append(f"did not resume from {start_expected}: {err.strip()[-300:]}")
            finish_saves(workspace)  # what the next `nmt train` does first, under its lock
            best = complete_best_position(workspace)
            if best_kept is not None and (best is None or best < best_kept):
                problems.append(f"complete best model lost: was {best_kept}, now {best}")
            if best is not None:
                translated = nmt("translate", "--model-dir", str(model_dir), "a b c d")
                if translated.returncode or len(translated.stdout.splitlines()) != 1:
                    problems.append(f"nmt translate failed: {translated.stderr.strip()[-300:]}")
            points = resume_points(workspace)
            start_expected = points[0][0] if points else None
            rows = {row.epoch for row in read_history(workspace.history)}
            if start_expected is not None and not set(range(1, start_expected.epochs + 1)) <= rows:
                problems.append(f"history lacks rows before {start_expected}: has {sorted(rows)}")
            best_kept = best or best_kept
            print(f"run {run:2}: killed {moment}; best {best}; next start {start_expected}; {len(problems)} problems")
            for problem in problems:
                print(f"    {problem}")
            failures += problems
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{args.runs} kills, {len(failures)} problems; the complete best model reached {best_kept}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
