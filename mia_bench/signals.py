"""Per-example statistics of a model's logits, in float64.

Every function takes ``logits`` of shape ``[..., C]`` (any leading shape: ``[N, C]``,
``[N, A, C]`` for A query views, ``[R, N, A, C]`` for R reference models) and returns a
float64 array of the leading shape ``[...]``. All work in log space through
``logsumexp``, so logits of magnitude 1e4 neither overflow nor produce NaN.

Labels rule: ``labels`` is an integer array with the same number of dimensions as the
leading shape that broadcasts to it by numpy's rules (``[N]`` for ``[N, C]`` logits,
``[N, A]`` or ``[N, 1]`` for ``[N, A, C]``). A 1-D ``[N]`` label vector is never aligned
implicitly with higher-rank logits (numpy would align it with the *last* leading axis);
use :func:`expand_labels` to lay it along the N axis.
"""

from __future__ import annotations

import numpy as np


def expand_labels(labels: np.ndarray, logits: np.ndarray, axis: int = 0) -> np.ndarray:
    """Broadcast per-example labels ``[N]`` over the leading shape of ``logits``.

    Args:
        labels: ``int[N]``, one label per example.
        logits: ``[..., C]``; its leading axis ``axis`` has size N.
        axis: which leading axis indexes the examples: 0 for ``[N, A, C]``,
            1 for ``[R, N, A, C]``.

    Returns:
        A read-only ``int64`` view of shape ``logits.shape[:-1]``.

    >>> expand_labels(np.array([2, 0]), np.zeros((3, 2, 4, 5)), axis=1)[:, :, 0].tolist()
    [[2, 0], [2, 0], [2, 0]]
    """
    labels = np.asarray(labels)
    lead = np.shape(logits)[:-1]
    if labels.ndim != 1 or not -len(lead) <= axis < len(lead) or labels.size != lead[axis]:
        raise ValueError(
            f"cannot lay labels of shape {labels.shape} along axis {axis} of the leading "
            f"shape {lead} of logits: labels must be 1-D with as many entries as that axis"
        )
    shape = [1] * len(lead)
    shape[axis] = labels.size
    return np.broadcast_to(labels.astype(np.int64).reshape(shape), lead)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities ``log p_i = z_i - logsumexp(z)`` along the last axis.

    Args:
        logits: ``[..., C]``.

    Returns:
        float64 ``[..., C]``.

    >>> log_softmax(np.log([[1.0, 3.0]])).round(4).tolist()  # log(1/4), log(3/4)
    [[-1.3863, -0.2877]]
    """
    z = np.asarray(logits, dtype=np.float64)
    return z - _logsumexp(z)[..., None]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities along the last axis, ``[..., C]`` float64.

    >>> softmax(np.log([[1.0, 3.0]])).round(4).tolist()
    [[0.25, 0.75]]
    """
    return np.exp(log_softmax(logits))


def loss(logits: np.ndarray, labels: np.ndarray, logp: np.ndarray | None = None) -> np.ndarray:
    """Cross-entropy ``-log p_y`` of each prediction.

    Args:
        logits: ``[..., C]``.
        labels: int, broadcastable to ``[...]`` (see the module's labels rule).

    Returns:
        float64 ``[...]``.

    >>> loss(np.log([[1.0, 3.0], [1.0, 3.0]]), np.array([1, 0])).round(4).tolist()
    [0.2877, 1.3863]
    """
    logp = log_softmax(logits) if logp is None else logp
    return -_at_label(logp, _labels(labels, logits))


def confidence(
    logits: np.ndarray, labels: np.ndarray, logp: np.ndarray | None = None
) -> np.ndarray:
    """Probability ``p_y`` given to the true label, float64 ``[...]``.

    >>> confidence(np.log([[1.0, 3.0]]), np.array([1])).round(4).tolist()
    [0.75]
    """
    return np.exp(-loss(logits, labels, logp))


def entropy(logits: np.ndarray, logp: np.ndarray | None = None) -> np.ndarray:
    """Prediction entropy ``-sum_i p_i log p_i`` (``0 log 0 = 0``), float64 ``[...]``.

    >>> # rows: p = (1/2, 1/2) -> log 2; p = (1/4, 3/4) -> -(.25 log .25 + .75 log .75)
    >>> entropy(np.log([[1.0, 1.0], [1.0, 3.0]])).round(4).tolist()
    [0.6931, 0.5623]
    """
    logp = log_softmax(logits) if logp is None else logp
    p = np.exp(logp)
    return -np.sum(np.where(p > 0, p * logp, 0.0), axis=-1)


def modified_entropy(
    logits: np.ndarray, labels: np.ndarray, logp: np.ndarray | None = None
) -> np.ndarray:
    """Modified prediction entropy of Song & Mittal (USENIX Security 2021).

    ``Mentr = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)``: low when the model
    is confidently right, high when it is confidently wrong (unlike the entropy, which
    ignores the label). ``log(1 - p_i)`` is ``log1p(-p_i)`` except for the most likely
    class, where it is ``logsumexp`` of the other log-probabilities, so ``p_i -> 1``
    keeps full precision; terms with ``p_i = 0`` are 0.

    Args:
        logits: ``[..., C]``, C >= 2.
        labels: int, broadcastable to ``[...]`` (see the module's labels rule).

    Returns:
        float64 ``[...]``, >= 0.

    >>> # p = (1/2, 1/2): -(1/2) log(1/2) - (1/2) log(1/2) = log 2
    >>> modified_entropy(np.zeros((1, 2)), np.array([0])).round(4).tolist()
    [0.6931]
    >>> # p = (1/4, 3/4), y = 1: -(1/4) log(3/4) - (1/4) log(3/4) = 0.1438
    >>> modified_entropy(np.log([[1.0, 3.0]]), np.array([1])).round(4).tolist()
    [0.1438]
    """
    labels = _labels(labels, logits)
    logp = log_softmax(logits) if logp is None else logp  # [..., C]
    p = np.exp(logp)
    log_1m_p = _log1m_p(logp, p)  # [..., C]
    log_p_y = _at_label(logp, labels)
    label_term = -np.exp(_logsumexp_except(logp, labels)) * log_p_y  # -(1 - p_y) log p_y
    other = np.where(p > 0, -p * log_1m_p, 0.0)  # [..., C]
    np.put_along_axis(other, labels[..., None], 0.0, axis=-1)
    return label_term + other.sum(axis=-1)


def scaled_logit(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's scaled logit ``log p_y - log(1 - p_y)`` (Carlini et al., S&P 2022).

    Computed straight from the logits as ``z_y - logsumexp_{y' != y} z_y'``, which
    equals the definition and never forms a probability.

    Args:
        logits: ``[..., C]``, C >= 2.
        labels: int, broadcastable to ``[...]`` (see the module's labels rule).

    Returns:
        float64 ``[...]``.

    >>> scaled_logit(np.log([[1.0, 3.0]]), np.array([1])).round(4).tolist()  # log(.75/.25)
    [1.0986]
    >>> scaled_logit(np.array([[1e4, 0.0, 0.0]]), np.array([0])).round(4).tolist()  # 1e4 - log 2
    [9999.3069]
    """
    z = np.asarray(logits, dtype=np.float64)
    labels = _labels(labels, z)
    return _at_label(z, labels) - _logsumexp_except(z, labels)


def correct(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1.0 where the top class equals the label, else 0.0 (ties go to the lowest index).

    >>> correct(np.array([[2.0, 1.0], [2.0, 1.0]]), np.array([0, 1])).tolist()
    [1.0, 0.0]
    """
    labels = _labels(labels, logits)
    return (np.argmax(logits, axis=-1) == labels).astype(np.float64)


def _logsumexp(z: np.ndarray) -> np.ndarray:
    """``log sum_i exp z_i`` over the last axis, shifted by the max; ``[..., C] -> [...]``."""
    m = np.max(z, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)  # all -inf rows give -inf, not NaN
    with np.errstate(divide="ignore"):
        return np.log(np.sum(np.exp(z - m), axis=-1)) + m[..., 0]


def _logsumexp_except(z: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``logsumexp`` over the last axis leaving out entry ``index``; ``[..., C] -> [...]``."""
    masked = z.copy()
    np.put_along_axis(masked, index[..., None], -np.inf, axis=-1)
    return _logsumexp(masked)


def _log1m_p(logp: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``log(1 - p_i)`` for every class, exact also for the class with ``p_i`` near 1."""
    with np.errstate(divide="ignore"):
        out = np.log1p(-p)  # [..., C], accurate where p <= 1/2
    top = np.argmax(logp, axis=-1)  # the only class that may have p > 1/2
    np.put_along_axis(out, top[..., None], _logsumexp_except(logp, top)[..., None], axis=-1)
    return out


def _at_label(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``x[..., labels]``: pick the label's entry of the last axis; ``[..., C] -> [...]``."""
    return np.take_along_axis(x, labels[..., None], axis=-1)[..., 0]


def _labels(labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Check ``labels`` against ``logits`` and broadcast them to the leading shape."""
    labels = np.asarray(labels)
    shape = np.shape(logits)
    if len(shape) < 1 or shape[-1] < 2:
        raise ValueError(f"logits must have shape [..., C] with C >= 2 classes, got {shape}")
    lead = shape[:-1]
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.ndim != len(lead) or not _broadcasts_to(labels.shape, lead):
        raise ValueError(
            f"labels of shape {labels.shape} do not match the leading shape {lead} of "
            "logits: pass labels with one dimension per leading axis (e.g. [N, 1]), or "
            "lay [N] labels along the example axis with expand_labels(labels, logits, axis)"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= shape[-1]):
        raise ValueError(
            f"labels must lie in [0, {shape[-1]}), got range [{labels.min()}, {labels.max()}]"
        )
    return np.broadcast_to(labels.astype(np.int64, copy=False), lead)


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether an array of ``shape`` broadcasts to exactly ``target``."""
    try:
        return np.broadcast_shapes(shape, target) == target
    except ValueError:
        return False
