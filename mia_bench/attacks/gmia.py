"""GMIA, membership inference on vulnerable records (Long et al. 2018, arXiv 1802.04889).

A well-generalized model can still leak membership of a few *vulnerable* records: those
with unique influence on the model, found as outliers in the feature space of reference
models. Two steps:

1. **Selection** (:func:`select_vulnerable`): each candidate record's feature vector is
   the references' mean embedding of one layer (default ``embedding``), standardized
   per unit; a record's
   neighbours are the population records whose features have cosine similarity at least
   ``threshold`` with it; the records with the fewest neighbours are selected (at most
   ``max_neighbours`` neighbours, and/or the ``top_k`` fewest). The target's outputs and
   membership take no part.
2. **Direct inference** (:func:`direct_pvalues`): under H_out (the record is not in the
   training set) the target's log loss on the record is distributed like that of the
   references trained without it. A Gaussian is fitted to those OUT losses; the one-sided
   p-value is ``Pr[Z <= loss_target]``, small when the target fits the record far better
   than models that never saw it. The record is declared a member when ``p <= alpha``.
   (The paper estimates the H_out distribution from its reference models the same way;
   a Gaussian fit, rather than the empirical CDF, lets p-values go below ``1 / (R + 1)``
   with few references.)

3. **Indirect inference** (:func:`indirect_log_pvalues`): the record is never queried;
   its *enhancing records* (known non-members that look like it in the references'
   feature space, so its presence moves their outputs) are, and their losses are
   tested against the references that trained on neither, with a null distribution
   calibrated on those references themselves.

GMIA is judged by its precision on the records it selects and attacks: see
:func:`gmia_report`. The registry entry ``gmia_direct`` scores every record by
``-log10 p`` so that its ranking is comparable with the other attacks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr

from mia_bench.attacks.base import Attack, AttackInputs
from mia_bench.attacks.calibrated import LOSS, plain_losses
from mia_bench.attacks.neighbourhood import unit_rows
from mia_bench.metrics import precision_at_k

LONG_2018 = (
    "Long, Bindschaedler, Wang, Bu, Wang, Tang, Gunter, Chen. Understanding Membership "
    "Inferences on Well-Generalized Learning Models. arXiv 1802.04889, 2018"
)
MIN_STD = 1e-6  # floor on the OUT losses' std: a constant loss gives finite p-values
CHUNK = 2048  # rows of the similarity matrix formed at once


def neighbour_counts(features: np.ndarray, population: np.ndarray, threshold: float) -> np.ndarray:
    """How many population records lie within cosine similarity ``threshold`` of each record.

    Args:
        features: ``float[N, D]`` one feature vector per record.
        population: ``bool[N]`` the records that count as neighbours.
        threshold: the cosine similarity at or above which two records are neighbours.

    Returns:
        ``int64[N]``; a record is never its own neighbour.

    >>> f = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0]])
    >>> neighbour_counts(f, np.ones(3, bool), 0.9).tolist()
    [1, 1, 0]
    """
    unit = unit_rows(features)
    pool = unit[population]  # [P, D]
    self_close = np.einsum("nd,nd->n", unit, unit) >= threshold  # [N], a record vs itself
    counts = np.empty(len(unit), dtype=np.int64)
    for start in range(0, len(unit), CHUNK):
        stop = min(start + CHUNK, len(unit))
        close = unit[start:stop] @ pool.T >= threshold  # [B, P]
        own = population[start:stop] & self_close[start:stop]  # counted itself: take it off
        counts[start:stop] = close.sum(axis=1) - own
    return counts


def select_vulnerable(
    features: np.ndarray,
    population: np.ndarray,
    threshold: float = 0.8,
    max_neighbours: int | None = None,
    top_k: int | None = 50,
) -> np.ndarray:
    """The records with the fewest neighbours: ``bool[N]``, True = selected.

    Args:
        features: ``float[N, D]``, e.g. the references' mean embedding of each record.
        population: ``bool[N]`` records that count as neighbours.
        threshold: cosine similarity of a neighbour.
        max_neighbours: select only records with at most this many neighbours.
        top_k: select at most this many records, fewest neighbours first (ties broken
            by index). None: no cap.

    >>> f = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0]])
    >>> select_vulnerable(f, np.ones(3, bool), 0.9, top_k=1).tolist()
    [False, False, True]
    """
    if max_neighbours is None and top_k is None:
        raise ValueError("give max_neighbours, top_k or both: otherwise every record is selected")
    counts = neighbour_counts(features, population, threshold)
    eligible = np.ones(len(counts), bool) if max_neighbours is None else counts <= max_neighbours
    order = np.lexsort((np.arange(len(counts)), counts))  # fewest neighbours first
    order = order[eligible[order]]
    if top_k is not None:
        order = order[:top_k]
    selected = np.zeros(len(counts), dtype=bool)
    selected[order] = True
    return selected


def reference_features(inputs: AttackInputs, layer: str = "embedding") -> np.ndarray:
    """Each record's feature vector ``[N, D]``: the references' mean embedding of ``layer``,
    standardized per unit over the records.

    Standardizing matters for cosine similarity: raw ReLU features share one dominant
    direction (on digits every pair of records has similarity above 0.8), so every
    record would look like every other's neighbour.
    """
    if layer not in inputs.ref_embeddings:
        raise ValueError(
            f"vulnerable-record selection reads the references' {layer!r} embeddings; they "
            f"have {sorted(inputs.ref_embeddings) or 'none'}. Record that layer "
            "(--signals.layers) in the reference runs"
        )
    mean = np.asarray(inputs.ref_embeddings[layer], dtype=np.float64).mean(axis=0)  # [N, D]
    return (mean - mean.mean(axis=0)) / (mean.std(axis=0) + 1e-12)


def direct_log_pvalues(inputs: AttackInputs) -> np.ndarray:
    """``log Pr[Z <= loss_target]``, ``Z ~ N(mean, std)`` of the OUT references' losses.

    Args:
        inputs: the target's and the references' plain-view losses (statistic ``log_p``)
            and ``ref_keep``.

    Returns:
        ``float64[N]`` natural-log p-values (0 where a record has no OUT reference).
    """
    if not inputs.has_references:
        raise ValueError("GMIA needs reference models (ref_stats or ref_logits, and ref_keep)")
    target, refs = plain_losses(inputs)  # [N], [R, N]
    out = ~inputs.ref_keep  # [R, N]
    count = out.sum(axis=0)  # [N]
    mean = np.where(out, refs, 0.0).sum(axis=0) / np.maximum(count, 1)
    var = np.where(out, (refs - mean) ** 2, 0.0).sum(axis=0) / np.maximum(count, 1)
    z = (target - mean) / np.maximum(np.sqrt(var), MIN_STD)
    return np.where(count > 0, log_ndtr(z), 0.0)


def indirect_log_pvalues(
    inputs: AttackInputs,
    selected: np.ndarray,
    features: np.ndarray,
    enhancing: int = 5,
    min_null: int = 3,
) -> np.ndarray:
    """Indirect GMIA: test each selected record by querying its enhancing records only.

    The enhancing records of a record r are its ``enhancing`` nearest population records
    in the references' feature space (cosine): known non-members of the target, like the
    paper's generated records, that look like r, so r's presence in the training set
    moves their outputs. The target is never queried on r itself.

    Statistic: ``S = mean_e (loss(e) - mean(e)) / std(e)`` over the enhancing records,
    with ``mean(e)``, ``std(e)`` over the references trained on neither r nor e; members
    pull their look-alikes' loss down, so a low S is evidence for H_in. The null
    distribution of S is taken from those references themselves, each one standardized
    leave-one-out against the others (and over the enhancing records it did not train
    on): look-alikes have correlated losses, so S is not ``N(0, 1)`` under H_out, and
    the references' own spread calibrates the test. The p-value is ``Pr[Z <= S]`` for a
    Gaussian fitted to the null values. (Choosing the enhancing records by their loss
    over the same references would pick records whose null mean is high by chance and
    make the test reject for non-members too: they are chosen by features alone.)

    Args:
        inputs: target ``logits``, references, and ``population`` (the records usable as
            enhancing records).
        selected: ``bool[N]`` the records to test.
        features: ``float[N, D]`` the feature space neighbours are found in.
        enhancing: enhancing records per record.
        min_null: fewest null references a test needs.

    Returns:
        ``float64[N]`` natural-log p-values; 0 (no evidence) for records not selected or
        with too few references.
    """
    if not inputs.has_references or inputs.population is None:
        raise ValueError("indirect GMIA needs references and a population of known non-members")
    target, refs = plain_losses(inputs)  # [N] (read at enhancing records), [R, N]
    pool = np.flatnonzero(inputs.population)
    unit = unit_rows(features)
    out = np.zeros(len(target))
    for r in np.flatnonzero(selected):
        sims = unit[pool] @ unit[r]  # [P]
        sims[pool == r] = -np.inf  # never the record itself
        chosen = pool[np.argsort(-sims, kind="stable")[:enhancing]]  # [E]
        without_r = ~inputs.ref_keep[:, r]  # [R]
        losses = refs[without_r][:, chosen]  # [M, E]
        usable = ~inputs.ref_keep[without_r][:, chosen]  # [M, E] trained on neither
        null = _loo_null(losses, usable)
        count = usable.sum(axis=0)  # [E]
        if len(null) < min_null or (count < 2).any():
            continue
        mean = np.where(usable, losses, 0.0).sum(axis=0) / count
        std = np.sqrt(np.where(usable, (losses - mean) ** 2, 0.0).sum(axis=0) / count)
        s_target = np.mean((target[chosen] - mean) / np.maximum(std, MIN_STD))
        out[r] = log_ndtr((s_target - null.mean()) / max(null.std(), MIN_STD))
    return out


def _loo_null(losses: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Each reference's statistic S, standardized against the other references.

    Args:
        losses: ``float[M, E]`` the references' losses on the enhancing records.
        usable: ``bool[M, E]`` where the reference trained on neither r nor the record.

    Returns:
        ``float64[M']`` the S of every reference with a usable record.
    """
    x = np.where(usable, losses, 0.0)
    count, total, squares = usable.sum(axis=0), x.sum(axis=0), (x**2).sum(axis=0)  # [E]
    others = count - usable  # [M, E]
    mean = (total - x) / np.maximum(others, 1)
    var = (squares - x**2) / np.maximum(others, 1) - mean**2
    z = (losses - mean) / np.sqrt(np.maximum(var, MIN_STD**2))
    valid = usable & (others >= 2)
    s = np.where(valid, z, 0.0).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
    return s[valid.any(axis=1)]


def gmia_direct(inputs: AttackInputs) -> np.ndarray:
    """``-log10 p`` of the direct test for every record; higher = member."""
    return -direct_log_pvalues(inputs) / np.log(10.0)


@dataclass(frozen=True)
class GmiaReport:
    """GMIA's decisions on its selected records, and other attacks at as many predictions.

    Attributes:
        num_selected: records selected as vulnerable.
        num_predicted: selected records declared members (``p <= alpha``).
        precision: members among the predicted (NaN when nothing is predicted).
        recall: predicted members among the selected members.
        baseline_precision: members among the selected (what guessing "member" gets).
        others: attack name -> its precision among its own ``num_predicted`` highest
            scores over the whole pool.
    """

    num_selected: int
    num_predicted: int
    precision: float
    recall: float
    baseline_precision: float
    others: dict[str, float]

    def as_metrics(self, prefix: str = "gmia") -> dict[str, float]:
        """Flat MLflow-safe metrics, e.g. ``gmia/precision``, ``gmia/loss_precision``."""
        out = {f"{prefix}/{k}": float(v) for k, v in self.__dict__.items() if k != "others"}
        out |= {f"{prefix}/{name}_precision": v for name, v in self.others.items()}
        return out


def gmia_report(
    log_pvalues: np.ndarray,
    selected: np.ndarray,
    membership: np.ndarray,
    alpha: float = 0.01,
    others: dict[str, np.ndarray] | None = None,
) -> GmiaReport:
    """Precision and recall of the direct test on the selected records.

    Args:
        log_pvalues: ``float[N]`` natural-log p-values.
        selected: ``bool[N]`` the vulnerable records.
        membership: ``bool[N]`` truth (only the metrics see it).
        alpha: significance level.
        others: attack name -> scores ``float[N]``, judged at as many predictions.
    """
    membership = np.asarray(membership, dtype=bool)
    predicted = selected & (log_pvalues <= np.log(alpha))
    k = int(predicted.sum())
    hits = int((predicted & membership).sum())
    selected_members = int((selected & membership).sum())
    others_precision = {
        name: precision_at_k(np.asarray(s, dtype=np.float64), membership, k) if k else np.nan
        for name, s in (others or {}).items()
    }
    return GmiaReport(
        num_selected=int(selected.sum()),
        num_predicted=k,
        precision=hits / k if k else float("nan"),
        recall=hits / selected_members if selected_members else float("nan"),
        baseline_precision=selected_members / selected.sum() if selected.any() else float("nan"),
        others=others_precision,
    )


ATTACKS: tuple[Attack, ...] = (
    Attack(
        "gmia_direct",
        gmia_direct,
        needs_references=True,
        paper=LONG_2018,
        needs_embeddings=True,
        statistics=(LOSS,),
    ),
)
