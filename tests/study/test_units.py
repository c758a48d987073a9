"""What a cluster worker does with a run whose lease a dead node's process still holds."""

from __future__ import annotations

import time

from mlflow.tracking import MlflowClient

from mia_bench.store.leases import (
    HEARTBEAT_S,
    STALE_AFTER_S,
    Identity,
    ensure_lease_model,
    stake_claim,
)
from mia_bench.store.runs import MlflowSettings, experiment_id, resolve_tracking_uri
from mia_bench.study.units import holder_lapsed


def _claim_from_elsewhere(settings: MlflowSettings, run_index: int, heartbeat: float) -> None:
    client = MlflowClient(resolve_tracking_uri(settings.tracking_uri))
    name = ensure_lease_model(client, experiment_id(client, settings), "g")
    stake_claim(client, name, run_index, heartbeat, Identity("another-node", 7, "ns", "t"))


def test_a_silent_holder_elsewhere_is_waited_out_and_a_beating_one_is_left(tmp_path):
    settings = MlflowSettings(
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        artifact_location=str(tmp_path / "artifacts"),
    )
    now = time.time()
    _claim_from_elsewhere(settings, 0, now - 80)  # silent for 80 s: its node is gone
    _claim_from_elsewhere(settings, 1, now - 5)  # beating: another fleet trains it
    slept: list[float] = []
    assert holder_lapsed(settings, "g", 0, sleep=slept.append, clock=lambda: now)
    assert len(slept) == 1 and abs(slept[0] - (STALE_AFTER_S - 80 + 1)) < 1e-6
    assert not holder_lapsed(settings, "g", 1, sleep=slept.append, clock=lambda: now)
    assert len(slept) == 1  # no wait for a live holder
    assert holder_lapsed(settings, "g", 2, sleep=slept.append)  # nobody holds run 2
    assert 2 * HEARTBEAT_S < 80 < STALE_AFTER_S
