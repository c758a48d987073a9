"""LightningCLI of ``mia-bench fit/validate/test``: MLflow tracking and attacks built in.

``mia-bench fit -c lightning_configs/quickstart.yaml`` trains one run of a group; the
``SignalRecorder`` (``--signals.*``), ``AttackMonitor`` (``--attacks.*``) and
``PropertyMonitor`` (``--properties.*``, idle until property names are given) callbacks
are always on, and every run is an MLflow run tagged with its place in the group. The
model is any LightningModule (``--model.class_path my_pkg.MyModule``, see
``examples/own_module``), by default mia-bench's Classifier; the data any
MembershipDataModule (``DatasetMembership`` around a Dataset of one's own).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")

from lightning.pytorch import LightningModule, seed_everything  # noqa: E402
from lightning.pytorch.callbacks.progress import ProgressBar as ProgressBarBase  # noqa: E402
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback  # noqa: E402
from lightning.pytorch.loggers import MLFlowLogger  # noqa: E402
from mlflow.entities import Param  # noqa: E402

from mia_bench.budget import report_audit_cost, run_audit_cost  # noqa: E402
from mia_bench.callbacks import (  # noqa: E402
    AttackMonitor,
    EpochTimer,
    PropertyMonitor,
    RunSummary,
    SignalRecorder,
)
from mia_bench.callbacks.run_summary import ProgressBar  # noqa: E402
from mia_bench.callbacks.signal_recorder import layers_needed  # noqa: E402
from mia_bench.checks import check_fit_config  # noqa: E402
from mia_bench.config_files import resolve_configs  # noqa: E402
from mia_bench.console import on_terminal  # noqa: E402
from mia_bench.data.membership import MembershipDataModule  # noqa: E402
from mia_bench.errors import UserError  # noqa: E402
from mia_bench.extras import missing_extra_in  # noqa: E402
from mia_bench.help_cache import SUBCOMMANDS, warm_help  # noqa: E402
from mia_bench.store.artifacts import local_artifact_dir  # noqa: E402
from mia_bench.store.checkpoints import (  # noqa: E402
    EpochCheckpoint,
    EpochCommit,
    checkpoint_epoch,
    discard_beyond,
    newest_checkpoint,
)
from mia_bench.store.leases import release_held  # noqa: E402
from mia_bench.store.remote import mirror_run  # noqa: E402
from mia_bench.store.retention import CheckpointRetention  # noqa: E402
from mia_bench.store.runs import (  # noqa: E402
    LINKED_MODEL_ARGS,
    MlflowSettings,
    canonical_config,
    config_fingerprint,
    resolve_tracking_uri,
)
from mia_bench.store.slots import open_run  # noqa: E402
from mia_bench.tracking import BufferedMLFlowLogger  # noqa: E402

DEFAULT_CONFIG = Path(__file__).with_name("default.yaml")


class MlflowSaveConfig(SaveConfigCallback):
    """Logs the resolved config as the MLflow artifact ``config.yaml``."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        text = self.parser.dump(self.config, skip_none=False)
        params = config_params(self.config)
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                logger.experiment.log_text(logger.run_id, text, "config.yaml")
                log_new_params(logger.experiment, logger.run_id, params)


def config_params(config: Any) -> dict[str, str]:
    """The resolved config as flat ``cfg.<key>`` params (None values left out), in its
    :func:`~mia_bench.store.runs.canonical_config` form (``cfg.model.net.class_path``)."""
    config = canonical_config(config)
    flat = config.clone().as_flat() if hasattr(config, "as_flat") else config
    out = {}
    for key, value in vars(flat).items():
        if value is None or key.startswith(("trainer.callbacks", "config", "__")):
            continue
        out[f"cfg.{key}"] = str(value)[:250]
    return out


def log_new_params(client: Any, run_id: str, params: dict[str, str]) -> None:
    """Log params the run does not have yet (MLflow refuses to change a param)."""
    existing = client.get_run(run_id).data.params
    fresh = [Param(k, v) for k, v in params.items() if k not in existing]
    for start in range(0, len(fresh), 100):  # MLflow takes 100 params per batch
        client.log_batch(run_id, params=fresh[start : start + 100])


_PARSERS: dict[tuple, dict[str, Any]] = {}  # parsers built in this process, see setup_parser


class MiaCLI(LightningCLI):
    """LightningCLI of mia-bench (see the module docstring)."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """``fit``, ``validate`` and ``test``: Lightning's ``predict`` has nothing to
        predict here (a run's predictions on the pool are its recorded signals)."""
        every = LightningCLI.subcommands()
        return {name: every[name] for name in SUBCOMMANDS}

    def setup_parser(self, add_subcommands, main_kwargs, subparser_kwargs) -> None:
        """Build the parser once per process and kind of CLI, then reuse it.

        Building it reads the signatures of every class it offers (about a second); a
        fleet worker trains many runs in one process and parses each run's arguments
        afresh with the same parser (parsing does not change it).
        """
        key = (type(self), add_subcommands, repr(main_kwargs), repr(subparser_kwargs))
        if key not in _PARSERS:
            before = set(vars(self))
            super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
            # the parser and what LightningCLI keeps beside it (its subcommand parsers)
            _PARSERS[key] = {k: v for k, v in vars(self).items() if k not in before}
        vars(self).update(_PARSERS[key])

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--group",
            type=str | None,
            default=None,
            help="name of the group of runs (tag mia.group); default: the config file's name",
        )
        parser.add_class_arguments(MlflowSettings, "mlflow")
        parser.add_class_arguments(CheckpointRetention, "checkpoints")
        parser.add_lightning_class_args(SignalRecorder, "signals")
        parser.add_lightning_class_args(AttackMonitor, "attacks")
        parser.add_lightning_class_args(PropertyMonitor, "properties")
        for name in LINKED_MODEL_ARGS:  # num_classes, input_shape: for models that take them
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")

    def parse_arguments(self, parser, args) -> None:
        """Parse, then check the design and views before anything is built or seeded."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        warm_help(parser)  # the next `fit --help` answers from the cache
        config = self.config[subcommand] if subcommand else self.config
        _restore_nulls(config.get("model"))
        check_fit_config(config)

    def instantiate_classes(self) -> None:
        """Lightning's, with a missing extra said in its one line (jsonargparse wraps it)."""
        try:
            super().instantiate_classes()
        except ValueError as err:
            missing = missing_extra_in(err)
            if missing is None:
                raise
            raise missing from err

    def _set_seed(self) -> None:
        """Seed each run with ``seed_everything + run_index``.

        Runs of a group then differ in initialization and batch order as well as in
        their training data, like LiRA's independently trained models, while every run
        stays reproducible. The effective seed is tagged ``mia.seed``.
        """
        config = self.config[self.subcommand] if self.subcommand else self.config
        seed = config.get("seed_everything")
        run_index = config.get("data", {}).get("init_args", {}).get("run_index", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or run_index is None:
            super()._set_seed()
            return
        self.run_seed = seed_everything(seed + run_index, workers=True)

    def _settings(self) -> dict[str, Any]:
        return self.config_init[self.subcommand] if self.subcommand else self.config_init

    def group_name(self) -> str:
        """``--group``, else the config files' names joined by ``+``, else ``default``.

        ``-c cifar10_partial_cnn.yaml -c augment/crop.yaml`` is the group
        ``cifar10_partial_cnn+crop``, so two recipes on one base never share a group.
        """
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("group"):
            return config["group"]
        files = [Path(str(f)).stem for f in (config.get("config") or []) if f is not None]
        return "+".join(files) if files else "default"

    def config_fingerprint(self) -> str:
        """The recipe's fingerprint (tag ``mia.fingerprint``), see ``config_fingerprint``."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        return config_fingerprint(config.clone().as_dict())

    def instantiate_trainer(self, **kwargs: Any):
        init = self._settings()
        if init["signals"].layers is None:  # the layers the attacks and properties use
            init["signals"].layers = layers_needed([init["attacks"], init["properties"]])
        init["signals"].check(self.datamodule, self.model)  # before a run is opened
        settings: MlflowSettings = init["mlflow"]
        resume = init.get("ckpt_path") == "last"
        checkpointing = init["trainer"].get("enable_checkpointing") is not False
        if resume and not checkpointing:
            raise UserError(
                "--ckpt_path last: with --trainer.enable_checkpointing false the run keeps no "
                "checkpoints to resume from; drop --ckpt_path (and give a new --group), or "
                "train with checkpointing on"
            )
        info = self.datamodule.membership_info()
        if getattr(self, "run_seed", None) is not None:
            info["seed"] = self.run_seed
        info |= {"command": self.subcommand or "fit", "fingerprint": self.config_fingerprint()}
        info |= {"precision": str(init["trainer"].get("precision") or "32-true")}
        info |= getattr(self.model, "run_settings", dict)()  # the Classifier's memory_format...
        if info["command"] == "fit":
            check_installed = getattr(getattr(self.model, "defense", None), "check_installed", None)
            if check_installed is not None:
                check_installed()  # a missing extra stops us before the run opens
            self._report_audit_cost(init)
        lease = self.subcommand == "fit"  # leases: fit only
        run_id = open_run(settings, self.group_name(), info, resume=resume, lease=lease)
        kwargs["logger"] = BufferedMLFlowLogger(
            experiment_name=settings.experiment_name,
            tracking_uri=resolve_tracking_uri(settings.tracking_uri),
            run_id=run_id,
            log_model=False,
        )
        checkpoints = Path(settings.checkpoint_dir) / run_id
        mirrors = mirror_run(kwargs["logger"]._tracking_uri, run_id, checkpoints)
        if resume:
            init["ckpt_path"] = self._resume_from(kwargs["logger"], checkpoints, mirrors)
        callbacks = list(init["trainer"].get("callbacks") or [])
        keeper = EpochCheckpoint(checkpoints, init["checkpoints"]) if checkpointing else None
        kwargs["callbacks"] = [EpochTimer(), *callbacks, keeper or EpochCommit()]
        kwargs["enable_progress_bar"] = _progress_bar(init["trainer"], kwargs["callbacks"])
        return super().instantiate_trainer(**kwargs)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Any:
        """Lightning's, with :class:`RunSummary` after the ``--signals``/``--attacks``
        callbacks (its end-of-fit table follows the monitor's last attack)."""
        return super()._instantiate_trainer(config, [*callbacks, RunSummary()])

    def _report_audit_cost(self, init: dict[str, Any]) -> None:
        """Log what recording signals costs next to training (see :mod:`mia_bench.budget`)."""
        recorder, dm, epochs = init["signals"], self.datamodule, init["trainer"].get("max_epochs")
        if not epochs or epochs < 0:  # no epoch limit: no cost to state
            return
        views = len(recorder.views or dm.query_views)
        members = int(dm.keep.sum())
        cost = run_audit_cost(dm.num_examples, members, views, recorder.every_n_epochs, epochs)
        report_audit_cost(cost)

    def _resume_from(
        self, logger: BufferedMLFlowLogger, checkpoints: Path, mirrors: tuple | None = None
    ) -> str | None:
        """The newest complete epoch's checkpoint; what a killed attempt left beyond goes.

        None (train from the start, in the same MLflow run) when no epoch completed. With
        remote artifacts (``mirrors``), the store's newest checkpoint is fetched when this
        machine's is older (the run last trained elsewhere), files this machine wrote but
        did not upload are uploaded, and what lies beyond the epoch goes there too.
        """
        path = newest_checkpoint(checkpoints, mirrors)
        epoch = None if path is None else checkpoint_epoch(path)
        run = logger.experiment.get_run(logger.run_id)
        if path is None and run.data.metrics:  # metrics are committed after a checkpoint
            raise UserError(
                f"--ckpt_path last: run {logger.run_id} logged epochs but kept no checkpoints "
                f"in {checkpoints} (trained with --trainer.enable_checkpointing false?): it "
                "cannot be resumed; train it anew under another --group"
            )
        run_dir = local_artifact_dir(run.info.artifact_uri, run.info.run_id)
        discard_beyond(run_dir, checkpoints, epoch, mirrors)
        return None if path is None else str(path)


def _restore_nulls(node: Any) -> None:
    """``null`` given on the command line inside the model's nested classes
    (``--model.net.init_args.pretrained=null``) back to None: with the model in subclass
    mode, jsonargparse 4.53 parses it as the string ``'None'`` (a YAML file's null stays
    None)."""
    if node is None or not hasattr(node, "items"):
        return
    for key, value in list(node.items()):
        if value == "None":
            node[key] = None
        elif hasattr(value, "items"):
            _restore_nulls(value)


def _progress_bar(trainer: dict[str, Any], callbacks: list) -> bool:
    """``--trainer.enable_progress_bar``, by default only on a terminal; when on, mia-bench's
    bar (no ``v_num``) is added to ``callbacks`` unless the config names its own."""
    enabled = trainer.get("enable_progress_bar")
    enabled = on_terminal() if enabled is None else bool(enabled)
    if enabled and not any(isinstance(c, ProgressBarBase) for c in callbacks):
        callbacks.append(ProgressBar())
    return enabled


class _ParseOnlyCLI(MiaCLI):
    """Parses a fit command line (configs, overrides) without building anything."""

    def instantiate_classes(self) -> None:
        pass


class _ConfigFileCLI(_ParseOnlyCLI):
    """Parses a fit config as written or as ``fit`` logged it (with fit's own keys)."""

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        for key, kind in (("ckpt_path", str | None), ("weights_only", bool | None)):
            parser.add_argument(f"--{key}", type=kind, default=None, help="fit's own; ignored")


CLASSES: dict[str, Any] = {
    # any LightningModule (mia_bench.classifier.Classifier by default, see default.yaml)
    "model_class": LightningModule,
    "subclass_mode_model": True,
    "datamodule_class": MembershipDataModule,
    "subclass_mode_data": True,
    # no --optimizer/--lr_scheduler: they would replace the model's own optimizer and
    # skip what a defense makes of it (DP-SGD's); the Classifier has --model.optimizer
    "auto_configure_optimizers": False,
}
"""What every MiaCLI is built with: which model and data classes it accepts."""


def parse_only(fit_args: list[str], cli_class: type[MiaCLI] = _ParseOnlyCLI) -> MiaCLI:
    """``cli_class`` (a MiaCLI that runs nothing) over ``mia-bench fit FIT_ARGS``."""
    return cli_class(
        **CLASSES,
        save_config_callback=None,
        parser_kwargs={"default_config_files": [str(DEFAULT_CONFIG)]},
        args=resolve_configs(fit_args),
        run=False,
    )


def parse_fit_config(fit_args: list[str]) -> tuple[Any, str]:
    """The resolved config of ``mia-bench fit FIT_ARGS`` and its group name."""
    cli = parse_only(fit_args)
    return cli.config, cli.group_name()


def instantiate_from_config(
    config: Path, overrides: Sequence[str] = ()
) -> tuple[LightningModule, MembershipDataModule]:
    """The model and data module a mia-bench fit config describes.

    The file is parsed where it is, so that its relative references (``data:
    data/digits.yaml``) resolve against its own folder; it may be a shipped config or
    the ``config.yaml`` a fit logged (whose ``ckpt_path``/``weights_only`` are ignored).

    Args:
        config: a fit config file.
        overrides: further fit arguments, e.g. ``["--data.root=DIR"]``.
    """
    _, init, _ = instantiate_fit(["-c", str(config), *overrides], _ConfigFileCLI)
    return init.model, init.data


def instantiate_fit(
    fit_args: Sequence[str], cli_class: type[MiaCLI] = _ParseOnlyCLI
) -> tuple[Any, Any, str]:
    """What ``mia-bench fit FIT_ARGS`` would build, without training or opening a run.

    Returns the resolved config, its instantiated form (``model``, ``data``, ``signals``,
    ``attacks``, ``properties``, ``checkpoints``, ...; the data module's pool is not
    loaded) and the group name.
    """
    cli = parse_only(list(fit_args), cli_class)
    return cli.config, cli.parser.instantiate_classes(cli.config), cli.group_name()


def run_lightning_cli(argv: list[str], description: str) -> MiaCLI:
    """``mia-bench fit|validate|test ARGV``: the LightningCLI with mia-bench's callbacks."""
    defaults = {"default_config_files": [str(DEFAULT_CONFIG)]}
    parser_kwargs: dict[str, Any] = {sub: defaults for sub in SUBCOMMANDS}
    parser_kwargs["description"] = description
    parser_kwargs["prog"] = "mia-bench"  # also under `python -m mia_bench`
    try:
        return MiaCLI(
            **CLASSES,
            save_config_callback=MlflowSaveConfig,
            save_config_kwargs={"save_to_log_dir": False, "overwrite": True},
            parser_kwargs=parser_kwargs,
            args=resolve_configs(argv),
        )
    finally:
        release_held()  # the run's lease, held from open_run to the end of the fit
