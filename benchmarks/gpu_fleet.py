"""Fleet throughput on a GPU: ResNet-18 on CIFAR-10-shaped data, several workers per GPU.

Trains ``--workers`` runs at once with ``mia-bench fleet`` (``cifar10_resnet18.yaml``'s
recipe on :class:`mia_bench.data.SyntheticImages`, random uint8 32x32 images, 30,000 by
default) for a few epochs with bf16 autocast and channels-last (and ``--compile``),
recording signals every epoch, then reads each run's per-epoch timings from MLflow
(``time/train_epoch_s``, ``time/test_epoch_s``, ``time/signals_s``) and reports:

* images/s: members trained per second of training, summed over the concurrent
  workers (steady state: the first epoch, which compiles and warms up, is left out when
  there are more), and end to end (all images trained / the fleet's wall time);
* models/hour at 100 epochs: the workers run at once, each run taking
  ``100 (train + test) + recordings x signals + startup`` seconds, with the config's
  ``signals.every_n_epochs`` deciding the recordings (startup: the fleet's wall time
  less the epochs measured, per run);
* the share of that time spent recording signals.

Results go to ``benchmarks/results/gpu_fleet.json`` and ``.md``. Without a GPU (or with
``--tiny``) it runs on CPU at tiny sizes (512 images, 1 epoch, a narrow CNN instead of
ResNet-18) and says so: that checks the pipeline, it measures nothing about GPUs::

    python -m benchmarks.gpu_fleet --workers 4 --epochs 3 --compile
    python -m benchmarks.gpu_fleet --tiny
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CONFIG = REPO / "lightning_configs" / "cifar10_resnet18.yaml"
FULL_EPOCHS = 100
TINY_NET = [
    "--model.net=mia_bench.nets.CNN",
    "--model.net.init_args.channels=[8,16,32]",
    "--model.net.init_args.hidden=32",
]


def git_commit() -> str | None:
    """The commit the benchmark ran at (provenance), or None outside a git checkout."""
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def fit_args(args: argparse.Namespace, gpu: bool) -> list[str]:
    """What every worker's ``mia-bench fit`` gets: the recipe, the data, the fast path."""
    out = ["-c", str(CONFIG), "--data=mia_bench.data.SyntheticImages"]
    out += [f"--data.num_examples={args.num_examples}", f"--data.num_runs={args.num_runs}"]
    out += [f"--data.batch_size={args.batch_size}", f"--data.num_workers={args.loader_workers}"]
    out += [f"--trainer.max_epochs={args.epochs}", "--signals.every_n_epochs=1"]
    out += ["--trainer.enable_progress_bar=false", "--signals.progress=false"]
    out += [f"--trainer.precision={args.precision}", f"--model.memory_format={args.memory_format}"]
    out += [f"--trainer.accelerator={'gpu' if gpu else 'cpu'}", "--trainer.devices=1"]
    if args.views:
        out.append(f"--signals.views={args.views}")
    if args.compile:
        out += ["--model.compile=true", f"--model.compile_backend={args.compile_backend}"]
        if args.compile_mode:
            out.append(f"--model.compile_mode={args.compile_mode}")
    return out + (TINY_NET if args.tiny else [])


def run_fleet(args: argparse.Namespace, gpu: bool, workdir: Path) -> tuple[float, list[str]]:
    """Run the fleet in ``workdir``; returns its wall time and command line."""
    cmd = [sys.executable, "-m", "mia_bench", "fleet", f"--runs=0:{args.workers}"]
    cmd += [f"--workers={args.workers}", "--group=gpu_fleet"]
    cmd.append("--devices=auto" if gpu else "--devices=none")  # workers dealt to the GPUs
    cmd += fit_args(args, gpu)
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    }
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        logs = "".join(p.read_text()[-3000:] for p in workdir.rglob("run_*.log"))
        raise SystemExit(f"the fleet failed ({done.returncode}):\n{done.stdout}{done.stderr}{logs}")
    return wall, cmd


def run_timings(workdir: Path) -> list[dict]:
    """Per run: members, per-epoch seconds of training, testing and recording."""
    from mlflow.tracking import MlflowClient

    from mia_bench.store.artifacts import load_keep, local_artifact_dir

    client = MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("mia-bench").experiment_id
    out = []
    for run in client.search_runs([exp], filter_string="tags.`mia.command` = 'fit'"):
        tags = run.data.tags
        members = int(load_keep(local_artifact_dir(run.info.artifact_uri)).sum())
        series = {}
        for key in ("time/train_epoch_s", "time/test_epoch_s", "time/signals_s"):
            history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
            series[key.split("/")[1]] = [m.value for m in history]
        tag_names = ("precision", "memory_format", "compile")
        out.append({"members": members, **series, **{k: tags.get(f"mia.{k}") for k in tag_names}})
    return out


def steady(values: list[float]) -> float:
    """The median epoch, the first (compile, warm-up) left out when there are others."""
    return median(values[1:] if len(values) > 1 else values)


def summarize(runs: list[dict], wall: float, every_n: int) -> dict:
    """images/s, models/hour at 100 epochs and the signals' share (see the module docstring)."""
    workers = len(runs)
    measured = [
        sum(r["train_epoch_s"]) + sum(r["test_epoch_s"]) + sum(r["signals_s"]) for r in runs
    ]
    startup = max(0.0, wall - max(measured))
    train = [steady(r["train_epoch_s"]) for r in runs]
    test = [steady(r["test_epoch_s"]) for r in runs]
    signals = [steady(r["signals_s"]) for r in runs]
    recordings = -(-FULL_EPOCHS // every_n)
    full_run = [
        FULL_EPOCHS * (a + b) + recordings * c + startup
        for a, b, c in zip(train, test, signals, strict=True)
    ]
    images = sum(r["members"] * len(r["train_epoch_s"]) for r in runs)
    return {
        "workers": workers,
        "images_per_s_training": round(
            sum(r["members"] / t for r, t in zip(runs, train, strict=True)), 1
        ),
        "images_per_s_end_to_end": round(images / wall, 1),
        "train_epoch_s": round(median(train), 3),
        "test_epoch_s": round(median(test), 3),
        "signals_s_per_recording": round(median(signals), 3),
        "first_epoch_train_s": round(median(r["train_epoch_s"][0] for r in runs), 3),
        "startup_s": round(startup, 1),
        "run_s_at_100_epochs": round(median(full_run), 1),
        "models_per_hour_at_100_epochs": round(workers * 3600 / median(full_run), 2),
        "signals_share_at_100_epochs": round(recordings * median(signals) / median(full_run), 4),
        "recordings_at_100_epochs": recordings,
        "fleet_wall_s": round(wall, 1),
    }


def write(result: dict, out: Path) -> None:
    """``out.json`` (everything) and ``out.md`` (the table)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    s = result["summary"]
    lines = [
        f"# Fleet throughput: {result['mode']}",
        "",
        f"{result['device']}; {s['workers']} workers, {result['epochs']} epoch(s) of "
        f"{result['members_per_run']} members, {result['net']}, precision {result['precision']}, "
        f"memory format {result['memory_format']}, compile {result['compile']}.",
        "",
        "| measure | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in s.items()),
        "",
        f"`{' '.join(result['command'][2:])}`",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tiny", action="store_true", help="CPU, 512 images, 1 epoch, a narrow CNN"
    )
    parser.add_argument("--workers", type=int, default=None, help="runs at once (GPU 4, tiny 2)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (GPU 3, tiny 1)")
    parser.add_argument("--num-examples", type=int, default=None, help="pool (GPU 30000, tiny 512)")
    parser.add_argument("--batch-size", type=int, default=None, help="GPU 512, tiny 64")
    parser.add_argument(
        "--loader-workers", type=int, default=None, help="DataLoader workers per run"
    )
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--memory-format", default="channels_last")
    parser.add_argument("--views", default=None, help="query views (default: the data's)")
    parser.add_argument("--compile", action="store_true", help="--model.compile true")
    parser.add_argument("--compile-mode", default=None)
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--every-n-epochs", type=int, default=5, help="the config's recording rate")
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu_fleet", help="OUT.json, OUT.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    import torch

    args = parse(argv)
    gpu = torch.cuda.is_available() and not args.tiny
    if not gpu and not args.tiny:
        print("no GPU here: running --tiny on CPU (a pipeline check, not a GPU measurement)")
        args.tiny = True
    tiny = args.tiny
    args.workers = args.workers or (2 if tiny else 4)
    args.epochs = args.epochs or (1 if tiny else 3)
    args.num_examples = args.num_examples or (512 if tiny else 30_000)
    args.batch_size = args.batch_size or (64 if tiny else 512)
    cores = os.cpu_count() or 1
    args.loader_workers = (
        args.loader_workers
        if args.loader_workers is not None
        else (0 if tiny else max(1, cores // args.workers - 1))
    )
    args.num_runs = max(2, args.workers + args.workers % 2)
    with tempfile.TemporaryDirectory(prefix="gpu_fleet_") as tmp:
        wall, cmd = run_fleet(args, gpu, Path(tmp))
        runs = run_timings(Path(tmp))
    device = torch.cuda.get_device_name(0) if gpu else f"CPU ({cores} cores), no GPU"
    result = {
        "mode": "GPU" if gpu else "tiny, on CPU: checks the pipeline, measures no GPU",
        "device": device,
        "net": "CNN [8,16,32]" if tiny else "ResNet-18",
        "epochs": args.epochs,
        "members_per_run": runs[0]["members"],
        "precision": runs[0]["precision"],
        "memory_format": runs[0]["memory_format"],
        "compile": runs[0]["compile"],
        "torch": torch.__version__,
        "git_commit": git_commit(),
        "command": [c.replace(f"{REPO}/", "") for c in cmd],
        "summary": summarize(runs, wall, args.every_n_epochs),
        "runs": runs,
    }
    write(result, args.out)
    print(f"[gpu_fleet] {result['mode']}: {device}")
    print(json.dumps(result["summary"], indent=2))
    return result


if __name__ == "__main__":
    main()
