"""``mia-bench fleet``: train many runs of a group, resumably, K at a time.

Each run is a separate ``mia-bench fit`` process with ``--data.run_index i`` and
``--group G``. Before launching, the group's runs in MLflow decide what happens to each
index (:func:`plan`): runs that count for the group (:mod:`mia_bench.store.groups`) are
skipped, an unfinished run of the same recipe is resumed from its last complete epoch
(``--ckpt_path last``, which continues the same MLflow run), and other indices start
fresh; a group trained with another recipe is refused. Killing the fleet kills its
workers (on Linux).

Every worker takes the lease of its run in the tracking store (see
:mod:`mia_bench.store.leases`), so fleets started at once, on one machine or many, train
each run once: a run whose lease is held by a live process is left to it (the fleet
checks before starting a worker, and a worker that finds it held exits with status 75),
and a run finished meanwhile is skipped (status 76). Each fleet writes its own worker
logs, ``run_XXX.<host>-<pid>.log``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mia_bench.errors import UserError
from mia_bench.store.database import store_exists
from mia_bench.store.groups import scan_group
from mia_bench.store.leases import EXIT_ALREADY_TRAINED, EXIT_LEASE_HELD, lease_holder
from mia_bench.store.runs import MlflowSettings, experiment_id, resolve_tracking_uri
from mia_bench.store.slots import member_of


def parse_runs(spec: str) -> list[int]:
    """Run indices from ``"0:16"`` (a range), ``"0:16:2"``, ``"3"`` or ``"0,2,5"``.

    >>> parse_runs("0:4"), parse_runs("1,3"), parse_runs("2")
    ([0, 1, 2, 3], [1, 3], [2])
    """
    try:
        if ":" in spec:
            return list(range(*(int(p) for p in spec.split(":"))))
        return [int(p) for p in spec.split(",")]
    except (TypeError, ValueError):
        raise UserError(
            f"--runs {spec!r} is not a run range: use START:STOP (e.g. 0:16), "
            "START:STOP:STEP, or a comma-separated list (e.g. 0,3,5)"
        ) from None


@dataclass(frozen=True)
class Job:
    """One run of the fleet and what to do with it: ``fresh``, ``resume`` or ``skip``."""

    run_index: int
    action: str


def plan(
    settings: MlflowSettings,
    group: str,
    runs: Sequence[int],
    fingerprint: str | None,
    create: bool = True,
) -> list[Job]:
    """Decide, from the group's runs in MLflow, which runs to skip, resume or start.

    Members of the group (finished runs of its recipe, :mod:`mia_bench.store.groups`)
    are skipped; an unfinished fit run of the same recipe is resumed; any other index
    starts fresh. With ``create`` false (a dry run) a missing store or experiment is
    left uncreated and every run starts fresh.

    Raises:
        UserError: the group was trained with another recipe (config fingerprint).
    """
    from mlflow.tracking import MlflowClient

    if not (create or store_exists(settings.tracking_uri)):
        return [Job(i, "fresh") for i in runs]
    client = MlflowClient(resolve_tracking_uri(settings.tracking_uri))
    found = client.get_experiment_by_name(settings.experiment_name)
    if found is None and not create:
        return [Job(i, "fresh") for i in runs]
    exp_id = found.experiment_id if found else experiment_id(client, settings)
    members = scan_group(client, exp_id, group)
    if members.fingerprint is not None and members.fingerprint != fingerprint:
        raise UserError(
            f"group {group!r} was trained with another recipe (config fingerprint "
            f"{members.fingerprint}; this config's is {fingerprint}): start a new group "
            "with --group NEW_NAME, or run the group's own config"
        )
    done = {r.run_index for r in members.members}
    jobs = []
    for i in runs:
        unfinished = [
            r
            for r in members.slots.get(i, [])
            if r.status != "FINISHED" and r.tags.get("mia.fingerprint") == fingerprint
        ]
        action = "skip" if i in done else "resume" if unfinished else "fresh"
        jobs.append(Job(i, action))
    return jobs


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup CPU quota
    (``os.cpu_count()`` counts the machine's, which a container may not have).

    >>> 1 <= usable_cores() <= (os.cpu_count() or 1)
    True
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores or 1, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores or 1)


def thread_env(workers: int, cores: int | None = None) -> dict[str, str]:
    """Thread counts for each of ``workers`` processes, so workers x threads <= cores
    (two 2-thread processes on 2 cores ran 10x slower than two 1-thread ones).

    >>> thread_env(2, cores=2)["OMP_NUM_THREADS"], thread_env(1, cores=8)["MKL_NUM_THREADS"]
    ('1', '8')
    """
    threads = str(max(1, (cores or usable_cores()) // max(1, workers)))
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    return {name: threads for name in names}


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to kill this worker when the fleet process dies."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Fleet:
    """Runs jobs as ``mia-bench fit`` processes, at most ``workers`` at once.

    Args:
        fit_args: arguments given to every ``mia-bench fit`` (config, overrides).
        group: the group's name.
        workers: processes at once.
        log_dir: each run's output goes to ``<log_dir>/run_XXX.<host>-<pid>.log``.
        settings: the tracking store; when given, a run whose lease is held by a live
            process is left to it without starting a worker.
    """

    def __init__(
        self,
        fit_args: Sequence[str],
        group: str,
        workers: int,
        log_dir: Path,
        settings: MlflowSettings | None = None,
    ) -> None:
        self.fit_args = list(fit_args)
        self.group = group
        self.workers = max(1, workers)
        self.log_dir = log_dir
        self.settings = settings
        self.log_suffix = f"{socket.gethostname()}-{os.getpid()}"
        self.running: dict[int, tuple[subprocess.Popen, float, Job]] = {}
        self.done: list[int] = []
        self.failed: list[int] = []
        self.left: list[int] = []

    def command(self, job: Job) -> list[str]:
        """The ``mia-bench fit`` command line of one job."""
        cmd = [sys.executable, "-m", "mia_bench", "fit", *self.fit_args]
        cmd += [f"--group={self.group}", f"--data.run_index={job.run_index}"]
        cmd += ["--trainer.enable_progress_bar=false", "--signals.progress=false"]
        return cmd + (["--ckpt_path=last"] if job.action == "resume" else [])

    def log_path(self, run_index: int) -> Path:
        """This fleet's log of one run (two fleets never share a log file)."""
        return self.log_dir / f"run_{run_index:03d}.{self.log_suffix}.log"

    def taken(self, run_index: int) -> tuple[str, str] | None:
        """``("left", why)`` if a live process holds the run's lease, ``("done", why)``
        if it was finished meanwhile, else None (also without ``settings``)."""
        if self.settings is None:
            return None
        from mlflow.tracking import MlflowClient

        client = MlflowClient(resolve_tracking_uri(self.settings.tracking_uri))
        exp = client.get_experiment_by_name(self.settings.experiment_name)
        if exp is None:
            return None
        holder = lease_holder(client, exp.experiment_id, self.group, run_index)
        if holder is not None:
            return "left", f"being trained by {holder}, left to it"
        if member_of(client, exp.experiment_id, self.group, run_index):
            return "done", "finished by another process meanwhile, skipped"
        return None

    def dry_run(self, jobs: Sequence[Job]) -> list[str]:
        """What :meth:`run` would do with each job, one line each; starts and creates nothing."""
        look = self.settings is not None and store_exists(self.settings.tracking_uri)
        lines = []
        for job in jobs:
            taken = self.taken(job.run_index) if look and job.action != "skip" else None
            what = {"skip": "already trained, skipped", "resume": "would resume"}
            lines.append(
                f"run {job.run_index}: {taken[1] if taken else what.get(job.action, 'would train')}"
            )
        return lines

    def _leave(self, run_index: int, taken: tuple[str, str]) -> None:
        (self.left if taken[0] == "left" else self.done).append(run_index)
        self._say(f"run {run_index}: {taken[1]}")

    def _start(self, job: Job) -> None:
        taken = self.taken(job.run_index)
        if taken is not None:
            self._leave(job.run_index, taken)
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path(job.run_index), "ab")  # noqa: SIM115
        env = os.environ | thread_env(self.workers)
        proc = subprocess.Popen(
            self.command(job),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        log.close()
        self.running[job.run_index] = (proc, time.monotonic(), job)
        verb = "resuming" if job.action == "resume" else "starting"
        self._say(f"run {job.run_index}: {verb} (log {self.log_path(job.run_index)})")

    def _reap(self) -> None:
        for i, (proc, started, _job) in list(self.running.items()):
            if proc.poll() is None:
                continue
            del self.running[i]
            seconds = time.monotonic() - started
            if proc.returncode == 0:
                self.done.append(i)
                self._say(f"run {i}: finished in {seconds:.0f}s")
            elif proc.returncode == EXIT_LEASE_HELD:
                self._leave(i, self.taken(i) or ("left", "being trained by another, left to it"))
            elif proc.returncode == EXIT_ALREADY_TRAINED:
                self._leave(i, ("done", "finished by another process meanwhile, skipped"))
            else:
                self.failed.append(i)
                self._say(
                    f"run {i}: FAILED (exit {proc.returncode}) after {seconds:.0f}s, "
                    f"see {self.log_path(i)}"
                )

    def _say(self, message: str) -> None:
        status = f"{len(self.done)} done, {len(self.running)} running, {len(self.failed)} failed"
        status += f", {len(self.left)} left to others" if self.left else ""
        print(f"[fleet {self.group}] {message} [{status}]", flush=True)

    def run(self, jobs: Sequence[Job]) -> int:
        """Train every job that is not ``skip``; returns the number of failed runs.

        Runs left to another process's lease are not failures.
        """
        for job in jobs:
            if job.action == "skip":
                self.done.append(job.run_index)
                self._say(f"run {job.run_index}: already finished, skipped")
        queue = [j for j in jobs if j.action != "skip"]
        try:
            while queue or self.running:
                while queue and len(self.running) < self.workers:
                    self._start(queue.pop(0))
                time.sleep(0.2)
                self._reap()
        except KeyboardInterrupt:
            for proc, _, _ in self.running.values():
                proc.terminate()
            raise
        self._say("all runs ended")
        return len(self.failed)
