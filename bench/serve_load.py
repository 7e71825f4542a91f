"""`nmt serve` under load, against `nmt evaluate` on the same engine and beam, in one run.

    python bench/serve_load.py [--model-dir models/default] [--seconds 60] [--clients 32] [--beam-size 5]

Measures, in order: `nmt evaluate --split dev` (its sentences/s, decoding only); how long
`nmt serve` (started here on a free loopback port) takes to listen and to be ready; the latency
of one request at a time on the idle server (a 10-word sentence); then `--clients` clients that
each send one dev sentence a request, the next as soon as the last is answered, for `--seconds`
seconds: throughput, p50 and p99 latency, errors, and the server's resident memory after the
first minute (or half the run, if shorter) and at the end. The server is stopped with SIGTERM
and must exit 0; `nmt evaluate` runs again, and the load's throughput is set against the mean of
the two evaluations. Nothing is written to the model directory.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from nmt_cli.datadir import DataDir
from timing import machine, timed_with_usage

IDLE_SENTENCE = "i can 't tell who will arrive first at the station ."  # 10 words and a full stop
IDLE_REQUESTS = 50


class Client:
    """One keep-alive connection to the server, as a client library holds one."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def translate(self, text: str, beam_size: int) -> tuple[int, float]:
        """(status, seconds) of one `POST /v1/translate` of one line."""
        body = json.dumps({"text": [text], "beam_size": beam_size})
        started = time.perf_counter()
        self.connection.request("POST", "/v1/translate", body, {"Content-Type": "application/json"})
        response = self.connection.getresponse()
        payload = response.read()
        seconds = time.perf_counter() - started
        if response.status == 200 and len(json.loads(payload)["translations"]) != 1:
            return 0, seconds
        return response.status, seconds


def resident_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def health(port: int) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", "/health")
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def start_server(nmt: str, model_dir: Path, engine: str, stderr) -> tuple[subprocess.Popen, int, float, float]:
    """The server process, its port, and the seconds it took to listen and to be ready."""
    started = time.perf_counter()
    command = [nmt, "serve", "--model-dir", str(model_dir), "--engine", engine, "--port", "0"]
    # Every client's request may wait in the queue at once.
    process = subprocess.Popen([*command, "--queue-lines", "4096"], stdout=subprocess.PIPE, stderr=stderr, text=True)
    found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", process.stdout.readline())
    if found is None:
        process.kill()
        sys.exit("nmt serve did not start")
    listening = time.perf_counter() - started
    port = int(found.group(1))
    while health(port)["status"] != "ready":
        if process.poll() is not None:
            sys.exit("nmt serve stopped while loading")
        time.sleep(0.01)
    return process, port, listening, time.perf_counter() - started


def load(port: int, sentences: list[str], clients: int, seconds: float, beam_size: int, pid: int) -> dict:
    latencies: list[float] = []
    errors = [0]
    memory: dict[str, float] = {}
    stop_at = time.perf_counter() + seconds
    lock = threading.Lock()

    def client(number: int) -> None:
        session, mine, failed = Client(port), [], 0
        position = number
        while time.perf_counter() < stop_at:
            try:
                status, took = session.translate(sentences[position % len(sentences)], beam_size)
            except OSError:
                status, took, session = 0, 0.0, Client(port)
            if status == 200:
                mine.append(took)
            else:
                failed += 1
            position += clients
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    def watch_memory() -> None:
        mark = min(60.0, seconds / 2)
        time.sleep(mark)
        memory[f"after {mark:.0f} s"] = resident_mb(pid)

    threads = [threading.Thread(target=client, args=(number,)) for number in range(clients)]
    watcher = threading.Thread(target=watch_memory)
    started, server_cpu, client_cpu = time.perf_counter(), cpu_seconds(pid), time.process_time()
    for thread in [*threads, watcher]:
        thread.start()
    for thread in [*threads, watcher]:
        thread.join()
    elapsed = time.perf_counter() - started
    memory["at the end"] = resident_mb(pid)
    cpu = {"server": cpu_seconds(pid) - server_cpu, "clients": time.process_time() - client_cpu}
    queue = health(port)["queue"]
    return {
        "latencies": latencies,
        "errors": errors[0],
        "seconds": elapsed,
        "memory": memory,
        "cpu": cpu,
        "mean_batch": queue["lines_translated"] / max(queue["batches"], 1),
    }


def evaluate(command: list[str]) -> dict:
    """`nmt evaluate --json`'s report, with the CPU time the whole process took."""
    _, out, usage = timed_with_usage(command)
    return {**json.loads(out), "cpu_seconds": usage.ru_utime + usage.ru_stime}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/default"))
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--engine", default="auto", choices=("auto", "ctranslate2", "keras"))
    args = parser.parse_args()
    nmt = shutil.which("nmt") or sys.exit("nmt is not on PATH: install the project first")
    model_dir = args.model_dir.resolve()
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    data_dir = (model_dir / config["data_dir"]).resolve()
    data = DataDir(data_dir)
    sentences = data.text("dev", data.manifest().source_lang).read_text(encoding="utf-8").splitlines()
    print(f"machine: {machine()}")
    print(f"model: {model_dir}, engine {args.engine}, beam {args.beam_size}; {len(sentences)} dev sentences")

    with tempfile.TemporaryDirectory(prefix="nmt-serve-load-") as scratch:
        command = [nmt, "evaluate", "--model-dir", str(model_dir), "--data-dir", str(data_dir), "--split", "dev"]
        command += ["--engine", args.engine, "--beam-size", str(args.beam_size), "--json"]
        command += ["--output", str(Path(scratch) / "hypotheses.txt")]
        evaluated = [evaluate(command)]
        print(
            f"nmt evaluate: {evaluated[0]['sentences_per_second']:.1f} sentences/s ({evaluated[0]['engine']}); "
            f"{evaluated[0]['cpu_seconds']:.1f} s of CPU, its start and scoring included"
        )

        with open(Path(scratch) / "serve.log", "w") as log:
            process, port, listening, ready = start_server(nmt, model_dir, args.engine, log)
            try:
                print(f"nmt serve: listening after {listening:.2f} s, ready after {ready:.2f} s")
                idle = Client(port)
                idle_seconds = [idle.translate(IDLE_SENTENCE, args.beam_size)[1] for _ in range(IDLE_REQUESTS)]
                print(
                    f"idle, one request at a time ({IDLE_REQUESTS}, 10 words, beam {args.beam_size}): "
                    f"p50 {1000 * statistics.median(idle_seconds):.1f} ms"
                )
                result = load(port, sentences, args.clients, args.seconds, args.beam_size, process.pid)
            finally:
                process.send_signal(signal.SIGTERM)
                code = process.wait(timeout=60)
        # Measured again after the load: other work on the machine then weighs on both figures alike.
        evaluated.append(evaluate(command))
        print(f"nmt evaluate again: {evaluated[1]['sentences_per_second']:.1f} sentences/s")
        if code != 0:
            sys.exit(f"nmt serve exited {code} on SIGTERM:\n{(Path(scratch) / 'serve.log').read_text()[-3000:]}")

    latencies = result["latencies"]
    throughput = len(latencies) / result["seconds"]
    share = throughput / statistics.mean(e["sentences_per_second"] for e in evaluated)
    print(
        f"load: {args.clients} clients, one sentence a request, {result['seconds']:.0f} s: "
        f"{throughput:.1f} sentences/s = {100 * share:.0f}% of nmt evaluate's (the mean of its two); "
        f"p50 {1000 * statistics.median(latencies):.1f} ms, p99 {1000 * percentile(latencies, 0.99):.1f} ms; "
        f"{len(latencies)} answered, {result['errors']} errors"
    )
    cpu = result["cpu"]
    # Other work on the machine takes CPU from the server and from `nmt evaluate` at different
    # moments; sentences per CPU second compare the two where it does.
    per_cpu = statistics.mean(e["scores"]["sentences"] / e["cpu_seconds"] for e in evaluated)
    print(
        f"sentences per CPU second: server {len(latencies) / cpu['server']:.0f}, "
        f"nmt evaluate {per_cpu:.0f} (whole process)"
    )
    print(
        f"CPU during the load: server {cpu['server']:.1f} s, these clients {cpu['clients']:.1f} s "
        f"of {result['seconds'] * os.cpu_count():.0f} s ({os.cpu_count()} cores); "
        f"{result['mean_batch']:.1f} lines a batch on average"
    )
    first, last = result["memory"].values()
    marks = ", ".join(f"{mb:.0f} MB {when}" for when, mb in result["memory"].items())
    print(f"server memory (RSS): {marks} ({100 * (last - first) / first:+.1f}%); exited 0 on SIGTERM")


if __name__ == "__main__":
    main()
