"""The names audit numbers get in MLflow: one scheme, used by every command.

MLflow's run charts put metrics in sections by everything before a name's last ``/``.
So the metric comes before the attack, and each section holds one metric for every
attack, side by side:

==================================  ==================================================
``train/acc``, ``train/loss``       on the run's members, while training
``test/acc``, ``test/loss``         on the run's non-members (its OUT half of the pool)
``gap/acc``, ``gap/loss``           generalization gap
``mia/auc/<attack>``                area under the attack's ROC curve
``mia/tpr_at_fpr_<x>/<attack>``     largest TPR at FPR <= x (``0.001``, ``0.01``)
``mia/balanced_acc/<attack>``       best balanced attack accuracy
``mia/epsilon_lower_bound/<attack>`` the epsilon the attack's ROC certifies at delta
                                    1e-5 (an empirical lower bound; see
                                    :mod:`mia_bench.empirical_privacy`)
``mia/<measure>/<gmia report>``     GMIA's reports on its vulnerable records (Long et
                                    al. 2018), e.g. ``mia/precision/gmia_direct``
``mia/num_references``              reference runs used that epoch
``privacy/epsilon``                 DP-SGD's budget spent so far (the accountant's)
``privacy/epsilon_lower_bound``     the largest ``mia/epsilon_lower_bound`` of the epoch,
                                    in the same chart section as the accountant's
``time/<phase>``                    seconds per epoch
==================================  ==================================================

An audit run (``mia-bench audit``) logs the mean and spread over its targets the same
way, each section right after the per-run one: ``mia/auc_mean/<attack>``,
``mia/auc_std/<attack>``, ``mia/tpr_at_fpr_0.001_mean/<attack>``, step = epoch.

What does not change across a run's epochs is not a metric: the numbers of members and
non-members scored are the params ``mia.num_members`` and ``mia.num_nonmembers``. The
FPR each TPR was reached at (``fpr_at_fpr_<x>``, at most ``x``) and the confidence
intervals (measures ending ``_low`` or ``_high``) are kept with every other number in
the run's artifact ``mia/history.json`` and in audit documents.
"""

from __future__ import annotations

from collections.abc import Mapping

PREFIX = "mia/"
PER_RUN = ("num_members", "num_nonmembers")  # the same at every epoch: params
ACHIEVED_FPR = "fpr_at_fpr_"  # kept in history.json and audit documents only
INTERVAL_ENDS = ("_low", "_high")  # confidence intervals: likewise


def metric_name(attack: str, measure: str) -> str:
    """The MLflow name of one attack's measure.

    >>> metric_name("lira_online", "tpr_at_fpr_0.001")
    'mia/tpr_at_fpr_0.001/lira_online'
    """
    return f"{PREFIX}{measure}/{attack}"


def is_per_epoch(measure: str) -> bool:
    """Whether a measure is an MLflow metric (not a count or an achieved FPR).

    >>> is_per_epoch("auc"), is_per_epoch("num_members"), is_per_epoch("fpr_at_fpr_0.01")
    (True, False, False)
    >>> is_per_epoch("tpr_at_fpr_0.01_low"), is_per_epoch("epsilon_lower_bound")
    (False, True)
    """
    return (
        measure not in PER_RUN
        and not measure.startswith(ACHIEVED_FPR)
        and not measure.endswith(INTERVAL_ENDS)
    )


def audit_metric_name(key: str, stat: str) -> str:
    """The MLflow name of an audit's statistic of ``<attack>/<measure>``.

    >>> audit_metric_name("lira_online/auc", "mean")
    'mia/auc_mean/lira_online'
    """
    attack, measure = key.rsplit("/", 1)
    return metric_name(attack, f"{measure}_{stat}")


def mlflow_metrics(nested: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{attack: {measure: v}}`` as MLflow metrics, per-run counts and achieved FPRs left out.

    >>> mlflow_metrics({"loss": {"auc": 0.6, "num_members": 50.0, "fpr_at_fpr_0.01": 0.0}})
    {'mia/auc/loss': 0.6}
    """
    return {
        metric_name(attack, measure): float(value)
        for attack, measures in nested.items()
        for measure, value in measures.items()
        if is_per_epoch(measure)
    }


def mlflow_params(nested: Mapping[str, Mapping[str, float]]) -> dict[str, str]:
    """The per-run counts as params ``mia.num_members``, ``mia.num_nonmembers``.

    Every attack scores the whole pool, so the counts are one per run.

    >>> mlflow_params({"loss": {"auc": 0.6, "num_members": 50.0, "num_nonmembers": 49.0}})
    {'mia.num_members': '50', 'mia.num_nonmembers': '49'}
    """
    out: dict[str, str] = {}
    for measures in nested.values():
        for key in PER_RUN:
            if key in measures:
                out[f"mia.{key}"] = str(int(measures[key]))
    return out
