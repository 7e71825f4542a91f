"""Wall time of `nmt --help` (whole process), and whether TensorFlow was imported.

python bench/help_time.py [runs]
"""

import shutil
import statistics
import subprocess
import sys
import time


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    nmt = shutil.which("nmt") or sys.exit("nmt is not on PATH: install the project first")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([nmt, "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    print(
        f"nmt --help: median {statistics.median(times):.3f} s, "
        f"min {min(times):.3f} s, max {max(times):.3f} s over {runs} runs"
    )


if __name__ == "__main__":
    main()
