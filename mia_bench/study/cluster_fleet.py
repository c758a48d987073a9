"""What the cluster backends (Ray, submitit) share: a fleet whose units of work are
shipped to workers elsewhere (:class:`~mia_bench.study.units.Unit`), which answer with
each run's status, their node and the log's text."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mia_bench.study.fleet import Fleet, Job
from mia_bench.study.units import Unit, keep_log


class ClusterFleet(Fleet):
    """A :class:`~mia_bench.study.fleet.Fleet` whose units run on a cluster.

    Args:
        fleet_args: as :class:`~mia_bench.study.fleet.Fleet`'s.
        fingerprint: the recipe's fingerprint, for each unit to plan with.
        threads: threads of each unit's runs.
    """

    def __init__(self, *fleet_args: Any, fingerprint: str | None, threads: int,
                 **fleet_kwargs: Any) -> None:  # fmt: skip
        super().__init__(*fleet_args, **fleet_kwargs)
        self.fingerprint, self.threads = fingerprint, max(1, threads)
        self.nodes: dict[int, str] = {}  # run index -> where it was trained
        self.cwd = os.getcwd()
        self._active: set[int] = set()

    @property
    def running(self) -> dict[int, Any]:
        return {i: self.nodes.get(i) for i in self._active}

    def where(self, run_index: int) -> str:
        node = self.nodes.get(run_index)
        return f" on {node}" if node else ""

    def unit(self, jobs: Sequence[Job]) -> Unit:
        """The unit of ``jobs``: a run, or a pack."""
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
            threads=self.threads,
            pack=self.pack > 1,
        )

    def units(self, jobs: Sequence[Job]) -> list[Unit]:
        """Report the skipped jobs, start the clock; the units of the others."""
        return [self.unit(group) for group in self.start(jobs)]

    def collect(self, unit: Unit, answer: dict[str, Any]) -> None:
        """Record a unit's answer: each run's status, and its log in the fleet's folder."""
        if answer.get("log"):
            keep_log(answer["log"], Path(unit.log))
        for run_index, status in answer["statuses"].items():
            if answer.get("node"):
                self.nodes[int(run_index)] = f"{answer['node']} (pid {answer.get('pid')})"
            self._active.discard(int(run_index))
            self._finished(int(run_index), int(status), float(answer["seconds"]))

    def lost(self, unit: Unit, why: str) -> None:
        """A unit whose worker kept dying and has no retry left: its runs failed."""
        for run_index in unit.runs:
            self._say(f"run {run_index}: its worker died, no retry left ({why[:200]})")
        self.collect(unit, {"statuses": {str(i): 1 for i in unit.runs}, "seconds": 0.0})
