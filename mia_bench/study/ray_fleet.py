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
from typing import Any

from mia_bench.errors import UserError
from mia_bench.extras import require
from mia_bench.study.cluster_fleet import ClusterFleet
from mia_bench.study.fleet import Job
from mia_bench.study.units import Unit, node_name, train_unit


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


class RayFleet(ClusterFleet):
    """A fleet whose units are Ray tasks (``workers`` is unused: the cluster's resources
    decide how many run at once).

    Args:
        fleet_args: as :class:`~mia_bench.study.fleet.Fleet`'s.
        options: the ``--ray.*`` settings.
        fingerprint: the recipe's fingerprint, for each task to plan with.
    """

    def __init__(self, *fleet_args: Any, options: RayOptions, fingerprint: str | None,
                 **fleet_kwargs: Any) -> None:  # fmt: skip
        options.check()
        threads = int(options.cpus_per_run)
        super().__init__(*fleet_args, fingerprint=fingerprint, threads=threads, **fleet_kwargs)
        self.options = options
        self.attempts: dict[int, int] = {}

    def _connect(self):
        ray = require("ray", "ray", "--backend ray", "--backend local")
        if not ray.is_initialized():
            address = self.options.address or os.environ.get("RAY_ADDRESS")
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        return ray

    def run(self, jobs: Sequence[Job]) -> int:
        """Train every job that is not ``skip`` as Ray tasks; the number of failed runs."""
        ray = self._connect()  # first: a missing Ray is one line naming its extra
        from ray.util.queue import Empty, Queue

        units = self.units(jobs)
        events = Queue(actor_options={"num_cpus": 0})
        task = ray.remote(_train_on_node).options(
            num_cpus=self.options.cpus_per_run,
            num_gpus=self.options.gpus_per_run,
            max_retries=self.options.max_retries,
            retry_exceptions=False,
        )
        pending = {task.remote(unit, events): unit for unit in units}
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
        try:
            answer = ray.get(ref)
        except Exception as err:  # noqa: BLE001 - retries used up (the worker kept dying)
            self.lost(unit, (str(err).strip().splitlines() or [type(err).__name__])[0])
            return
        self.collect(unit, answer)
