"""Attack-R, Watson's calibration and the calibrated loss against loops and hand cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from synthetic import member_like

from mia_bench.attacks import ATTACKS, AttackInputs
from mia_bench.attacks.calibrated import attack_r, calibrated_loss, watson_calibrated
from mia_bench.metrics import auc

NAMES = ["attack_r", "watson_calibrated", "calibrated_loss"]


def plain_losses(x: AttackInputs) -> tuple[np.ndarray, np.ndarray]:
    """View-0 cross-entropies of the target [N] and of each reference [R, N], by torch."""
    y = torch.from_numpy(x.labels)
    ce = lambda z: F.cross_entropy(torch.from_numpy(z), y, reduction="none").numpy()  # noqa: E731
    return ce(x.logits[:, 0]), np.stack([ce(z[:, 0]) for z in x.ref_logits])


def attack_r_loop(x: AttackInputs, balance: bool) -> np.ndarray:
    """privacy meter's linear_itp: np.interp of the loss among [0, OUT losses, 1000]."""
    loss, ref = plain_losses(x)
    outs = [np.flatnonzero(~x.ref_keep[:, i]) for i in range(len(loss))]
    k = min(map(len, outs)) if balance else None
    scores = []
    for i, out in enumerate(outs):
        grid = np.sort(np.r_[0.0, ref[out[:k], i], 1000.0])
        scores.append(1 - np.interp(loss[i], grid, np.linspace(0, 1, len(grid))))
    return np.array(scores)


def side_mean_loop(ref: np.ndarray, mask: np.ndarray, i: int) -> float:
    if mask[:, i].any():
        return ref[mask[:, i], i].mean()
    return ref[mask].mean() if mask.any() else 0.0


def watson_loop(x: AttackInputs) -> np.ndarray:
    loss, ref = plain_losses(x)
    return np.array([side_mean_loop(ref, ~x.ref_keep, i) - loss[i] for i in range(len(loss))])


def calibrated_loop(x: AttackInputs) -> np.ndarray:
    loss, ref = plain_losses(x)
    scores = []
    for i in range(len(loss)):
        sides = [side_mean_loop(ref, m, i) for m in (x.ref_keep, ~x.ref_keep) if m.any()]
        scores.append((np.mean(sides) if sides else 0.0) - loss[i])
    return np.array(scores)


def random_inputs(seed: int, n: int = 12, r: int = 7, a: int = 2, c: int = 4) -> AttackInputs:
    rng = np.random.default_rng(seed)
    return AttackInputs(
        rng.normal(size=(n, a, c)) * 2,
        rng.integers(0, c, size=n),
        ref_logits=rng.normal(size=(r, n, a, c)) * 2,
        ref_keep=rng.random((r, n)) < 0.5,
    )


@pytest.mark.parametrize("seed", range(5))
def test_match_loop_implementations(seed: int) -> None:
    x = random_inputs(seed)
    for balance in (True, False):
        np.testing.assert_allclose(
            attack_r(x, balance=balance), attack_r_loop(x, balance), atol=1e-12
        )
    np.testing.assert_allclose(watson_calibrated(x), watson_loop(x), atol=1e-12)
    np.testing.assert_allclose(calibrated_loss(x), calibrated_loop(x), atol=1e-12)


def test_registry_entries() -> None:
    x = random_inputs(9)
    for name, fn in zip(NAMES, (attack_r, watson_calibrated, calibrated_loss), strict=True):
        assert ATTACKS[name].needs_references
        np.testing.assert_array_equal(ATTACKS[name](x), fn(x))


def with_losses(target: list[float], ref: list[list[float]], keep: list[list[int]]) -> AttackInputs:
    """Binary logits (-L, log(1 - e^-L)) whose label-0 cross-entropy is exactly L."""
    to_logits = lambda L: np.stack([-L, np.log(-np.expm1(-L))], axis=-1)[..., None, :]  # noqa: E731
    return AttackInputs(
        to_logits(np.array(target)),
        np.zeros(len(target), int),
        ref_logits=to_logits(np.array(ref)),
        ref_keep=np.array(keep, dtype=bool),
    )


def tiny() -> AttackInputs:
    """Reference losses (rows r, columns examples, IN marked *), target losses last row:
    r0:   0.1*  0.2*  2.0
    r1:   0.3*  1.0   0.4*
    r2:   1.0   0.4*  0.2*
    r3:   2.0   3.0   1.0
    tgt:  0.5   2.5   1.5
    """
    ref = [[0.1, 0.2, 2.0], [0.3, 1.0, 0.4], [1.0, 0.4, 0.2], [2.0, 3.0, 1.0]]
    keep = [[1, 1, 0], [1, 0, 1], [0, 1, 1], [0, 0, 0]]
    return with_losses([0.5, 2.5, 1.5], ref, keep)


def test_tiny_by_hand() -> None:
    x = tiny()
    # mean IN / OUT losses: ex0 0.2 / 1.5, ex1 0.3 / 2.0, ex2 0.3 / 1.5
    # Watson: mean OUT - loss = 1.5 - 0.5, 2.0 - 2.5, 1.5 - 1.5
    np.testing.assert_allclose(watson_calibrated(x), [1.0, -0.5, 0.0], atol=1e-12)
    # calibrated: tau = (IN + OUT) / 2 = 0.85, 1.15, 0.9; minus the loss
    np.testing.assert_allclose(calibrated_loss(x), [0.35, -1.35, -0.6], atol=1e-12)
    # Attack-R: grid [0, OUT sorted, 1000] at alpha = 0, 1/3, 2/3, 1
    #   ex0: [0, 1, 2, 1000], loss 0.5 halfway 0 -> 1: alpha = 1/6, score 5/6
    #   ex1: [0, 1, 3, 1000], loss 2.5 3/4 of 1 -> 3: alpha = (1 + 3/4) / 3 = 7/12, score 5/12
    #   ex2: [0, 1, 2, 1000], loss 1.5 halfway 1 -> 2: alpha = 1/2, score 1/2
    np.testing.assert_allclose(attack_r(x), [5 / 6, 5 / 12, 1 / 2], atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_members_rank_above_nonmembers(name: str) -> None:
    x, membership = member_like(0)
    assert auc(ATTACKS[name](x), membership) > 0.8


def test_no_out_reference() -> None:
    x = tiny()
    keep = x.ref_keep.copy()
    keep[:, 1] = True  # example 1 has 4 IN references and no OUT one
    x = AttackInputs(x.logits, x.labels, ref_logits=x.ref_logits, ref_keep=keep)
    # Watson: example 1 is calibrated by the mean OUT loss over all examples:
    #   OUT losses left {1.0, 2.0} (ex0), {2.0, 1.0} (ex2): mean 1.5 -> 1.5 - 2.5
    assert watson_calibrated(x)[1] == pytest.approx(-1.0)
    # calibrated: IN mean (0.2 + 1 + 0.4 + 3) / 4 = 1.15, OUT stand-in 1.5 -> 1.325 - 2.5
    assert calibrated_loss(x)[1] == pytest.approx(-1.175)
    # Attack-R: only the anchors 0 and 1000 are left -> 1 - loss / 1000, and balance makes
    # every example use 0 OUT references
    assert attack_r(x, balance=False)[1] == pytest.approx(1 - 2.5 / 1000)
    np.testing.assert_allclose(attack_r(x), 1 - np.array([0.5, 2.5, 1.5]) / 1000)


def test_no_references_at_all() -> None:
    x = random_inputs(0)
    bare = AttackInputs(x.logits, x.labels, ref_logits=x.ref_logits[:0], ref_keep=x.ref_keep[:0])
    loss, _ = plain_losses(x)
    np.testing.assert_allclose(watson_calibrated(bare), -loss)
    np.testing.assert_allclose(calibrated_loss(bare), -loss)
    np.testing.assert_allclose(attack_r(bare), 1 - loss / 1000)


@pytest.mark.parametrize("name", NAMES)
def test_no_overflow_with_huge_logits(name: str) -> None:
    x, membership = member_like(1, n=80, r=8)
    big = AttackInputs(x.logits * 1e4, x.labels, ref_logits=x.ref_logits * 1e4, ref_keep=x.ref_keep)
    ATTACKS[name](big)  # Attack.__call__ checks float64[N] and finiteness


def test_only_the_plain_view_is_read() -> None:
    x = random_inputs(4)
    changed = AttackInputs(
        np.concatenate([x.logits[:, :1], -x.logits[:, 1:] * 3], axis=1),
        x.labels,
        ref_logits=np.concatenate([x.ref_logits[:, :, :1], x.ref_logits[:, :, 1:] + 5], axis=2),
        ref_keep=x.ref_keep,
    )
    for fn in (attack_r, watson_calibrated, calibrated_loss):
        np.testing.assert_array_equal(fn(x), fn(changed))
