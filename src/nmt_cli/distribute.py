"""Where training runs: TensorFlow's distribution strategies, and which process is the chief.

    none          TensorFlow's default strategy: this process, its devices as TensorFlow places ops
    mirrored      MirroredStrategy: one replica per GPU of this machine (or per logical CPU device)
    multi-worker  MultiWorkerMirroredStrategy over the machines TF_CONFIG lists (or Slurm's, when
                  TF_CONFIG is absent and Slurm's variables are set); one replica per worker
    auto          mirrored when more than one GPU is visible, else none

Which process is the chief is read from TF_CONFIG (or Slurm) without TensorFlow, so that the
model directory's lock and every write belong to the chief from the start.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from nmt_cli.architectures import ARCHITECTURES
from nmt_cli.errors import UserError
from nmt_cli.stopping import StopSignals

STRATEGIES = ("auto", "none", "mirrored", "multi-worker")
CLUSTER_TASKS = ("chief", "worker")  # what TF_CONFIG may list: MultiWorkerMirroredStrategy has no parameter servers


@dataclass(frozen=True)
class ClusterRole:
    """This process' place in a cluster: a lone process is its own chief."""

    kind: str = "chief"
    index: int = 0
    workers: int = 1
    has_chief: bool = True  # does the cluster name a chief? If not, worker 0 is it

    @property
    def is_chief(self) -> bool:
        return self.kind == "chief" or (self.kind == "worker" and self.index == 0 and not self.has_chief)


def this_task(strategy: str) -> ClusterRole:
    """This process' task: from TF_CONFIG, or Slurm's variables, for multi-worker; else the chief.

    A description TensorFlow could not use is refused here, in one line naming the variable and
    what is wrong with it, before TensorFlow loads.
    """
    if strategy != "multi-worker":
        return ClusterRole()
    raw = os.environ.get("TF_CONFIG")
    if raw:
        return _tf_config_task(raw)
    if "SLURM_PROCID" in os.environ:
        # What TensorFlow's SlurmClusterResolver reads: a job step's variables, set by srun.
        index, workers = _slurm_number("SLURM_PROCID", minimum=0), _slurm_number("SLURM_STEP_NUM_TASKS", minimum=1)
        if index >= workers:
            raise UserError(f"SLURM_PROCID={index} is not one of the step's SLURM_STEP_NUM_TASKS={workers} tasks")
        for name in ("SLURM_STEP_NODELIST", "SLURM_STEP_TASKS_PER_NODE"):
            _slurm_value(name)
        return ClusterRole("worker", index, workers, has_chief=False)
    raise UserError("--distribute multi-worker needs TF_CONFIG (or a Slurm job) to say where the workers are")


def _tf_config_task(raw: str) -> ClusterRole:
    def wrong(what: str) -> UserError:
        return UserError(f"TF_CONFIG is not a cluster description TensorFlow can use: {what}")

    try:
        config = json.loads(raw)
    except ValueError as error:
        raise wrong(f"not JSON ({error})") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        raise wrong('it needs a "cluster" object listing the workers\' host:port addresses')
    cluster, task = config["cluster"], config.get("task")
    for kind, addresses in cluster.items():
        if kind not in CLUSTER_TASKS:
            raise wrong(f'cluster task type "{kind}" is not one of {", ".join(CLUSTER_TASKS)}')
        if not isinstance(addresses, list) or not all(isinstance(a, str) and _is_host_port(a) for a in addresses):
            raise wrong(f'cluster "{kind}" must be a list of "host:port" addresses, not {json.dumps(addresses)}')
    sizes = {kind: len(cluster.get(kind, [])) for kind in CLUSTER_TASKS}
    if sizes["chief"] + sizes["worker"] == 0:
        raise wrong('its cluster lists no "chief" and no "worker"')
    if sizes["chief"] > 1:
        raise wrong(f'a cluster has one "chief" at most, not {sizes["chief"]}')
    if not isinstance(task, dict) or task.get("type") not in CLUSTER_TASKS:
        raise wrong(
            f'"task" must name this process: {{"type": "worker" or "chief", "index": N}}, not {json.dumps(task)}'
        )
    kind, index = task["type"], task.get("index", 0)
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < sizes[kind]:
        raise wrong(f'task index {json.dumps(index)} is not one of the cluster\'s {sizes[kind]} "{kind}" tasks')
    return ClusterRole(kind, index, sizes["chief"] + sizes["worker"], has_chief=bool(sizes["chief"]))


def _is_host_port(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def _slurm_value(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise UserError(f"{name} is not set: run nmt train --distribute multi-worker under srun, or set TF_CONFIG")
    return value


def _slurm_number(name: str, minimum: int) -> int:
    value = _slurm_value(name)
    if not value.isdigit() or int(value) < minimum:
        raise UserError(f"{name}={value!r} is not a whole number of at least {minimum}: is this a Slurm job?")
    return int(value)


DEFAULT_CLUSTER_TIMEOUT = 300  # seconds for every worker of a cluster to start listening


class StoppedWaiting(Exception):
    """A stop signal arrived while this worker waited for the others: nothing was trained."""

    def __init__(self, signal_number: int):
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


def make_strategy(kind: str, cluster_timeout: float, waiting: Callable[[str], None], signals: StopSignals):
    """The tf.distribute strategy `--distribute` names (TensorFlow is loaded by now).

    For multi-worker, first wait (at most `cluster_timeout` seconds, telling `waiting` whom it
    waits for, and ending at a stop signal) until every other worker listens: `wait_for_cluster`.
    """
    import tensorflow as tf

    if kind == "multi-worker":  # first: it must be made before TensorFlow sets up its devices
        if os.environ.get("TF_CONFIG"):
            resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        else:
            resolver = tf.distribute.cluster_resolver.SlurmClusterResolver()
        cluster = resolver.cluster_spec().as_dict()
        addresses = {(job, index): address for job in cluster for index, address in _numbered(cluster[job])}
        mine = addresses.pop((resolver.task_type, resolver.task_id))
        wait_for_cluster(mine, sorted(addresses.values()), cluster_timeout, waiting, signals)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
        signals.catch()  # back from the handler TensorFlow's server put in
        return strategy
    gpus = tf.config.list_logical_devices("GPU")
    if kind == "auto":
        kind = "mirrored" if len(gpus) > 1 else "none"
    if kind == "none":
        return tf.distribute.get_strategy()
    devices = gpus or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([device.name for device in devices])


def _numbered(addresses: list[str] | dict[int, str]) -> Iterator[tuple[int, str]]:
    return iter(addresses.items() if isinstance(addresses, dict) else enumerate(addresses))


def wait_for_cluster(
    mine: str, others: list[str], timeout: float, waiting: Callable[[str], None], signals: StopSignals
) -> None:
    """Listen on this worker's port and wait until every other worker's port answers.

    TensorFlow's own start-up waits for absent workers without a limit and, once its server has
    started, without heeding SIGTERM. Here each worker holds its port open with a plain socket
    (never accepting: a connection is all a peer needs to see) until it has reached every other
    one, then hands the port to TensorFlow's server; a worker already past this point answers on
    that server. A stop signal ends the wait.
    """
    with _listening(mine):
        deadline, told = time.monotonic() + timeout, False
        while True:
            if signals.received is not None:
                raise StoppedWaiting(signals.received)
            others = [address for address in others if not _answers(address)]
            if not others:
                return
            if time.monotonic() >= deadline:
                raise UserError(
                    f"no worker listens at {', '.join(others)} after {timeout:g} s: start `nmt train --distribute "
                    "multi-worker` there, or correct the cluster description (TF_CONFIG or Slurm's variables); "
                    "--cluster-timeout sets how long to wait"
                )
            if not told:
                waiting(f"waiting up to {timeout:g} s for the workers at {', '.join(others)}")
                told = True
            time.sleep(0.2)


@contextmanager
def _listening(address: str) -> Iterator[None]:
    port = int(address.rpartition(":")[2])
    dual = socket.has_dualstack_ipv6()  # every address of this machine, as TensorFlow's server will
    try:
        listener = socket.create_server(
            ("", port), family=socket.AF_INET6 if dual else socket.AF_INET, backlog=64, dualstack_ipv6=dual
        )
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise UserError(f"this worker's address {address} is taken: port {port} is in use here") from None
        raise UserError(f"cannot listen on this worker's address {address}: {error.strerror}") from None
    try:
        yield
    finally:
        listener.close()


def _answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def auto_precision(arch: str) -> str:
    """Mixed precision where it pays: bfloat16 on GPUs that have it (compute capability 8 and
    up), float16 on older GPUs. On a CPU, bfloat16 for the Transformer where the CPU has bfloat16
    instructions (AMX or AVX512_BF16, where it trains faster: README); float32 for the LSTMs,
    which gained no speed in bfloat16 and learned the reversal task far worse."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        return "mixed_bfloat16" if capability >= (8, 0) else "mixed_float16"
    return "mixed_bfloat16" if not ARCHITECTURES[arch].recurrent and cpu_has_bfloat16() else "float32"


# oneDNN's instruction-set caps (ONEDNN_MAX_CPU_ISA) under which it still has bfloat16 matrix
# multiplication; any other cap leaves TensorFlow's bfloat16 kernels without one.
_ONEDNN_BFLOAT16_ISAS = {
    "AVX512_CORE_BF16",
    "AVX512_CORE_FP16",
    "AVX10_1_512",
    "AVX512_CORE_AMX",
    "AVX10_1_512_AMX",
    "AVX512_CORE_AMX_FP16",
    "AVX10_1_512_AMX_FP16",
    "DEFAULT",
    "ALL",
}


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 (AMX or AVX512_BF16), and oneDNN may use it."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if cap and cap not in _ONEDNN_BFLOAT16_ISAS:
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags
