"""LiRA, the Likelihood Ratio Attack (Carlini et al., IEEE S&P 2022), online and offline.

Statistic: the scaled logit ``phi = log p_y - log sum_{y' != y} p_y'`` of every query view
(:func:`mia_bench.signals.scaled_logit`, exact and overflow-free). For each example and
view, Gaussians are fitted to the references' statistics: ``N(mu_in, s_in)`` over the
references trained on the example (IN) and ``N(mu_out, s_out)`` over the others (OUT).

* online:  ``mean_views[log N(phi; mu_in, s_in) - log N(phi; mu_out, s_out)]``, the
  per-view log-likelihood ratio averaged over views, as ``generate_ours`` of the reference
  code (tensorflow/privacy ``research/mi_lira_2021/plot.py``) does;
* offline: ``mean_views[log Pr(Z < phi)]`` with ``Z ~ N(mu_out, s_out)``: the paper's
  one-sided test (Algorithm 1, offline: ``Lambda = 1 - Pr[Z > phi]``) in log form
  (``scipy.special.log_ndtr``, finite far in the tails). The reference code's
  ``generate_ours_offline`` instead ranks by ``-log N(phi; mu_out, s_out)``, a two-sided
  test that also flags examples whose confidence is unusually *low*; both agree on the
  side ``phi > mu_out`` that members fall on.

Estimators, as the reference code: ``mu`` is the median over references, ``s`` the
standard deviation around their mean (``np.std``, ``ddof=0``), floored at 1e-30 (the code
adds 1e-30). ``fix_variance=True`` uses one global std per side, ``np.std`` of that side's
statistics pooled over all examples, references and views (the code's ``np.std(dat_in)``;
the code's online variant also takes ``std_out = np.std(dat_in)``, which we read as a typo:
we pool the OUT statistics for ``s_out``, as its offline variant does).

``balance=True`` (default) uses the *same number* of IN (and of OUT) references for every
example: the smallest count over the examples, taking the first references in order. The
reference code does exactly this (``in_size = min(map(len, dat_in))``). It matters for a
leave-one-out target of a balanced keep matrix, whose members have one IN reference fewer
(and one OUT more) than its non-members: with per-example counts the estimates' spread
would depend on the target's own membership. ``balance=False`` uses every reference.

Too few references (reported per example; with ``balance=True`` they hit all alike):

* fewer than 2 on a side: that side's per-example std is the global std of the side;
* no IN reference: the online score is the offline score;
* no OUT reference: no test is possible; the score is neutral, ``0`` online (a likelihood
  ratio of 1) and ``log 1/2`` offline (the median p-value).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
from scipy.special import log_ndtr

from mia_bench.attacks.base import Attack, AttackInputs
from mia_bench.statistics import ReferenceStats

CARLINI_2022 = (
    "Carlini, Chien, Nasr, Song, Terzis, Tramer. Membership Inference Attacks From First "
    "Principles. IEEE S&P 2022"
)
MIN_STD = 1e-30  # floor on every std, so a constant statistic gives finite scores
STATISTIC = "scaled_logit"  # what LiRA reads (mia_bench.statistics)


def split_references(ref_keep: np.ndarray, balance: bool) -> tuple[np.ndarray, np.ndarray]:
    """IN and OUT masks ``bool[R, N]`` of the references used for each example.

    Args:
        ref_keep: ``bool[R, N]``, True where reference r trained on example n.
        balance: keep only the first ``k`` IN (and OUT) references of every example,
            ``k`` the smallest IN (OUT) count over the examples.

    >>> keep = np.array([[True, True], [True, False], [False, False]])
    >>> [m.astype(int).T.tolist() for m in split_references(keep, balance=True)]
    [[[1, 0, 0], [1, 0, 0]], [[0, 0, 1], [0, 1, 0]]]
    """
    return _first(ref_keep, balance), _first(~ref_keep, balance)


def gaussian_fit(
    refs: ReferenceStats, mask: np.ndarray, fix_variance: bool, name: str = STATISTIC
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-example median and std of statistic ``name`` over the references in ``mask``.

    Reads the references a block of examples at a time (memory of one block).

    Args:
        refs: the references' statistics ``[R, N, A]``.
        mask: ``bool[R, N]``, the references to use for each example.
        fix_variance: use the side's global std for every example.
        name: the statistic.

    Returns:
        ``(mu [N, A], std [N, A], count int[N])``; ``mu`` is 0 where ``count == 0``.
    """
    count = mask.sum(axis=0)  # [N]
    mu, std = np.zeros(refs.shape[1:]), np.zeros(refs.shape[1:])  # [N, A]
    pooled = PooledMoments()
    for examples, stat in refs.blocks(name):  # stat [R, B, A]
        m = np.broadcast_to(mask[:, examples, None], stat.shape)  # [R, B, A]
        pooled.add(stat[m])
        mu[examples] = _masked_median(stat, m, count[examples])
        if not fix_variance:
            std[examples] = _masked_std(stat, m, count[examples])
    std = np.where(fix_variance | (count[:, None] < 2), pooled.std(), std)
    return mu, np.maximum(std, MIN_STD), count


class PooledMoments:
    """Running count, mean and sum of squared deviations of values seen in batches
    (Chan et al.'s pairwise update): ``np.std`` of all of them, without holding them.

    >>> p = PooledMoments(); p.add(np.array([1.0, 2.0])); p.add(np.array([3.0, 6.0]))
    >>> bool(np.isclose(p.std(), np.std([1.0, 2.0, 3.0, 6.0])))
    True
    """

    def __init__(self) -> None:
        self.count, self.mean, self.squares = 0, 0.0, 0.0

    def add(self, values: np.ndarray) -> None:
        """Take in a batch of values."""
        n = values.size
        if n == 0:
            return
        mean = float(values.mean())
        squares = float(((values - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.squares += squares + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.count = total

    def std(self) -> float:
        """The std (``ddof=0``) of every value taken in; 0 with fewer than 2."""
        return float(np.sqrt(self.squares / self.count)) if self.count >= 2 else 0.0


def lira(
    inputs: AttackInputs, *, online: bool = True, fix_variance: bool = False, balance: bool = True
) -> np.ndarray:
    """LiRA scores ``float64[N]``, higher = member (see the module docstring).

    Args:
        inputs: the target's and the references' scaled logits (``ref_stats``, or
            derived from ``logits`` and ``ref_logits``), and ``ref_keep``.
        online: use IN and OUT references (likelihood ratio) or OUT only (one-sided test).
        fix_variance: one global std per side instead of per-example stds.
        balance: the same number of IN / OUT references for every example.

    >>> t = np.array([[[2.0, 0.0]], [[0.0, 0.0]]])  # [N=2, A=1, C=2], labels 0
    >>> refs = np.array([[[[1.0, 0.0]], [[0.0, 0.0]]], [[[3.0, 0.0]], [[0.0, 0.0]]]])
    >>> x = AttackInputs(t, np.array([0, 0]), ref_logits=refs, ref_keep=np.zeros((2, 2), bool))
    >>> # example 0: OUT stats {1, 3}: mu = 2, s = 1; phi = 2 -> log Pr(Z < 2) = log 1/2
    >>> lira(x, online=False)[0].round(4)
    np.float64(-0.6931)
    """
    ref = inputs.reference_stats(STATISTIC)  # [R, N, A], read in blocks
    fit = partial(gaussian_fit, ref, fix_variance=fix_variance)
    return likelihood_scores(inputs.target_stat(STATISTIC), fit, inputs.ref_keep, online, balance)


def likelihood_scores(
    phi: np.ndarray,
    fit: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]],
    ref_keep: np.ndarray,
    online: bool,
    balance: bool,
) -> np.ndarray:
    """LiRA's scores from the target's statistics ``phi [N, A]`` and ``fit(mask)``, the
    Gaussians ``(mu, std, count)`` of the references in ``mask`` (see :func:`lira`)."""
    in_mask, out_mask = split_references(ref_keep, balance)
    mu_out, s_out, n_out = fit(out_mask)
    offline = np.mean(log_ndtr((phi - mu_out) / s_out), axis=1)  # [N]
    if not online:
        return np.where(n_out > 0, offline, np.log(0.5))
    mu_in, s_in, n_in = fit(in_mask)
    llr = np.mean(_log_pdf(phi, mu_in, s_in) - _log_pdf(phi, mu_out, s_out), axis=1)  # [N]
    return np.where(n_out == 0, 0.0, np.where(n_in == 0, offline, llr))


def _first(side: np.ndarray, balance: bool) -> np.ndarray:
    """``side`` restricted to its first ``min_n count_n`` True entries per column."""
    if not balance or side.shape[1] == 0:
        return side
    k = side.sum(axis=0).min()
    return side & (np.cumsum(side, axis=0) <= k)


def _masked_median(stat: np.ndarray, m: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Median over axis 0 of the entries where ``m``; ``[R, N, A] -> [N, A]``, 0 if none."""
    if stat.shape[0] == 0:
        return np.zeros(stat.shape[1:])
    ordered = np.sort(np.where(m, stat, np.inf), axis=0)  # masked entries sort last
    middle = [np.maximum(count - 1, 0) // 2, count // 2]  # [N] ranks, equal for odd counts
    lo, hi = (np.take_along_axis(ordered, r[None, :, None], axis=0)[0] for r in middle)
    return np.where(count[:, None] > 0, (lo + hi) / 2, 0.0)


def _masked_std(stat: np.ndarray, m: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Std (``ddof=0``) over axis 0 of the entries where ``m``; ``[R, N, A] -> [N, A]``."""
    n = np.maximum(count, 1)[:, None]  # [N, 1]
    mean = np.where(m, stat, 0.0).sum(axis=0) / n  # [N, A]
    return np.sqrt(np.where(m, (stat - mean) ** 2, 0.0).sum(axis=0) / n)


def _log_pdf(x: np.ndarray, mu: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``log N(x; mu, std)``, elementwise."""
    return -0.5 * ((x - mu) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)


def _variant(name: str, **kwargs: bool) -> Attack:
    return Attack(
        name,
        partial(lira, **kwargs),
        needs_references=True,
        paper=CARLINI_2022,
        statistics=(STATISTIC,),
    )


ATTACKS: tuple[Attack, ...] = (
    _variant("lira_online", online=True),
    _variant("lira_offline", online=False),
    _variant("lira_online_fixed_var", online=True, fix_variance=True),
    _variant("lira_offline_fixed_var", online=False, fix_variance=True),
)
