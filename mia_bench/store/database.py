"""The tracking store, opened once per process: created safely, or refused in seconds.

Every path to MLflow goes through :func:`open_store`. The first call per process and URI

* for a SQLite store (``sqlite:///mlruns/mlflow.db``): makes the path absolute, creates
  its folder, refuses a read-only folder or file at once (MLflow would retry for minutes),
  and creates a fresh store (MLflow's schema migrations) under an exclusive ``flock`` on
  ``<db>.lock`` beside it, so that many commands starting together on a fresh store run
  the migrations exactly once instead of racing them ("duplicate column name");
* for an ``http(s)://`` tracking server: asks ``<uri>/health`` once, and refuses within
  seconds a server that does not answer or is not an MLflow server (MLflow would retry
  silently for minutes).

Other URIs (PostgreSQL, MySQL, Databricks) are returned as given.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

from mia_bench.errors import UserError

SQLITE = "sqlite:///"
PROBE_TIMEOUT_S = 5.0
_opened: dict[str, str] = {}
_lock = threading.Lock()


def open_store(tracking_uri: str) -> str:
    """The resolved tracking URI, after making sure the store can be used.

    Args:
        tracking_uri: an MLflow tracking URI; a relative SQLite path is taken from the
            current folder, and ``?timeout=60`` is added when it has no query, so that a
            writer waits up to 60 s for another process's lock instead of 5.

    Raises:
        UserError: a read-only SQLite folder or file, or an http(s) URI that is not an
            MLflow server answering within seconds; the message names the path or URI.

    >>> open_store("postgresql://db/mlflow")
    'postgresql://db/mlflow'
    """
    resolved = sqlite_uri(tracking_uri) if tracking_uri.startswith(SQLITE) else tracking_uri
    with _lock:
        if resolved not in _opened:
            if resolved.startswith(SQLITE):
                _create_sqlite_once(resolved)
            elif resolved.startswith(("http://", "https://")):
                probe_server(resolved)
            _opened[resolved] = resolved
    return resolved


def sqlite_uri(tracking_uri: str) -> str:
    """``sqlite:///`` URI with an absolute path and a lock timeout (the folder not created).

    A relative path is resolved once, so that a process which changes folder keeps
    writing to the same store (MLflow caches one engine per URI).

    >>> sqlite_uri("sqlite:////data/mlflow.db"), sqlite_uri("sqlite:////m.db?timeout=5")
    ('sqlite:////data/mlflow.db?timeout=60', 'sqlite:////m.db?timeout=5')
    """
    path, _, query = tracking_uri[len(SQLITE) :].partition("?")
    return f"{SQLITE}{Path(path).resolve()}?{query or 'timeout=60'}"


def store_exists(tracking_uri: str) -> bool:
    """Whether a SQLite store's file is there (any other store is taken to exist).

    >>> store_exists("sqlite:////nowhere/mlflow.db"), store_exists("http://host:5000")
    (False, True)
    """
    if not tracking_uri.startswith(SQLITE):
        return True
    return _sqlite_path(sqlite_uri(tracking_uri)).is_file()


def find_store(tracking_uri: str, search_parents: bool = True) -> str | None:
    """The URI of the existing store that ``tracking_uri`` names, or None; nothing is created.

    A relative SQLite path (``sqlite:///mlruns/mlflow.db``) is looked for in the current
    folder and, with ``search_parents``, in each folder above it (a notebook run from
    ``notebooks/`` finds the project's store). Other URIs are returned as given.

    >>> find_store("sqlite:////nowhere/mlflow.db"), find_store("http://host:5000")
    (None, 'http://host:5000')
    """
    if not tracking_uri.startswith(SQLITE):
        return tracking_uri
    path, _, query = tracking_uri[len(SQLITE) :].partition("?")
    here = Path.cwd()
    upwards = search_parents and not Path(path).is_absolute()
    for folder in [here, *here.parents] if upwards else [here]:
        if (folder / path).is_file():  # an absolute path stays itself
            return sqlite_uri(f"{SQLITE}{folder / path}" + (f"?{query}" if query else ""))
    return None


def _sqlite_path(uri: str) -> Path:
    return Path(uri[len(SQLITE) :].partition("?")[0])


def _create_sqlite_once(uri: str) -> None:
    """Check the store's folder and file are writable, then create it under a file lock."""
    path = _sqlite_path(uri)
    fix = "give a writable --mlflow.tracking_uri (e.g. sqlite:///$HOME/mlruns/mlflow.db)"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(f"{path}.lock", "a")  # noqa: SIM115 - closed below, after the flock
    except OSError as err:
        raise UserError(
            f"the MLflow store's folder {path.parent} is not writable ({err.strerror}): "
            f"make it writable or {fix}"
        ) from None
    with lock:
        for what in (path.parent, path):
            if what.exists() and not os.access(what, os.W_OK):
                raise UserError(f"the MLflow store {what} is read-only: make it writable or {fix}")
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        _build_stores(uri)
        _write_ahead_log(path)


def _write_ahead_log(path: Path) -> None:
    """Put the SQLite store in write-ahead-log mode (a setting of the file; once is enough).

    MLflow commits every batch of metrics, and in SQLite's default rollback-journal mode
    a commit cost 17 ms here against 3.7 ms with the log, at the same durability
    (``synchronous`` stays FULL: a committed epoch survives a power cut). A store another
    process is writing right now keeps its mode until a later command finds it idle.
    """
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(path, timeout=5)) as db:
            db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:
        pass


def _build_stores(uri: str) -> None:
    """Build MLflow's tracking and registry stores of ``uri`` (cached by MLflow per URI).

    On a fresh database, the first runs MLflow's schema migrations; both verify the schema.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    client.search_experiments(max_results=1)
    client.search_registered_models(max_results=1)


def probe_server(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Refuse, within ``timeout_s``, a tracking server that is unreachable or not MLflow's.

    Raises:
        UserError: naming ``uri`` and what it answered.
    """
    url = f"{uri.rstrip('/')}/health"
    what = f"--mlflow.tracking_uri {uri} "
    fix = "start the server (mlflow server ...) or correct the URI"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            body = response.read(64).decode(errors="replace").strip()
    except urllib.error.HTTPError as err:
        message = f"is not an MLflow tracking server ({url}: HTTP {err.code})"
        raise UserError(f"{what}{message}: {fix}") from None
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        message = f"cannot be reached ({reason}; waited at most {timeout_s:.0f} s)"
        raise UserError(f"{what}{message}: {fix}") from None
    if body != "OK":
        raise UserError(f"{what}is not an MLflow tracking server ({url} said {body!r}): {fix}")
