"""Signal pass speed: all views of a batch in one forward against one forward per view.

"new" batches views up to ``FORWARD_BATCH_SIZE`` (4096) examples per forward, the GPU
default; on CPU it measured slower (0.89x, 0.94x), so the CPU default is one view per forward.

On CPU, ``mia_bench.nets.CNN`` (its default widths) over a pool of 2,000 random 32x32
images, eval batch 1024, with 2 views (``plain,mirror``) and 18 (``lira18``); each path
timed ``--repeats`` times, alternating (the best is reported), in one process.
Writes ``benchmarks/results/batched_views.json``::

    OMP_NUM_THREADS=1 python -m benchmarks.batched_views
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.baseline.signals import per_view_signals
from benchmarks.scoring import RESULTS
from mia_bench.callbacks.signal_recorder import FORWARD_BATCH_SIZE, compute_signals
from mia_bench.nets import CNN


def best_seconds(fns: dict, repeats: int) -> dict[str, float]:
    """The fastest of ``repeats`` calls of each ``fns[name]()``, in seconds; the calls
    alternate between the functions, so that load from other processes hits both alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def measure(n: int, views: str, repeats: int, batch_size: int = 1024) -> dict:
    """Seconds of each path and their largest logit difference, for one view set."""
    torch.manual_seed(0)
    net = CNN((3, 32, 32), 10).eval()
    x = torch.randn(n, 3, 32, 32)
    loader = DataLoader(TensorDataset(x, torch.zeros(n, dtype=torch.long), torch.arange(n)),
                        batch_size=batch_size)  # fmt: skip
    new = compute_signals(net, loader, views, ["embedding"], forward_batch_size=FORWARD_BATCH_SIZE)
    old_logits, _ = per_view_signals(net, loader, views, ["embedding"])
    seconds = best_seconds(
        {
            "old": lambda: per_view_signals(net, loader, views, ["embedding"]),
            "new": lambda: compute_signals(
                net, loader, views, ["embedding"], forward_batch_size=FORWARD_BATCH_SIZE
            ),
        },
        repeats,
    )
    old_s, new_s = seconds["old"], seconds["new"]
    return {
        "views": views,
        "num_views": new.logits.shape[1],
        "pool": n,
        "old_s": round(old_s, 3),
        "new_s": round(new_s, 3),
        "speedup": round(old_s / new_s, 2),
        "max_abs_logit_diff": float(abs(new.logits - old_logits).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = [measure(args.pool, views, args.repeats) for views in ("plain,mirror", "lira18")]
    result = {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "forward_batch_size": FORWARD_BATCH_SIZE,
        "load_average": os.getloadavg(),
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "batched_views.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
