"""The records that leak: which pool examples an attack finds, target after target.

An audit attacks several targets of a group; each pool example is a member of some of
them. At a strict threshold (the one the TPR at the lowest FPR is read at, e.g. 0.1%)
the strongest attack flags a few members of each target. :func:`leak_ranking` counts,
per example, in how many of the targets it was a member of it was flagged: an example
flagged every time is one whose membership the model cannot hide, whatever the rest of
its training set (Carlini et al. 2022 observe that such outliers dominate the low-FPR
regime). Ties are ordered by how far above the target's non-members the example scored
(its mean percentile among them), then by pool index, and every sum is taken in a fixed
order, so the ranking depends on the set of targets, never on their names or order.

:func:`gmia_relation` sets the ranking beside the records GMIA (Long et al. 2018)
selects as vulnerable (few neighbours in the references' embedding space), and
:func:`exposed` counts how many of one recipe's most vulnerable records another recipe
still exposes (``mia-bench compare``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from mia_bench.metrics import roc_curve

MIN_RATE = 0.5  # a record is vulnerable when flagged in at least half its member targets
TOP = 100  # vulnerable records listed and compared


def flag_threshold(scores: np.ndarray, keep: np.ndarray, fpr: float) -> float:
    """The threshold of the TPR at ``fpr`` (:func:`~mia_bench.metrics.tpr_at_fpr`'s point:
    the largest TPR at FPR <= ``fpr``, at its lowest FPR); ``inf`` flags nothing.

    >>> flag_threshold(np.array([0.9, 0.8, 0.8, 0.1]), np.array([1, 1, 0, 0], bool), 0.4)
    0.9
    """
    fprs, tprs, thresholds = roc_curve(scores, keep)
    last = np.flatnonzero(fprs <= fpr)[-1]
    return float(thresholds[int(np.argmax(tprs == tprs[last]))])


def leak_ranking(
    scores: Mapping[int, np.ndarray],
    keeps: Mapping[int, np.ndarray],
    fpr: float,
    labels: np.ndarray | None = None,
) -> pd.DataFrame:
    """Every pool example, the most consistently flagged first.

    Args:
        scores: target -> the attack's ``float[N]`` scores on it.
        keeps: target -> its ``bool[N]`` keep row (the membership truth).
        fpr: the strict FPR whose threshold flags members.
        labels: ``int[N]`` class labels, shown in the table.

    Returns:
        Columns ``index``, ``label``, ``times_member``, ``times_flagged``, ``flag_rate``
        (flagged / member; NaN for an example no target trained on, listed last),
        ``mean_score`` and ``mean_percentile`` (over the targets it was a member of: its
        score, and the fraction of the target's non-members scoring below it).
    """
    targets = sorted(scores)
    size = len(scores[targets[0]])
    member = np.zeros((len(targets), size), dtype=bool)
    flagged = np.zeros_like(member)
    score = np.full(member.shape, np.nan)
    percentile = np.full(member.shape, np.nan)
    for row, t in enumerate(targets):
        s, k = np.asarray(scores[t], dtype=np.float64), np.asarray(keeps[t], dtype=bool)
        others = np.sort(s[~k])
        member[row] = k
        flagged[row] = k & (s >= flag_threshold(s, k, fpr))
        score[row, k] = s[k]
        percentile[row, k] = np.searchsorted(others, s[k], side="left") / len(others)
    times_member, times_flagged = member.sum(0), flagged.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        table = pd.DataFrame({
            "index": np.arange(size),
            "label": -1 if labels is None else np.asarray(labels),
            "times_member": times_member,
            "times_flagged": times_flagged,
            "flag_rate": np.where(times_member > 0, times_flagged / times_member, np.nan),
            "mean_score": _mean_in_fixed_order(score, times_member),
            "mean_percentile": _mean_in_fixed_order(percentile, times_member),
        })  # fmt: skip
    order = np.lexsort((
        table["index"], -table["mean_percentile"].fillna(-1), -times_flagged,
        -table["flag_rate"].fillna(-1),
    ))  # fmt: skip
    return table.iloc[order].reset_index(drop=True)


def _mean_in_fixed_order(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per column, the mean of the non-NaN values, summed smallest first (so the same
    numbers in any order of the rows give the same float)."""
    ordered = np.sort(values, axis=0)  # NaN last
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.nansum(ordered, axis=0) / counts, np.nan)


def vulnerable(ranking: pd.DataFrame, top: int = TOP, min_rate: float = MIN_RATE) -> np.ndarray:
    """Pool indices of the at most ``top`` highest-ranked records flagged in at least
    ``min_rate`` of their member targets."""
    rows = ranking[ranking["flag_rate"] >= min_rate]
    return rows["index"].to_numpy()[:top]


def exposed(
    baseline: np.ndarray, ranking: pd.DataFrame, min_rate: float = MIN_RATE
) -> tuple[int, int]:
    """How many of ``baseline``'s records (pool indices, e.g. the no-defense group's
    :func:`vulnerable` ones) ``ranking``'s attack still flags in at least ``min_rate`` of
    their member targets: ``(still exposed, compared)`` (records it never trained on
    are not compared)."""
    rates = ranking.set_index("index")["flag_rate"].reindex(baseline)
    known = rates.notna()
    return int((rates[known] >= min_rate).sum()), int(known.sum())


def gmia_relation(
    ranking: pd.DataFrame, selected: Mapping[int, np.ndarray], top: int = TOP
) -> dict[str, float]:
    """The ranking beside GMIA's vulnerable records (selected per target).

    Returns ``gmia_selected`` (records GMIA selected for any target), ``top`` (the
    ranking's vulnerable records), ``top_in_gmia`` (of those, how many GMIA selected),
    ``gmia_flag_rate`` (mean flag rate of GMIA's records) and ``pool_flag_rate`` (of
    every record a target trained on), so a reader sees whether GMIA's outliers are
    the ones the strongest attack finds.
    """
    chosen = np.unique(np.concatenate([np.asarray(v) for v in selected.values()]))
    rates = ranking.set_index("index")["flag_rate"]
    found = vulnerable(ranking, top)
    return {
        "gmia_selected": float(len(chosen)),
        "top": float(len(found)),
        "top_in_gmia": float(np.isin(found, chosen).sum()),
        "gmia_flag_rate": float(rates.reindex(chosen).mean()),
        "pool_flag_rate": float(rates.mean()),
    }


def leaks_markdown(
    ranking: pd.DataFrame, attack: str, fpr: float, rows: int = 20, gmia: dict | None = None
) -> str:
    """The top of the ranking as Markdown, with a line on what it means."""
    found = vulnerable(ranking, len(ranking))
    lines = [
        f"Records that leak: flagged by `{attack}` (the strongest attack) at the threshold "
        f"of FPR {100 * fpr:g}%, counted over the targets each record was a member of. "
        f"{len(found)} records are flagged in at least {100 * MIN_RATE:g}% of them.",
        "",
        "| rank | pool index | label | flagged / member | mean percentile among non-members |",
        "|---|---|---|---|---|",
    ]
    for rank, r in enumerate(ranking.head(rows).itertuples(), start=1):
        lines.append(
            f"| {rank} | {r.index} | {r.label} | {r.times_flagged} / {r.times_member} | "
            f"{100 * r.mean_percentile:.2f}% |"
        )
    if gmia:
        lines += [
            "",
            f"GMIA (Long et al. 2018) selected {gmia['gmia_selected']:.0f} records as "
            f"vulnerable; {gmia['top_in_gmia']:.0f} of the top {gmia['top']:.0f} records "
            f"here are among them. Their mean flag rate is {gmia['gmia_flag_rate']:.3f}, "
            f"against {gmia['pool_flag_rate']:.3f} over all records.",
        ]
    return "\n".join(lines) + "\n"


def strongest_attack(aggregate: Mapping[str, Mapping[str, float]], fpr: float) -> str | None:
    """The attack with the highest mean TPR at ``fpr`` over the targets (then AUC, then
    name), from :meth:`~mia_bench.audit.engine.AuditResult.aggregate`; None without one.

    >>> strongest_attack({"a/tpr_at_fpr_0.001": {"mean": 0.1}, "a/auc": {"mean": 0.7},
    ...                   "b/tpr_at_fpr_0.001": {"mean": 0.1}, "b/auc": {"mean": 0.8}}, 0.001)
    'b'
    """
    key = f"/tpr_at_fpr_{fpr:g}"
    names = [k[: -len(key)] for k in aggregate if k.endswith(key)]
    if not names:
        return None

    def strength(name: str) -> tuple:
        auc = aggregate.get(f"{name}/auc", {}).get("mean", 0.0)
        return (-aggregate[f"{name}{key}"]["mean"], -auc, name)

    return min(names, key=strength)
