"""Each attack of the frozen path next to the current one that replaces it."""

from __future__ import annotations

from functools import partial

from benchmarks.baseline import calibrated as old_calibrated
from benchmarks.baseline import gmia as old_gmia
from benchmarks.baseline import lira as old_lira
from benchmarks.baseline import rmia as old_rmia
from mia_bench.attacks import calibrated, gmia, lira, rmia

PLAIN = {"a": 0.3, "temperature": 1.0}  # RMIA as the frozen path ran it
PAIRS = {
    "lira_online": (partial(old_lira.lira, online=True), partial(lira.lira, online=True)),
    "lira_offline": (partial(old_lira.lira, online=False), partial(lira.lira, online=False)),
    "lira_online_fixed_var": (
        partial(old_lira.lira, online=True, fix_variance=True),
        partial(lira.lira, online=True, fix_variance=True),
    ),
    "lira_offline_fixed_var": (
        partial(old_lira.lira, online=False, fix_variance=True),
        partial(lira.lira, online=False, fix_variance=True),
    ),
    "rmia_offline": (
        partial(old_rmia.rmia, online=False),
        partial(rmia.rmia, online=False, **PLAIN),
    ),
    "rmia_online": (partial(old_rmia.rmia, online=True), partial(rmia.rmia, online=True, **PLAIN)),
    "attack_r": (old_calibrated.attack_r, calibrated.attack_r),
    "watson_calibrated": (old_calibrated.watson_calibrated, calibrated.watson_calibrated),
    "calibrated_loss": (old_calibrated.calibrated_loss, calibrated.calibrated_loss),
    "gmia_direct": (old_gmia.direct_log_pvalues, gmia.direct_log_pvalues),
}
