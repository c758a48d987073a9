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

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mia_bench.errors import UserError
from mia_bench.extras import require
from mia_bench.study.cluster_fleet import ClusterFleet
from mia_bench.study.fleet import Job
from mia_bench.study.units import Unit, train_unit

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
                raise UserError(f"--submitit.cluster {self.cluster!r}: use slurm, local or debug")
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


class SubmititFleet(ClusterFleet):
    """A fleet whose units are submitit jobs (``workers``: the array's parallelism).

    Args:
        fleet_args: as :class:`~mia_bench.study.fleet.Fleet`'s.
        options: the ``--submitit.*`` settings.
        fingerprint: the recipe's fingerprint, for each job to plan with.
    """

    def __init__(self, *fleet_args: Any, options: SubmititOptions, fingerprint: str | None,
                 **fleet_kwargs: Any) -> None:  # fmt: skip
        threads = options.cpus_per_run
        super().__init__(*fleet_args, fingerprint=fingerprint, threads=threads, **fleet_kwargs)
        self.options = options
        self.cluster = options.resolved_cluster()

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
        units = self.units(jobs)
        executor = self.executor()
        waiting = list(units)
        submitted: list[tuple[Any, Unit, int]] = []  # (job, unit, attempt)
        if self.cluster == "slurm":  # one array; SLURM keeps --workers of it running
            submitted = [(j, u, 1) for j, u in zip(executor.map_array(TrainJob(), waiting),
                                                    waiting, strict=True)]  # fmt: skip
            for job, unit, _ in submitted:
                self._started(unit, job, 1)
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
                self.collect(unit, job.result())
            except Exception as err:  # noqa: BLE001 - the job died (node lost, cancelled)
                why = (str(err).strip().splitlines() or [type(err).__name__])[-1][:200]
                if attempt <= self.options.max_retries:
                    again = executor.submit(TrainJob(), unit)
                    self._started(unit, again, attempt + 1)
                    still.append((again, unit, attempt + 1))
                    continue
                self.lost(unit, f"job {job.job_id}: {why}")
        if len(still) == len(submitted):
            time.sleep(POLL_S)  # nothing ended: look again in a moment
        return still
