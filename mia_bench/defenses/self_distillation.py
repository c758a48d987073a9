"""Noisy self-distillation: the student learns a teacher's noised soft labels.

The Embedding Attack Project (arXiv:2401.13854) names noisy self-distillation as a defense against
membership inference; the recipe follows knowledge distillation (Hinton, Vinyals,
Dean, "Distilling the Knowledge in a Neural Network", 2015), self-distillation as a
defense (Zheng et al., "Resisting Membership Inference Attacks through Knowledge
Distillation", Neurocomputing 2021) and DMP (Shejwalkar & Houmansadr, "Membership
Privacy for Machine Learning Models Through Knowledge Transfer", AAAI 2021).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import MLFlowLogger
from torch import nn

from mia_bench.audit.checkpoint import load_weights
from mia_bench.classifier import Classifier, Defense
from mia_bench.store.artifacts import load_keep
from mia_bench.store.groups import GroupRun, client_and_experiment, group_runs
from mia_bench.store.runs import MlflowSettings

DESIGN_TAGS = ("dataset", "num_examples", "num_runs", "pkeep", "split_seed")


def noisy_soft_labels(
    logits: torch.Tensor,
    temperature: float,
    noise_std: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``softmax((z + noise_std * eps) / temperature)`` with ``eps ~ N(0, I)``.

    Args:
        logits: teacher logits ``z``, ``[N, C]``.
        temperature: T of the softmax.
        noise_std: std of the Gaussian added to every logit (in logit units, before
            dividing by T); one draw per example and class.
        generator: source of the noise.

    Returns:
        ``float32[N, C]`` soft labels.

    >>> noisy_soft_labels(torch.tensor([[2.0, 0.0]]), temperature=2.0, noise_std=0.0)
    tensor([[0.7311, 0.2689]])
    """
    z = logits.float()
    if noise_std > 0:
        z = z + noise_std * torch.randn(z.shape, generator=generator)  # [N, C]
    return (z / temperature).softmax(dim=1)


def distillation_loss(logits: torch.Tensor, soft: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * mean_i KL(soft_i || softmax(logits_i / T))`` (Hinton et al. 2015)."""
    log_student = F.log_softmax(logits / temperature, dim=1)  # [B, C]
    return F.kl_div(log_student, soft, reduction="batchmean") * temperature**2


def teacher_checkpoint(
    runs: Sequence[GroupRun], group: str, run_index: int, checkpoint_dir: Path
) -> tuple[GroupRun, Path]:
    """The teacher run of ``run_index`` in ``runs`` (its group) and its ``last.ckpt``.

    Raises:
        FileNotFoundError: no run of the group, none of this index, or no checkpoint.
    """
    if not runs:
        raise FileNotFoundError(
            f"teacher group {group!r} has no runs in this MLflow experiment: train it first "
            f"(mia-bench fleet -c BASE_CONFIG --group {group} --runs 0:NUM_RUNS) with the "
            "same data split as the student, or set model.defense.init_args.teacher_group."
        )
    found = [r for r in runs if r.run_index == run_index]
    if not found:
        raise FileNotFoundError(
            f"teacher group {group!r} has runs {[r.run_index for r in runs]} but none with "
            f"run_index {run_index}, the student's: train it (mia-bench fit -c BASE_CONFIG "
            f"--group {group} --data.run_index {run_index})."
        )
    run = found[0]
    path = Path(checkpoint_dir) / run.run_id / "last.ckpt"
    if not path.exists():
        raise FileNotFoundError(
            f"teacher run {run.run_id} (group {group!r}, run_index {run_index}, status "
            f"{run.status}) has no checkpoint at {path}: let it finish (mia-bench fit ... "
            "--ckpt_path last), or set model.defense.init_args.checkpoint_dir."
        )
    return run, path


def check_same_training_set(run: GroupRun, datamodule: Any) -> None:
    """Refuse a teacher whose keep row (training set) differs from the student's."""
    info = datamodule.membership_info()
    for key in DESIGN_TAGS:
        tag = run.tags.get(f"mia.{key}")
        if tag is not None and tag != str(info[key]):
            raise ValueError(
                f"teacher run {run.run_id} of group {run.group!r} has {key}={tag} but the "
                f"student has {key}={info[key]}: the teacher must be trained on the same "
                "pool with the same split (num_runs, pkeep, split_seed)."
            )
    keep_file = run.fetch() / "keep.npy"
    if run.has("keep.npy") and not np.array_equal(load_keep(run.artifact_dir), datamodule.keep):
        raise ValueError(
            f"teacher run {run.run_id} trained on other examples than the student "
            f"(its {keep_file} differs from the student's keep row)."
        )


def load_teacher(net: nn.Module, checkpoint: Path) -> nn.Module:
    """A copy of ``net``'s architecture with the Classifier weights in ``checkpoint``."""
    holder = nn.Module()
    holder.net = copy.deepcopy(net)
    try:
        load_weights(holder, checkpoint)
    except RuntimeError as err:
        raise ValueError(
            f"the teacher checkpoint {checkpoint} does not fit the student's net "
            f"({type(net).__name__}): the teacher group must be trained with the same "
            f"model.net as the student. {err}"
        ) from err
    return holder.net.eval()


@torch.inference_mode()
def pool_logits(
    net: nn.Module, loader: Iterable, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``float32[N, C]`` logits of every pool example (loader in pool index order)."""
    net = net.to(device).eval()
    out, seen = [], []
    for x, _y, index in loader:
        out.append(net(x.to(device)).float().cpu())  # [B, C]
        seen.append(torch.as_tensor(index))
    if not torch.equal(torch.cat(seen), torch.arange(sum(len(s) for s in seen))):
        raise ValueError("the pool loader must yield every pool index once, in order")
    return torch.cat(out)


class NoisySelfDistillation(Defense):
    """Train on a teacher's noised, tempered soft labels (noisy self-distillation).

    The teacher is the run with the student's ``run_index`` in ``teacher_group``,
    found in MLflow like :func:`mia_bench.store.references.group_runs`, so it trained on the
    same members (checked against its tags and ``keep.npy``). Its
    ``<checkpoint_dir>/<run_id>/last.ckpt`` is loaded with
    :func:`mia_bench.audit.checkpoint.load_weights` into a copy of the student's ``net``
    (the architectures must match). In ``setup``, once per run, the teacher scores
    every pool example ``n`` (plain view, no augmentation) and the targets are::

        t_n = softmax((z_n + noise_std * eps_n) / T),  eps_n ~ N(0, I_C)

    with one noise draw per example, fixed for the whole run, from a generator seeded
    by ``(noise_seed, run_index)`` (so a resumed run gets the same targets). The
    student's loss on a batch, with pool indices from the batch, is::

        alpha * CE(z_student, y) + (1 - alpha) * T^2 * mean_i KL(t_i || softmax(z_student_i / T))

    (the hard-label CE uses ``model.label_smoothing``).

    Args:
        teacher_group: the group (tag ``mia.group``) of the teacher runs, trained with
            the same data split and net as the student, usually without any defense.
        temperature: T (> 0).
        noise_std: std of the Gaussian noise on the teacher's logits (0 = none).
        alpha: weight of the hard-label loss, in [0, 1] (0 = pure distillation).
        noise_seed: seed of the noise, combined with the run index.
        tracking_uri: MLflow store of the teacher group. When this and
            ``experiment_name`` are both None (default): the student's own store and
            experiment; when either is set, the other defaults to ``MlflowSettings``'.
        experiment_name: the teacher group's MLflow experiment (see ``tracking_uri``).
        checkpoint_dir: folder of ``<run_id>/last.ckpt``; default the student's
            checkpoint folder's parent (``--mlflow.checkpoint_dir``).
    """

    def __init__(
        self,
        teacher_group: str,
        temperature: float = 4.0,
        noise_std: float = 1.0,
        alpha: float = 0.0,
        noise_seed: int = 0,
        tracking_uri: str | None = None,
        experiment_name: str | None = None,
        checkpoint_dir: str | None = None,
    ) -> None:
        if temperature <= 0 or noise_std < 0 or not 0 <= alpha <= 1:
            raise ValueError(
                f"need temperature > 0, noise_std >= 0 and alpha in [0, 1], got "
                f"{temperature}, {noise_std}, {alpha}"
            )
        self.teacher_group = teacher_group
        self.temperature = temperature
        self.noise_std = noise_std
        self.alpha = alpha
        self.noise_seed = noise_seed
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.checkpoint_dir = checkpoint_dir
        self.soft_labels: torch.Tensor | None = None  # [N, C], set in setup
        self.teacher_run_id: str | None = None

    def setup(self, module: Classifier) -> None:
        trainer = module.trainer
        datamodule = trainer.datamodule
        client, exp_id = self._store(trainer)
        runs = group_runs(client, exp_id, self.teacher_group)
        run, checkpoint = teacher_checkpoint(
            runs, self.teacher_group, datamodule.run_index, self._checkpoint_dir(trainer)
        )
        student = self._student_logger(trainer)
        if student is not None and run.run_id == student.run_id:
            raise ValueError(
                f"teacher_group {self.teacher_group!r} is this run's own group: name the "
                "group of the teacher runs (usually the base config's, without a defense)."
            )
        check_same_training_set(run, datamodule)
        teacher = load_teacher(module.net, checkpoint)
        logits = pool_logits(teacher, datamodule.audit_dataloader(), trainer.strategy.root_device)
        self.set_teacher_logits(logits, datamodule.run_index)
        self.teacher_run_id = run.run_id

    def set_teacher_logits(self, logits: torch.Tensor, run_index: int) -> None:
        """Draw the noise and store the soft labels of every pool example."""
        seed = int(np.random.SeedSequence([self.noise_seed, run_index]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        self.soft_labels = noisy_soft_labels(logits, self.temperature, self.noise_std, generator)

    def training_loss(
        self, module: Classifier, logits: torch.Tensor, y: torch.Tensor, index: torch.Tensor
    ) -> torch.Tensor:
        if self.soft_labels is None:
            raise RuntimeError("NoisySelfDistillation.setup has not loaded the teacher yet")
        if self.soft_labels.device != logits.device:
            self.soft_labels = self.soft_labels.to(logits.device)
        soft = self.soft_labels[index.to(logits.device)]  # [B, C]
        loss = (1 - self.alpha) * distillation_loss(logits, soft, self.temperature)
        if self.alpha > 0:
            hard = F.cross_entropy(logits, y, label_smoothing=module.label_smoothing)
            loss = loss + self.alpha * hard
        return loss

    # --- where the teacher lives -------------------------------------------------
    def _student_logger(self, trainer: Any) -> MLFlowLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)

    def _store(self, trainer: Any) -> tuple[Any, str | None]:
        logger = self._student_logger(trainer)
        if logger is not None and self.tracking_uri is None and self.experiment_name is None:
            return logger.experiment, logger.experiment_id
        defaults = MlflowSettings()
        return client_and_experiment(
            MlflowSettings(
                tracking_uri=self.tracking_uri or defaults.tracking_uri,
                experiment_name=self.experiment_name or defaults.experiment_name,
            )
        )

    def _checkpoint_dir(self, trainer: Any) -> Path:
        if self.checkpoint_dir is not None:
            return Path(self.checkpoint_dir)
        dirpath = getattr(trainer.checkpoint_callback, "dirpath", None)
        if dirpath is not None:
            return Path(dirpath).parent  # the student's <checkpoint_dir>/<run_id>
        return Path(MlflowSettings().checkpoint_dir)
