"""Difficulty-calibrated loss attacks: the target's loss against its references' losses.

All three read the cross-entropy loss of the plain view (view 0) of the target and of every
reference on the same example, and score higher = member:

* ``attack_r`` (Ye et al., CCS 2022): a per-example p-value of the target's loss among the
  OUT references' losses, interpolated linearly;
* ``watson_calibrated`` (Watson et al., ICLR 2022): ``mean OUT-reference loss - loss``;
* ``calibrated_loss`` (Sablayrolles et al., ICML 2019): ``tau_x - loss``, ``tau_x`` the
  per-example threshold midway between the IN and the OUT references' mean losses.
"""

from __future__ import annotations

import numpy as np

from mia_bench.attacks.base import Attack, AttackInputs
from mia_bench.attacks.lira import split_references

YE_2022 = (
    "Ye, Maddi, Murakonda, Bindschaedler, Shokri. Enhanced Membership Inference Attacks "
    "against Machine Learning Models. ACM CCS 2022"
)
WATSON_2022 = (
    "Watson, Guo, Cormode, Sablayrolles. On the Importance of Difficulty Calibration in "
    "Membership Inference Attacks. ICLR 2022"
)
SABLAYROLLES_2019 = (
    "Sablayrolles, Douze, Schmid, Ollivier, Jegou. White-box vs Black-box: Bayes Optimal "
    "Strategies for Membership Inference. ICML 2019"
)
LOSS = "log_p"  # the statistic the loss attacks read (mia_bench.statistics): minus the loss
LOSS_MAX = 1000.0  # privacy meter's upper anchor (signal_max) of the interpolated quantiles


def attack_r(inputs: AttackInputs, *, balance: bool = True) -> np.ndarray:
    """Attack R of Ye et al. (CCS 2022): interpolated p-value among OUT references' losses.

    The paper declares x a member when its loss is at most the alpha-quantile of the
    reference models' losses on x, the quantile interpolated linearly between order
    statistics. Privacy meter (``linear_itp_threshold_func``; ``generate_reference_or_
    distill_linear`` in ``research/2022_enhanced_mia``) appends the anchors 0 and
    ``LOSS_MAX`` = 1000 to the losses and inverts ``np.quantile(..., 'linear')`` with
    ``np.interp(loss, sorted, linspace(0, 1, k + 2))``: that is ``alpha*``, the smallest
    budget at which x is declared a member. The score is ``1 - alpha*``: about the fraction
    of OUT references' losses at least the target's, smoothed, and in (0, 1) between the
    anchors. References are OUT only (the paper trains them on population data).

    ``balance`` uses as many OUT references for every example (see
    :func:`~mia_bench.attacks.lira.split_references`), so the p-value's resolution does not
    depend on a leave-one-out target's own membership. With no OUT reference only the
    anchors remain and the score is ``1 - loss / 1000``, the uncalibrated LOSS attack.

    Returns:
        ``float64[N]`` in [0, 1], higher = member.

    >>> t = np.log([[[1.0, 1.0]]])  # loss log 2 = 0.693
    >>> refs = np.log([[[[1.0, 3.0]]], [[[3.0, 1.0]]]])  # OUT losses log 4, log 4/3
    >>> x = AttackInputs(t, np.array([0]), ref_logits=refs, ref_keep=np.zeros((2, 1), bool))
    >>> # grid [0, .288, 1.386, 1000] at [0, 1/3, 2/3, 1]: log 2 sits 37% of the way from
    >>> # .288 to 1.386, alpha* = (1 + .369) / 3 = .456
    >>> attack_r(x).round(3).tolist()
    [0.544]
    """
    loss, ref_loss = plain_losses(inputs)
    _, out = split_references(inputs.ref_keep, balance)
    return 1.0 - interpolated_cdf(loss, ref_loss, out)


def watson_calibrated(inputs: AttackInputs) -> np.ndarray:
    """Offline difficulty calibration of the loss (Watson et al., ICLR 2022).

    ``score = -(loss - mean_{OUT r} loss_r)``: the calibrated score
    ``s(h, x) - E_g[s(g, x)]`` of the paper with ``s = -loss`` and g the references not
    trained on x. The authors' code (facebookresearch/calibration_membership,
    ``get_calibrated_losses``) thresholds ``loss_target - loss_aux`` (lower = member),
    summed over auxiliary models trained on public data (the same as our mean when every
    example has equally many), and averages it over 10 random augmentations for models
    trained with augmentation; we read the plain view only. An example with no OUT
    reference is calibrated by the mean OUT loss over all examples (0 without any).

    >>> t = np.log([[[1.0, 1.0]], [[1.0, 1.0]]])  # both losses log 2
    >>> refs = np.log([[[[1.0, 3.0]], [[3.0, 1.0]]]])  # OUT losses log 4, log 4/3
    >>> x = AttackInputs(t, np.array([0, 0]), ref_logits=refs, ref_keep=np.zeros((1, 2), bool))
    >>> watson_calibrated(x).round(4).tolist()  # log 4 - log 2, log 4/3 - log 2
    [0.6931, -0.4055]
    """
    loss, ref_loss = plain_losses(inputs)
    return side_mean(ref_loss, ~inputs.ref_keep) - loss


def calibrated_loss(inputs: AttackInputs) -> np.ndarray:
    """Loss minus a per-example threshold (Sablayrolles et al., ICML 2019, "MAST").

    The Bayes-optimal black-box strategy thresholds ``loss(theta, x) < tau(x)`` with a
    sample-dependent ``tau``, estimated from shadow models trained with and without x. We
    take ``tau_x = (mean IN-ref loss + mean OUT-ref loss) / 2``: the mean over references
    half of which saw x, and the midpoint between the two classes' means. It equals the
    plain mean over all references when x has as many IN as OUT references, and does not
    drift when a leave-one-out target removes one IN reference from its own members.
    Score ``tau_x - loss``. A side with no reference for x uses that side's mean over all
    examples; a side with no reference at all is left out (no references: ``-loss``).

    >>> t = np.log([[[1.0, 1.0]]])  # loss log 2
    >>> refs = np.log([[[[3.0, 1.0]]], [[[1.0, 3.0]]]])  # IN loss log 4/3, OUT loss log 4
    >>> keep = np.array([[True], [False]])
    >>> x = AttackInputs(t, np.array([0]), ref_logits=refs, ref_keep=keep)
    >>> calibrated_loss(x).round(4).tolist()  # (log 4/3 + log 4) / 2 - log 2 = log(2/sqrt 3)
    [0.1438]
    """
    loss, ref_loss = plain_losses(inputs)
    sides = [side_mean(ref_loss, m) for m in (inputs.ref_keep, ~inputs.ref_keep) if m.any()]
    tau = np.mean(sides, axis=0) if sides else np.zeros_like(loss)  # [N]
    return tau - loss


def interpolated_cdf(
    x: np.ndarray, values: np.ndarray, mask: np.ndarray, high: float = LOSS_MAX
) -> np.ndarray:
    """Per column n, ``np.interp(x[n], sorted([0, *values[mask[:, n], n], high]), grid)``.

    ``grid = linspace(0, 1, k_n + 2)`` for the ``k_n`` values of column n.

    Args:
        x: ``float[N]``; values: ``float[R, N]``; mask: ``bool[R, N]``.

    Returns:
        ``float64[N]`` in [0, 1].

    >>> interpolated_cdf(np.array([5.0, 1500.0]), np.array([[10.0, 10.0]]), np.ones((1, 2), bool))
    array([0.25, 1.  ])
    """
    n = x.shape[0]
    points = np.concatenate(
        [np.zeros((1, n)), np.where(mask, values, np.inf), np.full((1, n), high)]
    )
    points = np.sort(points, axis=0)  # [R + 2, N], unused entries (inf) last
    last = mask.sum(axis=0) + 1  # [N], index of the last used point
    above = (points < x).sum(axis=0)  # [N], used points strictly below x
    lo, hi = (
        np.take_along_axis(points, np.clip(i, 0, len(points) - 1)[None], axis=0)[0]
        for i in (above - 1, above)
    )
    gap = np.where(hi > lo, hi - lo, 1.0)
    inside = (above - 1 + np.where(above > 0, (x - lo) / gap, 0.0)) / last
    return np.where(above == 0, 0.0, np.where(above > last, 1.0, inside))


def side_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over axis 0 of the entries in ``mask``, ``[R, N] -> [N]``.

    A column without entries gets the mean of all masked entries (0 when there are none).

    >>> side_mean(np.array([[1.0, 5.0], [3.0, 7.0]]), np.array([[True, False], [True, False]]))
    array([2., 2.])
    """
    count = mask.sum(axis=0)  # [N]
    total = np.where(mask, values, 0.0).sum(axis=0)  # [N]
    pooled = total.sum() / count.sum() if count.sum() else 0.0
    return np.where(count > 0, total / np.maximum(count, 1), pooled)


def plain_losses(inputs: AttackInputs) -> tuple[np.ndarray, np.ndarray]:
    """Plain-view losses ``-log p_y`` of the target ``[N]`` and of the references ``[R, N]``,
    from the statistic ``log_p`` (recorded, or derived from the logits)."""
    return -inputs.target_stat(LOSS)[:, 0], -inputs.reference_stats(LOSS).view(LOSS, 0)


ATTACKS: tuple[Attack, ...] = (
    Attack("attack_r", attack_r, needs_references=True, paper=YE_2022, statistics=(LOSS,)),
    Attack(
        "watson_calibrated",
        watson_calibrated,
        needs_references=True,
        paper=WATSON_2022,
        statistics=(LOSS,),
    ),
    Attack(
        "calibrated_loss",
        calibrated_loss,
        needs_references=True,
        paper=SABLAYROLLES_2019,
        statistics=(LOSS,),
    ),
)
