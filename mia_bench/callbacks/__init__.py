"""Lightning callbacks: record signals every epoch and attack them as training goes."""

from mia_bench.callbacks.attack_monitor import AttackMonitor
from mia_bench.callbacks.epoch_timer import EpochTimer
from mia_bench.callbacks.property_monitor import PropertyMonitor
from mia_bench.callbacks.run_summary import RunSummary
from mia_bench.callbacks.signal_recorder import SignalRecorder, compute_signals

__all__ = [
    "AttackMonitor",
    "EpochTimer",
    "PropertyMonitor",
    "RunSummary",
    "SignalRecorder",
    "compute_signals",
]
