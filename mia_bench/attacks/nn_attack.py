"""NN attacks: a classifier trained on the references' outputs, applied to the target's.

Every reference ``r`` and example ``n`` give one training pair: features of reference r's
output on n, label ``ref_keep[r, n]``. A small scikit-learn MLP learns member vs
non-member on these pairs and then scores the target's features of every example. This
is the shadow-model attack of Shokri et al. (S&P 2017), with the group's other runs as
the shadow models; the target's membership is never seen.

* ``shokri_nn``: Shokri et al.'s attack. One attack model per class ("we partition by
  class and train k separate models"): the features are the full, unsorted prediction
  vector (softmax of the plain view) and the true label only selects the model. The MLP
  is the ``nn`` attack of the authors' code (``csong27/membership-inference``: one hidden
  layer of 50 tanh units, Adam with learning rate 0.01, batch 100, 50 epochs, L2 1e-6);
  the code's default ``softmax`` attack is the same net without the hidden layer.
* ``nn_loss`` / ``nn_prediction``: the loss-based and prediction-based NN attacks of the
  Embedding Attack Project (arXiv 2401.13854): one model for all classes on
  the per-view loss, or on the per-view sorted top-k softmax vector plus the true-label
  probability (sorting makes the features class-agnostic, as in ML-Leaks, Salem et al.
  NDSS 2019). The report does not fix the attack net; we use one hidden layer of 64 ReLU
  units with early stopping on a 10% validation split.

Shared choices (all fixed-seed, so scores are deterministic):

* balance (default): every example contributes the same number of IN pairs (the smallest
  IN count over the examples, taking the first IN references in order) and of OUT pairs,
  as LiRA's reference code does. A leave-one-out target of a balanced keep matrix leaves
  its own members one IN reference fewer; an attack model that recognizes examples
  (embeddings do identify them) would otherwise learn that as an anti-signal. When some
  example has no IN or no OUT reference, balancing is impossible and every pair is used.
* at most ``max_pairs`` training pairs per attack model (a seeded random subset);
  features are standardized on the training pairs.
* the score is the attack model's member log-odds, ``log p / (1 - p)`` computed from its
  last pre-activation: it orders examples exactly as the member probability ``p`` does
  (same ROC) but does not round confident members to ties at ``p = 1.0``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from mia_bench import signals
from mia_bench.attacks.base import Attack, AttackInputs

SHOKRI_2017 = (
    "Shokri, Stronati, Song, Shmatikov. Membership Inference Attacks Against Machine "
    "Learning Models. IEEE S&P 2017"
)
EMBEDDING_ATTACK_PROJECT = (
    "Embedding Attack Project (Work Report). arXiv:2401.13854, 2024 (loss-, prediction- and "
    "embedding-based NN attacks)"
)
NN_MLP: Mapping[str, Any] = MappingProxyType(
    {"hidden_layer_sizes": (64,), "activation": "relu", "early_stopping": True, "max_iter": 200}
)
SHOKRI_MLP: Mapping[str, Any] = MappingProxyType(
    {
        "hidden_layer_sizes": (50,),
        "activation": "tanh",
        "alpha": 1e-6,
        "batch_size": 100,
        "learning_rate_init": 0.01,
        "max_iter": 50,
    }
)
MAX_PAIRS = 20_000
CHUNK = 4096  # rows per block when transforming large feature matrices
_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda h: h,
    "logistic": lambda h: 1.0 / (1.0 + np.exp(-h)),
    "tanh": np.tanh,
    "relu": lambda h: np.maximum(h, 0.0),
}

Features = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class MemberModel:
    """A fitted attack model: optional ``reducer`` (any ``transform``), scaler, binary MLP."""

    scaler: StandardScaler
    mlp: MLPClassifier
    reducer: Any = None

    def logit(self, x: np.ndarray) -> np.ndarray:
        """Member log-odds ``float64[M]`` of features ``x [M, F]``, in blocks of CHUNK rows."""
        blocks = [self._logit(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)]
        return np.concatenate(blocks) if blocks else np.zeros(0)

    def _logit(self, x: np.ndarray) -> np.ndarray:
        h = self.scaler.transform(transform(self.reducer, x))  # [M, F']
        act = _ACTIVATIONS[self.mlp.activation]
        for w, b in zip(self.mlp.coefs_[:-1], self.mlp.intercepts_[:-1], strict=True):
            h = act(h @ w + b)
        return (h @ self.mlp.coefs_[-1] + self.mlp.intercepts_[-1])[:, 0]  # logit of classes_[1]


def transform(reducer: Any, x: np.ndarray) -> np.ndarray:
    """``reducer.transform(x)`` as float64, or ``x`` itself when ``reducer`` is None."""
    x = np.asarray(x, dtype=np.float64)
    return x if reducer is None else np.asarray(reducer.transform(x), dtype=np.float64)


def reference_pairs(
    ref_keep: np.ndarray, balance: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training pairs ``(reference r, example n, label ref_keep[r, n])``.

    Args:
        ref_keep: ``bool[R, N]``.
        balance: use, for every example, its first ``k_in`` IN and first ``k_out`` OUT
            references, ``k`` the smallest count over the examples; all pairs when a
            count is 0 (see the module docstring).

    Returns:
        ``(r int[P], n int[P], y bool[P])``, ordered by r then n.

    >>> keep = np.array([[True, True], [True, False], [False, False]])
    >>> r, n, y = reference_pairs(keep)  # k_in = 1 (example 1), k_out = 1 (example 0)
    >>> r.tolist(), n.tolist(), y.tolist()
    ([0, 0, 1, 2], [0, 1, 1, 0], [True, True, False, False])
    """
    keep = np.asarray(ref_keep, dtype=bool)
    use = np.ones_like(keep)
    if balance and keep.size:
        k_in, k_out = keep.sum(axis=0).min(), (~keep).sum(axis=0).min()
        if k_in > 0 and k_out > 0:
            use = (keep & (np.cumsum(keep, axis=0) <= k_in)) | (
                ~keep & (np.cumsum(~keep, axis=0) <= k_out)
            )  # [R, N]
    r, n = np.nonzero(use)
    return r, n, keep[r, n]


def subsample(count: int, cap: int | None, seed: int) -> np.ndarray:
    """A seeded random order of ``range(count)``, cut to at most ``cap`` indices.

    >>> subsample(5, 3, seed=0).shape, sorted(subsample(4, None, seed=0).tolist())
    ((3,), [0, 1, 2, 3])
    """
    order = np.random.default_rng(seed).permutation(count)
    return order if cap is None else order[:cap]


def fit_member_model(
    x: np.ndarray, y: np.ndarray, mlp: Mapping[str, Any], seed: int, reducer: Any = None
) -> MemberModel:
    """Standardize ``x [P, F]`` and fit a binary MLP to ``y bool[P]``.

    Args:
        x: training features, already reduced when a ``reducer`` is given.
        y: member labels.
        mlp: ``MLPClassifier`` keyword arguments.
        seed: the MLP's ``random_state``.
        reducer: fitted transform that :meth:`MemberModel.logit` applies to new features.

    Raises:
        ValueError: if ``y`` holds only one label.
    """
    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        raise ValueError(
            f"NN attacks need member and non-member reference pairs, got {y.sum()} members "
            f"out of {y.size}: give references whose keep rows mix IN and OUT examples"
        )
    h = np.asarray(x, dtype=np.float64)
    scaler = StandardScaler().fit(h)
    kwargs = dict(mlp)
    if isinstance(kwargs.get("batch_size"), int) and kwargs["batch_size"] > len(y):
        kwargs["batch_size"] = len(y)  # as the authors' code does for small classes
    net = MLPClassifier(random_state=seed, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        net.fit(scaler.transform(h), y)
    return MemberModel(scaler, net, reducer)


def loss_features(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy of every view: ``[M, A, C]`` logits, ``int[M]`` labels -> ``[M, A]``.

    >>> loss_features(np.log([[[1.0, 3.0], [3.0, 1.0]]]), np.array([1])).round(4).tolist()
    [[0.2877, 1.3863]]
    """
    return signals.loss(logits, np.asarray(labels)[:, None])


def prediction_features(logits: np.ndarray, labels: np.ndarray, top_k: int = 10) -> np.ndarray:
    """Per view, the top-k softmax probabilities (descending) and ``p_y``.

    Args:
        logits: ``[M, A, C]``.
        labels: ``int[M]``.
        top_k: how many sorted probabilities per view (all C when C < top_k).

    Returns:
        ``[M, A * (min(top_k, C) + 1)]``, view by view.

    >>> prediction_features(np.log([[[1.0, 3.0]]]), np.array([0])).round(2).tolist()
    [[0.75, 0.25, 0.25]]
    """
    p = signals.softmax(logits)  # [M, A, C]
    top = -np.sort(-p, axis=-1)[..., :top_k]  # [M, A, k]
    p_y = signals.confidence(logits, np.asarray(labels)[:, None])[..., None]  # [M, A, 1]
    return np.concatenate([top, p_y], axis=-1).reshape(len(p), -1)


def nn_attack(
    inputs: AttackInputs,
    features: Features = loss_features,
    *,
    mlp: Mapping[str, Any] = NN_MLP,
    max_pairs: int | None = MAX_PAIRS,
    balance: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """One attack model for all classes on ``features`` of the logits (the NN MIAs of the
    Embedding Attack Project).

    Args:
        inputs: target logits ``[N, A, C]``, labels, ``ref_logits [R, N, A, C]``, ``ref_keep``.
        features: ``(logits [M, A, C], labels int[M]) -> [M, F]``, e.g.
            :func:`loss_features` or :func:`prediction_features`.
        mlp: ``MLPClassifier`` keyword arguments.
        max_pairs: cap on the training pairs (seeded subset); None for all.
        balance: balance IN / OUT pairs per example (module docstring).
        seed: seeds the subset and the MLP.

    Returns:
        ``float64[N]`` member log-odds; higher = member.

    Raises:
        ValueError: without references, or if their pairs hold one label only.
    """
    ref_logits, ref_keep = _references(inputs)
    r, n, y = reference_pairs(ref_keep, balance)
    pick = subsample(len(y), max_pairs, seed)
    r, n, y = r[pick], n[pick], y[pick]
    model = fit_member_model(features(ref_logits[r, n], inputs.labels[n]), y, mlp, seed)
    return model.logit(features(inputs.logits, inputs.labels))


def shokri_nn(
    inputs: AttackInputs,
    *,
    mlp: Mapping[str, Any] = SHOKRI_MLP,
    max_pairs: int | None = MAX_PAIRS,
    min_pairs_per_label: int = 10,
    per_class: bool = True,
    balance: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """Shokri et al. (S&P 2017): per-class attack models on the plain view's prediction vector.

    Class c's model is trained on the pairs of the references' examples of class c and
    scores the target's examples of class c. Fallback: a class with fewer than
    ``min_pairs_per_label`` member or non-member pairs (few examples, or a single
    membership label among them) is scored by one pooled model trained on the pairs of
    all classes. ``per_class=False`` scores every class with the pooled model.

    Args:
        inputs: target logits ``[N, A, C]`` (view 0 is read), labels, references.
        mlp: ``MLPClassifier`` keyword arguments (default: the authors' ``nn`` attack).
        max_pairs: cap on the training pairs of each attack model; None for all.
        min_pairs_per_label: per-class model only with at least this many pairs of each label.
        per_class: False for a single pooled model.
        balance: balance IN / OUT pairs per example (module docstring).
        seed: seeds the subsets and the MLPs.

    Returns:
        ``float64[N]`` member log-odds of each example's model; higher = member.
    """
    ref_logits, ref_keep = _references(inputs)
    r, n, y = reference_pairs(ref_keep, balance)
    target = signals.softmax(inputs.logits[:, 0])  # [N, C]
    labels = inputs.labels
    scores = np.zeros(inputs.num_examples)

    def fit(pairs: np.ndarray) -> MemberModel:
        pick = pairs[subsample(len(pairs), max_pairs, seed)]
        x = signals.softmax(ref_logits[r[pick], n[pick], 0])  # [P, C]
        return fit_member_model(x, y[pick], mlp, seed)

    pooled_classes = []
    for c in np.unique(labels) if per_class else []:
        pairs = np.flatnonzero(labels[n] == c)
        members = np.count_nonzero(y[pairs])
        if min(members, len(pairs) - members) < min_pairs_per_label:
            pooled_classes.append(c)
            continue
        rows = labels == c
        scores[rows] = fit(pairs).logit(target[rows])
    pooled = np.isin(labels, pooled_classes) if per_class else np.ones(len(labels), bool)
    if pooled.any():
        scores[pooled] = fit(np.arange(len(y))).logit(target[pooled])
    return scores


def _references(inputs: AttackInputs) -> tuple[np.ndarray, np.ndarray]:
    """``(ref_logits [R, N, A, C], ref_keep bool[R, N])``, or a ValueError without them."""
    if inputs.ref_logits is None or inputs.ref_keep is None:
        raise ValueError(
            "NN attacks train on reference models: build AttackInputs with ref_logits "
            "[R, N, A, C] and ref_keep bool[R, N]"
        )
    return inputs.ref_logits, inputs.ref_keep


ATTACKS: tuple[Attack, ...] = (
    Attack("shokri_nn", shokri_nn, needs_references=True, paper=SHOKRI_2017, needs_ref_logits=True),
    Attack(
        "nn_loss",
        partial(nn_attack, features=loss_features),
        needs_references=True,
        paper=EMBEDDING_ATTACK_PROJECT,
        needs_ref_logits=True,
    ),
    Attack(
        "nn_prediction",
        partial(nn_attack, features=prediction_features),
        needs_references=True,
        paper=EMBEDDING_ATTACK_PROJECT,
        needs_ref_logits=True,
    ),
)
