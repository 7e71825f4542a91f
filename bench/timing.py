"""What the benchmark scripts share: running a command and timing it, and naming the machine."""

from __future__ import annotations

import os
import platform
import resource
import shlex
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack

# The instruction-set extensions that decide how fast matrix work runs on a CPU.
_NOTABLE_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16")


def machine() -> str:
    """The CPU model, core count and notable instruction sets: a benchmark's figures belong to it."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name") and model in ("unknown CPU", platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    notable = " ".join(flag for flag in _NOTABLE_FLAGS if flag in flags) or "none of " + " ".join(_NOTABLE_FLAGS)
    # What makes oneDNN (TensorFlow) and CTranslate2 take another instruction set than the best one here.
    names = ("ONEDNN_MAX_CPU_ISA", "CT2_FORCE_CPU_ISA")
    forced = [f"{name}={os.environ[name]}" for name in names if name in os.environ]
    return f"{model}, {os.cpu_count()} cores, {notable}" + (f" ({', '.join(forced)})" if forced else "")


def timed(command: list[str], echo: bool = False) -> tuple[float, str]:
    """(wall seconds, stdout) of a command that must succeed; a failure ends the benchmark."""
    seconds, out, _ = timed_with_memory(command, echo)
    return seconds, out


def timed_with_memory(command: list[str], echo: bool = False) -> tuple[float, str, float]:
    """(wall seconds, stdout, peak resident memory in MB) of a command that must succeed."""
    seconds, out, usage = timed_with_usage(command, echo)
    return seconds, out, usage.ru_maxrss / 1024


def timed_with_usage(command: list[str], echo: bool = False) -> tuple[float, str, resource.struct_rusage]:
    """(wall seconds, stdout, resource usage: CPU time, peak memory) of a command that must succeed."""
    if echo:
        print("$ " + shlex.join(command), flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    streams: dict[str, bytes] = {}
    readers = [
        threading.Thread(target=lambda name=name, pipe=pipe: streams.setdefault(name, pipe.read()))
        for name, pipe in (("out", process.stdout), ("err", process.stderr))
    ]
    for reader in readers:
        reader.start()
    # wait4, not wait: it gives this child's own peak memory.
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    if process.returncode:
        sys.exit(f"{shlex.join(command)} failed ({process.returncode}):\n{streams['err'].decode()[-3000:]}")
    return seconds, streams["out"].decode(), usage


def free_local_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now, for a cluster of workers on this machine."""
    with ExitStack() as held:
        servers = [held.enter_context(socket.create_server(("127.0.0.1", 0))) for _ in range(count)]
        return [server.getsockname()[1] for server in servers]
