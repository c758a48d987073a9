"""Leases per (group, run index): races, takeovers of dead or silent holders, release."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mia_bench.store.database import open_store
from mia_bench.store.leases import (
    EXIT_LEASE_HELD,
    STALE_AFTER_S,
    Claim,
    Identity,
    LeaseHeld,
    acquire_lease,
    claims_of,
    confirm_claim,
    ensure_lease_model,
    lease_holder,
    lease_model_name,
    stake_claim,
)
from mia_bench.store.runs import MlflowSettings, experiment_id

REPO = Path(__file__).resolve().parents[2]
ENV = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
EXP = "0"


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> MlflowClient:
    """One store for the module (creating one takes seconds); each test its own group."""
    return MlflowClient(open_store(f"sqlite:///{tmp_path_factory.mktemp('leases')}/mlflow.db"))


def _other_host(pid: int = 1) -> Identity:
    return Identity("elsewhere", pid, "1", f"token-{pid}")


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: the pid names no process now
    return proc.pid


@pytest.mark.parametrize("first", ["lower", "higher"])
def test_lowest_claim_holds_whichever_confirms_first(client, first):
    group = f"race-{first}"
    name = ensure_lease_model(client, EXP, group)
    low = stake_claim(client, name, 3, time.time(), Identity.current())
    high = stake_claim(client, name, 3, time.time(), Identity.current())
    assert high.version > low.version
    order = [low, high] if first == "lower" else [high, low]
    outcome = {}
    for claim in order:
        try:
            outcome[claim.version] = confirm_claim(client, name, group, claim, heartbeat_s=0)
        except LeaseHeld as err:
            outcome[claim.version] = err
    assert isinstance(outcome[high.version], LeaseHeld)
    assert outcome[high.version].holder == low.who.holder
    lease = outcome[low.version]
    assert lease.holder == low.who.holder and lease_holder(client, EXP, group, 3) == lease.holder
    assert [c.released for c in claims_of(client, name, 3)] == [False, True]  # loser withdrew
    lease.release()


def test_other_run_indices_do_not_interfere(client):
    first = acquire_lease(client, EXP, "indices", 0, heartbeat_s=0)
    second = acquire_lease(client, EXP, "indices", 1, heartbeat_s=0)
    assert lease_holder(client, EXP, "indices", 2) is None
    first.release()
    second.release()


def test_dead_holder_on_this_host_is_taken_over_at_once(client):
    name = ensure_lease_model(client, EXP, "dead")
    here = Identity.current()
    dead = Identity(here.host, _dead_pid(), here.pidns, "dead-token")
    stake_claim(client, name, 0, 100.0, dead)
    assert lease_holder(client, EXP, "dead", 0, clock=lambda: 101.0) is None
    lease = acquire_lease(client, EXP, "dead", 0, clock=lambda: 101.0, heartbeat_s=0)
    assert lease.holder == here.holder
    lease.release()


def test_a_holder_elsewhere_is_live_until_its_heartbeat_is_stale(client):
    name = ensure_lease_model(client, EXP, "silent")
    stake_claim(client, name, 0, 1000.0, _other_host(_dead_pid()))  # that pid means nothing here
    soon, later = (lambda: 1000.0 + STALE_AFTER_S - 1), (lambda: 1000.0 + STALE_AFTER_S + 1)
    with pytest.raises(LeaseHeld, match="run 0 of group 'silent' is being trained by elsewhere"):
        acquire_lease(client, EXP, "silent", 0, clock=soon, heartbeat_s=0)
    assert lease_holder(client, EXP, "silent", 0, clock=later) is None
    lease = acquire_lease(client, EXP, "silent", 0, clock=later, heartbeat_s=0)
    assert lease_holder(client, EXP, "silent", 0, clock=later) == lease.holder
    lease.release()


def test_release_frees_the_run_and_is_idempotent(client):
    lease = acquire_lease(client, EXP, "release", 0, heartbeat_s=0)
    with pytest.raises(LeaseHeld):
        acquire_lease(client, EXP, "release", 0, heartbeat_s=0)
    lease.release()
    lease.release()
    assert lease_holder(client, EXP, "release", 0) is None
    acquire_lease(client, EXP, "release", 0, heartbeat_s=0).release()


def test_heartbeat_thread_refreshes_the_claim_until_released(client):
    beats = []
    twice = threading.Event()

    def clock() -> float:
        beats.append(1000.0 + len(beats))
        if len(beats) >= 4:  # the claim, its confirmation, then two heartbeats
            twice.set()
        return beats[-1]

    lease = acquire_lease(client, EXP, "beat", 0, clock=clock, heartbeat_s=0.01)
    assert twice.wait(30), "no heartbeat"
    lease.release()
    assert not lease._thread.is_alive()
    (claim,) = claims_of(client, lease.name, 0)
    assert claim.released and claim.heartbeat >= 1002.0


HOLD = """
import sys
from mlflow.tracking import MlflowClient
from mia_bench.store.leases import LeaseHeld, acquire_lease
client = MlflowClient(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
try:
    lease = acquire_lease(client, "0", sys.argv[2], 0)
    print("held", lease.holder, flush=True)
except LeaseHeld as err:
    print("refused", err.holder, flush=True)
sys.stdin.readline()  # hold until told (or killed)
"""


def _holders(uri: str, group: str, count: int) -> list[subprocess.Popen]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HOLD, uri, group],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for _ in range(count)
    ]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:  # all candidates race at once
        proc.stdin.write("go\n")
        proc.stdin.flush()
    return procs


def test_processes_racing_for_one_run_get_one_holder(client):
    procs = _holders(client.tracking_uri, "processes", 4)
    answers = [proc.stdout.readline().split() for proc in procs]
    held = [f"{a[1]}" for a in answers if a[0] == "held"]
    assert len(held) == 1, answers
    assert all(a == ["refused", held[0]] for a in answers if a[0] == "refused"), answers
    for proc in procs:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert lease_holder(client, EXP, "processes", 0) is None  # released at exit


def test_kill_9_of_the_holder_frees_the_run_at_once(client):
    (proc,) = _holders(client.tracking_uri, "killed", 1)
    assert proc.stdout.readline().split()[0] == "held"
    assert lease_holder(client, EXP, "killed", 0).endswith(f":{proc.pid}")
    with pytest.raises(LeaseHeld, match=f":{proc.pid}"):
        acquire_lease(client, EXP, "killed", 0, heartbeat_s=0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    acquire_lease(client, EXP, "killed", 0, heartbeat_s=0).release()


def test_claim_reads_back_from_its_model_version(client):
    name = ensure_lease_model(client, EXP, "read back")
    who = _other_host(7)
    claim = stake_claim(client, name, 5, 12.5, who)
    assert claims_of(client, name, 5) == [Claim(claim.version, 5, who, 12.5, False)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def server_uri(tmp_path) -> str:
    """An MLflow tracking server on a SQLite store, for as long as the test runs."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
        + ["--backend-store-uri", f"sqlite:///{tmp_path}/server.db", "--workers", "1"]
        + ["--default-artifact-root", str(tmp_path / "artifacts")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while not _answers(f"{uri}/health"):  # wait until the server answers (or died)
        assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
        time.sleep(0.2)
    yield uri
    server.terminate()
    server.wait(timeout=30)


@pytest.mark.slow
def test_leases_work_through_an_mlflow_server(server_uri):
    client = MlflowClient(open_store(server_uri))  # the real server passes the probe
    exp_id = client.create_experiment("remote")
    lease = acquire_lease(client, exp_id, "remote+crop", 1)
    assert lease_holder(client, exp_id, "remote+crop", 1) == lease.holder
    with pytest.raises(LeaseHeld, match=lease.holder):
        acquire_lease(client, exp_id, "remote+crop", 1, heartbeat_s=0)
    lease.release()
    assert lease_holder(client, exp_id, "remote+crop", 1) is None
    name = lease_model_name(exp_id, "remote+crop")
    assert [c.released for c in claims_of(client, name, 1)] == [True, True]


def test_fit_of_a_held_run_exits_75_naming_the_holder(in_tmp):
    settings = MlflowSettings()
    store = MlflowClient(open_store(settings.tracking_uri))
    exp_id = experiment_id(store, settings)
    lease = acquire_lease(store, exp_id, "held", 0)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "mia_bench", "fit", "--group=held", "--trainer.max_epochs=1"],
            capture_output=True,
            text=True,
            timeout=300,
            env=ENV,
        )
    finally:
        lease.release()
    assert result.returncode == EXIT_LEASE_HELD, result.stderr[-2000:]
    (message,) = [line for line in result.stderr.splitlines() if "error" in line]
    assert message.startswith("mia-bench: error: run 0 of group 'held' is being trained by ")
    assert lease.holder in message
    assert not store.search_runs([exp_id]), "a run left to its holder opens no MLflow run"
