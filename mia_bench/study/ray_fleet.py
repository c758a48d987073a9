"""``mia-bench fleet --backend ray``: each run (or pack of runs) a Ray task on any node.

Ray (``pip install 'mia-bench[ray]'``) schedules one task per unit
(:class:`~mia_bench.study.units.Unit`) with ``--ray.cpus_per_run`` CPUs and
``--ray.gpus_per_run`` GPUs (fractions share a GPU), on the cluster at
``--ray.address`` (default: the running cluster Ray finds, else a local one started for
the fleet). A Ray worker process imports Lightning once and trains one task after
another.

**Retries.** A task whose worker process or node dies (``kill -9``, the out-of-memory
killer, a lost node) is retried by Ray up to ``--ray.max_retries`` times, on any node;
the retry plans again (:func:`~mia_bench.study.units.train_unit`) and resumes its run
from the last complete epoch, in the same MLflow run, instead of restarting it. A run
that fails by itself (a bug, a bad config) returns its exit status and is never retried.
The run's lease (:mod:`mia_bench.store.leases`) lapses at once when its process is gone
on the same host, and after 90 s when the process was on a node that vanished.

**Progress.** Each task tells the fleet when it starts, and on which node (a Ray queue);
the fleet prints a line per start, finish and failure with the node, and the counts,
the rate in runs per hour and the time left.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mia_bench.errors import UserError
from mia_bench.extras import require
from mia_bench.study.fleet import Fleet, Job
from mia_bench.study.units import Unit, keep_log, node_name, train_unit


@dataclass(frozen=True)
class RayOptions:
    """``--ray.*``: where the cluster is and what each task asks of it."""

    address: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    max_retries: int = 3

    def check(self) -> None:
        """Refuse impossible requests in one line."""
        if self.cpus_per_run <= 0 or self.gpus_per_run < 0 or self.max_retries < 0:
            raise UserError(
                f"--ray.cpus_per_run {self.cpus_per_run} / --ray.gpus_per_run "
                f"{self.gpus_per_run} / --ray.max_retries {self.max_retries}: CPUs must be "
                "positive, GPUs and retries zero or more"
            )


def _train_on_node(unit: Unit, events: Any) -> dict[str, Any]:
    """The Ray task: say where it starts, then train the unit there."""
    events.put({"runs": list(unit.runs), "node": node_name(), "pid": os.getpid()})
    return train_unit(unit)


class RayFleet(Fleet):
    """A :class:`~mia_bench.study.fleet.Fleet` whose units are Ray tasks.

    Args:
        fleet_args: as :class:`~mia_bench.study.fleet.Fleet`'s (``workers`` is unused:
            the cluster's resources decide how many tasks run at once).
        options: the ``--ray.*`` settings.
        fingerprint: the recipe's fingerprint, for each task to plan with.
    """

    def __init__(self, *fleet_args: Any, options: RayOptions, fingerprint: str | None,
                 **fleet_kwargs: Any) -> None:  # fmt: skip
        super().__init__(*fleet_args, **fleet_kwargs)
        options.check()
        self.options, self.fingerprint = options, fingerprint
        self.nodes: dict[int, str] = {}
        self.attempts: dict[int, int] = {}
        self.cwd = os.getcwd()
        self._active: set[int] = set()

    @property
    def running(self) -> dict[int, Any]:
        return {i: n for i, n in self.nodes.items() if i in self._active}

    def where(self, run_index: int) -> str:
        node = self.nodes.get(run_index)
        return f" on {node}" if node else ""

    def unit(self, jobs: Sequence[Job]) -> Unit:
        """The task of ``jobs``: a run, or a pack."""
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
            threads=max(1, int(self.options.cpus_per_run)),
            pack=self.pack > 1,
        )

    def _connect(self):
        ray = require("ray", "ray", "--backend ray", "--backend local")
        if not ray.is_initialized():
            address = self.options.address or os.environ.get("RAY_ADDRESS")
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        return ray

    def run(self, jobs: Sequence[Job]) -> int:
        """Train every job that is not ``skip`` as Ray tasks; the number of failed runs."""
        from ray.util.queue import Empty, Queue

        ray = self._connect()
        for job in jobs:
            if job.action == "skip":
                self.done.append(job.run_index)
                self._say(f"run {job.run_index}: already finished, skipped")
        todo = [j for j in jobs if j.action != "skip"]
        self.began, self.to_train = self.clock(), len(todo)
        events = Queue(actor_options={"num_cpus": 0})
        task = ray.remote(_train_on_node).options(
            num_cpus=self.options.cpus_per_run,
            num_gpus=self.options.gpus_per_run,
            max_retries=self.options.max_retries,
            retry_exceptions=False,
        )
        pending = {}
        for start in range(0, len(todo), self.pack):
            unit = self.unit(todo[start : start + self.pack])
            pending[task.remote(unit, events)] = unit
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                self._drain(events, Empty)
                for ref in ready:
                    self._collect(ray, ref, pending.pop(ref))
            self._drain(events, Empty)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        self._say("all runs ended")
        return len(self.failed)

    def _drain(self, events: Any, empty: type) -> None:
        """Print a line for each task that started since the last look."""
        while True:
            try:
                event = events.get_nowait()
            except empty:
                return
            for run_index in event["runs"]:
                attempt = self.attempts[run_index] = self.attempts.get(run_index, 0) + 1
                self.nodes[run_index] = f"{event['node']} (pid {event['pid']})"
                self._active.add(run_index)
                verb = "starting" if attempt == 1 else f"retrying (attempt {attempt}, resumes)"
                self._say(f"run {run_index}: {verb}{self.where(run_index)} "
                          f"(log {self.log_path(run_index)})")  # fmt: skip

    def _collect(self, ray: Any, ref: Any, unit: Unit) -> None:
        """Record a finished task: each run's status, and its log in the fleet's folder."""
        try:
            answer = ray.get(ref)
        except Exception as err:  # noqa: BLE001 - retries used up (the worker kept dying)
            answer = {"statuses": {str(i): 1 for i in unit.runs}, "seconds": 0.0}
            why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            for run_index in unit.runs:
                self._say(f"run {run_index}: its task died {self.attempts.get(run_index, 0)} "
                          f"time(s), no retry left ({why[:200]})")  # fmt: skip
        if answer.get("log"):
            keep_log(answer["log"], Path(unit.log))
        for run_index, status in answer["statuses"].items():
            self._active.discard(int(run_index))
            self._finished(int(run_index), int(status), float(answer["seconds"]))
