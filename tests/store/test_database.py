"""The tracking store is created once, safely, and a store that cannot work fails in seconds."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mia_bench.errors import UserError
from mia_bench.store.database import open_store

REPO = Path(__file__).resolve().parents[2]
ENV = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
ENV |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens

# Every caller reaches MLflow through resolve_tracking_uri; each child waits for a line
# on stdin, so that all of them hit the fresh store at once.
OPEN_TOGETHER = """
import sys
from mlflow.tracking import MlflowClient
from mia_bench.store.runs import resolve_tracking_uri
print("ready", flush=True)
sys.stdin.readline()
client = MlflowClient(resolve_tracking_uri(sys.argv[1]))
client.create_experiment(f"exp{sys.argv[2]}")
"""


def _started_together(count: int, code: str, *args: str) -> list[subprocess.Popen]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, *args, str(k)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for k in range(count)
    ]
    for proc in procs:  # every child imported everything and waits
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    return procs


def test_many_commands_on_a_fresh_store_create_it_once(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    procs = _started_together(6, OPEN_TOGETHER, uri)
    errors = [proc.communicate(timeout=300)[1] for proc in procs]
    failed = [
        e.strip().splitlines()[-1] for p, e in zip(procs, errors, strict=True) if p.returncode
    ]
    assert not failed, failed
    assert sum(e.count("Creating initial MLflow database tables") for e in errors) == 1
    names = {e.name for e in MlflowClient(open_store(uri)).search_experiments()}
    assert names == {"Default"} | {f"exp{k}" for k in range(6)}


def test_relative_sqlite_path_is_made_absolute_with_a_lock_timeout(in_tmp):
    uri = open_store("sqlite:///mlruns/mlflow.db")
    assert uri == f"sqlite:///{in_tmp.resolve()}/mlruns/mlflow.db?timeout=60"
    assert (in_tmp / "mlruns" / "mlflow.db.lock").exists()


def _read_only(folder: Path, command: list[str]) -> list[str]:
    """``command`` run where ``folder`` is read-only (as root: a read-only bind mount)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return command
    if shutil.which("unshare") is None:
        pytest.skip("running as root without unshare: cannot make a folder read-only")
    quoted = " ".join(f"'{part}'" for part in command)
    mount = f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder}"
    return ["unshare", "-m", "sh", "-c", f"{mount} || exit 99; exec {quoted}"]


def test_read_only_store_is_refused_at_once_in_one_line(tmp_path):
    folder = tmp_path / "mlruns"
    folder.mkdir()
    uri = f"sqlite:///{folder}/mlflow.db"
    fit = [sys.executable, "-m", "mia_bench", "fit", "--trainer.max_epochs=1"]
    command = _read_only(folder, [*fit, f"--mlflow.tracking_uri={uri}"])
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=ENV)
    if result.returncode == 99:
        pytest.skip(f"cannot bind-mount read-only here: {result.stderr.strip()}")
    assert time.monotonic() - started < 45, "a read-only store must not be retried"
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    (message,) = [line for line in result.stderr.splitlines() if "error" in line]
    assert message.startswith("mia-bench: error: the MLflow store's folder ")
    assert str(folder) in message and "not writable" in message


def test_unreachable_server_is_refused_within_seconds():
    started = time.monotonic()
    with pytest.raises(UserError, match=f"{UNREACHABLE} cannot be reached"):
        open_store(UNREACHABLE)
    assert time.monotonic() - started < 15


def test_fit_on_an_unreachable_server_fails_within_seconds(tmp_path):
    fit = [sys.executable, "-m", "mia_bench", "fit", "--trainer.max_epochs", "1"]
    started = time.monotonic()
    result = subprocess.run(
        [*fit, "--mlflow.tracking_uri", UNREACHABLE],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
        env=ENV,
    )
    assert time.monotonic() - started < 60  # Python and Lightning start, then <= 5 s
    assert result.returncode == 2 and UNREACHABLE in result.stderr, result.stderr[-2000:]


class _NotMlflow(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        status, body = (200, b"<html>hello</html>") if self.path == "/ok/health" else (404, b"")
        self.send_response(status)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize(("path", "said"), [("", "HTTP 404"), ("/ok", "said '<html>")])
def test_a_server_that_is_not_mlflow_is_refused(path, said):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotMlflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}{path}"
    try:
        with pytest.raises(UserError, match=f"{uri} is not an MLflow tracking server.*{said}"):
            open_store(uri)
    finally:
        server.shutdown()


def test_a_new_sqlite_store_writes_ahead_and_an_old_one_is_switched_when_idle(tmp_path):
    import sqlite3

    def mode(path: Path) -> str:
        with sqlite3.connect(path) as db:
            return db.execute("PRAGMA journal_mode").fetchone()[0]

    open_store(f"sqlite:///{tmp_path}/new/mlflow.db")
    assert mode(tmp_path / "new" / "mlflow.db") == "wal"
    old = tmp_path / "old" / "mlflow.db"
    old.parent.mkdir()
    with sqlite3.connect(old) as db:  # a store made before: rollback journal
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("CREATE TABLE t (x)")
    assert mode(old) == "delete"
    client = MlflowClient(open_store(f"sqlite:///{old}"))
    assert mode(old) == "wal"
    client.create_experiment("still-works")
    assert "still-works" in {e.name for e in client.search_experiments()}
