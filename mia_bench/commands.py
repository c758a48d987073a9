"""The subcommands beyond Lightning's: ``fleet``, ``audit``, ``compare``, ``sweep``,
``record``, ``configs``, ``notebook`` (argparse)."""

from __future__ import annotations

import argparse
import ast
import importlib.util
from pathlib import Path

from mia_bench.config_files import config_path, configs_main, notebook_main
from mia_bench.errors import UserError
from mia_bench.metrics import DEFAULT_FPRS
from mia_bench.store.settings import MlflowSettings

# Heavy modules (Lightning, MLflow, torch) are imported inside the commands, after their
# arguments are parsed: every subcommand's --help answers without loading them.


def module_doc(module: str) -> str:
    """A module's docstring, read from its source without importing it (nor its imports).

    >>> module_doc("mia_bench.errors").split(" (")[0]
    "The one exception type for a user's mistake"
    """
    spec = importlib.util.find_spec(module)
    return ast.get_docstring(ast.parse(Path(spec.origin).read_text())) or ""


def parse_list(text: str | None) -> list[str] | None:
    """A list flag written as in ``mia-bench fit``, ``[a, b]``, or as ``a,b``.

    >>> parse_list("[loss, lira_online]"), parse_list("loss,rmia"), parse_list(None)
    (['loss', 'lira_online'], ['loss', 'rmia'], None)
    """
    if text is None:
        return None
    inner = text.strip()
    if inner.startswith("[") and inner.endswith("]"):
        inner = inner[1:-1]
    return [item.strip().strip("'\"") for item in inner.split(",") if item.strip()]


def parse_fprs(text: str) -> list[float]:
    """``--fprs`` as floats in (0, 1), or a one-line error."""
    try:
        fprs = [float(x) for x in parse_list(text) or []]
    except ValueError:
        raise UserError(f"--fprs {text!r}: give FPRs as numbers, e.g. [0.001, 0.01]") from None
    if not fprs or not all(0 < x < 1 for x in fprs):
        raise UserError(f"--fprs {text!r}: every FPR must lie strictly between 0 and 1")
    return fprs


def add_store_flags(parser: argparse.ArgumentParser, checkpoints: bool = False) -> None:
    """``--mlflow.tracking_uri`` and ``--mlflow.experiment_name``, as ``mia-bench fit`` has."""
    for name in ("tracking_uri", "experiment_name") + (("checkpoint_dir",) if checkpoints else ()):
        parser.add_argument(
            f"--mlflow.{name}",
            dest=name,
            default=getattr(MlflowSettings, name),
            metavar=name.upper(),
        )
        parser.add_argument(f"--{name}", dest=name, help=argparse.SUPPRESS)  # the old spelling


def settings_of(args: argparse.Namespace) -> MlflowSettings:
    """The store settings the flags of :func:`add_store_flags` give."""
    names = ("tracking_uri", "experiment_name", "checkpoint_dir")
    return MlflowSettings(**{n: getattr(args, n) for n in names if hasattr(args, n)})


def fleet_main(argv: list[str]) -> int:
    """``mia-bench fleet``: train runs of a group (see :mod:`mia_bench.study.fleet`)."""
    parser = argparse.ArgumentParser(
        prog="mia-bench fleet",
        description="Train runs of a group; finished runs are skipped, interrupted ones "
        "resume. Other arguments (-c CONFIG, --data.root ..., --trainer.max_epochs ...) "
        "go to every `mia-bench fit`.",
    )
    parser.add_argument("--runs", required=True, help="run indices: START:STOP, or 0,3,5")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes, each training its runs one after another (start-up paid "
        "once per worker); threads per worker = usable cores / workers",
    )
    parser.add_argument(
        "--pack",
        "--fleet.pack",
        type=int,
        default=1,
        help="runs each worker trains at once, vectorized (torch.func.vmap over stacked "
        "parameters; MLP recipes only, refused with the reason otherwise); default 1",
    )
    parser.add_argument(
        "--devices",
        default="auto",
        help="GPUs the workers are dealt to, in turn (CUDA_VISIBLE_DEVICES; several "
        "workers may share one): auto (every visible GPU), none, or a list like 0,1",
    )
    parser.add_argument("--group", default=None, help="group name (default: config's name)")
    add_backend_flags(parser)
    parser.add_argument(
        "--dry-run",
        "--dry_run",
        action="store_true",
        help="print the plan, the projected store size and the audit cost; train nothing",
    )
    known, fit_args = parser.parse_known_args(argv)
    from mia_bench.lightning_cli import parse_fit_config
    from mia_bench.store.runs import config_fingerprint
    from mia_bench.study.fleet import parse_runs, plan

    if known.group:
        fit_args += [f"--group={known.group}"]
    config, group = parse_fit_config(fit_args)
    runs = parse_runs(known.runs)
    num_runs = config.data.init_args.num_runs
    if not runs or min(runs) < 0 or max(runs) >= num_runs:
        raise UserError(
            f"--runs {known.runs} is outside the group's run indices 0..{num_runs - 1}: "
            f"raise --data.num_runs (now {num_runs}) or ask for fewer runs."
        )
    if known.pack > 1:
        from mia_bench.study.pack import supports_packing

        reason = supports_packing(config)
        if reason is not None:
            raise UserError(f"--pack {known.pack}: {reason}")  # the reason says what to do
    settings = MlflowSettings(**vars(config.mlflow))
    fingerprint = config_fingerprint(config.clone().as_dict())
    jobs = plan(settings, group, runs, fingerprint, create=not known.dry_run)
    log_dir = Path(settings.checkpoint_dir).parent / "fleet" / group
    fleet = make_fleet(known, fit_args, group, log_dir, settings, fingerprint)
    if known.dry_run:
        print("\n".join(dry_run_report(fit_args, fleet, jobs)))
        return 0
    return 1 if fleet.run(jobs) else 0


def add_backend_flags(parser: argparse.ArgumentParser) -> None:
    """``--backend`` and the ``--ray.*`` / ``--submitit.*`` settings of ``mia-bench fleet``."""
    parser.add_argument(
        "--backend",
        choices=("local", "ray", "submitit"),
        default="local",
        help="local: worker processes on this machine (default); ray: a Ray task per run on "
        "a Ray cluster (pip install 'mia-bench[ray]'); submitit: a SLURM job array "
        "(pip install 'mia-bench[submitit]')",
    )
    for backend, flags in BACKEND_FLAGS.items():
        group = parser.add_argument_group(f"--backend {backend}")
        for name, kind, default, text in flags:
            dest = f"{backend}_{name}"
            group.add_argument(f"--{backend}.{name}", dest=dest, type=kind, default=default,
                               help=text)  # fmt: skip


BACKEND_FLAGS = {
    "ray": [
        ("address", str, None, "the cluster (HOST:6379 or ray://HOST:10001); default: the "
         "running one Ray finds, else a local one"),
        ("cpus_per_run", float, 1.0, "CPUs each run's task asks for (and its threads)"),
        ("gpus_per_run", float, 0.0, "GPUs each run's task asks for; 0.25: 4 runs per GPU"),
        ("max_retries", int, 3, "retries of a task whose worker or node died (each resumes "
         "its run); a run that fails by itself is not retried"),
    ],
    "submitit": [
        ("cluster", str, None, "slurm, local or debug; default: slurm where sbatch exists"),
        ("partition", str, None, "the SLURM partition"),
        ("timeout_min", int, 240, "time limit of each job in minutes (a job stopped by it "
         "is requeued and resumes)"),
        ("cpus_per_run", int, 1, "CPUs of each job (and its threads)"),
        ("gpus_per_run", int, 0, "GPUs of each job"),
        ("max_retries", int, 3, "resubmissions of a job that died (each resumes its run)"),
    ],
}  # fmt: skip


def make_fleet(known: argparse.Namespace, fit_args, group, log_dir, settings, fingerprint):
    """The fleet ``--backend`` asks for."""
    from mia_bench.study.fleet import Fleet, gpu_slots

    common = (fit_args, group, known.workers, log_dir, settings)
    if known.backend == "ray":
        from mia_bench.study.ray_fleet import RayFleet, RayOptions

        options = RayOptions(
            known.ray_address, known.ray_cpus_per_run, known.ray_gpus_per_run, known.ray_max_retries
        )
        return RayFleet(*common, options=options, fingerprint=fingerprint, pack=known.pack)
    if known.backend == "submitit":
        from mia_bench.study.submitit_fleet import SubmititFleet, SubmititOptions

        options = SubmititOptions(
            known.submitit_cluster, known.submitit_partition, known.submitit_timeout_min,
            known.submitit_cpus_per_run, known.submitit_gpus_per_run, known.submitit_max_retries,
        )  # fmt: skip
        return SubmititFleet(*common, options=options, fingerprint=fingerprint, pack=known.pack)
    return Fleet(*common, gpu_slots(known.devices), known.pack)


def dry_run_report(fit_args: list[str], fleet, jobs: list) -> list[str]:
    """``fleet --dry-run``'s lines: the plan, the store it would write, the audit cost."""
    from mia_bench.budget import cost_summary
    from mia_bench.lightning_cli import instantiate_fit
    from mia_bench.study.footprint import describe, project_run

    footprint, cost = project_run(*instantiate_fit(fit_args)[:2])
    lines = [f"[fleet {fleet.group}] dry run: no run is trained or opened"]
    lines += [f"  {line}" for line in fleet.dry_run(jobs)] + describe(footprint, len(jobs))
    return lines + [f"audit cost per run: {cost_summary(cost)}"]


def audit_main(argv: list[str]) -> int:
    """``mia-bench audit``: leave-one-out attacks over a trained group."""
    parser = argparse.ArgumentParser(
        prog="mia-bench audit",
        description="Leave-one-out audit of a group: each of the first T runs is the "
        "target, the other runs (or --references groups) are its reference models. Only "
        "finished fit runs of the group's recipe count; an incomplete group is refused "
        "unless --allow-partial.",
    )
    parser.add_argument("--group", default=None, help="the group to audit")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="audit this model instead of a group (needs --references)",
    )
    parser.add_argument("--config", default=None, help="fit config of --checkpoint's model")
    parser.add_argument("--keep", default=None, help=".npy keep row of --checkpoint's model")
    parser.add_argument("--epoch", default="last", help="'last' (default), 'all', or a number")
    parser.add_argument("--targets", type=int, default=4, help="runs attacked in turn")
    parser.add_argument(
        "--attacks", default=None, help="attack names, [a, b] (default: every registered attack)"
    )
    parser.add_argument(
        "--references", default=None, help="reference groups, [g1, g2] (default: the group)"
    )
    parser.add_argument("--layers", default="[embedding]", help="layers for embedding attacks")
    parser.add_argument(
        "--fprs", default=str(list(DEFAULT_FPRS)), help="FPRs of the TPR metrics, [0.001, 0.01]"
    )
    parser.add_argument("--output", default="audit.json", help="where the JSON summary goes")
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=200,
        help="resamples of the AUC and TPR intervals (0: exact TPR intervals only)",
    )
    parser.add_argument(
        "--allow-partial",
        "--allow_partial",
        action="store_true",
        help="audit with the runs that remain when some are unfinished or left out",
    )
    add_store_flags(parser)
    args = parser.parse_args(argv)
    if args.bootstrap < 0:
        parser.error(f"--bootstrap {args.bootstrap}: give 0 or more resamples")
    from mia_bench.audit.run import audit_checkpoint, run_audit

    settings = settings_of(args)
    common = {
        "epoch": args.epoch,
        "attacks": parse_list(args.attacks),
        "layers": parse_list(args.layers),
        "fprs": parse_fprs(args.fprs),
        "output": Path(args.output),
        "allow_partial": args.allow_partial,
        "bootstrap": args.bootstrap,
    }
    references = parse_list(args.references)
    if args.checkpoint:
        if not references:
            parser.error("--checkpoint needs --references GROUP[,GROUP]")
        doc = audit_checkpoint(
            settings,
            Path(args.checkpoint),
            references,
            config=Path(args.config) if args.config else None,
            keep=Path(args.keep) if args.keep else None,
            **common,
        )
    elif args.group:
        doc = run_audit(
            settings, args.group, num_targets=args.targets, references=references, **common
        )
    else:
        parser.error("give --group GROUP (or --checkpoint PATH --references GROUP)")
    print(doc["markdown"], end="")
    for line in doc.get("excluded", []):
        print(f"left out: run {line['run_index']} ({line['run_id']}): {line['reason']}")
    if doc.get("attacks_left_out"):
        names = ", ".join(doc["attacks_left_out"])
        print(
            f"left out: {names} (the runs recorded no embeddings of {args.layers}; record "
            "them with mia-bench record --group GROUP --layers ..., or name --attacks)"
        )
    from mia_bench.console import mlflow_hint

    if doc.get("bounds"):
        print(
            "each number's 95% interval, the epsilon each attack certifies and the records "
            "that leak: report.html of the audit run (also bounds.md, leaks.md)"
        )
    print(f"audit run {doc['run_id']}; JSON at {args.output}")
    print(mlflow_hint(settings.tracking_uri, doc["experiment_id"], doc["run_id"]))
    return 0


def compare_main(argv: list[str]) -> int:
    """``mia-bench compare``: recipe table and gap scatters over the store's audits."""
    parser = argparse.ArgumentParser(
        prog="mia-bench compare",
        description="Compare audited groups (recipes): a table of accuracy, gap and attack "
        "success, and scatters of TPR at the lowest audited FPR against the "
        "generalization gap.",
    )
    parser.add_argument(
        "--attacks",
        default="[loss, lira_online_fixed_var, lira_online]",
        help="attacks to tabulate and plot, [a, b]",
    )
    parser.add_argument("--groups", default=None, help="only these audited groups, [g1, g2]")
    parser.add_argument("--experiments", default=None, help="experiments to read, [e1, e2]")
    parser.add_argument("--filter", default="", help="extra MLflow filter on audit runs")
    parser.add_argument("--output_dir", default="compare", help="where the files go")
    parser.add_argument(
        "--all_epochs",
        action="store_true",
        help="every audited checkpoint is a point of the scatters",
    )
    parser.add_argument(
        "--fpr", type=float, default=DEFAULT_FPRS[0], help="the FPR whose TPR is compared"
    )
    parser.add_argument(
        "--baseline",
        default=None,
        help="the recipe (group) others are tested against (default: the most exposed)",
    )
    add_store_flags(parser)
    args = parser.parse_args(argv)
    from mia_bench.study.compare import compare

    compare(
        settings_of(args),
        parse_list(args.attacks),
        Path(args.output_dir),
        groups=parse_list(args.groups),
        experiments=parse_list(args.experiments),
        filter_string=args.filter,
        all_epochs=args.all_epochs,
        fpr=args.fpr,
        baseline=args.baseline,
    )
    print((Path(args.output_dir) / "compare.md").read_text(), end="")
    return 0


def sweep_main(argv: list[str]) -> int:
    """``mia-bench sweep SWEEP.yaml``: fleets, audits and a comparison of many recipes."""
    sweep_doc = module_doc("mia_bench.study.sweep")

    parser = argparse.ArgumentParser(
        prog="mia-bench sweep",
        description=sweep_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sweep", help="the sweep file (YAML), or a packaged one's name")
    sweep = Path(config_path(parser.parse_args(argv).sweep))
    from mia_bench.study.sweep import run_sweep

    return 1 if run_sweep(sweep) else 0


def record_main(argv: list[str]) -> int:
    """``mia-bench record``: more layers of a finished group, from its checkpoints."""
    record_doc = module_doc("mia_bench.study.record")

    parser = argparse.ArgumentParser(
        prog="mia-bench record",
        description=record_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--group", required=True, help="the group whose runs to re-score")
    parser.add_argument("--epoch", type=int, required=True, help="a recorded epoch")
    parser.add_argument("--layers", required=True, help="module paths, [a, b]")
    add_store_flags(parser, checkpoints=True)
    args = parser.parse_args(argv)
    layers = parse_list(args.layers)
    from mia_bench.study.record import record_group_layers

    count = record_group_layers(settings_of(args), args.group, args.epoch, layers)
    print(f"{args.group}: layers {layers} recorded at epoch {args.epoch} for {count} runs")
    return 0


COMMANDS = {
    "configs": configs_main,
    "notebook": notebook_main,
    "fleet": fleet_main,
    "audit": audit_main,
    "compare": compare_main,
    "sweep": sweep_main,
    "record": record_main,
}
