"""Training with tf.distribute: two real `nmt train --distribute multi-worker` processes on
127.0.0.1, and MirroredStrategy over two logical CPU devices. Every process is bounded in time
and killed if a test fails."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conftest import assert_one_line_error, free_local_ports, nmt
from nmt_cli.checkpoints import resume_points
from nmt_cli.distribute import ClusterRole, StoppedWaiting, this_task, wait_for_cluster
from nmt_cli.errors import UserError
from nmt_cli.history import read_history
from nmt_cli.stopping import StopSignals
from nmt_cli.workspace import Workspace

# Small enough that an epoch of the reversal task takes a few seconds with two workers.
TINY = ["--arch", "seq2seq", "--units", "16", "--embedding-dim", "8", "--batch-size", "32", "--best-by", "loss"]
# No dropout (each worker draws its own masks) and no clipping (each worker would clip its own
# share's gradient): what stays is the same arithmetic in another order.
EXACT = ["--dropout", "0", "--clipnorm", "0"]


@pytest.fixture
def cluster():
    """`cluster(args_of_worker)`: starts one `nmt train --distribute multi-worker` per worker, each
    with its TF_CONFIG; whatever still runs at the end of the test is killed."""
    started: list[subprocess.Popen] = []

    def start(args_of_worker: list[list]) -> list[subprocess.Popen]:
        addresses = [f"127.0.0.1:{port}" for port in free_local_ports(len(args_of_worker))]
        for index, args in enumerate(args_of_worker):
            tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
            env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "COLUMNS": "200"}
            command = [sys.executable, "-m", "nmt_cli", "train", "--distribute", "multi-worker", *map(str, args)]
            started.append(
                subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            )
        return started[-len(args_of_worker) :]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def finish(processes: list[subprocess.Popen], seconds: float = 300) -> list[tuple[int, str]]:
    deadline = time.monotonic() + seconds
    results = []
    for process in processes:
        _, err = process.communicate(timeout=max(deadline - time.monotonic(), 1))
        results.append((process.returncode, err))
    return results


def epoch_losses(model_dir: Path) -> list[float]:
    return [row.loss for row in read_history(Workspace(model_dir).history)]


def test_the_chief_is_the_worker_a_cluster_names_so(monkeypatch):
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}})
    )
    role = this_task("multi-worker")
    assert role == ClusterRole("worker", 1, 2, has_chief=False) and not role.is_chief
    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "worker", "index": 0}}),
    )
    assert not this_task("multi-worker").is_chief
    assert this_task("none").is_chief
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(UserError, match="TF_CONFIG"):
        this_task("multi-worker")
    monkeypatch.delenv("TF_CONFIG")
    for name, value in SLURM_STEP.items():
        monkeypatch.setenv(name, value)
    role = this_task("multi-worker")
    assert role == ClusterRole("worker", 0, 4, has_chief=False) and role.is_chief


SLURM_STEP = {  # what srun sets for a step of 4 tasks on 2 nodes, as SlurmClusterResolver reads it
    "SLURM_PROCID": "0",
    "SLURM_STEP_NUM_TASKS": "4",
    "SLURM_STEP_NODELIST": "node[1-2]",
    "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
}


@pytest.mark.parametrize(
    ("tf_config", "fragment"),
    [
        ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 5}}, "task index 5"),
        ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": -1}}, "task index -1"),
        ({"cluster": {"worker": ["a:1"], "ps": ["c:3"]}, "task": {"type": "worker", "index": 0}}, '"ps"'),
        ({"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}, '"task" must name'),
        ({"cluster": {"worker": ["a-host"]}, "task": {"type": "worker", "index": 0}}, "host:port"),
        ({"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}, "host:port"),
        ({"cluster": {}, "task": {"type": "worker", "index": 0}}, 'no "chief" and no "worker"'),
        ({"cluster": {"chief": ["a:1", "b:2"]}, "task": {"type": "chief", "index": 0}}, 'one "chief" at most'),
        ({"task": {"type": "worker", "index": 0}}, '"cluster" object'),
        (["a:1"], '"cluster" object'),
    ],
)
def test_a_wrong_cluster_description_is_one_line_before_tensorflow_loads(tmp_path, tf_config, fragment):
    completed = nmt(
        "train", "--distribute", "multi-worker", "--model-dir", tmp_path / "model",
        env={"TF_CONFIG": json.dumps(tf_config)}, before_tensorflow=True,
    )  # fmt: skip
    assert_one_line_error(completed, "TF_CONFIG", fragment)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"SLURM_PROCID": "abc"}, "SLURM_PROCID='abc'"),
        ({"SLURM_PROCID": "4"}, "SLURM_PROCID=4 is not one of"),
        ({"SLURM_STEP_NUM_TASKS": None}, "SLURM_STEP_NUM_TASKS is not set"),
        ({"SLURM_STEP_NODELIST": None}, "SLURM_STEP_NODELIST is not set"),
        ({"SLURM_STEP_TASKS_PER_NODE": ""}, "SLURM_STEP_TASKS_PER_NODE is not set"),
    ],
)
def test_a_wrong_or_partial_slurm_environment_is_one_line(tmp_path, changes, fragment):
    env = {
        **{name: None for name in os.environ if name.startswith("SLURM_")},
        "TF_CONFIG": None,
        **SLURM_STEP,
        **changes,
    }
    completed = nmt(
        "train", "--distribute", "multi-worker", "--model-dir", tmp_path / "model", env=env, before_tensorflow=True
    )
    assert_one_line_error(completed, fragment)


def test_two_workers_train_one_model_that_only_the_chief_writes(tmp_path, reversal_data, cluster):
    chief_dir, worker_dir = tmp_path / "chief", tmp_path / "worker"
    common = ["--data-dir", reversal_data, *TINY, "--epochs", "2", "--save-every", "1"]
    results = finish(cluster([[*common, "--model-dir", chief_dir], [*common, "--model-dir", worker_dir]]))
    for returncode, err in results:
        assert returncode == 0, err
    assert not worker_dir.exists()  # the other worker writes nowhere
    workspace = Workspace(chief_dir)
    assert workspace.saved_epochs() == [1, 2] and [r.epoch for r in read_history(workspace.history)] == [1, 2]
    translated = subprocess.run(
        [sys.executable, "-m", "nmt_cli", "translate", "--model-dir", str(chief_dir), "a b c"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert translated.returncode == 0 and len(translated.stdout.splitlines()) == 1, translated.stderr


def test_two_workers_give_the_loss_of_one_with_the_same_global_batch(tmp_path, reversal_data, cluster):
    # Validating inside the epoch too: the loops agree at step granularity.
    common = ["--data-dir", reversal_data, *TINY, *EXACT, "--epochs", "1", "--validate-every-steps", "25"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert finish(cluster([[*common, "--model-dir", one]]))[0][0] == 0
    results = finish(cluster([[*common, "--model-dir", two], [*common, "--model-dir", tmp_path / "other"]]))
    assert [code for code, _ in results] == [0, 0], results
    # Each worker sums its share's token losses and divides by the global batch's token count,
    # so the step is the one-worker step; only float32 sums in another order differ, by about
    # 1e-7 a step, which 63 steps of Adam keep far below this tolerance.
    assert epoch_losses(two) == pytest.approx(epoch_losses(one), rel=1e-4)
    rows_of_one, rows_of_two = (read_history(Workspace(model_dir).history) for model_dir in (one, two))
    assert [(row.epoch, row.steps) for row in rows_of_two] == [(1, 25), (1, 50), (1, 63)]
    assert [row.steps for row in rows_of_one] == [row.steps for row in rows_of_two]
    assert [row.val_loss for row in rows_of_two] == pytest.approx([row.val_loss for row in rows_of_one], rel=1e-4)


def test_sigterm_to_the_chief_of_two_workers_saves_a_checkpoint_that_resumes(tmp_path, reversal_data, cluster):
    model_dir = tmp_path / "model"
    common = ["--data-dir", reversal_data, *TINY, "--model-dir", model_dir]
    chief, worker = cluster([[*common, "--epochs", "50"], [*common, "--epochs", "50"]])
    workspace = Workspace(model_dir)
    deadline = time.monotonic() + 240
    while not workspace.history.exists():
        assert time.monotonic() < deadline and chief.poll() is None, "the first epoch never ended"
        time.sleep(0.1)
    chief.send_signal(signal.SIGTERM)
    (chief_code, chief_err), (worker_code, _) = finish([chief, worker])
    assert chief_code == 143 and worker_code == 143, chief_err
    (position, _), *_ = resume_points(workspace)
    assert position.epochs >= 1

    results = finish(cluster([[*common, "--epochs", str(position.epochs + 1)]] * 2))
    assert [code for code, _ in results] == [0, 0], results
    assert f"resuming from {position}" in results[0][1]


def test_waiting_for_workers_ends_when_the_last_one_listens(tmp_path):
    mine, late = (f"127.0.0.1:{port}" for port in free_local_ports(2))
    told: list[str] = []
    with socket.socket() as listener:

        def start_listening():
            time.sleep(0.5)
            listener.bind(("127.0.0.1", int(late.rpartition(":")[2])))
            listener.listen()

        starter = threading.Thread(target=start_listening)
        starter.start()
        wait_for_cluster(mine, [late], 30, told.append, StopSignals())
        starter.join()
    assert told == [f"waiting up to 30 s for the workers at {late}"]


def test_a_worker_that_never_listens_is_named_once_the_timeout_passes():
    mine, absent = (f"127.0.0.1:{port}" for port in free_local_ports(2))
    started = time.monotonic()
    with pytest.raises(UserError, match=f"no worker listens at {absent} after 1 s"):
        wait_for_cluster(mine, [absent], 1, lambda message: None, StopSignals())
    assert time.monotonic() - started < 5


def test_a_port_taken_on_this_machine_is_named():
    mine, other = (f"127.0.0.1:{port}" for port in free_local_ports(2))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(mine.rpartition(":")[2])))
        squatter.listen()
        with pytest.raises(UserError, match=f"this worker's address {mine} is taken"):
            wait_for_cluster(mine, [other], 30, lambda message: None, StopSignals())


def test_a_stop_signal_ends_the_wait_for_workers():
    mine, absent = (f"127.0.0.1:{port}" for port in free_local_ports(2))
    signals = StopSignals()
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    started = time.monotonic()
    with signals, pytest.raises(StoppedWaiting, match="SIGTERM"):
        wait_for_cluster(mine, [absent], 60, lambda message: None, signals)
    assert time.monotonic() - started < 5


def test_nmt_train_with_an_absent_worker_fails_in_one_line_naming_it(tmp_path, reversal_data):
    mine, absent = (f"127.0.0.1:{port}" for port in free_local_ports(2))
    tf_config = {"cluster": {"worker": [mine, absent]}, "task": {"type": "worker", "index": 0}}
    model_dir = tmp_path / "model"
    completed = nmt(
        "train", "--distribute", "multi-worker", "--data-dir", reversal_data, "--model-dir", model_dir, *TINY,
        "--cluster-timeout", "3", env={"TF_CONFIG": json.dumps(tf_config)}, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 2 and "Traceback" not in completed.stderr, completed.stderr
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no worker listens at " + absent + " after 3 s"), completed.stderr
    assert not model_dir.exists()  # the lock's folder goes with the run that made it


def test_sigterm_while_waiting_for_workers_stops_at_once(tmp_path, reversal_data):
    mine, absent = (f"127.0.0.1:{port}" for port in free_local_ports(2))
    tf_config = {"cluster": {"worker": [mine, absent]}, "task": {"type": "worker", "index": 0}}
    command = [sys.executable, "-m", "nmt_cli", "train", "--distribute", "multi-worker", "--data-dir", reversal_data]
    command += [*TINY, "--model-dir", tmp_path / "model"]
    env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "COLUMNS": "200"}
    process = subprocess.Popen(list(map(str, command)), stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in process.stderr:
            if "waiting up to 300 s" in line:
                break
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 143 and time.monotonic() - signalled < 5, err
    assert "stopped by SIGTERM while waiting for the other workers" in err
    assert not (tmp_path / "model").exists()


def test_tensorflows_cluster_server_does_not_swallow_sigterm(tmp_path):
    """Once MultiWorkerMirroredStrategy is made, TensorFlow's own SIGTERM handler ignores the signal;
    the run takes it back, so a SIGTERM between the cluster's start and the first step counts."""
    script = textwrap.dedent(
        """
        import os, signal
        from nmt_cli.distribute import make_strategy
        from nmt_cli.stopping import StopSignals
        with StopSignals() as signals:
            make_strategy("multi-worker", 60, print, signals)
            os.kill(os.getpid(), signal.SIGTERM)
            print("received", signals.received)
        """
    )
    tf_config = {"cluster": {"worker": [f"127.0.0.1:{free_local_ports(1)[0]}"]}, "task": {"type": "worker", "index": 0}}
    env = {**os.environ, "TF_CONFIG": json.dumps(tf_config)}
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines()[-1] == f"received {int(signal.SIGTERM)}"


MIRRORED = textwrap.dedent(
    """
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from nmt_cli import cli, training
    made = training.make_strategy
    def reporting(*args):
        strategy = made(*args)
        print(f"replicas in sync: {strategy.num_replicas_in_sync}", file=sys.stderr)
        return strategy
    training.make_strategy = reporting
    sys.argv = ["nmt", *sys.argv[1:]]
    cli.main()
    """
)


def test_mirrored_over_two_logical_cpus_trains_and_resumes(tmp_path, reversal_data):
    def run(distribute: str, model_dir: Path, epochs: int) -> str:
        command = [sys.executable, "-c", MIRRORED, "train", "--distribute", distribute, "--data-dir", reversal_data]
        command += [*TINY, *EXACT, "--model-dir", model_dir, "--save-every", "1", "--epochs", epochs]
        completed = subprocess.run(list(map(str, command)), capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, completed.stderr
        return completed.stderr

    mirrored, alone = tmp_path / "mirrored", tmp_path / "alone"
    assert "replicas in sync: 2" in run("mirrored", mirrored, 1)
    assert "resuming from the end of epoch 1" in run("mirrored", mirrored, 2)
    assert [r.epoch for r in read_history(Workspace(mirrored).history)] == [1, 2]
    assert "replicas in sync: 1" in run("none", alone, 1)
    # Each replica averages over its half of the batch, and the halves hold different numbers of
    # tokens, so the mean of their means is near the batch's mean, not equal to it: within 2%,
    # where a loss not divided among the replicas would be twice as large.
    assert epoch_losses(mirrored)[0] == pytest.approx(epoch_losses(alone)[0], rel=0.02)


def test_a_onednn_cap_below_bfloat16_makes_auto_precision_float32(monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX2 makes this machine an AVX2 one for oneDNN: bfloat16 matrix
    multiplication would abort there, so `--precision auto` must not take it."""
    from nmt_cli.distribute import cpu_has_bfloat16

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not cpu_has_bfloat16()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core")
    assert not cpu_has_bfloat16()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
        has = any(
            flag in line.split() for line in cpuinfo if line.startswith("flags") for flag in ("amx_bf16", "avx512_bf16")
        )
    assert cpu_has_bfloat16() == has
