"""A fleet worker: one long-lived process that trains runs one after another.

Start-up (importing Lightning, torch and MLflow: about 10 s on a small machine) is paid
once per worker, not once per run. The fleet (:mod:`mia_bench.study.fleet`) writes jobs
to the worker's stdin, one JSON object per line::

    {"run_index": 3, "args": ["-c", "cfg.yaml", "--data.run_index=3", ...], "log": "run_003.log"}

and the worker runs ``mia-bench fit ARGS`` in its own process, its output (Python's and
C libraries') appended to the job's log, then answers on what was its stdout::

    {"run_index": 3, "status": 0, "seconds": 41.2}

A pack of runs trained at once (:mod:`mia_bench.study.pack`) is one job too::

    {"runs": [0, 1, 2, 3], "resume": {"2": true}, "group": "g", "args": [...], "log": "..."}
    -> {"statuses": {"0": 0, "1": 0, "2": 0, "3": 75}, "seconds": 120.5}

where ``status`` is what the ``mia-bench fit`` process would have exited with (0, 2 for a
user's mistake, 75 when another process holds the run's lease, 76 when the run is already
trained, 1 for any other error). Every run builds its own seeds, model, data module,
trainer and MLflow logger (the LightningCLI does); a run that fails is reported and the
next one starts clean: its lease is released, Python's warning registries are reset so
each run's log shows its warnings. A crash that kills the
process (a segfault, the out-of-memory killer) is seen by the fleet, which fails that run
and starts a new worker for the next. The worker ends when its stdin closes.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, TextIO


def exit_status(code: Any) -> int:
    """A ``SystemExit`` code as a process's exit status.

    >>> exit_status(None), exit_status(3), exit_status("bad input")
    (0, 3, 1)
    """
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def run_fit(args: list[str]) -> int:
    """``mia-bench fit ARGS`` in this process; its exit status (never raises but Ctrl-C).

    A user's mistake is one line and its exit status, as the ``mia-bench`` command prints
    it (:mod:`mia_bench.cli`, which nothing in the package imports).
    """
    from mia_bench.errors import UserError
    from mia_bench.lightning_cli import run_lightning_cli

    try:
        run_lightning_cli(["fit", *args], "")
        return 0
    except UserError as err:
        print(f"mia-bench: error: {err}", file=sys.stderr)
        return getattr(err, "exit_status", 2)
    except SystemExit as done:
        return exit_status(done.code)
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - reported in the run's log, the next run goes on
        traceback.print_exc()
        return 1
    finally:
        from mia_bench.store.leases import release_held

        release_held()


_FD_STREAMS: list[TextIO] = []


def _fd_streams() -> tuple[TextIO, TextIO]:
    """Text streams on file descriptors 1 and 2, made once and never closed: a logging
    handler a run creates keeps one, and writes where the descriptor points later."""
    if not _FD_STREAMS:
        _FD_STREAMS.extend(open(fd, "w", buffering=1, closefd=False) for fd in (1, 2))  # noqa: SIM115
    return _FD_STREAMS[0], _FD_STREAMS[1]


class _Redirected:
    """File descriptors 1 and 2 (and ``sys.stdout``/``sys.stderr``) appended to ``log``."""

    def __init__(self, log: Path) -> None:
        self.log = log

    def __enter__(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        self.fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.saved = (os.dup(1), os.dup(2))
        os.dup2(self.fd, 1)
        os.dup2(self.fd, 2)
        self.streams = (sys.stdout, sys.stderr)  # may not write to fds 1 and 2 (pytest's)
        sys.stdout, sys.stderr = _fd_streams()

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = self.streams
        for fd, saved in zip((1, 2), self.saved, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
        os.close(self.fd)


def run_pack(args: list[str], runs: list[int], group: str, resume: dict[str, bool]) -> dict:
    """Runs ``runs`` trained as one pack (:func:`mia_bench.study.pack.fit_packed`); the
    exit status of each, all 2 when the recipe cannot be packed, all 1 when it crashed."""
    from mia_bench.errors import UserError
    from mia_bench.study.pack import fit_packed

    try:
        return fit_packed(args, runs, group, {int(i): r for i, r in resume.items()})
    except UserError as err:
        print(f"mia-bench: error: {err}", file=sys.stderr)
        return {i: getattr(err, "exit_status", 2) for i in runs}
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - reported in the log, the next job goes on
        traceback.print_exc()
        return {i: 1 for i in runs}
    finally:
        from mia_bench.store.leases import release_held

        release_held()


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train one job, a run or a pack of runs (see the module docstring); its answer."""
    started = time.monotonic()
    reset = getattr(warnings, "_filters_mutated", None)  # private; absent in some Pythons
    if reset is not None:
        reset()  # each run's log shows its own warnings again
    with _Redirected(Path(job["log"])):
        if "runs" in job:
            statuses = run_pack(list(job["args"]), job["runs"], job["group"], job["resume"])
        else:
            statuses = {job["run_index"]: run_fit(list(job["args"]))}
    seconds = round(time.monotonic() - started, 3)
    if "runs" in job:
        return {"statuses": {str(i): s for i, s in statuses.items()}, "seconds": seconds}
    return {"run_index": job["run_index"], "status": statuses[job["run_index"]], "seconds": seconds}


def serve(jobs: TextIO, answers: TextIO) -> None:
    """Run every job read from ``jobs`` until it closes, answering each on ``answers``."""
    for line in jobs:
        if line.strip():
            answers.write(json.dumps(run_job(json.loads(line))) + "\n")
            answers.flush()


def main() -> None:
    """The worker process: its stdout becomes the answer channel, runs write to their logs."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints between runs go to the worker's own log (its stderr)
    devices = os.environ.get("CUDA_VISIBLE_DEVICES", "(all)")
    threads = os.environ.get("OMP_NUM_THREADS", "(default)")
    print(
        f"worker pid {os.getpid()}: {threads} threads, CUDA_VISIBLE_DEVICES={devices}", flush=True
    )
    import mia_bench.lightning_cli  # noqa: F401 - start-up paid before the first job
    from mia_bench.console import quiet_libraries

    quiet_libraries()

    serve(sys.stdin, answers)


if __name__ == "__main__":
    main()
