"""What auditing a run as it trains costs, in forward passes, next to training itself.

At every recorded epoch the SignalRecorder queries the model on the whole pool under each
query view: ``N x A`` forward passes. Training takes about three forward passes' worth of
compute per training example and epoch (the forward and a backward of about twice its
cost), so a run of ``E`` epochs on ``M`` members trains with ``3 x M x E``. ``mia-bench
fit`` states the ratio at start-up and warns above :data:`WARN_ABOVE`; ``mia-bench fleet
--dry-run`` shows it too.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from mia_bench.callbacks.signal_recorder import records_epoch

TRAINING_FORWARDS = 3  # forward + backward of one training example, in forward passes
WARN_ABOVE = 0.10  # audit forward passes as a fraction of training's


def recorded_epochs(max_epochs: int, every_n_epochs: int) -> list[int]:
    """The epochs a run of ``max_epochs`` records signals at (without early stopping).

    Every ``every_n_epochs``-th epoch and always the last, as the SignalRecorder does.

    >>> recorded_epochs(100, 5)[:3], len(recorded_epochs(100, 5)), recorded_epochs(7, 3)
    ([4, 9, 14], 20, [2, 5, 6])
    """
    return [e for e in range(max_epochs) if records_epoch(e, every_n_epochs, max_epochs)]


@dataclass(frozen=True)
class AuditCost:
    """The recorder's forward passes against training's, for one run.

    Args:
        pool_size: N, examples scored at each recorded epoch.
        num_views: A, query views per example.
        num_recorded: recorded epochs.
        num_members: training examples per epoch (the run's members).
        max_epochs: training epochs.
        every_n_epochs: the recording interval (``--signals.every_n_epochs``), for advice.

    >>> cost = AuditCost(60_000, 2, 20, 30_000, 100, 5)  # ResNet-18 on CIFAR-10, defaults
    >>> round(cost.fraction, 3), cost.too_costly
    (0.267, True)
    """

    pool_size: int
    num_views: int
    num_recorded: int
    num_members: int
    max_epochs: int
    every_n_epochs: int = 1

    @property
    def audit_forwards(self) -> int:
        """``N x A x recorded epochs``."""
        return self.pool_size * self.num_views * self.num_recorded

    @property
    def training_forwards(self) -> int:
        """``3 x members x epochs`` forward-pass equivalents."""
        return TRAINING_FORWARDS * self.num_members * self.max_epochs

    @property
    def fraction(self) -> float:
        """Audit forward passes over training's."""
        return self.audit_forwards / max(1, self.training_forwards)

    @property
    def too_costly(self) -> bool:
        """Above :data:`WARN_ABOVE`."""
        return self.fraction > WARN_ABOVE

    def describe(self) -> str:
        """One line: the passes, the fraction and what training takes.

        >>> print(AuditCost(1797, 1, 20, 898, 20).describe())  # doctest: +ELLIPSIS
        auditing costs 1,797 pool examples x 1 view x 20 recorded epochs = 35,940 ...
        """
        views = "view" if self.num_views == 1 else "views"
        return (
            f"auditing costs {self.pool_size:,} pool examples x {self.num_views} {views} x "
            f"{self.num_recorded} recorded epochs = {self.audit_forwards:,} forward passes, "
            f"{self.fraction:.0%} of training's {self.training_forwards:,} "
            f"({TRAINING_FORWARDS} per member per epoch: forward + backward)"
        )


def run_audit_cost(
    pool_size: int, num_members: int, num_views: int, every_n_epochs: int, max_epochs: int
) -> AuditCost:
    """The cost of a run recording every ``every_n_epochs``-th of ``max_epochs`` epochs.

    >>> run_audit_cost(1797, 898, 1, 1, 20).num_recorded
    20
    """
    recorded = len(recorded_epochs(max_epochs, every_n_epochs))
    return AuditCost(pool_size, num_views, recorded, num_members, max_epochs, every_n_epochs)


def cost_summary(cost: AuditCost) -> str:
    """:meth:`AuditCost.describe`, and above :data:`WARN_ABOVE` the knobs that lower it.

    >>> cost_summary(AuditCost(100, 2, 10, 50, 10, 1)).endswith("(--signals.views, now 2)")
    True
    """
    if not cost.too_costly:
        return cost.describe()
    return (
        f"{cost.describe()}; above {WARN_ABOVE:.0%}: record less often "
        f"(--signals.every_n_epochs, now {cost.every_n_epochs}) or with fewer query views "
        f"(--signals.views, now {cost.num_views})"
    )


def report_audit_cost(cost: AuditCost) -> None:
    """Log the cost at fit start-up; warn, naming the knobs, when it is too high."""
    (rank_zero_warn if cost.too_costly else rank_zero_info)(cost_summary(cost))
