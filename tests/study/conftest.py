"""A group ``g`` whose run 0 another live process trains and whose run 1 is finished."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mia_bench.store.artifacts import EpochSignals, local_artifact_dir, save_keep, save_signals
from mia_bench.store.leases import acquire_lease
from mia_bench.store.runs import MlflowSettings, experiment_id, resolve_tracking_uri


@pytest.fixture
def held_and_finished(in_tmp):
    """``(client, exp_id, lease)``: run 0's lease held (released after the test), run 1 a
    finished run that counts for group ``g`` of 4 runs."""
    settings = MlflowSettings()
    client = MlflowClient(resolve_tracking_uri(settings.tracking_uri))
    exp_id = experiment_id(client, settings)
    lease = acquire_lease(client, exp_id, "g", 0, heartbeat_s=0)
    tags = {"mia.group": "g", "mia.run_index": "1", "mia.num_runs": "4"}
    done = client.create_run(exp_id, tags=tags | {"mia.recorded_epochs": "0"})
    folder = local_artifact_dir(done.info.artifact_uri)
    save_keep(folder, np.ones(4, dtype=bool))
    save_signals(folder, EpochSignals(0, np.zeros((4, 1, 2), np.float32), np.zeros(4, int)))
    client.set_terminated(done.info.run_id, "FINISHED")
    try:
        yield client, exp_id, lease
    finally:
        lease.release()
