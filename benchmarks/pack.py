"""Packed training (``mia_bench.study.pack``) against runs trained one after another.

Two measurements, on this machine's CPU cores (``OMP_NUM_THREADS`` threads):

* **fleet**: the 16-run Location group (Shokri et al. 2017's MLP, 30 epochs,
  ``lightning_configs/location_mlp.yaml``): ``mia-bench fit`` for run 0, 1, ..., 15 one
  after another in this process (Lightning, start-up excluded), against
  :func:`~mia_bench.study.pack.fit_packed` with packs of K runs. Both write everything a
  run writes (MLflow run, signals and statistics every epoch, attacks, checkpoints);
  each in a fresh store. The pack's time is split into its vectorized training steps,
  the per-run epoch ends (signals, attacks, metrics, checkpoints) and setting the runs up.
* **step**: one training step of K runs, vectorized (``torch.vmap`` over stacked
  parameters, the stacked Adam) against K ``torch.optim.Adam`` steps one after another,
  for the Location MLP (batch 32) and the CIFAR CNN of ``lightning_configs/model/cnn.yaml``
  (batch 128, 3x32x32): packing pays where the ratio is above 1.

Results go to ``benchmarks/results/pack.json`` and ``.md``::

    OMP_NUM_THREADS=1 python -m benchmarks.pack --data-root ../shared/data/location
    python -m benchmarks.pack --skip-fleet    # the step micro-benchmark only (a minute)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


@contextmanager
def fresh_folder():
    """Run inside a new empty folder (a fresh MLflow store), then go back."""
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="mia-pack-bench-") as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(here)


def fit_args(data_root: str, epochs: int, runs: int) -> list[str]:
    config = REPO / "lightning_configs" / "location_mlp.yaml"
    return [
        f"--config={config}",
        f"--data.root={Path(data_root).resolve()}",
        f"--data.num_runs={runs}",
        f"--trainer.max_epochs={epochs}",
        "--trainer.enable_progress_bar=false",
        "--signals.progress=false",
    ]


def time_plain(args: list[str], runs: int) -> float:
    """Seconds for ``mia-bench fit`` of runs 0..runs-1 one after another, in-process."""
    from mia_bench.lightning_cli import run_lightning_cli
    from mia_bench.store.leases import release_held

    with fresh_folder():
        warm = [*args, "--trainer.max_epochs=1", "--group=warm"]
        run_lightning_cli(["fit", *warm, "--data.run_index=0"], "")  # store, imports
        release_held()
        start = time.perf_counter()
        for i in range(runs):
            run_lightning_cli(["fit", *args, "--group=plain", f"--data.run_index={i}"], "")
            release_held()
        return time.perf_counter() - start


def time_packed(args: list[str], runs: int, k: int) -> dict[str, float]:
    """Seconds for the runs in packs of ``k``, split into training, epoch ends and set-up."""
    from mia_bench.study import pack

    spent = {"train": 0.0, "epoch_end": 0.0}
    train, end = pack.Pack.train_epoch, pack.Pack._epoch_end

    def timed(fn, key):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[key] += time.perf_counter() - t

        return wrapper

    pack.Pack.train_epoch, pack.Pack._epoch_end = timed(train, "train"), timed(end, "epoch_end")
    try:
        with fresh_folder():
            pack.fit_packed([*args, "--trainer.max_epochs=1"], [0], "warm")  # store, imports
            spent.update(train=0.0, epoch_end=0.0)
            start = time.perf_counter()
            for first in range(0, runs, k):
                status = pack.fit_packed(args, list(range(first, min(runs, first + k))), "packed")
                assert set(status.values()) == {0}, status
            total = time.perf_counter() - start
    finally:
        pack.Pack.train_epoch, pack.Pack._epoch_end = train, end
    return {"total": total, **spent, "setup_and_end": total - spent["train"] - spent["epoch_end"]}


def step_benchmark(net_name: str, k: int, repeats: int) -> dict[str, float]:
    """Seconds per training step of ``k`` runs: sequential torch.optim vs vectorized."""
    from mia_bench.nets import CNN, MLP
    from mia_bench.study.pack import PackedNets
    from mia_bench.study.pack_optim import StackedOptimizer

    if net_name == "mlp":
        shape, classes, batch = (446,), 30, 32
        nets = [MLP(shape, classes, hidden=(256, 128), activation="tanh") for _ in range(k)]
    else:
        shape, classes, batch = (3, 32, 32), 10, 128
        nets = [CNN(shape, classes, channels=(32, 64, 128), hidden=256) for _ in range(k)]
    x = torch.randn(k, batch, *shape)
    y = torch.randint(0, classes, (k, batch))
    optimizers = [torch.optim.Adam(n.parameters(), lr=1e-3) for n in nets]

    def sequential():
        for net, opt, xi, yi in zip(nets, optimizers, x, y, strict=True):
            opt.zero_grad()
            F.cross_entropy(net(xi), yi).backward()
            opt.step()

    packed = PackedNets(nets, torch.device("cpu"))
    defaults = {key: v for key, v in optimizers[0].param_groups[0].items() if key != "params"}
    stacked = StackedOptimizer("Adam", packed.params, defaults)
    active = torch.ones(k, dtype=torch.bool)

    def vectorized():
        for p in packed.params.values():
            p.grad = None
        loss = F.cross_entropy(packed(x).flatten(0, 1), y.flatten(), reduction="none")
        loss.view(k, batch).mean(1).sum().backward()
        stacked.step(active)

    out = {}
    for name, fn in (("sequential", sequential), ("vectorized", vectorized)):
        fn()  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        out[name] = (time.perf_counter() - start) / repeats
    return out | {"speedup": out["sequential"] / out["vectorized"]}


def markdown(doc: dict) -> str:
    lines = [f"# Packed training ({doc['threads']} thread(s), {doc['cpu']})", ""]
    if "fleet" in doc:
        f = doc["fleet"]
        lines += [
            f"## Location fleet: {f['runs']} runs x {f['epochs']} epochs, signals, attacks and "
            "checkpoints every epoch",
            "",
            "| how | wall s | vs plain | training steps s | epoch ends s | set-up and end s |",
            "|---|---|---|---|---|---|",
            f"| plain mia-bench fit, one after another | {f['plain_s']:.1f} | 1.00x | | | |",
        ]
        for k, r in f["packed"].items():
            lines.append(
                f"| packed, K = {k} | {r['total']:.1f} | {f['plain_s'] / r['total']:.2f}x | "
                f"{r['train']:.1f} | {r['epoch_end']:.1f} | {r['setup_and_end']:.1f} |"
            )
        lines.append("")
    lines += [
        "## One training step of K runs (forward, backward, Adam), seconds per step",
        "",
        "| net | K | sequential torch.optim ms | vectorized (vmap) ms | packed speed-up |",
        "|---|---|---|---|---|",
    ]
    for row in doc["step"]:
        lines.append(
            f"| {row['net']} | {row['k']} | {1e3 * row['sequential']:.2f} | "
            f"{1e3 * row['vectorized']:.2f} | {row['speedup']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=str(REPO / ".." / "shared" / "data" / "location"))
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--packs", default="16,4", help="pack sizes K to measure")
    parser.add_argument("--skip-fleet", action="store_true")
    args = parser.parse_args()
    import platform

    doc = {"threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()}
    doc["torch"] = torch.__version__
    if not args.skip_fleet:
        fargs = fit_args(args.data_root, args.epochs, args.runs)
        packed = {k: time_packed(fargs, args.runs, int(k)) for k in args.packs.split(",")}
        plain = time_plain(fargs, args.runs)
        doc["fleet"] = {
            "runs": args.runs,
            "epochs": args.epochs,
            "plain_s": plain,
            "packed": packed,
        }
    doc["step"] = [
        {"net": net, "k": k, **step_benchmark(net, k, repeats=50 if net == "mlp" else 5)}
        for net in ("mlp", "cnn")
        for k in (4, 16)
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pack.json").write_text(json.dumps(doc, indent=2))
    (RESULTS / "pack.md").write_text(markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
