"""Which runs make up a group: the membership rule, decided here and nowhere else.

A run counts for its group (for audits, references, teachers, re-recording) only when

* it is a ``fit`` run (``validate``/``test`` runs carry ``mia.command`` and never take a
  group slot) with a run index inside ``[0, num_runs)``;
* its config fingerprint (``mia.fingerprint``: the resolved config minus ``run_index``
  and settings that do not change what is trained) is the group's, i.e. that of the
  group's first fit run;
* it is FINISHED, has its keep row, and has the signals of every epoch it recorded
  (``mia.recorded_epochs``, set at the end of fit);
* no earlier run of the same index already passed (a later one is a duplicate).

Every other run is reported with its index, run id and the reason, never used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from mlflow.tracking import MlflowClient

from mia_bench.errors import IncompleteGroupError
from mia_bench.store.artifacts import (
    embedding_path,
    list_epochs,
    local_artifact_dir,
    signals_path,
    stats_path,
)
from mia_bench.store.remote import RemoteFolder, is_local
from mia_bench.store.runs import MlflowSettings, resolve_tracking_uri


@dataclass(frozen=True)
class GroupRun:
    """One run of a group as MLflow knows it.

    ``artifact_dir`` is the local folder its files are read from: the run's artifact
    folder, or for a remote artifact store its cache folder, which :meth:`fetch` fills
    (:mod:`mia_bench.store.remote`).
    """

    run_id: str
    group: str
    run_index: int
    status: str
    artifact_dir: Path
    tags: dict[str, str]
    artifact_uri: str = ""
    tracking_uri: str = ""

    @cached_property
    def remote(self) -> RemoteFolder | None:
        """The run's artifacts in a remote store, or None when they are a local folder."""
        if not self.artifact_uri or is_local(self.artifact_uri):
            return None
        return RemoteFolder(self.artifact_uri, self.tracking_uri, self.artifact_dir)

    def has(self, relative: str) -> bool:
        """Whether the run holds the artifact ``relative`` (e.g. ``keep.npy``)."""
        if self.remote is None:
            return (self.artifact_dir / relative).is_file()
        return self.remote.has(relative)

    def epochs(self) -> list[int]:
        """Epochs with complete signals."""
        if self.remote is None:
            return list_epochs(self.artifact_dir)
        names = self.remote.listing("signals")
        found = (n[6:-4] for n in names if n.startswith("epoch_") and n.endswith(".npz"))
        return sorted(int(e) for e in found if e.isdigit())

    def fetch(self, epoch: int | None = None, layers: Sequence[str] = ()) -> Path:
        """:attr:`artifact_dir`, holding the keep row and (for ``epoch``) the signals,
        statistics and ``layers``' embeddings; a remote run's are downloaded once."""
        if self.remote is not None:
            wanted = ["keep.npy"]
            if epoch is not None:
                paths = [
                    signals_path(self.artifact_dir, epoch),
                    stats_path(self.artifact_dir, epoch),
                ]
                paths += [embedding_path(self.artifact_dir, epoch, layer) for layer in layers]
                wanted += [p.relative_to(self.artifact_dir).as_posix() for p in paths]
            for relative in wanted:
                if self.remote.has(relative):
                    self.remote.fetch(relative)
        return self.artifact_dir

    def resolve_epoch(self, epoch: int | str) -> int | None:
        """``epoch`` itself if recorded, the last recorded one for ``"last"``, else None."""
        have = self.epochs()
        if epoch == "last":
            return have[-1] if have else None
        return int(epoch) if int(epoch) in have else None


@dataclass(frozen=True)
class Excluded:
    """A run of the group that the rule leaves out, and why."""

    run_index: int | None
    run_id: str
    reason: str

    def line(self) -> str:
        """One line for a report."""
        return f"run {self.run_index} ({self.run_id}): {self.reason}"


@dataclass
class GroupMembers:
    """A group's runs after the membership rule.

    Attributes:
        group: the group's name.
        members: runs that count, one per run index, ascending.
        excluded: runs left out, with reasons.
        slots: every fit run of the group by run index, newest first (a fleet resumes
            from these).
        num_runs: the group's size (tag ``mia.num_runs``), None for an empty group.
        fingerprint: the group's config fingerprint (that of its first fit run).
    """

    group: str
    members: list[GroupRun] = field(default_factory=list)
    excluded: list[Excluded] = field(default_factory=list)
    slots: dict[int, list[GroupRun]] = field(default_factory=dict)
    num_runs: int | None = None
    fingerprint: str | None = None

    def missing(self) -> list[int]:
        """Run indices in ``[0, num_runs)`` with no member."""
        have = {r.run_index for r in self.members}
        return [i for i in range(self.num_runs or 0) if i not in have]

    def report(self) -> str:
        """Which runs were left out and why, one per line ('' when none were)."""
        return "\n".join(e.line() for e in self.excluded)

    def require(self, allow_partial: bool = False) -> None:
        """Refuse an incomplete group (runs missing or left out) unless ``allow_partial``.

        Raises:
            IncompleteGroupError: naming the missing indices, the reasons and the fix.
        """
        wanted = self.missing()
        if not wanted or allow_partial:
            return
        why = {e.run_index: e.reason for e in self.excluded if e.run_index in wanted}
        detail = "; ".join(f"run {i}: {why.get(i, 'not trained')}" for i in wanted[:5])
        more = f" (and {len(wanted) - 5} more)" if len(wanted) > 5 else ""
        raise IncompleteGroupError(
            f"group {self.group!r} lacks {len(wanted)} of its {self.num_runs} runs: "
            f"{detail}{more}. Finish them (mia-bench fleet ... --group {self.group}) or "
            "pass --allow-partial to use the runs that remain."
        )


def client_and_experiment(settings: MlflowSettings) -> tuple[MlflowClient, str | None]:
    """MLflow client of the settings' store and the experiment id (None if absent)."""
    client = MlflowClient(resolve_tracking_uri(settings.tracking_uri))
    experiment = client.get_experiment_by_name(settings.experiment_name)
    return client, experiment.experiment_id if experiment else None


def _group_run(found, group: str, tracking_uri: str) -> GroupRun:
    return GroupRun(
        run_id=found.info.run_id,
        group=group,
        run_index=int(found.data.tags["mia.run_index"]),
        status=found.info.status,
        artifact_dir=local_artifact_dir(found.info.artifact_uri, found.info.run_id),
        tags=dict(found.data.tags),
        artifact_uri=found.info.artifact_uri,
        tracking_uri=tracking_uri,
    )


def scan_group(client: MlflowClient, exp_id: str | None, group: str) -> GroupMembers:
    """Apply the membership rule (module docstring) to every run tagged ``group``."""
    result = GroupMembers(group)
    if exp_id is None:
        return result
    found = client.search_runs(
        [exp_id],
        filter_string=f"tags.`mia.group` = '{group}'",
        order_by=["attributes.start_time ASC"],
        max_results=50_000,
    )
    fits = []
    for r in found:
        command = r.data.tags.get("mia.command", "fit")
        if command != "fit" or "mia.run_index" not in r.data.tags:
            index = r.data.tags.get("mia.run_index")
            reason = f"a {command} run, not a fit run of the group"
            result.excluded.append(Excluded(_int(index), r.info.run_id, reason))
            continue
        fits.append(_group_run(r, group, client.tracking_uri))
    if not fits:
        return result
    result.fingerprint = fits[0].tags.get("mia.fingerprint")
    result.num_runs = _int(fits[0].tags.get("mia.num_runs"))
    for run in fits:
        result.slots.setdefault(run.run_index, []).insert(0, run)
        reason = _why_not(run, result)
        if reason is None:
            result.members.append(run)
        else:
            result.excluded.append(Excluded(run.run_index, run.run_id, reason))
    result.members.sort(key=lambda r: r.run_index)
    return result


def _why_not(run: GroupRun, group: GroupMembers) -> str | None:
    """Why ``run`` does not count for ``group`` (checked in this order), or None."""
    if group.num_runs is not None and not 0 <= run.run_index < group.num_runs:
        return f"run index outside the group's 0..{group.num_runs - 1}"
    fingerprint = run.tags.get("mia.fingerprint")
    if fingerprint != group.fingerprint:
        return (
            f"config fingerprint {fingerprint} differs from the group's {group.fingerprint} "
            "(trained with another recipe)"
        )
    if run.status != "FINISHED":
        return f"status {run.status} (still training, or killed: resume it with mia-bench fleet)"
    if not run.has("keep.npy"):
        return f"no keep row at {run.artifact_dir / 'keep.npy'}"
    have = set(run.epochs())
    recorded = [int(e) for e in run.tags.get("mia.recorded_epochs", "").split(",") if e]
    lacking = [e for e in recorded if e not in have]
    if lacking or not have:
        return f"signals of epochs {lacking or 'any'} missing under {run.artifact_dir}"
    held = [m for m in group.members if m.run_index == run.run_index]
    if held:
        return f"duplicate of run {held[0].run_id}, which already counts for this index"
    return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def group_runs(client: MlflowClient, exp_id: str | None, group: str) -> list[GroupRun]:
    """The runs that count for ``group`` (see :func:`scan_group`), one per run index."""
    return scan_group(client, exp_id, group).members
