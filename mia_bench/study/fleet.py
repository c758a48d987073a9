"""``mia-bench fleet``: train many runs of a group, resumably, K at a time.

Each run is a ``mia-bench fit`` with ``--data.run_index i`` and ``--group G``, trained by
one of ``--workers`` long-lived worker processes (:mod:`mia_bench.study.worker`) that
train their runs one after another, so start-up is paid once per worker; each worker
gets ``usable cores / workers`` threads and, with GPUs, one GPU (``--devices``; several
workers may share one). Before launching, the group's runs in MLflow decide what happens to each
index (:func:`plan`): runs that count for the group (:mod:`mia_bench.store.groups`) are
skipped, an unfinished run of the same recipe is resumed from its last complete epoch
(``--ckpt_path last``, which continues the same MLflow run), and other indices start
fresh; a group trained with another recipe is refused. Killing the fleet kills its
workers (on Linux).

Every worker takes the lease of its run in the tracking store (see
:mod:`mia_bench.store.leases`), so fleets started at once, on one machine or many, train
each run once: a run whose lease is held by a live process is left to it (the fleet
checks before giving the run to a worker, and a worker that finds it held answers status
75), and a run finished meanwhile is skipped (status 76). Each fleet writes its own worker
logs, ``run_XXX.<host>-<pid>.log``.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mia_bench.errors import UserError
from mia_bench.store.database import store_exists
from mia_bench.store.groups import scan_group
from mia_bench.store.leases import EXIT_ALREADY_TRAINED, EXIT_LEASE_HELD, lease_holder
from mia_bench.store.runs import MlflowSettings, experiment_id, resolve_tracking_uri
from mia_bench.store.slots import member_of


def job_args(recipe_args: list[str], group: str, run_index: int, resume: bool) -> list[str]:
    """The ``mia-bench fit`` arguments of one run of a fleet.

    >>> job_args(["-c", "q.yaml"], "g", 3, True)
    ['-c', 'q.yaml', '--group=g', '--data.run_index=3', '--ckpt_path=last']
    """
    args = [*recipe_args, f"--group={group}", f"--data.run_index={run_index}"]
    return args + (["--ckpt_path=last"] if resume else [])


def eta(seconds: float) -> str:
    """A duration as fleet lines show it.

    >>> eta(42), eta(125), eta(3 * 3600 + 61)
    ('42s', '2m05s', '3h01m')
    """
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


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


@dataclass
class _Worker:
    """One long-lived worker process (:mod:`mia_bench.study.worker`) and its current job."""

    number: int
    proc: subprocess.Popen
    jobs: list[Job] = field(default_factory=list)  # what it trains now (a pack: several)
    started: float = 0.0

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


def _listen(worker: _Worker, events: queue.Queue) -> None:
    """Forward a worker's answer lines to the fleet, then its exit."""
    assert worker.proc.stdout is not None
    for line in worker.proc.stdout:
        if line.strip():
            events.put(("answer", worker, json.loads(line)))
    events.put(("exit", worker, worker.proc.wait()))


def gpu_slots(devices: str = "auto") -> list[str] | None:
    """The GPUs workers are spread over (``CUDA_VISIBLE_DEVICES`` values), or None.

    ``auto``: every GPU this process sees (``CUDA_VISIBLE_DEVICES`` when set, else the
    ones the NVIDIA driver lists); ``none``: none; else a comma-separated list (``0,1``).

    >>> gpu_slots("none"), gpu_slots("0,2")
    (None, ['0', '2'])
    """
    if devices == "none":
        return None
    if devices != "auto":
        return [d.strip() for d in devices.split(",") if d.strip()] or None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"] or None
    try:
        listed = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    count = sum(1 for line in listed.splitlines() if line.startswith("GPU "))
    return [str(i) for i in range(count)] or None


def worker_env(
    number: int, workers: int, gpus: Sequence[str] | None, cores: int | None = None
) -> dict[str, str]:
    """The environment of worker ``number``: thread counts, and its GPU when there are some.

    Workers are dealt to GPUs in turn, so several share a GPU when there are more
    workers than GPUs.

    >>> env = worker_env(3, 4, ["0", "1"])
    >>> env["CUDA_VISIBLE_DEVICES"], env["OMP_NUM_THREADS"] == thread_env(4)["OMP_NUM_THREADS"]
    ('1', True)
    """
    env = thread_env(workers, cores)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[number % len(gpus)]
    return env


class Fleet:
    """Trains jobs in ``workers`` long-lived processes, each training its runs in turn.

    A worker (:mod:`mia_bench.study.worker`) pays start-up once and runs
    ``mia-bench fit`` for each run it is given; a worker that dies is replaced.

    Args:
        fit_args: arguments given to every ``mia-bench fit`` (config, overrides).
        group: the group's name.
        workers: processes at once.
        log_dir: each run's output goes to ``<log_dir>/run_XXX.<host>-<pid>.log``, each
            worker's own (start-up, crashes) to ``worker_N.<host>-<pid>.log``.
        settings: the tracking store; when given, a run whose lease is held by a live
            process is left to it without giving it to a worker.
        gpus: ``CUDA_VISIBLE_DEVICES`` values the workers are dealt to (see
            :func:`gpu_slots`); None: the workers' environment is left as it is.
        pack: runs a worker trains at once, packed (:mod:`mia_bench.study.pack`); 1:
            one run at a time.
    """

    def __init__(
        self,
        fit_args: Sequence[str],
        group: str,
        workers: int,
        log_dir: Path,
        settings: MlflowSettings | None = None,
        gpus: Sequence[str] | None = None,
        pack: int = 1,
    ) -> None:
        self.fit_args = list(fit_args)
        self.pack = max(1, pack)
        self.group = group
        self.workers = max(1, workers)
        self.log_dir = log_dir
        self.settings = settings
        self.gpus = list(gpus) if gpus else None
        self.log_suffix = f"{socket.gethostname()}-{os.getpid()}"
        self.pool: list[_Worker] = []
        self.events: queue.Queue = queue.Queue()
        self.done: list[int] = []
        self.failed: list[int] = []
        self.left: list[int] = []
        self.started_workers = 0
        self._packs: dict[int, list[int]] = {}  # run index -> its pack's run indices
        self.clock = time.monotonic
        self.began: float | None = None  # when run() started
        self.to_train = 0  # runs run() was given to train
        self.trained = 0  # of those, finished here

    @property
    def running(self) -> dict[int, _Worker]:
        """The runs being trained now, by run index."""
        return {job.run_index: w for w in self.pool for job in w.jobs}

    def recipe_args(self) -> list[str]:
        """The fit arguments every run of the fleet shares."""
        return [*self.fit_args, "--trainer.enable_progress_bar=false", "--signals.progress=false"]

    def job_args(self, job: Job) -> list[str]:
        """The ``mia-bench fit`` arguments of one job."""
        return job_args(self.recipe_args(), self.group, job.run_index, job.action == "resume")

    def command(self, job: Job) -> list[str]:
        """The ``mia-bench fit`` command line that trains ``job`` (what a worker runs)."""
        return ["mia-bench", "fit", *self.job_args(job)]

    def log_path(self, run_index: int) -> Path:
        """This fleet's log of one run (two fleets never share a log file); a packed run's
        is its pack's log."""
        first = self._packs.get(run_index)
        if first is not None:
            return self.log_dir / f"pack_{first[0]:03d}-{first[-1]:03d}.{self.log_suffix}.log"
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

    def where(self, run_index: int) -> str:
        """`` on HOST`` (the node that trained a run), as finish lines show it."""
        return f" on {socket.gethostname()}"

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

    def _spawn(self) -> _Worker:
        number = self.started_workers
        self.started_workers += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        own_log = self.log_dir / f"worker_{number}.{self.log_suffix}.log"
        with open(own_log, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mia_bench.study.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=os.environ | worker_env(number, self.workers, self.gpus),
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        worker = _Worker(number, proc)
        threading.Thread(target=_listen, args=(worker, self.events), daemon=True).start()
        self.pool.append(worker)
        return worker

    def _idle_worker(self) -> _Worker | None:
        for worker in self.pool:
            if not worker.jobs and worker.alive:
                return worker
        self.pool = [w for w in self.pool if w.alive or w.jobs]
        return self._spawn() if len(self.pool) < self.workers else None

    def _line(self, jobs: list[Job]) -> dict[str, Any]:
        """What a worker is sent to train ``jobs`` (see :mod:`mia_bench.study.worker`)."""
        if self.pack == 1:
            job = jobs[0]
            log = str(self.log_path(job.run_index))
            return {"run_index": job.run_index, "args": self.job_args(job), "log": log}
        indices = [j.run_index for j in jobs]
        self._packs.update({i: indices for i in indices})
        resume = {str(j.run_index): j.action == "resume" for j in jobs}
        log = str(self.log_path(indices[0]))
        return {"runs": indices, "resume": resume, "group": self.group, "log": log,
                "args": self.recipe_args()}  # fmt: skip

    def _give(self, unit: list[Job]) -> bool:
        """Hand a run (or a pack of runs) to an idle worker; False when every worker is busy.

        Runs another process holds or finished meanwhile are left out of it first.
        """
        jobs = []
        for job in unit:
            taken = self.taken(job.run_index)
            if taken is None:
                jobs.append(job)
            else:
                self._leave(job.run_index, taken)
        if not jobs:
            return True
        worker = self._idle_worker()
        if worker is None:
            return False
        try:
            assert worker.proc.stdin is not None
            worker.proc.stdin.write(json.dumps(self._line(jobs)) + "\n")
            worker.proc.stdin.flush()
        except OSError:  # it died meanwhile: its exit event retires it
            worker.proc.poll()
            return False
        worker.jobs, worker.started = jobs, time.monotonic()
        for job in jobs:
            verb = "resuming" if job.action == "resume" else "starting"
            packed = f" (a pack of {len(jobs)})" if self.pack > 1 else ""
            self._say(
                f"run {job.run_index}: {verb} in worker {worker.number}{self.where(job.run_index)}"
                f"{packed} "
                f"(log {self.log_path(job.run_index)})"
            )
        return True

    def _finished(self, run_index: int, status: int, seconds: float) -> None:
        if status == 0:
            self.done.append(run_index)
            self.trained += 1
            self._say(f"run {run_index}: finished in {seconds:.1f}s{self.where(run_index)}")
        elif status == EXIT_LEASE_HELD:
            self._leave(
                run_index, self.taken(run_index) or ("left", "being trained by another, left to it")
            )
        elif status == EXIT_ALREADY_TRAINED:
            self._leave(run_index, ("done", "finished by another process meanwhile, skipped"))
        else:
            self.failed.append(run_index)
            self._say(
                f"run {run_index}: FAILED (exit {status}) after {seconds:.0f}s, "
                f"see {self.log_path(run_index)}"
            )

    def _handle(self, kind: str, worker: _Worker, payload: Any) -> None:
        jobs, seconds = worker.jobs, time.monotonic() - worker.started
        worker.jobs = []
        if kind == "answer":
            statuses = payload.get("statuses") or {payload["run_index"]: payload["status"]}
            for run_index, status in statuses.items():
                self._finished(int(run_index), int(status), seconds)
        elif jobs:  # the worker died with runs in hand
            for job in jobs:
                self._finished(job.run_index, payload if payload else 1, seconds)
            self._say(f"worker {worker.number} died (exit {payload}); a new one takes the next run")

    def _say(self, message: str) -> None:
        """One fleet line: ``message``, then the counts, the rate and the time left."""
        status = f"{len(self.done)} done, {len(self.running)} running, {len(self.failed)} failed"
        status += f", {len(self.left)} left to others" if self.left else ""
        print(f"[fleet {self.group}] {message} [{status}{self._pace()}]", flush=True)

    def _pace(self) -> str:
        """``; 12.0 runs/h, ETA 1h05m`` once a run has finished here, else ``''``."""
        if self.began is None or not self.trained:
            return ""
        hours = max(self.clock() - self.began, 1e-9) / 3600
        rate = self.trained / hours
        waiting = self.to_train - self.trained - len(self.failed) - len(self.left)
        return f"; {rate:.1f} runs/h, ETA {eta(max(0, waiting) / rate * 3600)}"

    def start(self, jobs: Sequence[Job]) -> list[list[Job]]:
        """Report the ``skip`` jobs, start the clock; the others in units of ``pack``."""
        for job in jobs:
            if job.action == "skip":
                self.done.append(job.run_index)
                self._say(f"run {job.run_index}: already finished, skipped")
        left = [j for j in jobs if j.action != "skip"]
        self.began, self.to_train = self.clock(), len(left)
        return [left[i : i + self.pack] for i in range(0, len(left), self.pack)]

    def run(self, jobs: Sequence[Job]) -> int:
        """Train every job that is not ``skip``; returns the number of failed runs.

        Runs left to another process's lease are not failures.
        """
        todo = self.start(jobs)
        try:
            while todo or self.running:
                while todo and self._give(todo[0]):
                    todo.pop(0)
                if self.running:
                    self._handle(*self.events.get())
                elif todo:  # every worker died before taking a job: wait for their exits
                    self._handle(*self.events.get())
        except KeyboardInterrupt:
            self.close(kill=True)
            raise
        self.close()
        self._say("all runs ended")
        return len(self.failed)

    def close(self, kill: bool = False) -> None:
        """End the workers: their stdin closes and they exit (``kill``: at once)."""
        for worker in self.pool:
            try:
                if kill:
                    worker.proc.terminate()
                elif worker.proc.stdin is not None:
                    worker.proc.stdin.close()
            except OSError:
                pass
        for worker in self.pool:
            try:
                worker.proc.wait(timeout=None if not kill else 30)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
