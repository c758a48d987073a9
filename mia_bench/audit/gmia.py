"""GMIA's report on its vulnerable records (Long et al. 2018), computed by the audit.

The ``gmia_direct`` attack scores every record; the audit then judges it the way the paper
does, on the few records it selects as vulnerable, next to the other attacks at as many
predictions. This is an audit step, kept apart from the metrics of the scores.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mia_bench.attacks import AttackInputs
from mia_bench.attacks.gmia import (
    gmia_report,
    indirect_log_pvalues,
    reference_features,
    select_vulnerable,
)

GMIA_ALPHA = 0.01  # significance level of GMIA's direct test
GMIA_TOP_K = 50  # vulnerable records GMIA attacks per target
GMIA_THRESHOLD = 0.8  # cosine similarity of a neighbour in the references' embedding space


def gmia_reports(
    scores: Mapping[str, np.ndarray],
    inputs: AttackInputs,
    keep: np.ndarray,
    alpha: float = GMIA_ALPHA,
    top_k: int = GMIA_TOP_K,
    threshold: float = GMIA_THRESHOLD,
) -> tuple[dict[str, dict[str, float]], np.ndarray | None]:
    """GMIA (Long et al. 2018) on its vulnerable records, other attacks at as many
    predictions: ``(report -> metric -> value, the selected records' pool indices)``.

    The ``top_k`` records with the fewest neighbours (cosine similarity >= ``threshold``
    among all pool records, in the references' mean ``embedding`` space) are attacked
    with the direct test at significance ``alpha`` (``gmia_direct``); the same test on
    every record is ``gmia_direct_pool``, and the indirect test on the selected records
    ``gmia_indirect``. Empty without ``gmia_direct`` scores or the references'
    ``embedding`` layer (and no selection).
    """
    if "gmia_direct" not in scores or "embedding" not in inputs.ref_embeddings:
        return {}, None
    features = reference_features(inputs, "embedding")
    everyone = np.ones(len(features), dtype=bool)
    selected = select_vulnerable(features, everyone, threshold, top_k=top_k)
    log_p = -scores["gmia_direct"] * np.log(10.0)
    others = {name: s for name, s in scores.items() if name != "gmia_direct"}
    reports = {
        "gmia_direct": gmia_report(log_p, selected, keep, alpha, others),
        "gmia_direct_pool": gmia_report(log_p, everyone, keep, alpha, others),
    }
    if inputs.population is not None:  # indirect: only the enhancing records are queried
        indirect = indirect_log_pvalues(inputs, selected, features)
        reports["gmia_indirect"] = gmia_report(indirect, selected, keep, alpha)
    flat = {name: _unprefix(r.as_metrics(name), name) for name, r in reports.items()}
    return flat, np.flatnonzero(selected)


def _unprefix(flat: Mapping[str, float], prefix: str) -> dict[str, float]:
    return {key[len(prefix) + 1 :]: value for key, value in flat.items()}
