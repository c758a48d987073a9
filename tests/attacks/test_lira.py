"""LiRA against an independent loop implementation, hand computations and edge cases."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from scipy.special import log_softmax, logsumexp
from scipy.stats import norm
from synthetic import member_like

from mia_bench.attacks import ATTACKS, AttackInputs
from mia_bench.attacks.lira import lira
from mia_bench.metrics import auc

NAMES = ["lira_online", "lira_offline", "lira_online_fixed_var", "lira_offline_fixed_var"]


def scaled_logit_loop(z: np.ndarray, y: int) -> float:
    """log p_y - log(1 - p_y) from scipy's log-softmax, one prediction at a time."""
    logp = log_softmax(z)
    return logp[y] - logsumexp(np.delete(logp, y))


def lira_loop(x: AttackInputs, online: bool, fix_variance: bool, balance: bool) -> np.ndarray:
    """Straight from plot.py's generate_ours(_offline) + the paper's one-sided offline test,
    with the documented fallbacks, one example at a time."""
    r, n, a, _ = x.ref_logits.shape
    one = lambda z, i: [scaled_logit_loop(z[i, v], x.labels[i]) for v in range(a)]  # noqa: E731
    phi = np.array([one(x.logits, i) for i in range(n)])  # [N, A]
    ref = np.array([[one(x.ref_logits[k], i) for i in range(n)] for k in range(r)])  # [R, N, A]
    ins = [[k for k in range(r) if x.ref_keep[k, i]] for i in range(n)]
    outs = [[k for k in range(r) if not x.ref_keep[k, i]] for i in range(n)]
    if balance:  # plot.py: in_size = min(map(len, dat_in)), keep x[:in_size]
        ins = [s[: min(map(len, ins))] for s in ins]
        outs = [s[: min(map(len, outs))] for s in outs]
    dat_in = [ref[s, i] for i, s in enumerate(ins)]  # [k_i, A] each
    dat_out = [ref[s, i] for i, s in enumerate(outs)]

    def fit(dat: list[np.ndarray], i: int) -> tuple[np.ndarray, np.ndarray]:
        pooled = np.concatenate([d.ravel() for d in dat])
        glob = np.std(pooled) if pooled.size >= 2 else 0.0
        std = np.std(dat[i], axis=0) if len(dat[i]) >= 2 and not fix_variance else glob
        return np.median(dat[i], axis=0), np.maximum(std, 1e-30)

    scores = []
    for i in range(n):
        if not len(dat_out[i]):
            scores.append(0.0 if online else np.log(0.5))
            continue
        mu_out, s_out = fit(dat_out, i)
        offline = np.mean(norm.logcdf(phi[i], mu_out, s_out))
        if not online or not len(dat_in[i]):
            scores.append(offline)
            continue
        mu_in, s_in = fit(dat_in, i)
        scores.append(
            np.mean(norm.logpdf(phi[i], mu_in, s_in) - norm.logpdf(phi[i], mu_out, s_out))
        )
    return np.array(scores)


def random_inputs(seed: int, n: int = 10, r: int = 7, a: int = 3, c: int = 4) -> AttackInputs:
    rng = np.random.default_rng(seed)
    return AttackInputs(
        rng.normal(size=(n, a, c)) * 2,
        rng.integers(0, c, size=n),
        ref_logits=rng.normal(size=(r, n, a, c)) * 2,
        ref_keep=rng.random((r, n)) < 0.5,  # unbalanced: counts 0, 1, ... occur
    )


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("online", [True, False])
@pytest.mark.parametrize("fix_variance", [False, True])
@pytest.mark.parametrize("balance", [True, False])
def test_matches_loop_implementation(seed, online, fix_variance, balance) -> None:
    x = random_inputs(seed)
    got = lira(x, online=online, fix_variance=fix_variance, balance=balance)
    np.testing.assert_allclose(
        got, lira_loop(x, online, fix_variance, balance), rtol=1e-9, atol=1e-9
    )


def test_registry_entries_are_the_variants() -> None:
    x = random_inputs(7)
    for name, online, fixed in zip(
        NAMES, [True, False] * 2, [False, False, True, True], strict=True
    ):
        assert ATTACKS[name].needs_references
        np.testing.assert_array_equal(ATTACKS[name](x), lira(x, online=online, fix_variance=fixed))


def tiny() -> AttackInputs:
    """3 examples, 4 references, 1 view, 2 classes, label 0: logits [s, 0] give phi = s.

    phi of the references (rows r) on examples (columns), IN marked *:
        r0:  4*   3*   2
        r1:  6*   1    1*
        r2:  0    5*   3*
        r3:  2   -1    0
    target phi: 5, 0, 1.5. Every example has 2 IN and 2 OUT references.
    """
    ref_phi = np.array([[4, 3, 2], [6, 1, 1], [0, 5, 3], [2, -1, 0]], dtype=float)
    keep = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [0, 0, 0]], dtype=bool)
    as_logits = lambda s: np.stack([s, np.zeros_like(s)], axis=-1)[..., None, :]  # noqa: E731
    return AttackInputs(
        as_logits(np.array([5.0, 0.0, 1.5])),
        np.zeros(3, int),
        ref_logits=as_logits(ref_phi),
        ref_keep=keep,
    )


def test_tiny_by_hand() -> None:
    x = tiny()
    # Per example (median, std of 2 values = half their gap):
    #   ex0: IN {4, 6} -> N(5, 1), OUT {0, 2} -> N(1, 1), phi 5
    #        online  = log N(5; 5, 1) - log N(5; 1, 1) = 0 + 16/2 = 8
    #        offline = log Phi((5 - 1) / 1) = log Phi(4)
    #   ex1: IN {3, 5} -> N(4, 1), OUT {1, -1} -> N(0, 1), phi 0
    #        online  = -16/2 + 0 = -8;  offline = log Phi(0) = log 1/2
    #   ex2: IN {1, 3} -> N(2, 1), OUT {2, 0} -> N(1, 1), phi 1.5
    #        online  = -0.25/2 + 0.25/2 = 0;  offline = log Phi(0.5)
    np.testing.assert_allclose(lira(x), [8.0, -8.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(
        lira(x, online=False), [np.log(norm.cdf(4.0)), np.log(0.5), np.log(norm.cdf(0.5))]
    )
    # Fixed variance: pooled IN {4, 6, 3, 5, 1, 3}, mean 11/3, var 23/9; pooled OUT
    # {0, 2, 1, -1, 2, 0}, mean 2/3, var 11/9. ex0 online:
    #   log N(5; 5, s_in) - log N(5; 1, s_out) = -log s_in + 16 / (2 * 11/9) + log s_out
    #                                          = 72/11 + log(11/23) / 2 = 6.17666
    got = lira(x, fix_variance=True)
    assert got[0] == pytest.approx(72 / 11 + np.log(11 / 23) / 2, abs=1e-12)
    # ex1 offline with s_out = sqrt(11/9): log Phi(0) = log 1/2 whatever the std
    assert lira(x, online=False, fix_variance=True)[1] == pytest.approx(np.log(0.5))


@pytest.mark.parametrize("name", NAMES)
def test_members_rank_above_nonmembers(name: str) -> None:
    x, membership = member_like(0)
    assert auc(ATTACKS[name](x), membership) > 0.8


def test_fallbacks_per_example() -> None:
    x = random_inputs(3, n=6, r=6)
    keep = x.ref_keep.copy()
    keep[:, 0] = False  # example 0: no IN reference
    keep[:, 1] = [True] + [False] * 5  # example 1: one IN reference
    keep[:, 2] = True  # example 2: no OUT reference
    keep[:, 3:] = [[True]] * 3 + [[False]] * 3
    x = AttackInputs(x.logits, x.labels, ref_logits=x.ref_logits, ref_keep=keep)
    online = lira(x, balance=False)
    offline = lira(x, online=False, balance=False)
    assert np.isfinite(online).all() and np.isfinite(offline).all()
    assert online[0] == offline[0]  # no IN: the online score is the offline one
    assert online[2] == 0.0 and offline[2] == np.log(0.5)  # no OUT: neutral
    # one IN reference: the IN std is the global one (same as fix_variance for that side)
    np.testing.assert_allclose(online, lira_loop(x, True, False, False), rtol=1e-9)
    # balance=True: every example gets the smallest counts (0 IN, 0 OUT): all neutral
    np.testing.assert_array_equal(lira(x), np.zeros(6))


def test_balance_treats_every_example_alike() -> None:
    x, _ = member_like(1, n=40, r=6)
    keep = x.ref_keep.copy()
    keep[:, 0] = [True] + [False] * 5  # one example with a single IN reference
    x = AttackInputs(x.logits, x.labels, ref_logits=x.ref_logits, ref_keep=keep)
    # k_in = 1 for every example, so every IN std is the global one: as fix_variance on
    # the IN side; OUT stds stay per example (k_out = 3)
    np.testing.assert_allclose(lira(x), lira_loop(x, True, False, True), rtol=1e-9)


def test_no_references_at_all() -> None:
    x = random_inputs(0)
    x = AttackInputs(x.logits, x.labels, ref_logits=x.ref_logits[:0], ref_keep=x.ref_keep[:0])
    np.testing.assert_array_equal(lira(x), np.zeros(10))
    np.testing.assert_array_equal(lira(x, online=False), np.full(10, np.log(0.5)))


@pytest.mark.parametrize("name", NAMES)
def test_no_overflow_with_huge_logits(name: str) -> None:
    x, membership = member_like(2, n=60, r=8)
    big = AttackInputs(x.logits * 1e4, x.labels, ref_logits=x.ref_logits * 1e4, ref_keep=x.ref_keep)
    scores = ATTACKS[name](big)  # Attack.__call__ checks finiteness
    assert auc(scores, membership) > 0.6


def test_constant_statistics_stay_finite() -> None:
    x = random_inputs(1)
    flat = AttackInputs(
        np.zeros_like(x.logits),
        x.labels,
        ref_logits=np.zeros_like(x.ref_logits),
        ref_keep=x.ref_keep,
    )
    for fn in (partial(lira, online=True), partial(lira, online=False)):
        assert np.isfinite(fn(flat)).all()
