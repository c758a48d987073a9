"""Label-only attacks (Choquette-Choo, Tramèr, Carlini, Papernot, ICML 2021).

For targets that expose only their predicted label. The data-augmentation attack queries
the target on augmented copies of an example (the query views: plain, mirror, shifts)
and counts how many it labels correctly: a model is more robust to augmentation on the
examples it trained on. The paper thresholds this count (or trains an attack model on
the correctness vector); the score here is the fraction of views labelled correctly,
which the metrics threshold. With the plain view alone it is the gap attack (Yeom et al.
2018), mia-bench's ``correctness``. Only the argmax of each view's logits is read.
"""

from __future__ import annotations

import numpy as np

from mia_bench.attacks.base import Attack, AttackInputs

CHOQUETTE_CHOO_2021 = (
    "Choquette-Choo, Tramèr, Carlini, Papernot. Label-Only Membership Inference Attacks. ICML 2021"
)


def augmentation_correctness(inputs: AttackInputs) -> np.ndarray:
    """Fraction of query views whose predicted label is the true label; higher = member.

    Args:
        inputs: the target's ``logits [N, A, C]`` over A query views and ``labels [N]``.

    Returns:
        ``float64[N]`` in ``{0, 1/A, ..., 1}``.

    >>> logits = np.array([[[2., 1.], [2., 1.], [1., 2.]],    # right on 2 of 3 views
    ...                    [[1., 2.], [1., 2.], [1., 2.]]])   # wrong on all 3
    >>> augmentation_correctness(AttackInputs(logits, np.array([0, 0]))).tolist()
    [0.6666666666666666, 0.0]
    """
    predicted = inputs.logits.argmax(axis=2)  # [N, A]
    return (predicted == inputs.labels[:, None]).mean(axis=1)


ATTACKS: tuple[Attack, ...] = (
    Attack(
        "label_only_augmentation",
        augmentation_correctness,
        needs_references=False,
        paper=CHOQUETTE_CHOO_2021,
    ),
)
