"""One unit of a fleet's work (a run, or a pack of runs) trained where a cluster puts it.

The Ray and submitit backends (:mod:`mia_bench.study.ray_fleet`,
:mod:`mia_bench.study.submitit_fleet`) ship a :class:`Unit` to a worker on some node,
which calls :func:`train_unit`. It decides there and then what each run needs, from the
tracking store (:func:`mia_bench.study.fleet.plan`): a run another process finished
meanwhile is skipped, a run an earlier attempt left unfinished (its worker or node died,
its job was preempted) is resumed from its last complete epoch, and a new run starts
fresh, so a retried unit never trains a run twice. It then trains the unit as a local
fleet worker does (:func:`mia_bench.study.worker.run_job`: leases, exit statuses,
output to the run's log) and answers with the statuses, the node, and the log's text,
which the fleet keeps in its own log folder whatever node trained the run.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mia_bench.store.settings import MlflowSettings
from mia_bench.study.fleet import job_args, plan

LOG_TEXT_LIMIT = 2_000_000  # characters of a run's log sent back to the fleet (its tail)
EXIT_NO_STORE = 2


@dataclass(frozen=True)
class Unit:
    """What a cluster worker needs to train some runs of a group.

    Attributes:
        runs: run indices (one, or a pack's).
        group: the group.
        recipe_args: the ``mia-bench fit`` arguments every run shares.
        settings: the tracking store (``tracking_uri`` as every node must reach it).
        fingerprint: the recipe's config fingerprint, to plan with.
        log: the fleet's log path for the unit (written on the node when its folder
            exists there, else in a temporary folder; the text comes back either way).
        cwd: the fleet's folder, entered when the node has it (relative paths then mean
            what they meant to the fleet).
        threads: threads per run (``--ray.cpus_per_run`` or ``--submitit.cpus_per_run``).
        pack: whether the runs are trained together as a pack.
    """

    runs: tuple[int, ...]
    group: str
    recipe_args: tuple[str, ...]
    settings: MlflowSettings
    fingerprint: str | None
    log: str
    cwd: str
    threads: int = 1
    pack: bool = False


def node_name() -> str:
    """This node's name as fleet lines show it: its host name, and the Ray node when in
    one (``host/1a2b3c4d``)."""
    host = socket.gethostname()
    try:
        import ray

        if ray.is_initialized():
            return f"{host}/{ray.get_runtime_context().get_node_id()[:8]}"
    except Exception:  # noqa: BLE001 - outside Ray, the host name is enough
        pass
    return host


def _store_missing(settings: MlflowSettings) -> str | None:
    """Why this node cannot use the fleet's store, or None: a SQLite file that is not
    here (each node would otherwise fill a store of its own, which no audit would see)."""
    from mia_bench.store.database import SQLITE, sqlite_uri, store_exists

    uri = settings.tracking_uri
    if uri.startswith(SQLITE) and not store_exists(uri):
        return (
            f"the fleet's store {sqlite_uri(uri)} is not on node {socket.gethostname()}: give "
            "every node the same store (--mlflow.tracking_uri http://HOST:PORT of an mlflow "
            "server; see the README), or a folder they share"
        )
    return None


def _local_log(unit: Unit) -> Path:
    log = Path(unit.log)
    if log.parent.is_dir():
        return log
    return Path(tempfile.mkdtemp(prefix="mia-fleet-")) / log.name


def train_unit(unit: Unit) -> dict[str, Any]:
    """Train ``unit``'s runs here (see the module docstring); the answer:
    ``{"statuses": {run: status}, "node": ..., "pid": ..., "seconds": ..., "log": text}``."""
    from mia_bench.study.worker import run_job

    started = time.monotonic()
    if Path(unit.cwd).is_dir():
        os.chdir(unit.cwd)
    log = _local_log(unit)
    missing = _store_missing(unit.settings)
    if missing is not None:
        log.write_text(f"mia-bench: error: {missing}\n")
        statuses = {i: EXIT_NO_STORE for i in unit.runs}
    else:
        _set_threads(unit.threads)
        statuses = _train(unit, plan(unit.settings, unit.group, list(unit.runs), unit.fingerprint),
                          log, run_job)  # fmt: skip
    text = log.read_text(errors="replace") if log.is_file() else ""
    return {
        "statuses": {str(i): s for i, s in statuses.items()},
        "node": node_name(),
        "pid": os.getpid(),
        "seconds": round(time.monotonic() - started, 3),
        "log": text[-LOG_TEXT_LIMIT:],
    }


def _train(unit: Unit, jobs: list, log: Path, run_job) -> dict[int, int]:
    """Statuses of the unit's runs: 76 for those already trained, the rest trained (a run
    whose lease a dead process still holds is trained once the lease lapses)."""
    from mia_bench.store.leases import EXIT_ALREADY_TRAINED, EXIT_LEASE_HELD

    statuses = {j.run_index: EXIT_ALREADY_TRAINED for j in jobs if j.action == "skip"}
    todo = [j for j in jobs if j.action != "skip"]
    if not todo:
        return statuses
    args = list(unit.recipe_args)
    if unit.pack:  # a pack's runs held elsewhere are left (a rerun of the fleet resumes them)
        resume = {str(j.run_index): j.action == "resume" for j in todo}
        line = {"runs": [j.run_index for j in todo], "resume": resume, "group": unit.group,
                "args": args, "log": str(log)}  # fmt: skip
        answer = run_job(line)
        return statuses | {int(i): s for i, s in answer["statuses"].items()}
    for job in todo:
        fit = job_args(args, unit.group, job.run_index, job.action == "resume")
        answer = run_job({"run_index": job.run_index, "args": fit, "log": str(log)})
        if answer["status"] == EXIT_LEASE_HELD and holder_lapsed(unit.settings, unit.group,
                                                                 job.run_index):  # fmt: skip
            again = plan(unit.settings, unit.group, [job.run_index], unit.fingerprint)[0]
            fit = job_args(args, unit.group, job.run_index, again.action == "resume")
            if again.action == "skip":  # its holder finished it after all
                answer = {"status": EXIT_ALREADY_TRAINED}
            else:
                answer = run_job({"run_index": job.run_index, "args": fit, "log": str(log)})
        statuses[job.run_index] = answer["status"]
    return statuses


def holder_lapsed(
    settings: MlflowSettings, group: str, run_index: int, sleep=time.sleep, clock=time.time
) -> bool:
    """Whether the lease of a run is free after waiting for a dead holder's to lapse.

    A holder that missed two heartbeats is taken for gone (its node died: a retry of its
    task lands here while its claim is still fresh); this waits until the claim is stale
    (:data:`~mia_bench.store.leases.STALE_AFTER_S` after its last heartbeat). A holder
    that keeps beating is alive (another fleet trains the run): False at once.
    """
    from mlflow.tracking import MlflowClient

    from mia_bench.store.leases import (
        HEARTBEAT_S,
        STALE_AFTER_S,
        Identity,
        claims_of,
        lease_model_name,
        lowest_live,
    )
    from mia_bench.store.runs import resolve_tracking_uri

    client = MlflowClient(resolve_tracking_uri(settings.tracking_uri))
    found = client.get_experiment_by_name(settings.experiment_name)
    if found is None:
        return True
    name = lease_model_name(found.experiment_id, group)
    holder = lowest_live(claims_of(client, name, run_index), clock(), Identity.current())
    if holder is None:
        return True
    silent = clock() - holder.heartbeat
    if silent < 2 * HEARTBEAT_S:
        return False
    sleep(max(0.0, STALE_AFTER_S - silent) + 1.0)
    return True


def _set_threads(threads: int) -> None:
    """Use ``threads`` threads for this unit's runs (a cluster worker may have more cores
    than its share)."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    try:
        import torch

        torch.set_num_threads(max(1, threads))
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass


def keep_log(text: str, path: Path) -> Path:
    """Write a unit's log text, as it came back from its node, to the fleet's ``path``
    (unless the node wrote it there itself)."""
    if text and not (path.is_file() and path.stat().st_size >= len(text.encode())):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path
