"""Servers the cluster tests start and stop: PostgreSQL (pgserver, on a unix socket), an
``mlflow server`` on 127.0.0.1 backed by it, and a Ray cluster of a head and worker
nodes, all bound to 127.0.0.1. Each is a context manager that waits for its server to
answer (an event, not a fixed sleep) and stops it on the way out."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 240


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(ready, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    """Poll ``ready()`` until true; fail naming ``what`` (and the log's tail) at the deadline
    or when ``proc`` exits."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        dead = proc is not None and proc.poll() is not None
        if dead or time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} did not start ({'exited' if dead else 'timeout'}):\n{tail}")
        time.sleep(0.2)


@contextlib.contextmanager
def postgres(folder: Path) -> Iterator[str]:
    """A PostgreSQL server on a unix socket in ``folder``; yields its SQLAlchemy URI."""
    import pgserver

    Path(folder).parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(folder, cleanup_mode="stop")
    try:
        yield server.get_uri().replace("postgresql://", "postgresql+psycopg2://", 1)
    finally:
        server.cleanup()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - 127.0.0.1
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, log: Path) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 with ``backend_uri`` and artifacts served from
    ``artifacts`` (``--serve-artifacts``); yields its ``http://`` URI."""
    port = free_port()
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    command = [
        str(BIN / "mlflow"), "server", "--backend-store-uri", backend_uri,
        "--artifacts-destination", str(artifacts), "--serve-artifacts",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
    ]  # fmt: skip
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=out, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{uri}/health"), "mlflow server", proc, log)
        yield uri
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


# Ray rewrites 127.0.0.1 to the machine's reachable address (and then cannot reach a
# cluster bound to 127.0.0.1) unless it takes this machine for a one-host setup
RAY_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@contextlib.contextmanager
def ray_cluster(workers: int = 1, cpus: int = 1) -> Iterator[str]:
    """A Ray head and ``workers`` worker nodes (separate raylets, as on separate machines),
    all bound to 127.0.0.1, with ``cpus`` CPUs each; yields the address for ``RAY_ADDRESS``
    (run drivers with :data:`RAY_LOOPBACK_ENV`); the nodes are stopped at the end."""
    from ray.cluster_utils import Cluster

    node = {"num_cpus": cpus, "node_ip_address": "127.0.0.1",
            "object_store_memory": 100 * 2**20, "env_vars": {"OMP_NUM_THREADS": "1"}}  # fmt: skip
    saved = {k: os.environ.get(k) for k in RAY_LOOPBACK_ENV}
    os.environ.update(RAY_LOOPBACK_ENV)
    cluster = Cluster(initialize_head=True, head_node_args=node | {"include_dashboard": False})
    try:
        for _ in range(workers):
            cluster.add_node(**node)
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def lease_pid(store: str, group: str, run_index: int) -> int | None:
    """The pid of the process that holds a run's lease (from its claim's tags), or None."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    for model in client.search_registered_models(f"name LIKE 'mia-lease.%.{group}'"):
        query = f"name = '{model.name}' and tag.run_index = '{run_index}'"
        live = [v for v in client.search_model_versions(query) if "released" not in v.tags]
        if live:
            return int(min(live, key=lambda v: int(v.version)).tags["pid"])
    return None
