"""RMIA against an explicit N x Z double loop, hand computations and edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import member_like

from mia_bench.attacks import ATTACKS, AttackInputs
from mia_bench.attacks.rmia import A_GRID, fit_offline_a, rmia
from mia_bench.metrics import auc
from mia_bench.statistics import log_p_name


def true_label_prob(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """p_y by torch.softmax at a temperature; labels along the example axis (-3)."""
    p = torch.softmax(torch.from_numpy(logits) / temperature, dim=-1).numpy()
    index = np.broadcast_to(labels[:, None, None], (*p.shape[:-1], 1))
    return np.take_along_axis(p, index, axis=-1)[..., 0]  # [..., N, A]


def rmia_loop(
    x: AttackInputs, online: bool, a: float = 0.3, gamma: float = 1.0, temperature: float = 1.0
) -> np.ndarray:
    """The paper's equations, one example, one view and one pair at a time."""
    target = true_label_prob(x.logits, x.labels, temperature)  # [N, A]
    refs = true_label_prob(x.ref_logits, x.labels, temperature)  # [R, N, A]
    n, views = target.shape
    lr = np.empty((n, views))
    for i in range(n):
        for v in range(views):
            p_in = [refs[k, i, v] for k in range(len(refs)) if x.ref_keep[k, i]]
            p_out = [refs[k, i, v] for k in range(len(refs)) if not x.ref_keep[k, i]]
            approx = ((1 + a) * np.mean(p_out) + (1 - a)) / 2 if p_out else None
            if not p_out:
                pr_x = np.mean(p_in)
            elif online and p_in:
                pr_x = (np.mean(p_in) + np.mean(p_out)) / 2
            else:
                pr_x = approx
            lr[i, v] = target[i, v] / pr_x
    zs = np.flatnonzero(x.population)
    scores = np.zeros(n)
    for i in range(n):
        for v in range(views):
            others = [z for z in zs if z != i]
            scores[i] += np.mean([lr[i, v] / lr[z, v] >= gamma for z in others]) / views
    return scores


def random_inputs(seed: int, n: int = 14, r: int = 6, a: int = 3, c: int = 4) -> AttackInputs:
    rng = np.random.default_rng(seed)
    return AttackInputs(
        rng.normal(size=(n, a, c)) * 2,
        rng.integers(0, c, size=n),
        ref_logits=rng.normal(size=(r, n, a, c)) * 2,
        ref_keep=rng.random((r, n)) < 0.5,  # unbalanced: some examples lack IN or OUT refs
        population=rng.random(n) < 0.6,
    )


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("online", [True, False])
@pytest.mark.parametrize("a, gamma", [(0.3, 1.0), (0.0, 2.0), (1.0, 0.5), (0.6, 1.3)])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_matches_double_loop(
    seed: int, online: bool, a: float, gamma: float, temperature: float
) -> None:
    x = random_inputs(seed)
    got = rmia(x, online=online, a=a, gamma=gamma, temperature=temperature)
    want = rmia_loop(x, online, a, gamma, temperature)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_registry_entries_are_the_variants() -> None:
    x = random_inputs(9)
    np.testing.assert_array_equal(ATTACKS["rmia_online"](x), rmia(x, online=True))
    np.testing.assert_array_equal(ATTACKS["rmia_offline"](x), rmia(x, online=False))


def binary(p: np.ndarray) -> np.ndarray:
    """Logits [..., 1, 2] whose softmax is (p, 1 - p): p_y = p for label 0."""
    return np.log(np.stack([p, 1 - p], axis=-1))[..., None, :]


def tiny() -> AttackInputs:
    """3 examples, label 0; reference 0 is IN for example 0 only, reference 1 OUT for all.

    p_y:     target  r0 (IN for ex0)  r1
      ex0     0.8      0.9            0.4
      ex1     0.5      0.5            0.5
      ex2     0.4      0.4            0.2
    """
    return AttackInputs(
        binary(np.array([0.8, 0.5, 0.4])),
        np.zeros(3, int),
        ref_logits=binary(np.array([[0.9, 0.5, 0.4], [0.4, 0.5, 0.2]])),
        ref_keep=np.array([[True, False, False], [False, False, False]]),
        population=np.ones(3, bool),
    )


def test_tiny_by_hand() -> None:
    x = tiny()
    # a = 0.3. Offline Pr(x) = (1.3 Pr_OUT + 0.7) / 2:
    #   ex0: Pr_OUT = 0.4 -> 0.61,   LR = 0.8 / 0.61  = 1.3115
    #   ex1: Pr_OUT = 0.5 -> 0.675,  LR = 0.5 / 0.675 = 0.7407
    #   ex2: Pr_OUT = 0.3 -> 0.545,  LR = 0.4 / 0.545 = 0.7339
    # Online: ex0 has IN and OUT: Pr(x) = (0.9 + 0.4) / 2 = 0.65, LR = 1.2308; ex1, ex2
    # have no IN reference and keep the offline Pr(x).
    # gamma = 1: both rank ex0 > ex1 > ex2 -> fractions of the 2 others: 1, 1/2, 0
    plain = {"a": 0.3, "temperature": 1.0}
    np.testing.assert_allclose(rmia(x, online=False, **plain), [1.0, 0.5, 0.0])
    np.testing.assert_allclose(rmia(x, online=True, **plain), [1.0, 0.5, 0.0])
    # gamma = 1.7: offline 1.3115 / 0.7407 = 1.771 and / 0.7339 = 1.787 pass;
    # online 1.2308 / 0.7407 = 1.662 and / 0.7339 = 1.677 do not; ex1 / ex2 = 1.009 never
    np.testing.assert_allclose(rmia(x, online=False, gamma=1.7, **plain), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(rmia(x, online=True, gamma=1.7, **plain), [0.0, 0.0, 0.0])


def test_self_pair_is_excluded() -> None:
    x = random_inputs(5, n=30)
    for online in (True, False):
        for gamma in (0.5, 1.0, 2.0):
            for i in range(0, 30, 3):
                with_i, without_i = x.population.copy(), x.population.copy()
                with_i[i], without_i[i] = True, False
                scores = [
                    rmia(_with_population(x, pop), online=online, gamma=gamma)[i]
                    for pop in (with_i, without_i)
                ]
                assert scores[0] == scores[1]


def _with_population(x: AttackInputs, population: np.ndarray) -> AttackInputs:
    return AttackInputs(
        x.logits, x.labels, ref_logits=x.ref_logits, ref_keep=x.ref_keep, population=population
    )


@pytest.mark.parametrize("name", ["rmia_online", "rmia_offline"])
def test_members_rank_above_nonmembers(name: str) -> None:
    x, membership = member_like(0, population=True)
    assert auc(ATTACKS[name](x), membership) > 0.8


@pytest.mark.parametrize("name", ["rmia_online", "rmia_offline"])
def test_no_overflow_with_huge_logits(name: str) -> None:
    x, membership = member_like(1, n=80, r=8, population=True)
    big = AttackInputs(
        x.logits * 1e4,
        x.labels,
        ref_logits=x.ref_logits * 1e4,
        ref_keep=x.ref_keep,
        population=x.population,
    )
    scores = ATTACKS[name](big)  # Attack.__call__ checks finiteness
    assert ((scores >= 0) & (scores <= 1)).all()


def test_missing_in_or_out_references() -> None:
    x = random_inputs(2)
    keep = x.ref_keep.copy()
    keep[:, 0], keep[:, 1] = False, True  # example 0: no IN; example 1: no OUT
    x = AttackInputs(
        x.logits, x.labels, ref_logits=x.ref_logits, ref_keep=keep, population=x.population
    )
    for online in (True, False):
        got = rmia(x, online=online, a=0.3)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, rmia_loop(x, online, temperature=2.0), atol=1e-12)


@pytest.mark.parametrize("population", [None, np.eye(14, dtype=bool)[3], np.zeros(14, bool)])
def test_needs_population_samples(population) -> None:
    x = random_inputs(0)
    x = AttackInputs(
        x.logits, x.labels, ref_logits=x.ref_logits, ref_keep=x.ref_keep, population=population
    )
    with pytest.raises(ValueError, match="RMIA needs population samples"):
        ATTACKS["rmia_offline"](x)


def test_bad_parameters() -> None:
    x = random_inputs(0)
    with pytest.raises(ValueError, match="0 <= a <= 1 and gamma > 0"):
        rmia(x, a=1.5)
    with pytest.raises(ValueError, match="0 <= a <= 1 and gamma > 0"):
        rmia(x, gamma=0.0)
    no_refs = AttackInputs(
        x.logits,
        x.labels,
        ref_logits=x.ref_logits[:0],
        ref_keep=x.ref_keep[:0],
        population=x.population,
    )
    with pytest.raises(ValueError, match="at least one reference"):
        rmia(no_refs)


def test_large_pool_without_an_n_by_z_matrix() -> None:
    # N = 200k examples, Z = 100k population samples: an N x Z float64 matrix would be
    # 160 GB; sorting + searchsorted needs O(N + Z).
    rng = np.random.default_rng(0)
    n = 200_000
    population = np.zeros(n, bool)
    population[rng.choice(n, 100_000, replace=False)] = True
    x = AttackInputs(
        rng.normal(size=(n, 1, 2)),
        rng.integers(0, 2, size=n),
        ref_logits=rng.normal(size=(2, n, 1, 2)),
        ref_keep=np.array([[True], [False]]).repeat(n, axis=1),
        population=population,
    )
    for online in (True, False):
        scores = rmia(x, online=online)
        assert scores.shape == (n,) and ((scores >= 0) & (scores <= 1)).all()


def _as_target(x: AttackInputs, r: int) -> tuple[AttackInputs, np.ndarray]:
    """Reference ``r`` of ``x`` as the target, the others as its references."""
    others = np.arange(x.num_references) != r
    inputs = AttackInputs(
        x.ref_logits[r],
        x.labels,
        ref_logits=x.ref_logits[others],
        ref_keep=x.ref_keep[others],
        population=~x.ref_keep[r],
    )
    return inputs, x.ref_keep[r]


@pytest.mark.parametrize("seed", range(3))
def test_fitted_a_is_the_best_on_the_first_reference(seed: int) -> None:
    # brute force: attack reference 0 with the others at every a of the grid
    x, _ = member_like(seed, n=200, r=8, population=True)
    pseudo, truth = _as_target(x, 0)
    aucs = {a: auc(rmia(pseudo, a=a), truth) for a in A_GRID}
    best = max(A_GRID, key=lambda a: (aucs[a], -a))
    name = log_p_name(2.0)
    assert fit_offline_a(x.reference_stats(name), x.ref_keep, name) == best
    np.testing.assert_array_equal(rmia(x), rmia(x, a=best))


def test_fitted_a_never_reads_the_target() -> None:
    # rmia fits a on the references alone: two targets with other logits and another
    # population are scored with the a fitted for the first
    x, membership = member_like(4, n=200, r=8, population=True)
    name = log_p_name(2.0)
    fitted = fit_offline_a(x.reference_stats(name), x.ref_keep, name)
    for logits, population in ((-x.logits, membership), (x.logits[::-1], ~membership)):
        other = AttackInputs(
            logits, x.labels, ref_logits=x.ref_logits, ref_keep=x.ref_keep, population=population
        )
        np.testing.assert_array_equal(rmia(other), rmia(other, a=fitted))


def test_temperature_changes_the_signal() -> None:
    x, membership = member_like(0, population=True)
    assert not np.array_equal(rmia(x, a=0.3, temperature=1.0), rmia(x, a=0.3))
