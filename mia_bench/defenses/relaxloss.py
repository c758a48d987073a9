"""RelaxLoss: hold the members' loss at a target level instead of driving it to zero.

Chen, Yu, Fritz, "RelaxLoss: Defending Membership Inference Attacks without Losing
Utility", ICLR 2022 (arXiv:2207.05801); code: github.com/DingfanChen/RelaxLoss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mia_bench.classifier import Classifier, Defense


def flattened_targets(logits: torch.Tensor, y: torch.Tensor, upper: float = 1.0) -> torch.Tensor:
    """RelaxLoss' soft labels: keep the true-class score, spread the rest uniformly.

    For an example the model classifies correctly, ``t_y = min(p_y, upper)`` and
    ``t_c = (1 - t_y) / (C - 1)`` for every other class ``c`` (``p = softmax(logits)``,
    no gradient through ``t``). A misclassified example keeps its one-hot label, so it
    gets the normal gradient.

    Args:
        logits: ``[B, C]``.
        y: ``[B]`` labels.
        upper: clamp on the kept true-class score (the authors' code; 1 = none).

    Returns:
        ``[B, C]`` targets, each row summing to 1.

    >>> logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]]))
    >>> flattened_targets(logits, torch.tensor([0, 0]))
    tensor([[0.7000, 0.1500, 0.1500],
            [1.0000, 0.0000, 0.0000]])
    """
    with torch.no_grad():
        num_classes = logits.shape[1]
        probs = logits.float().softmax(dim=1)  # [B, C]
        p_true = probs.gather(1, y[:, None]).squeeze(1).clamp(max=upper)  # [B]
        onehot = F.one_hot(y, num_classes).to(probs.dtype)  # [B, C]
        rest = ((1 - p_true) / (num_classes - 1))[:, None]  # [B, 1]
        flat = onehot * p_true[:, None] + (1 - onehot) * rest  # [B, C]
        correct = (probs.argmax(dim=1) == y)[:, None]  # [B, 1]
        return torch.where(correct, flat, onehot)


class RelaxLoss(Defense):
    """RelaxLoss training (Algorithm 1 of Chen et al. 2022).

    With ``L`` the batch's mean cross-entropy and ``epoch`` Lightning's 0-based epoch:

    * ``L >= alpha``: gradient descent on ``L``;
    * ``L < alpha`` and ``epoch`` even: gradient ascent (the loss returned is ``-L``);
    * ``L < alpha`` and ``epoch`` odd: posterior flattening, descent on the soft
      cross-entropy ``mean_i -sum_c t_ic log p_ic`` with ``t`` from
      :func:`flattened_targets` (correctly classified examples keep ``p_y`` and spread
      ``1 - p_y`` over the other classes; misclassified ones keep the one-hot label).

    The even/odd split follows the authors' code (``epoch % 2 == 0`` with 0-based
    epochs does the ascent, where their code writes it as ``|L - alpha|``, whose
    gradient is that of ``L`` above ``alpha`` and of ``-L`` below). ``upper`` (clamp of
    ``p_y`` in the soft labels) is from the code too; their configs use 1 (no clamp)
    for CIFAR, 0.3 for Purchase, 0.1 for Texas. The code has two variants of the
    flattening step: the Purchase/Texas one flattens every example, the CIFAR one
    uses ``(1 - correct) * soft_ce - ce``; this class follows the paper (soft labels
    for correctly classified examples, normal gradient for the others).

    Args:
        alpha: the target mean training loss; the authors use 1 (CIFAR-10),
            3 (CIFAR-100), 0.8 (Purchase), 2.5 (Texas).
        upper: clamp on the true-class score kept in the soft labels.
    """

    def __init__(self, alpha: float = 1.0, upper: float = 1.0) -> None:
        if alpha <= 0:
            raise ValueError(f"alpha is a target loss level and must be > 0, got {alpha}")
        if not 0 < upper <= 1:
            raise ValueError(f"upper must be in (0, 1], got {upper}")
        self.alpha = alpha
        self.upper = upper

    def training_loss(
        self, module: Classifier, logits: torch.Tensor, y: torch.Tensor, index: torch.Tensor
    ) -> torch.Tensor:
        return self.relaxed_loss(logits, y, module.current_epoch)

    def relaxed_loss(self, logits: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        """The loss whose gradient descent step is Algorithm 1's step for this batch."""
        loss = F.cross_entropy(logits, y)
        if loss >= self.alpha:
            return loss  # gradient descent
        if epoch % 2 == 0:
            return -loss  # gradient ascent
        targets = flattened_targets(logits, y, self.upper)  # [B, C], no gradient
        return F.cross_entropy(logits, targets)  # posterior flattening
