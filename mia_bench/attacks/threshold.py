"""Reference-free threshold attacks: one statistic of the target's plain-view prediction.

Each attack scores example n by a signal of ``logits[n, 0]`` (view 0 = plain), signed so
that a higher score means "more likely a member". Thresholding the score is the attack;
the metrics sweep every threshold. Song & Mittal (USENIX Security 2021) compare all five.
"""

from __future__ import annotations

import numpy as np

from mia_bench import signals
from mia_bench.attacks.base import Attack, AttackInputs

YEOM_2018 = (
    "Yeom, Giacomelli, Fredrikson, Jha. Privacy Risk in Machine Learning: Analyzing the "
    "Connection to Overfitting. IEEE CSF 2018"
)
SONG_MITTAL_2021 = (
    "Song, Mittal. Systematic Evaluation of Privacy Risks of Machine Learning Models. "
    "USENIX Security 2021"
)
SALEM_2019 = (
    "Salem, Zhang, Humbert, Berrang, Fritz, Backes. ML-Leaks: Model and Data Independent "
    "Membership Inference Attacks and Defenses on Machine Learning Models. NDSS 2019"
)
LEINO_2020 = (
    "Leino, Fredrikson. Stolen Memories: Leveraging Model Memorization for Calibrated "
    "White-Box Membership Inference. USENIX Security 2020"
)


def _plain(inputs: AttackInputs) -> tuple[np.ndarray, np.ndarray]:
    """The plain view's logits ``[N, C]`` and the labels ``[N]``."""
    return inputs.logits[:, 0, :], inputs.labels


def loss_attack(inputs: AttackInputs) -> np.ndarray:
    """Minus the cross-entropy loss: members have lower loss (Yeom et al., CSF 2018).

    Args:
        inputs: the target's signals; only view 0 of ``logits`` and ``labels`` are read.

    Returns:
        ``float64[N]``, ``log p_y``; higher = member.

    >>> x = AttackInputs(np.log([[[1.0, 3.0]], [[3.0, 1.0]]]), np.array([1, 1]))
    >>> loss_attack(x).round(4).tolist()  # log(3/4), log(1/4)
    [-0.2877, -1.3863]
    """
    return -signals.loss(*_plain(inputs), logp=inputs.plain_log_probs())


def confidence_attack(inputs: AttackInputs) -> np.ndarray:
    """Probability of the true label, ``p_y`` (Song & Mittal 2021; Salem et al. 2019).

    Returns:
        ``float64[N]`` in [0, 1]; higher = member.

    >>> x = AttackInputs(np.log([[[1.0, 3.0]], [[3.0, 1.0]]]), np.array([1, 1]))
    >>> confidence_attack(x).round(4).tolist()
    [0.75, 0.25]
    """
    return signals.confidence(*_plain(inputs), logp=inputs.plain_log_probs())


def entropy_attack(inputs: AttackInputs) -> np.ndarray:
    """Minus the prediction entropy: members get sharper predictions.

    Label-free (Salem et al., NDSS 2019; Song & Mittal, USENIX Security 2021).

    Returns:
        ``float64[N]`` in ``[-log C, 0]``; higher = member.

    >>> x = AttackInputs(np.log([[[1.0, 1.0]], [[1.0, 3.0]]]), np.array([0, 0]))
    >>> entropy_attack(x).round(4).tolist()  # -log 2, -(.25 log 4 + .75 log 4/3)
    [-0.6931, -0.5623]
    """
    return -signals.entropy(_plain(inputs)[0], logp=inputs.plain_log_probs())


def modified_entropy_attack(inputs: AttackInputs) -> np.ndarray:
    """Minus the modified entropy of Song & Mittal (USENIX Security 2021).

    Unlike the entropy, it is low only when the model is confidently *right*.

    Returns:
        ``float64[N]``, <= 0; higher = member.

    >>> x = AttackInputs(np.log([[[1.0, 3.0]], [[1.0, 3.0]]]), np.array([1, 0]))
    >>> # y = 1: -(2 * .25 log(4/3)); y = 0: -(.75 log 4 + .75 log 4)
    >>> modified_entropy_attack(x).round(4).tolist()
    [-0.1438, -2.0794]
    """
    return -signals.modified_entropy(*_plain(inputs), logp=inputs.plain_log_probs())


def correctness_attack(inputs: AttackInputs) -> np.ndarray:
    """1 where the top class is the label, else 0 (Yeom et al. 2018; Leino & Fredrikson 2020).

    Returns:
        ``float64[N]`` of 0.0 / 1.0; higher = member.

    >>> x = AttackInputs(np.log([[[1.0, 3.0]], [[1.0, 3.0]]]), np.array([1, 0]))
    >>> correctness_attack(x).tolist()
    [1.0, 0.0]
    """
    return signals.correct(*_plain(inputs))


ATTACKS: tuple[Attack, ...] = (
    Attack("loss", loss_attack, needs_references=False, paper=YEOM_2018),
    Attack("confidence", confidence_attack, needs_references=False, paper=SONG_MITTAL_2021),
    Attack("entropy", entropy_attack, needs_references=False, paper=SALEM_2019),
    Attack(
        "modified_entropy", modified_entropy_attack, needs_references=False, paper=SONG_MITTAL_2021
    ),
    Attack(
        "correctness",
        correctness_attack,
        needs_references=False,
        paper=f"{YEOM_2018}; {LEINO_2020}",
    ),
)
