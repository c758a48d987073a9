"""Property inference from a target's layer embeddings (Embedding Attack Project, arXiv 2401.13854).

The attacker holds auxiliary data: pool examples outside the target's training set
(its non-members), whose property it knows. For each hooked layer it trains an attack
model on the target's embeddings of that auxiliary data to predict the property, then
predicts the property of the target's *training* examples (its members) from their
embeddings. The property is one the target was not trained for (CelebA's other
attributes, IMDb's star rating), so what the attack model reaches above the majority
baseline is what that layer leaks about it.

The Embedding Attack Project reports that shallower layers leak more facial attributes
on CelebA; one metric per layer puts the depths side by side.

The attack model is a standardized logistic regression (or a one-hidden-layer MLP);
layers wider than ``max_dim`` are first projected on their ``max_dim`` principal
components (of the raw, centered features), fitted on the auxiliary embeddings only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from mia_bench.metrics import auc

MAX_DIM = 256
MAX_AUX = 5000
MODELS = ("logistic", "mlp")


@dataclass(frozen=True)
class PropertyResult:
    """How well one layer's embeddings predict one property on the target's members.

    Attributes:
        acc: accuracy of the attack model on the evaluated examples.
        balanced_acc: mean per-class recall (chance = ``1 / classes``).
        auc: ROC AUC (binary), or the mean one-vs-rest AUC over classes.
        majority_acc: accuracy of always predicting the auxiliary data's commonest value.
        num_aux: auxiliary examples the attack model was trained on.
        num_eval: examples it was evaluated on.
    """

    acc: float
    balanced_acc: float
    auc: float
    majority_acc: float
    num_aux: int
    num_eval: int

    def as_metrics(self) -> dict[str, float]:
        """The numbers as a flat ``{name: value}`` dict."""
        return {k: float(v) for k, v in self.__dict__.items()}


def ovr_auc(probs: np.ndarray, y: np.ndarray, classes: np.ndarray) -> float:
    """Mean one-vs-rest AUC of class probabilities; the plain AUC for two classes.

    Args:
        probs: ``float[N, K]`` predicted probabilities, column k for ``classes[k]``.
        y: ``int[N]`` true values.
        classes: ``int[K]`` the value of each column.

    Classes absent from ``y`` (or covering all of it) are left out of the mean.

    >>> p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> ovr_auc(p, np.array([0, 1, 1]), np.array([0, 1]))
    1.0
    """
    if len(classes) == 2:
        return auc(probs[:, 1], y == classes[1])
    aucs = [auc(probs[:, k], y == c) for k, c in enumerate(classes) if 0 < (y == c).sum() < len(y)]
    return float(np.mean(aucs)) if aucs else float("nan")


def _attack_model(shape: tuple[int, int], max_dim: int, model: str, seed: int) -> Pipeline:
    rows, dim = shape
    steps: list = []
    if dim > max_dim:  # PCA before scaling: standardized units would all have variance 1
        dims = min(max_dim, rows)
        steps.append(PCA(n_components=dims, svd_solver="randomized", random_state=seed))
    steps.append(StandardScaler())
    if model == "logistic":
        steps.append(LogisticRegression(max_iter=2000, C=1.0))
    else:
        steps.append(MLPClassifier((64,), early_stopping=True, max_iter=300, random_state=seed))
    return make_pipeline(*steps)


def infer_property(
    features: np.ndarray,
    prop: np.ndarray,
    aux: np.ndarray,
    evaluate: np.ndarray,
    *,
    max_dim: int = MAX_DIM,
    max_aux: int | None = MAX_AUX,
    model: str = "logistic",
    seed: int = 0,
) -> PropertyResult:
    """Train on the auxiliary examples' features, predict the evaluated examples' property.

    Args:
        features: ``float[N, D]`` one layer's embeddings of the whole pool.
        prop: ``int[N]`` the property of every pool example.
        aux: ``bool[N]`` examples the attacker knows (features and property).
        evaluate: ``bool[N]`` examples whose property is inferred (disjoint from ``aux``).
        max_dim: above this many features, reduce to ``max_dim`` principal components.
        max_aux: cap on auxiliary examples (seeded subset); None for all.
        model: ``"logistic"`` or ``"mlp"``.
        seed: seeds the subset, the PCA and the MLP.

    Raises:
        ValueError: on overlapping masks, an unknown model, or auxiliary data holding
            one property value only.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if np.any(aux & evaluate):
        raise ValueError("aux and evaluate overlap: the attack model must not see what it infers")
    train = np.flatnonzero(aux)
    if max_aux is not None and len(train) > max_aux:
        train = np.sort(np.random.default_rng(seed).choice(train, max_aux, replace=False))
    values, counts = np.unique(prop[train], return_counts=True)
    if len(values) < 2:
        raise ValueError(
            f"the auxiliary data holds one property value only ({values.tolist()}): "
            "the property cannot be learned; pick a property that varies"
        )
    x = np.asarray(features, dtype=np.float64)
    pipeline = _attack_model((len(train), x.shape[1]), max_dim, model, seed)
    fitted = pipeline.fit(x[train], prop[train])
    test = np.flatnonzero(evaluate)
    y = prop[test]
    probs = fitted.predict_proba(x[test])  # [M, K]
    pred = fitted.classes_[probs.argmax(1)]
    recall = [np.mean(pred[y == c] == c) for c in np.unique(y)]
    return PropertyResult(
        acc=float(np.mean(pred == y)),
        balanced_acc=float(np.mean(recall)),
        auc=ovr_auc(probs, y, fitted.classes_),
        majority_acc=float(np.mean(y == values[counts.argmax()])),
        num_aux=len(train),
        num_eval=len(test),
    )


def layer_property_inference(
    embeddings: Mapping[str, np.ndarray],
    properties: Mapping[str, np.ndarray],
    keep: np.ndarray,
    layers: Sequence[str] | None = None,
    **kwargs,
) -> dict[str, dict[str, PropertyResult]]:
    """Property inference at every layer: ``{property: {layer: PropertyResult}}``.

    The auxiliary data are the target's non-members (``~keep``), the evaluated examples
    its members: the attack infers properties of the training set.

    Args:
        embeddings: layer -> ``float[N, D]`` the target's embeddings of the pool.
        properties: property name -> ``int[N]``.
        keep: ``bool[N]`` the target's membership (True = trained on).
        layers: the layers to attack, in depth order; None for every one given.
        **kwargs: passed on to :func:`infer_property`.
    """
    keep = np.asarray(keep, dtype=bool)
    names = list(embeddings if layers is None else layers)
    return {
        prop_name: {
            layer: infer_property(embeddings[layer], np.asarray(prop), ~keep, keep, **kwargs)
            for layer in names
        }
        for prop_name, prop in properties.items()
    }
