"""Fine-tuning as domain adaptation, on the default corpus: BLEU on a held-apart slice before and after.

    python bench/finetune_domain.py --source ../shared/data/small_parallel_enja [--parent-minutes 8]

The "domain" is the corpus' questions (English lines ending in " ?"). A parent Transformer trains
on everything else for `--parent-minutes` (`nmt train --time-budget`); `nmt prepare
--tokenizers-from` encodes the training split's questions with its tokenizers (200 of them as
the domain's dev split), and `nmt train --init-from` trains a child on them for `--epochs`. Both
are scored on the dev split's questions, held apart: neither trained on nor used to choose a
checkpoint (the child is scored at its last epoch). The general dev split (without questions) is
scored too: what the child forgot. Everything is written in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from timing import machine, timed

NMT = [sys.executable, "-m", "nmt_cli"]


def write_split(folder: Path, split: str, pairs: list[tuple[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for side, lang in enumerate(("en", "ja")):
        (folder / f"{split}.{lang}").write_text("".join(pair[side] + "\n" for pair in pairs), encoding="utf-8")


def pairs_of(source: Path, split: str) -> list[tuple[str, str]]:
    english, japanese = ((source / f"{split}.{lang}").read_text(encoding="utf-8").splitlines() for lang in ("en", "ja"))
    return list(zip(english, japanese, strict=True))


def is_question(pair: tuple[str, str]) -> bool:
    return pair[0].endswith(" ?")


def bleu(model_dir: Path, data_dir: Path, split: str, checkpoint: str) -> float:
    command = [*NMT, "evaluate", "--model-dir", model_dir, "--data-dir", data_dir, "--split", split]
    _, out = timed([*map(str, command), "--checkpoint", checkpoint, "--json"])
    return json.loads(out)["scores"]["bleu"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="small_parallel_enja: train.{en,ja}, dev.{en,ja}")
    parser.add_argument("--parent-minutes", type=float, default=8.0)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="nmt-finetune-") as work:
        work = Path(work)
        train, dev = pairs_of(args.source, "train"), pairs_of(args.source, "dev")
        write_split(work / "general", "train", [pair for pair in train if not is_question(pair)])
        write_split(work / "general", "dev", [pair for pair in dev if not is_question(pair)])
        questions = [pair for pair in train if is_question(pair)]
        write_split(work / "questions", "train", questions[:-200])
        write_split(work / "questions", "dev", questions[-200:])
        write_split(work / "questions", "test", [pair for pair in dev if is_question(pair)])
        general, domain, parent, child = (work / name for name in ("general-data", "domain-data", "parent", "child"))
        timed([*map(str, [*NMT, "prepare", "--source", work / "general", "--data-dir", general])])
        seconds, _ = timed(
            [*map(str, [*NMT, "train", "--data-dir", general, "--model-dir", parent])]
            + ["--time-budget", str(args.parent_minutes)]
        )
        print(f"parent: trained without questions for {seconds / 60:.1f} min")
        prepare = [*NMT, "prepare", "--source", work / "questions", "--data-dir", domain, "--tokenizers-from", parent]
        timed([*map(str, prepare)])
        before = bleu(parent, domain, "test", "best"), bleu(parent, general, "dev", "best")
        train_child = [*NMT, "train", "--init-from", parent, "--data-dir", domain, "--model-dir", child]
        settings = ["--learning-rate", "2e-4", "--schedule", "constant", "--warmup", "0"]
        epochs = ["--epochs", str(args.epochs), "--save-every", str(args.epochs)]
        seconds, _ = timed([*map(str, train_child), *epochs, *settings])
        print(f"child: fine-tuned on {len(questions) - 200} questions for {args.epochs} epochs, {seconds / 60:.1f} min")
        last = f"epoch-{args.epochs}"
        after = bleu(child, domain, "test", last), bleu(child, general, "dev", last)
        print(f"held-apart questions (dev, {sum(map(is_question, dev))}): BLEU {before[0]:.2f} -> {after[0]:.2f}")
        print(f"general dev (no questions): BLEU {before[1]:.2f} -> {after[1]:.2f}")


if __name__ == "__main__":
    main()
