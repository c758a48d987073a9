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
  ``a`` defaults to 0.3 (privacy meter's default ``offline_a``; its research configs use
  0.33 for CIFAR-10, and privacy meter can tune it on a paired model over 0, 0.1, ..., 1).

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

from mia_bench import signals
from mia_bench.attacks.base import Attack, AttackInputs

ZARIFZADEH_2024 = (
    "Zarifzadeh, Liu, Shokri. Low-Cost High-Power Membership Inference Attacks. ICML 2024"
)


def rmia(
    inputs: AttackInputs, *, online: bool = False, a: float = 0.3, gamma: float = 1.0
) -> np.ndarray:
    """RMIA scores ``float64[N]`` in [0, 1], higher = member (see the module docstring).

    Args:
        inputs: target logits, references and ``population`` (bool[N], at least 2).
        online: average IN and OUT references, or approximate Pr(x) from OUT ones.
        a: offline coefficient, ``Pr_IN ~ a Pr_OUT + (1 - a)``, in [0, 1].
        gamma: the pairwise likelihood-ratio threshold, > 0.

    Raises:
        ValueError: without population samples or references, or with ``a``, ``gamma``
            out of range.

    >>> t = np.log([[[1.0, 1.0]], [[3.0, 1.0]], [[1.0, 3.0]]])  # p_y = 1/2, 3/4, 1/4
    >>> refs = np.zeros((1, 3, 1, 2))  # one OUT reference, p_y = 1/2 everywhere
    >>> x = AttackInputs(t, np.zeros(3, int), ref_logits=refs,
    ...                  ref_keep=np.zeros((1, 3), bool), population=np.ones(3, bool))
    >>> # Pr(x) = (1.3 * 1/2 + 0.7) / 2 for all three, so LR ranks as p_y: 1/2 beats 1/4
    >>> rmia(x).tolist()
    [0.5, 1.0, 0.0]
    """
    population = _check(inputs, a, gamma)
    log_p = -signals.loss(inputs.logits, signals.expand_labels(inputs.labels, inputs.logits))
    ref_log_p = -signals.loss(
        inputs.ref_logits, signals.expand_labels(inputs.labels, inputs.ref_logits, axis=1)
    )  # [R, N, A]
    log_lr = log_p - log_marginal(ref_log_p, inputs.ref_keep, online, a)  # [N, A]
    views = [dominance(v, population, np.log(gamma)) for v in log_lr.T]
    return np.mean(views, axis=0)


def log_marginal(ref_log_p: np.ndarray, ref_keep: np.ndarray, online: bool, a: float) -> np.ndarray:
    """``log Pr(u)`` for every example and view, ``[R, N, A] -> [N, A]``.

    >>> ref_log_p = np.log([[[0.8]], [[0.4]]])  # [R=2, N=1, A=1]: p = 0.8 (IN), 0.4 (OUT)
    >>> keep = np.array([[True], [False]])
    >>> np.exp(log_marginal(ref_log_p, keep, online=True, a=0.3)).round(4).tolist()
    [[0.6]]
    >>> # (1.3 * 0.4 + 0.7) / 2 = 0.61
    >>> np.exp(log_marginal(ref_log_p, keep, online=False, a=0.3)).round(4).tolist()
    [[0.61]]
    """
    log_in, log_out = _log_mean(ref_log_p, ref_keep), _log_mean(ref_log_p, ~ref_keep)
    has_in, has_out = ref_keep.any(axis=0)[:, None], (~ref_keep).any(axis=0)[:, None]
    with np.errstate(divide="ignore"):  # a = 1 gives log(1 - a) = -inf, which is exact
        approx = np.logaddexp(np.log1p(a) + log_out, np.log1p(-a)) - np.log(2.0)
    both = np.logaddexp(log_in, log_out) - np.log(2.0) if online else approx
    return np.where(has_out, np.where(has_in, both, approx), log_in)


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


def _log_mean(log_p: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``log mean_{r in mask} exp(log_p)`` over axis 0, ``[R, N, A] -> [N, A]``; -inf if none."""
    masked = np.where(mask[..., None], log_p, -np.inf)
    top = masked.max(axis=0)  # [N, A]
    top = np.where(np.isfinite(top), top, 0.0)
    total = np.exp(masked - top).sum(axis=0)  # [N, A], >= 1 where mask has any entry
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
    if not 0.0 <= a <= 1.0 or not gamma > 0.0:
        raise ValueError(f"RMIA needs 0 <= a <= 1 and gamma > 0, got a={a}, gamma={gamma}")
    return inputs.population


ATTACKS: tuple[Attack, ...] = (
    Attack(
        "rmia_offline", partial(rmia, online=False), needs_references=True, paper=ZARIFZADEH_2024
    ),
    Attack("rmia_online", partial(rmia, online=True), needs_references=True, paper=ZARIFZADEH_2024),
)
