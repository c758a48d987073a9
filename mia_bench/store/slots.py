"""A run's slot in its group: claimed under its lease, checked against the membership rule.

``mia-bench fit`` takes the lease of ``(group, run_index)`` (:mod:`mia_bench.store.leases`)
before it creates or resumes its MLflow run, and holds it to the end of the fit. Under
the lease it checks the group as :mod:`mia_bench.store.groups` sees it, so that a fleet
that planned a run before another fleet finished it, or a fit of another recipe on the
group, trains nothing.
"""

from __future__ import annotations

from typing import Any

from mlflow.tracking import MlflowClient

from mia_bench.errors import UserError
from mia_bench.store.groups import scan_group
from mia_bench.store.leases import EXIT_ALREADY_TRAINED, Lease, acquire_lease
from mia_bench.store.runs import (
    MlflowSettings,
    design_tags,
    experiment_id,
    find_run,
    provenance_tags,
    resolve_tracking_uri,
)


class AlreadyTrained(UserError):
    """A fresh fit of a run that its group already has: nothing to train."""

    exit_status = EXIT_ALREADY_TRAINED

    def __init__(self, group: str, run_index: int, run_id: str) -> None:
        super().__init__(
            f"run {run_index} of group {group!r} is already trained (MLflow run {run_id}, "
            "FINISHED): nothing to do; to train it anew give another --group"
        )


def member_of(client: MlflowClient, exp_id: str, group: str, run_index: int) -> str | None:
    """The run id that counts for ``(group, run_index)`` by the membership rule, or None."""
    members = scan_group(client, exp_id, group).members
    return next((r.run_id for r in members if r.run_index == run_index), None)


def claim_slot(
    client: MlflowClient,
    exp_id: str,
    group: str,
    run_index: int,
    fingerprint: str | None,
    resume: bool,
) -> Lease:
    """The lease of a run about to be trained, with the group checked under it.

    Raises:
        LeaseHeld: another live process trains it.
        UserError: the group was trained with another recipe (fingerprint).
        AlreadyTrained: the group already has this run, and (``resume``) no unfinished
            attempt of it is left (it was finished meanwhile).
    """
    lease = acquire_lease(client, exp_id, group, run_index)
    try:
        members = scan_group(client, exp_id, group)
        if None not in (members.fingerprint, fingerprint) and members.fingerprint != fingerprint:
            raise UserError(
                f"group {group!r} was trained with another recipe (config fingerprint "
                f"{members.fingerprint}; this config's is {fingerprint}): start a new group "
                "with --group NEW_NAME, or run the group's own config"
            )
        done = [r.run_id for r in members.members if r.run_index == run_index]
        unfinished = [r for r in members.slots.get(run_index, []) if r.status != "FINISHED"]
        if done and not (resume and unfinished):  # a resume planned before it finished
            raise AlreadyTrained(group, run_index, done[0])
    except BaseException:
        lease.release()
        raise
    return lease


def open_run(
    settings: MlflowSettings, group: str, info: dict[str, Any], resume: bool, lease: bool = True
) -> str:
    """Run id to log to: a new run, or (``resume``) the group's earlier run of this index.

    Args:
        settings: tracking store and experiment.
        group: the group's name (tag ``mia.group``).
        info: the data module's ``membership_info()`` (run_index, num_runs, ...).
        resume: look up the earlier run instead of creating one.
        lease: first claim the run's slot (:func:`claim_slot`; ``fit`` does,
            validate/test do not).

    Raises:
        UserError: resuming, but the group has no unfinished run of this index and recipe.
        LeaseHeld: another live process trains this run.
        AlreadyTrained: not ``resume``, and the group already has this run.
    """
    client = MlflowClient(resolve_tracking_uri(settings.tracking_uri))
    exp_id = experiment_id(client, settings)
    run_index = info["run_index"]
    if lease:
        claim_slot(client, exp_id, group, run_index, info.get("fingerprint"), resume)
    if resume:
        run_id = find_run(client, exp_id, group, run_index, info.get("fingerprint"))
        if run_id is None:
            raise UserError(
                f"nothing to resume: experiment {settings.experiment_name!r} in "
                f"{settings.tracking_uri} has no unfinished fit run of group {group!r} with "
                f"run_index {run_index} and this recipe. Drop --ckpt_path to start it, or "
                "pass the right --group."
            )
        client.update_run(run_id, status="RUNNING")
        return run_id
    tags = design_tags(group, info) | provenance_tags()
    run = client.create_run(exp_id, run_name=f"{group}-run{run_index:03d}", tags=tags)
    return run.info.run_id
