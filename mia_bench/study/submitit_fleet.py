"""``mia-bench fleet --backend submitit``: a group's runs as a SLURM job array.

submitit (``pip install 'mia-bench[submitit]'``) submits one job per unit (a run, or a
pack of runs: :class:`~mia_bench.study.units.Unit`) as one SLURM array, at most
``--workers`` running at once (``slurm_array_parallelism``), each asking for
``--submitit.cpus_per_run`` CPUs and ``--submitit.gpus_per_run`` GPUs for at most
``--submitit.timeout_min`` minutes. Job files and SLURM's logs go to
``<log folder>/submitit/``; each run's own log to the fleet's log folder.

The rules are the other backends': every job plans its runs when it starts
(:func:`~mia_bench.study.units.train_unit`) and trains under the run's lease, so a job
that is **preempted or times out** is requeued by submitit (a checkpointable job) and
resumes its run from the last complete epoch; a job that **dies** (its node lost, the
job cancelled) is submitted again, up to ``--submitit.max_retries`` times, and resumes
too. A run that fails by itself (a bug, a bad config) answers its exit status and is not
retried. Without SLURM (``--submitit.cluster local``, the default where ``sbatch`` is
missing) the jobs are local processes: the same code path, used by the tests.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mia_bench.errors import UserError
from mia_bench.extras import require
from mia_bench.study.fleet import Fleet, Job
from mia_bench.study.units import Unit, keep_log, train_unit

POLL_S = 1.0


@dataclass(frozen=True)
class SubmititOptions:
    """``--submitit.*``: where the jobs go and what each asks for."""

    cluster: str | None = None
    partition: str | None = None
    timeout_min: int = 240
    cpus_per_run: int = 1
    gpus_per_run: int = 0
    max_retries: int = 3

    def resolved_cluster(self) -> str:
        """``slurm`` where ``sbatch`` exists, else ``local``, unless given."""
        if self.cluster is not None:
            if self.cluster not in ("slurm", "local", "debug"):
                raise UserError(
                    f"--submitit.cluster {self.cluster!r}: use slurm, local or debug"
                )
            return self.cluster
        return "slurm" if shutil.which("sbatch") else "local"


class TrainJob:
    """The job submitit runs: train a unit; requeued as it was when SLURM preempts it or
    its time runs out (it plans again when it restarts, so it resumes)."""

    def __call__(self, unit: Unit) -> dict[str, Any]:
        return train_unit(unit)

    def checkpoint(self, unit: Unit) -> Any:
        """submitit's hook before a requeue: the same unit again."""
        import submitit

        return submitit.helpers.DelayedSubmission(TrainJob(), unit)


class SubmititFleet(Fleet):
    """A :class:`~mia_bench.study.fleet.Fleet` whose units are submitit jobs.

    Args:
        fleet_args: as :class:`~mia_bench.study.fleet.Fleet`'s; ``workers`` is the
            array's parallelism.
        options: the ``--submitit.*`` settings.
        fingerprint: the recipe's fingerprint, for each job to plan with.
    """

    def __init__(self, *fleet_args: Any, options: SubmititOptions, fingerprint: str | None,
                 **fleet_kwargs: Any) -> None:  # fmt: skip
        super().__init__(*fleet_args, **fleet_kwargs)
        self.options, self.fingerprint = options, fingerprint
        self.cluster = options.resolved_cluster()
        self.nodes: dict[int, str] = {}
        self._active: set[int] = set()
        self.cwd = os.getcwd()

    @property
    def running(self) -> dict[int, Any]:
        return {i: None for i in self._active}

    def where(self, run_index: int) -> str:
        node = self.nodes.get(run_index)
        return f" on {node}" if node else ""

    def unit(self, jobs: Sequence[Job]) -> Unit:
        """The job of ``jobs``: a run, or a pack."""
        assert self.settings is not None
        indices = tuple(j.run_index for j in jobs)
        if self.pack > 1:
            self._packs.update({i: list(indices) for i in indices})
        return Unit(
            runs=indices,
            group=self.group,
            recipe_args=tuple(self.recipe_args()),
            settings=self.settings,
            fingerprint=self.fingerprint,
            log=str(Path(self.log_path(indices[0])).resolve()),
            cwd=self.cwd,
            threads=self.options.cpus_per_run,
            pack=self.pack > 1,
        )

    def executor(self) -> Any:
        """submitit's executor for this fleet's jobs."""
        submitit = require("submitit", "submitit", "--backend submitit", "--backend local")
        folder = self.log_dir / "submitit"
        executor = submitit.AutoExecutor(folder=folder, cluster=self.cluster)
        params: dict[str, Any] = {
            "name": f"mia-{self.group}",
            "timeout_min": self.options.timeout_min,
            "cpus_per_task": self.options.cpus_per_run,
            "gpus_per_node": self.options.gpus_per_run,
        }
        if self.cluster == "slurm":
            params["slurm_array_parallelism"] = self.workers
            params["slurm_max_num_timeout"] = self.options.max_retries
            if self.options.partition:
                params["slurm_partition"] = self.options.partition
        executor.update_parameters(**params)
        return executor

    def run(self, jobs: Sequence[Job]) -> int:
        """Submit every job that is not ``skip``; wait for all; the number of failed runs."""
        for job in jobs:
            if job.action == "skip":
                self.done.append(job.run_index)
                self._say(f"run {job.run_index}: already finished, skipped")
        todo = [j for j in jobs if j.action != "skip"]
        self.began, self.to_train = self.clock(), len(todo)
        units = [self.unit(todo[i : i + self.pack]) for i in range(0, len(todo), self.pack)]
        executor = self.executor()
        waiting = list(units)
        submitted: list[tuple[Any, Unit, int]] = []  # (job, unit, attempt)
        if self.cluster == "slurm":  # one array; SLURM keeps --workers of it running
            submitted = [(j, u, 1) for j, u in zip(executor.map_array(TrainJob(), waiting),
                                                    waiting, strict=True)]  # fmt: skip
            waiting = []
        try:
            while waiting or submitted:
                while waiting and len(submitted) < self.workers:  # local: --workers at once
                    unit = waiting.pop(0)
                    submitted.append((executor.submit(TrainJob(), unit), unit, 1))
                    self._started(unit, submitted[-1][0], 1)
                submitted = self._poll(executor, submitted)
        except KeyboardInterrupt:
            for job, _, _ in submitted:
                job.cancel(check=False)
            raise
        self._say("all runs ended")
        return len(self.failed)

    def _started(self, unit: Unit, job: Any, attempt: int) -> None:
        again = "" if attempt == 1 else f" again (attempt {attempt}, resumes)"
        for run_index in unit.runs:
            self._active.add(run_index)
            self._say(f"run {run_index}: submitted{again} as job {job.job_id} "
                      f"(log {self.log_path(run_index)})")  # fmt: skip

    def _poll(self, executor: Any, submitted: list) -> list:
        """Collect finished jobs, resubmit dead ones; the jobs still out."""
        still = []
        for job, unit, attempt in submitted:
            if not job.done():
                still.append((job, unit, attempt))
                continue
            try:
                self._collect(unit, job.result())
            except Exception as err:  # noqa: BLE001 - the job died (node lost, cancelled)
                why = (str(err).strip().splitlines() or [type(err).__name__])[-1][:200]
                if attempt <= self.options.max_retries:
                    again = executor.submit(TrainJob(), unit)
                    self._started(unit, again, attempt + 1)
                    still.append((again, unit, attempt + 1))
                    continue
                answer = {"statuses": {str(i): 1 for i in unit.runs}, "seconds": 0.0}
                for run_index in unit.runs:
                    self._say(f"run {run_index}: job {job.job_id} died, no retry left ({why})")
                self._collect(unit, answer)
        if len(still) == len(submitted):
            time.sleep(POLL_S)  # nothing ended: look again in a moment
        return still

    def _collect(self, unit: Unit, answer: dict[str, Any]) -> None:
        if answer.get("log"):
            keep_log(answer["log"], Path(unit.log))
        for run_index, status in answer["statuses"].items():
            if answer.get("node"):
                self.nodes[int(run_index)] = f"{answer['node']} (pid {answer.get('pid')})"
            self._active.discard(int(run_index))
            self._finished(int(run_index), int(status), float(answer["seconds"]))
