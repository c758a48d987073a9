"""signals.py against torch, direct float64 formulas and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mia_bench import signals

LABELED = [
    signals.loss,
    signals.confidence,
    signals.modified_entropy,
    signals.scaled_logit,
    signals.correct,
]


def random_case(seed: int, n: int = 64, c: int = 10, scale: float = 3.0):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=scale, size=(n, c)), rng.integers(0, c, size=n)


def direct_modified_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Song & Mittal's formula written out naively (fine for moderate logits)."""
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    py = p[np.arange(len(p)), labels]
    terms = -p * np.log(1 - p)
    terms[np.arange(len(p)), labels] = 0.0
    return -(1 - py) * np.log(py) + terms.sum(-1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_torch(seed: int) -> None:
    z, y = random_case(seed)
    zt, yt = torch.from_numpy(z), torch.from_numpy(y)
    np.testing.assert_allclose(signals.softmax(z), F.softmax(zt, -1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(signals.log_softmax(z), F.log_softmax(zt, -1).numpy(), rtol=1e-12)
    ce = F.cross_entropy(zt, yt, reduction="none").numpy()
    np.testing.assert_allclose(signals.loss(z, y), ce, rtol=1e-12)
    np.testing.assert_allclose(signals.confidence(z, y), np.exp(-ce), rtol=1e-12)
    ent = torch.distributions.Categorical(logits=zt).entropy().numpy()
    np.testing.assert_allclose(signals.entropy(z), ent, rtol=1e-10)
    np.testing.assert_array_equal(signals.correct(z, y), (zt.argmax(-1) == yt).double().numpy())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_modified_entropy_and_scaled_logit_against_direct_formulas(seed: int) -> None:
    z, y = random_case(seed, scale=2.0)
    np.testing.assert_allclose(signals.modified_entropy(z, y), direct_modified_entropy(z, y))
    py = signals.confidence(z, y)
    np.testing.assert_allclose(signals.scaled_logit(z, y), np.log(py) - np.log(1 - py))


def test_hand_computed_two_classes() -> None:
    # p = (1/4, 3/4) from logits log(1), log(3)
    z = np.log([[1.0, 3.0]] * 2)
    y = np.array([1, 0])
    np.testing.assert_allclose(signals.loss(z, y), [-np.log(0.75), -np.log(0.25)])
    np.testing.assert_allclose(signals.scaled_logit(z, y), [np.log(3), -np.log(3)])
    # y=1: -(1/4) log(3/4) - (1/4) log(3/4);  y=0: -(3/4) log(1/4) - (3/4) log(1/4)
    mentr = [-0.5 * np.log(0.75), -1.5 * np.log(0.25)]
    np.testing.assert_allclose(signals.modified_entropy(z, y), mentr)


def test_huge_logits_are_finite_and_exact() -> None:
    z = np.array([[1e4, 0.0, -1e4], [1e4, 0.0, -1e4], [-1e4, -1e4, 1e4]])
    y = np.array([0, 1, 2])
    for fn in LABELED:
        assert np.isfinite(fn(z, y)).all(), fn.__name__
    assert np.isfinite(signals.entropy(z)).all()
    # log p = (0, -1e4, -2e4) up to e^-1e4 for the first two rows
    np.testing.assert_allclose(signals.loss(z, y), [0.0, 1e4, 0.0], atol=1e-12)
    # z_y - logsumexp(others): 1e4 - 0, 0 - 1e4, 1e4 - (-1e4 + log 2)
    np.testing.assert_allclose(signals.scaled_logit(z, y), [1e4, -1e4, 2e4 - np.log(2)])
    # row 1 (y=1, p_0 = 1): -(1 - 0) log p_1 - p_0 log(1 - p_0) = 1e4 + 1e4;
    # rows 0 and 2 are confidently right: Mentr = 0
    np.testing.assert_allclose(signals.modified_entropy(z, y), [0.0, 2e4, 0.0], atol=1e-12)


@pytest.mark.parametrize("fn", LABELED, ids=lambda f: f.__name__)
def test_shift_invariance_at_large_offset(fn) -> None:
    z, y = random_case(3)
    np.testing.assert_allclose(fn(z + 1e4, y), fn(z, y), rtol=1e-9, atol=1e-9)


def test_modified_entropy_keeps_precision_when_p_is_near_one() -> None:
    # 1 - p_0 = 2e^-92 / (1 + 2e^-92) ~ 2e-40, so p_0 rounds to 1.0 and log1p(-p_0) = -inf.
    # Exactly: -p_0 log(1 - p_0) ~ -log(2 e^-92) = 92 - log 2 (label 1: confidently wrong).
    z = np.array([[92.0, 0.0, 0.0]])
    expected = 92.0 + (92.0 - np.log(2))  # -(1 - p_1) log p_1 ~ 92, plus the p_0 term
    np.testing.assert_allclose(signals.modified_entropy(z, np.array([1])), [expected])


def test_leading_dims_with_expand_labels() -> None:
    rng = np.random.default_rng(4)
    z = rng.normal(size=(3, 5, 2, 4))  # [R, N, A, C]
    y = rng.integers(0, 4, size=5)  # [N]
    labels = signals.expand_labels(y, z, axis=1)  # [R, N, A]
    for fn in LABELED:
        out = fn(z, labels)
        assert out.shape == (3, 5, 2) and out.dtype == np.float64
        np.testing.assert_allclose(out[1, :, 1], fn(z[1, :, 1], y))
    assert signals.entropy(z).shape == (3, 5, 2)


def test_labels_broadcast_with_unit_axis() -> None:
    z, y = random_case(5, n=6)
    z3 = np.stack([z, z + 1.0], axis=1)  # [N, 2, C], same probabilities in both views
    out = signals.loss(z3, y[:, None])
    np.testing.assert_allclose(out, np.stack([signals.loss(z, y)] * 2, axis=1))


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.zeros(4, dtype=int), "leading shape"),  # [N] against [N, A, C] is refused
        (np.zeros((3, 2), dtype=int), "leading shape"),
        (np.full((3, 1), 5), r"\[0, 5\)"),
        (np.zeros((3, 1)), "integers"),
    ],
)
def test_bad_labels(labels: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        signals.loss(np.zeros((3, 4, 5)), labels)


def test_expand_labels_rejects_wrong_axis() -> None:
    with pytest.raises(ValueError, match="axis 0"):
        signals.expand_labels(np.zeros(5, dtype=int), np.zeros((3, 5, 2, 4)), axis=0)


def test_one_class_is_refused() -> None:
    with pytest.raises(ValueError, match="C >= 2"):
        signals.scaled_logit(np.zeros((3, 1)), np.zeros(3, dtype=int))
