"""The audit cost a fit states at start-up: the recorder's forward passes against
training's (3 per member per epoch), a warning naming the knobs above 10%."""

from __future__ import annotations

import logging

import pytest

from mia_bench.budget import AuditCost, recorded_epochs, run_audit_cost
from mia_bench.cli import main

TINY = [
    "--model.net.init_args.hidden=[32]",
    "--data.batch_size=256",
    "--signals.progress=false",
    "--trainer.enable_progress_bar=false",
]


def test_cost_is_pool_times_views_times_recorded_epochs_over_training():
    assert recorded_epochs(10, 4) == [3, 7, 9]
    cost = run_audit_cost(
        pool_size=1000, num_members=500, num_views=18, every_n_epochs=4, max_epochs=10
    )
    assert cost.audit_forwards == 1000 * 18 * 3 and cost.training_forwards == 3 * 500 * 10
    assert cost.fraction == pytest.approx(54_000 / 15_000) and cost.too_costly
    assert not AuditCost(1000, 1, 1, 500, 10).too_costly  # 1,000 / 15,000 = 6.7%


@pytest.mark.slow
def test_fit_warns_above_ten_percent_and_names_the_knobs(in_tmp):
    with pytest.warns(
        UserWarning,
        match=r"auditing costs 1,797 pool examples x 1 view x 1 "
        r"recorded epochs.*above 10%.*--signals.every_n_epochs, now 1.*"
        r"--signals.views, now 1",
    ):
        assert main(["fit", *TINY, "--trainer.max_epochs=1", "--group=warned"]) == 0


@pytest.mark.slow
def test_fit_states_a_low_cost_as_information(in_tmp, caplog, recwarn):
    args = ["--trainer.max_epochs=8", "--signals.every_n_epochs=8", "--group=cheap"]
    with caplog.at_level(logging.INFO):
        assert main(["fit", *TINY, *args]) == 0
    stated = [r.getMessage() for r in caplog.records if "auditing costs" in r.getMessage()]
    assert len(stated) == 1 and "x 1 recorded epochs" in stated[0] and "above 10%" not in stated[0]
    assert not [w for w in recwarn if "auditing costs" in str(w.message)]
