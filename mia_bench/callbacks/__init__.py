"""Lightning callbacks: record signals every epoch and attack them as training goes."""

from mia_bench.callbacks.attack_monitor import AttackMonitor
from mia_bench.callbacks.signal_recorder import SignalRecorder, compute_signals

__all__ = ["AttackMonitor", "SignalRecorder", "compute_signals"]
