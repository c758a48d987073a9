"""Scoring at LiRA's scale: the full-logits path against the sufficient-statistics path.

Synthetic references of a CIFAR-10-sized pool (N = 60,000 examples, A = 18 query views,
C = 10 classes): LiRA online, LiRA offline with a fixed variance and RMIA offline, with
R = 16, 64 and 256 references.

* old: ``benchmarks/baseline`` (the path before this change): every reference's logits
  in memory as float64 ``[R, N, A, C]``, statistics derived per attack call;
* new: :mod:`mia_bench.attacks` reading the references' float32 statistics ``[R, N, A]``
  from a memory-mapped file, as an audit does after stacking a group
  (:mod:`mia_bench.store.group_stats`), a block of examples at a time.

Each measurement runs in a fresh process; time is the attack call, memory the process's
peak resident set (file pages of the memmap included). The old path is measured where it
fits in memory and projected (linearly in R) where it does not. Results go to
``benchmarks/results/scoring.json`` and ``.md``::

    python -m benchmarks.scoring              # R = 16, 64, 256 (about 10 minutes)
    python -m benchmarks.scoring --refs 16    # one size
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

N, A, C = 60_000, 18, 10
ATTACKS = ("lira_online", "lira_offline_fixed_var", "rmia_offline")
OLD_FITS_UP_TO = 16  # references the old path holds in 24 GiB (0.37 GB each, plus copies)
RESULTS = Path(__file__).resolve().parent / "results"


def keep_matrix(refs: int, n: int = N) -> np.ndarray:
    """``bool[refs, n]``, balanced in each block of 16 rows: every example is IN for 8 of
    them (LiRA's design), so any first 16k references are balanced too."""
    rng = np.random.default_rng(2022)
    blocks = [np.argsort(rng.random((16, n)), axis=0) < 8 for _ in range(-(-refs // 16))]
    return np.concatenate(blocks)[:refs]


def model_logits(seed: int, keep: np.ndarray) -> np.ndarray:
    """One model's logits ``float32[n, A, C]``: the true label's logit is raised by the
    example's difficulty (shared by all models) and, for its members, by 0.5 more."""
    n = len(keep)
    difficulty = np.random.default_rng(7).normal(1.0, 1.0, size=n)
    logits = np.random.default_rng(seed).normal(size=(n, A, C)).astype(np.float32)
    logits[np.arange(n), :, labels(n)] += (difficulty + 0.5 * keep)[:, None].astype(np.float32)
    return logits


def labels(n: int = N) -> np.ndarray:
    return np.random.default_rng(12345).integers(0, C, size=n)


def write_group(folder: Path, refs: int, n: int = N) -> None:
    """The group's statistics as raw float32 ``[R, n, A]`` files, plus keep rows and target."""
    from mia_bench.statistics import compute_statistics

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "examples.txt").write_text(str(n))
    names = ("scaled_logit", "log_p", "log_p_t2")
    files = {name: open(folder / name, "wb") for name in names}  # noqa: SIM115
    keep = keep_matrix(refs, n)
    for r in range(refs):
        logits = model_logits(r + 1, keep[r])
        for name, values in compute_statistics(logits, labels(n), names).items():
            files[name].write(values.tobytes())
    for f in files.values():
        f.close()
    np.save(folder / "keep.npy", keep)
    membership = np.random.default_rng(0).random(n) < 0.5
    np.save(folder / "target.npy", model_logits(0, membership))
    np.save(folder / "membership.npy", membership)


def old_scorer(attack: str):
    from benchmarks.baseline import lira, rmia

    return {
        "lira_online": partial(lira.lira, online=True),
        "lira_offline_fixed_var": partial(lira.lira, online=False, fix_variance=True),
        "rmia_offline": partial(rmia.rmia, online=False),
    }[attack]


def new_scorer(attack: str, like_old: bool):
    from mia_bench.attacks import ATTACKS as REGISTRY
    from mia_bench.attacks import rmia

    if attack == "rmia_offline" and like_old:  # the old defaults: T = 1, a = 0.3
        return partial(rmia.rmia, online=False, a=0.3, temperature=1.0)
    return REGISTRY[attack].fn


def measure(path: str, attack: str, refs: int, folder: Path, like_old: bool) -> dict:
    """One measurement, in this process: returns seconds, peak GB and the scores' file."""
    n = int((folder / "examples.txt").read_text())
    keep = np.load(folder / "keep.npy")[:refs]
    target = np.load(folder / "target.npy")
    population = ~np.load(folder / "membership.npy")
    if path == "old":
        from benchmarks.baseline.inputs import AttackInputs

        ref_logits = np.stack([model_logits(r + 1, keep[r]) for r in range(refs)])
        inputs = AttackInputs(target, labels(n), ref_logits, keep, population)
        del ref_logits
        score = old_scorer(attack)
    else:
        from mia_bench.attacks import AttackInputs
        from mia_bench.statistics import ReferenceStats

        shape = (refs, n, A)
        names = ("scaled_logit", "log_p", "log_p_t2")
        arrays = {n: np.memmap(folder / n, np.float32, "r", shape=shape) for n in names}
        from mia_bench.statistics import compute_statistics

        inputs = AttackInputs(
            target,
            labels(n),
            ref_keep=keep,
            population=population,
            stats=compute_statistics(target, labels(n), names),
            ref_stats=ReferenceStats(arrays),
        )
        score = new_scorer(attack, like_old)
    start = time.perf_counter()
    scores = score(inputs)
    seconds = time.perf_counter() - start
    out = folder / f"scores_{path}_{attack}_{refs}_{int(like_old)}.npy"
    np.save(out, scores)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux
    return {"seconds": seconds, "peak_gb": peak_gb, "scores": str(out)}


def run_child(path: str, attack: str, refs: int, folder: Path, like_old: bool) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.scoring", "--child", path, attack, str(refs)]
    cmd += [str(folder), str(int(like_old))]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(old: dict, new: dict, folder: Path) -> dict:
    from mia_bench.metrics import auc

    a, b = np.load(old["scores"]), np.load(new["scores"])
    membership = np.load(folder / "membership.npy")
    return {
        "max_abs_diff": float(np.abs(a - b).max()),
        "max_rel_diff": float(np.abs(a - b).max() / max(1.0, np.abs(a).max())),
        "auc_old": auc(a, membership),
        "auc_new": auc(b, membership),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--folder", type=Path, default=Path("bench_scoring_data"))
    parser.add_argument("--examples", type=int, default=N, help="pool size N (smoke runs)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        path, attack, refs, folder, like_old = args.child
        print(json.dumps(measure(path, attack, int(refs), Path(folder), like_old == "1")))
        return
    started = time.perf_counter()
    write_group(args.folder, max(args.refs), args.examples)
    print(f"wrote the group's statistics in {time.perf_counter() - started:.0f} s")
    rows = []
    for refs in args.refs:
        for attack in ATTACKS:
            row = {"refs": refs, "attack": attack}
            row["new"] = run_child("new", attack, refs, args.folder, like_old=False)
            if refs <= OLD_FITS_UP_TO:
                row["old"] = run_child("old", attack, refs, args.folder, like_old=True)
                like = run_child("new", attack, refs, args.folder, like_old=True)
                row["agreement"] = compare(row["old"], like, args.folder)
            rows.append(row)
            print(json.dumps(row))
    write_results(rows, args.examples)


def write_results(rows: list[dict], n: int) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scoring.json").write_text(json.dumps(rows, indent=2))
    old = {r["attack"]: r["old"] for r in rows if "old" in r}
    old_refs = max((r["refs"] for r in rows if "old" in r), default=None)
    lines = [
        f"# Scoring at N = {n}, A = {A}, C = {C} (2 CPU cores)",
        "",
        "| R | attack | new s | new peak GB | old s | old peak GB | speed-up | memory ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = r.get("old") or _projected(old.get(r["attack"]), old_refs, r["refs"])
        star = "" if "old" in r else " (projected)"
        speed = base["seconds"] / r["new"]["seconds"] if base else float("nan")
        memory = base["peak_gb"] / r["new"]["peak_gb"] if base else float("nan")
        lines.append(
            f"| {r['refs']} | {r['attack']} | {r['new']['seconds']:.1f} | "
            f"{r['new']['peak_gb']:.2f} | {base['seconds']:.1f}{star} | "
            f"{base['peak_gb']:.1f}{star} | {speed:.1f}x | {memory:.1f}x |"
        )
    agree = [r for r in rows if "agreement" in r]
    lines += [
        "",
        "Agreement with the old path (same logits; RMIA with the old T = 1, a = 0.3):",
        "",
    ]
    lines += [
        f"- R = {r['refs']}, {r['attack']}: max |diff| {r['agreement']['max_abs_diff']:.2e} "
        f"(relative {r['agreement']['max_rel_diff']:.2e}), AUC {r['agreement']['auc_old']:.6f} "
        f"vs {r['agreement']['auc_new']:.6f}"
        for r in agree
    ]
    (RESULTS / "scoring.md").write_text("\n".join(lines) + "\n")


def _projected(old: dict | None, old_refs: int | None, refs: int) -> dict | None:
    """The old path's cost at ``refs`` references, linear in R from its measured size."""
    if old is None or old_refs is None:
        return None
    factor = refs / old_refs
    return {"seconds": old["seconds"] * factor, "peak_gb": old["peak_gb"] * factor}


if __name__ == "__main__":
    main()
