"""RMIA, the Robust/Relative Membership Inference Attack (Zarifzadeh et al., ICML 2024).

For an example u and a view, ``Pr(u | theta) = p_y`` is the target's softmax probability
of the true label, ``Pr(u)`` its average over reference models, and the likelihood ratio
is ``LR(u) = Pr(u | theta) / Pr(u)``. The score of x is the fraction of population samples
z that x dominates: ``Score(x) = |{z in Z \\ {x} : LR(x) / LR(z) >= gamma}| / |Z \\ {x}|``.

* online:  ``Pr(u) = (Pr_IN(u) + Pr_OUT(u)) / 2``, the means over the IN and over the OUT
  references of u. This is the paper's average over reference models half of which were
  trained on u (the research code, ``research/2023_rmia/main.py``, concatenates equally
  many IN and OUT references); it equals the plain mean over all references whenever u
  has as many IN as OUT references, and stays unbiased when the counts differ by the one
  reference a leave-one-out target takes away from its own members;
* offline: ``Pr(u) = ((1 + a) Pr_OUT(u) + (1 - a)) / 2``, the paper's linear
  approximation ``Pr_IN = a Pr_OUT + (1 - a)`` of the missing IN mean (privacy meter,
  ``modules/mia/attacks/rmia.py``: ``mean_x = (1 + a) / 2 * mean_out_x + (1 - a) / 2``).
  ``a`` is fitted by default (:func:`fit_offline_a`), as the paper does: one reference
  model is attacked with the others as its references, for ``a`` in 0, 0.1, ..., 1, and
  the ``a`` of the best AUC is used (privacy meter's ``tune_offline_a``, which attacks the
  reference paired with the target). Only references' keep rows are read, never the
  target's membership. A number fixes ``a`` (privacy meter's default is 0.3).

``Pr(u | theta)`` is the softmax probability at a temperature ``T`` (``softmax(z / T)_y``):
``T = 2`` by default, as the paper's configs and LeakPro; on Location-30 it raises offline
RMIA from AUC 0.863 / 10.2% TPR at 0.1% FPR to 0.932 / 19.1%. ``temperature=1`` is the
plain softmax.

Pr(z) is estimated exactly as Pr(x), from z's own references. The population Z is
``inputs.population``; an example is never compared with itself, so whether x is in Z
does not change its score. ``gamma`` defaults to 1 (privacy meter's ``ratios > 1.0``; the
paper's research configs use 2 with a tempered Taylor-softmax signal). We use the paper's
``>= gamma``; privacy meter's strict ``>`` differs only on exact ties.

Views: every view gets its own ``Pr(u | theta)``, ``Pr(u)`` and pairwise test, and the
score is the mean over views of the per-view fractions. The research code instead takes a
majority vote over views per pair (x, z), which needs an N x Z x A tensor; the mean of the
votes is its soft version, and the two agree for a single view (privacy meter's current
code queries one view).

Work is in log space (``log LR = log p_y - log Pr(u)``), so logits of magnitude 1e4 are
exact, and by sorting: the population's ``log LR`` is sorted once per view and each x is
placed with ``np.searchsorted`` (memory O(N + Z), never an N x Z matrix).

Missing references: with no IN reference, the online ``Pr(u)`` falls back to the offline
formula (that is what the approximation is for); with no OUT reference, online and offline
use ``Pr_IN(u)``.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from mia_bench.attacks.base import Attack, AttackInputs
from mia_bench.metrics import auc
from mia_bench.statistics import RMIA_TEMPERATURE, ReferenceStats, log_p_name

ZARIFZADEH_2024 = (
    "Zarifzadeh, Liu, Shokri. Low-Cost High-Power Membership Inference Attacks. ICML 2024"
)
A_GRID = tuple(np.round(np.arange(0.0, 1.01, 0.1), 1))  # privacy meter's search of offline a
FIXED_A = 0.3  # privacy meter's default offline_a (online RMIA's fallback)


def rmia(
    inputs: AttackInputs,
    *,
    online: bool = False,
    a: float | str = "fit",
    gamma: float = 1.0,
    temperature: float = RMIA_TEMPERATURE,
) -> np.ndarray:
    """RMIA scores ``float64[N]`` in [0, 1], higher = member (see the module docstring).

    Args:
        inputs: target and reference statistics ``log_p_t<T>`` (``stats``/``ref_stats``,
            or derived from logits), ``ref_keep`` and ``population`` (at least 2).
        online: average IN and OUT references, or approximate Pr(x) from OUT ones.
        a: offline coefficient, ``Pr_IN ~ a Pr_OUT + (1 - a)``, in [0, 1], or ``"fit"``
            (:func:`fit_offline_a`; online RMIA then uses ``FIXED_A`` for the examples
            without IN references).
        gamma: the pairwise likelihood-ratio threshold, > 0.
        temperature: softmax temperature of ``Pr(x | theta)``, > 0.

    Raises:
        ValueError: without population samples or references, or with ``a``, ``gamma``
            out of range.

    >>> t = np.log([[[1.0, 1.0]], [[3.0, 1.0]], [[1.0, 3.0]]])  # p_y = 1/2, 3/4, 1/4
    >>> refs = np.zeros((1, 3, 1, 2))  # one OUT reference, p_y = 1/2 everywhere
    >>> x = AttackInputs(t, np.zeros(3, int), ref_logits=refs,
    ...                  ref_keep=np.zeros((1, 3), bool), population=np.ones(3, bool))
    >>> # Pr(x) = (1.3 * 1/2 + 0.7) / 2 for all three, so LR ranks as p_y: 1/2 beats 1/4
    >>> rmia(x, a=0.3, temperature=1.0).tolist()
    [0.5, 1.0, 0.0]
    """
    population = _check(inputs, a, gamma)
    name = log_p_name(temperature)
    refs = inputs.reference_stats(name)
    if a == "fit":
        a = FIXED_A if online else fit_offline_a(refs, inputs.ref_keep, name, gamma)
    log_lr = inputs.target_stat(name) - log_marginal(refs, inputs.ref_keep, online, a, name)
    return views_dominance(log_lr, population, gamma)


def views_dominance(log_lr: np.ndarray, population: np.ndarray, gamma: float) -> np.ndarray:
    """Mean over views of :func:`dominance`, ``[N, A] -> float64[N]``."""
    return np.mean([dominance(v, population, np.log(gamma)) for v in log_lr.T], axis=0)


def fit_offline_a(
    refs: ReferenceStats,
    ref_keep: np.ndarray,
    name: str,
    gamma: float = 1.0,
    grid: tuple[float, ...] = A_GRID,
) -> float:
    """Offline ``a`` of the best AUC when the first reference is attacked by the others.

    The paper's procedure (and privacy meter's ``tune_offline_a``): a reference model
    whose training set the attacker knows plays the target; the other references are its
    references, its non-members the population. Ties go to the smaller ``a``. With fewer
    than 2 references, or a pseudo-target without members and non-members, ``FIXED_A``.

    Args:
        refs: the references' statistics; ref_keep: their ``bool[R, N]`` keep rows.
        name: the statistic (``log_p_t<T>``); gamma: RMIA's threshold; grid: the ``a`` tried.
    """
    pseudo = ref_keep[0]  # [N], known to the attacker: the reference's own training set
    if refs.num_references < 2 or pseudo.all() or pseudo.sum() < 2 or (~pseudo).sum() < 2:
        return FIXED_A
    sides = _Sides(refs.subset(np.arange(1, refs.num_references)), ref_keep[1:], name)
    log_p = refs.row(name, 0)  # [N, A]
    best, best_auc = FIXED_A, -1.0
    for a in grid:
        log_lr = log_p - sides.log_marginal(online=False, a=a)  # [N, A]
        value = auc(views_dominance(log_lr, ~pseudo, gamma), pseudo)
        if value > best_auc:
            best, best_auc = float(a), value
    return best


def log_marginal(
    refs: ReferenceStats, ref_keep: np.ndarray, online: bool, a: float, name: str = "log_p"
) -> np.ndarray:
    """``log Pr(u)`` for every example and view from the references' ``name``; ``[N, A]``.

    >>> refs = ReferenceStats({"log_p": np.log([[[0.8]], [[0.4]]])})  # p = 0.8 (IN), 0.4
    >>> keep = np.array([[True], [False]])
    >>> np.exp(log_marginal(refs, keep, online=True, a=0.3)).round(4).tolist()
    [[0.6]]
    >>> # (1.3 * 0.4 + 0.7) / 2 = 0.61
    >>> np.exp(log_marginal(refs, keep, online=False, a=0.3)).round(4).tolist()
    [[0.61]]
    """
    return _Sides(refs, ref_keep, name).log_marginal(online, a)


class _Sides:
    """``log`` of the IN and OUT references' mean ``Pr(u)``, ``[N, A]`` each, read once."""

    def __init__(self, refs: ReferenceStats, ref_keep: np.ndarray, name: str) -> None:
        self.log_in, self.log_out = _log_means(refs, ref_keep, name)
        self.has_in = ref_keep.any(axis=0)[:, None]  # [N, 1]
        self.has_out = (~ref_keep).any(axis=0)[:, None]

    def log_marginal(self, online: bool, a: float) -> np.ndarray:
        """``log Pr(u)``, ``[N, A]`` (see the module docstring)."""
        approx = _offline(self.log_out, a)
        both = np.logaddexp(self.log_in, self.log_out) - np.log(2.0) if online else approx
        return np.where(self.has_out, np.where(self.has_in, both, approx), self.log_in)


def _offline(log_out: np.ndarray, a: float) -> np.ndarray:
    """``log (((1 + a) Pr_OUT + (1 - a)) / 2)`` from ``log Pr_OUT``."""
    with np.errstate(divide="ignore"):  # a = 1 gives log(1 - a) = -inf, which is exact
        return np.logaddexp(np.log1p(a) + log_out, np.log1p(-a)) - np.log(2.0)


def dominance(log_lr: np.ndarray, population: np.ndarray, log_gamma: float) -> np.ndarray:
    """Fraction of population samples z != x with ``log LR(z) <= log LR(x) - log gamma``.

    Args:
        log_lr: ``float[N]``, one view's log-likelihood ratios.
        population: ``bool[N]``, at least 2 True.
        log_gamma: ``log gamma``.

    Returns:
        ``float64[N]``; O(N + Z) memory: one sort of Z, one binary search per x.

    >>> dominance(np.array([0.0, 1.0, 2.0, 5.0]), np.array([True, True, True, False]), 0.0)
    array([0. , 0.5, 1. , 1. ])
    """
    threshold = log_lr - log_gamma  # [N]
    below = np.searchsorted(np.sort(log_lr[population]), threshold, side="right")  # [N]
    self_counted = population & (log_lr <= threshold)  # x in Z would have counted itself
    return (below - self_counted) / (population.sum() - population)


def _log_means(
    refs: ReferenceStats, ref_keep: np.ndarray, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """``log mean exp`` of ``name`` over the IN and over the OUT references, ``[N, A]`` each
    (-inf where a side has none), in one pass over blocks of examples."""
    log_in, log_out = np.empty(refs.shape[1:]), np.empty(refs.shape[1:])  # [N, A]
    for examples, log_p in refs.blocks(name):  # [R, B, A]
        log_in[examples] = _block_log_mean(log_p, ref_keep[:, examples])
        log_out[examples] = _block_log_mean(log_p, ~ref_keep[:, examples])
    return log_in, log_out


def _block_log_mean(log_p: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``log mean exp`` over axis 0 of the entries in ``mask``, ``[R, B, A] -> [B, A]``."""
    masked = np.where(mask[..., None], log_p, -np.inf)
    top = masked.max(axis=0)  # [B, A]
    top = np.where(np.isfinite(top), top, 0.0)
    total = np.exp(masked - top).sum(axis=0)  # [B, A], >= 1 where mask has any entry
    count = mask.sum(axis=0)[:, None]
    with np.errstate(divide="ignore"):
        out = np.log(total) + top - np.log(np.maximum(count, 1))
    return np.where(count > 0, out, -np.inf)


def _check(inputs: AttackInputs, a: float, gamma: float) -> np.ndarray:
    """The population mask, after checking RMIA's preconditions."""
    if inputs.population is None or inputs.population.sum() < 2:
        raise ValueError(
            "RMIA needs population samples z to compare each example with: build "
            "AttackInputs with population=bool[N] marking at least 2 pool examples the "
            "attacker may use (e.g. those outside the target's training set), got "
            f"{None if inputs.population is None else int(inputs.population.sum())}"
        )
    if inputs.num_references == 0:
        raise ValueError("RMIA needs at least one reference model to estimate Pr(x)")
    if a != "fit" and (isinstance(a, str) or not 0.0 <= a <= 1.0) or not gamma > 0.0:
        raise ValueError(f"RMIA needs 0 <= a <= 1 and gamma > 0, got a={a}, gamma={gamma}")
    return inputs.population


ATTACKS: tuple[Attack, ...] = tuple(
    Attack(
        f"rmia_{kind}",
        partial(rmia, online=kind == "online"),
        needs_references=True,
        paper=ZARIFZADEH_2024,
        statistics=(log_p_name(RMIA_TEMPERATURE),),
    )
    for kind in ("offline", "online")
)
