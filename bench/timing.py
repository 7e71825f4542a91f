"""What the benchmark scripts share: running a command and timing it."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time


def timed(command: list[str], echo: bool = False) -> tuple[float, str]:
    """(wall seconds, stdout) of a command that must succeed; a failure ends the benchmark."""
    if echo:
        print("$ " + shlex.join(command), flush=True)
    started = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if run.returncode:
        sys.exit(f"{shlex.join(command)} failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return seconds, run.stdout
