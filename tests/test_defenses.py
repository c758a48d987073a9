"""Defenses: DP-SGD against opacus' accountant and hand-clipped gradients, RelaxLoss and
noisy self-distillation against hand computations, every defense config through the CLI
parser, and DP-SGD / self-distillation end to end through ``mia-bench fit``."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning import Trainer
from lightning.pytorch.callbacks import Callback
from mlflow.tracking import MlflowClient
from opacus.accountants import RDPAccountant
from opacus.data_loader import DPDataLoader
from torch.utils.data import DataLoader, TensorDataset

from mia_bench.audit.checkpoint import load_weights
from mia_bench.classifier import Classifier
from mia_bench.cli import main
from mia_bench.data import Digits
from mia_bench.data.batches import TensorBatches
from mia_bench.defenses import DPSGD, NoisySelfDistillation, RelaxLoss
from mia_bench.defenses.relaxloss import flattened_targets
from mia_bench.defenses.self_distillation import (
    check_same_training_set,
    load_teacher,
    pool_logits,
    teacher_checkpoint,
)
from mia_bench.lightning_cli import parse_fit_config
from mia_bench.nets import MLP, ResNet18
from mia_bench.store.artifacts import list_epochs, load_signals, local_artifact_dir
from mia_bench.store.groups import GroupRun

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "lightning_configs"
QUICKSTART = str(CONFIGS / "quickstart.yaml")
DEFENSE_CONFIGS = sorted(p.stem for p in (CONFIGS / "defense").glob("*.yaml"))
TINY = [
    "--model.net.init_args.hidden=[32]",
    "--signals.progress=false",
    "--trainer.enable_progress_bar=false",
    "--attacks.attacks=[loss]",
]


def _defense(name: str) -> str:
    return str(CONFIGS / "defense" / f"{name}.yaml")


def _rdp_epsilon(noise: float, sample_rate: float, steps: int, delta: float) -> float:
    accountant = RDPAccountant()
    accountant.history = [(noise, sample_rate, steps)]
    return accountant.get_epsilon(delta)


def _members_loader_length(batch_size: int = 64) -> int:
    dm = Digits(batch_size=batch_size)
    dm.setup("fit")
    return len(dm.train_dataloader())


# --- configs -------------------------------------------------------------------------
def test_every_defense_has_a_config():
    expected = {"dp_sgd", "dropout", "label_smoothing", "relaxloss", "self_distillation"}
    assert expected | {"weight_decay"} == set(DEFENSE_CONFIGS)


@pytest.mark.parametrize("name", DEFENSE_CONFIGS)
def test_defense_config_parses_and_keeps_the_base(name):
    config, _ = parse_fit_config(["-c", QUICKSTART, "-c", _defense(name)])
    assert config.model.class_path == "mia_bench.classifier.Classifier"
    model = config.model.init_args
    assert model.net.class_path == "mia_bench.nets.MLP"
    assert model.net.init_args.hidden == [256, 128]
    assert model.optimizer.class_path == "torch.optim.Adam"
    assert model.optimizer.init_args.lr == 0.001
    assert model.optimizer.init_args.weight_decay == (5e-4 if name == "weight_decay" else 0)
    assert model.net.init_args.dropout == (0.5 if name == "dropout" else 0)
    assert model.label_smoothing == (0.1 if name == "label_smoothing" else 0)
    classes = {
        "dp_sgd": "mia_bench.defenses.DPSGD",
        "relaxloss": "mia_bench.defenses.RelaxLoss",
        "self_distillation": "mia_bench.defenses.NoisySelfDistillation",
    }
    defense = model.defense
    assert (defense.class_path if defense else None) == classes.get(name)


# --- DP-SGD: clipping and noise on a 2-example batch --------------------------------
def _two_example_setup(max_grad_norm: float, noise: float, width: int = 16):
    """A net with opacus attached, an unhooked copy, a 2-example batch, the DPOptimizer."""
    torch.manual_seed(0)
    net = MLP((6,), 3, hidden=[width])
    reference = copy.deepcopy(net)
    x, y = torch.randn(2, 6) * 5, torch.tensor([0, 2])
    loader = DataLoader(TensorDataset(x, y), batch_size=2)
    defense = DPSGD(noise_multiplier=noise, max_grad_norm=max_grad_norm, poisson_sampling=False)
    optimizer, _ = defense.make_private(net, torch.optim.SGD(net.parameters(), lr=0.0), loader)
    return net, reference, x, y, optimizer


def _per_example_grads(net, x, y) -> list[list[torch.Tensor]]:
    grads = []
    for i in range(len(y)):
        net.zero_grad()
        F.cross_entropy(net(x[i : i + 1]), y[i : i + 1]).backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    return grads


def test_dp_sgd_clips_each_example_gradient_to_max_grad_norm():
    clip = 0.01
    net, reference, x, y, optimizer = _two_example_setup(max_grad_norm=clip, noise=0.0)
    expected_grads = _per_example_grads(reference, x, y)  # one backward per example
    optimizer.zero_grad()
    F.cross_entropy(net(x), y).backward()
    for p in net.parameters():
        assert p.grad_sample.shape == (2, *p.shape)  # opacus' per-example gradients
    for i, grads in enumerate(expected_grads):
        for p, g in zip(net.parameters(), grads, strict=True):
            torch.testing.assert_close(p.grad_sample[i], g)
    norms = [math.sqrt(sum(float(g.pow(2).sum()) for g in grads)) for grads in expected_grads]
    assert min(norms) > 10 * clip  # clipping is active for both examples
    optimizer.pre_step()  # clip, add (zero) noise, average over the expected batch of 2
    factors = [min(1.0, clip / (n + 1e-6)) for n in norms]
    for k, p in enumerate(net.parameters()):
        clipped = [f * grads[k] for f, grads in zip(factors, expected_grads, strict=True)]
        torch.testing.assert_close(p.grad, (clipped[0] + clipped[1]) / 2)
    for f, n in zip(factors, norms, strict=True):
        assert f * n <= clip * (1 + 1e-5)  # each example's contribution has norm <= C


def test_dp_sgd_noise_has_std_sigma_times_c_over_batch():
    net, _, x, y, optimizer = _two_example_setup(max_grad_norm=0.5, noise=2.0, width=512)
    optimizer.zero_grad()
    F.cross_entropy(net(x), y).backward()
    clean = _clipped_mean(net, optimizer)
    optimizer.pre_step()
    noise = torch.cat(
        [(p.grad - c).flatten() for p, c in zip(net.parameters(), clean, strict=True)]
    )
    assert noise.numel() > 3000
    assert noise.std().item() == pytest.approx(2.0 * 0.5 / 2, rel=0.05)


def _clipped_mean(net, optimizer) -> list[torch.Tensor]:
    flat = [p.grad_sample.reshape(2, -1) for p in net.parameters()]
    norms = torch.cat(flat, dim=1).norm(dim=1)  # [2]
    factors = (optimizer.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
    return [torch.einsum("i,i...", factors, p.grad_sample) / 2 for p in net.parameters()]


def test_dp_sgd_refuses_batchnorm_or_replaces_it():
    net = ResNet18((3, 32, 32), 10)
    with pytest.raises(ValueError, match="BatchNorm.*fix_batchnorm=true"):
        DPSGD().private_net(net)
    fixed = DPSGD(fix_batchnorm=True).private_net(net)
    assert isinstance(fixed.bn1, torch.nn.GroupNorm) and hasattr(fixed, "embedding")
    mlp = MLP((4,), 2)
    assert DPSGD().private_net(mlp) is mlp


@pytest.mark.parametrize(("poisson", "loader_type"), [(True, DPDataLoader), (False, TensorBatches)])
def test_dp_sgd_in_a_trainer_samples_as_asked_and_keeps_the_net(poisson, loader_type):
    torch.manual_seed(0)
    defense = DPSGD(noise_multiplier=1.3, max_grad_norm=1.0, delta=1e-5, poisson_sampling=poisson)
    model = Classifier(partial(MLP, hidden=[16]), defense=defense)
    keys = list(model.state_dict())
    trainer = Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=Digits(batch_size=64))
    assert isinstance(trainer.train_dataloader, loader_type)  # no Poisson: tensor batches
    batches = _members_loader_length()
    assert trainer.global_step == defense.steps_taken() == batches
    expected = _rdp_epsilon(1.3, 1 / batches, batches, 1e-5)
    assert defense.epsilon() == pytest.approx(expected, rel=1e-9)
    assert isinstance(model.net, MLP) and list(model.state_dict()) == keys


class _BatchSizes(Callback):
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.sizes.append(len(batch[1]))


def test_dp_sgd_survives_empty_poisson_batches():
    torch.manual_seed(0)
    defense = DPSGD(noise_multiplier=1.0, max_grad_norm=1.0)
    model = Classifier(partial(MLP, hidden=[8]), defense=defense)
    sizes = _BatchSizes()
    trainer = Trainer(
        max_epochs=1,
        limit_train_batches=40,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[sizes],
    )
    trainer.fit(model, datamodule=Digits(batch_size=2))  # q = 1/428: P(empty) = e^-2
    assert 0 in sizes.sizes and len(set(sizes.sizes)) > 2  # Poisson: sizes vary
    assert defense.steps_taken() == trainer.global_step == 40
    assert all(torch.isfinite(p).all() for p in model.parameters())


# --- RelaxLoss -----------------------------------------------------------------------
def _logits_of(probs: list[list[float]]) -> torch.Tensor:
    return torch.log(torch.tensor(probs)).requires_grad_(True)


def test_flattened_targets_keep_true_score_and_spread_the_rest():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.6, 0.3]]))
    y = torch.tensor([0, 0, 1])
    targets = flattened_targets(logits, y)
    expected = torch.tensor([[0.7, 0.15, 0.15], [1.0, 0.0, 0.0], [0.2, 0.6, 0.2]])
    torch.testing.assert_close(targets, expected)  # row 2 misclassified: one-hot
    clamped = flattened_targets(logits, y, upper=0.5)
    torch.testing.assert_close(clamped[0], torch.tensor([0.5, 0.25, 0.25]))
    assert not flattened_targets(logits.requires_grad_(True), y).requires_grad


@pytest.mark.parametrize("epoch", [0, 1])
def test_relaxloss_descends_while_loss_is_above_alpha(epoch):
    logits, y = _logits_of([[0.2, 0.5, 0.3], [0.3, 0.3, 0.4]]), torch.tensor([0, 1])
    loss = RelaxLoss(alpha=1.0).relaxed_loss(logits, y, epoch)
    expected = -(math.log(0.2) + math.log(0.3)) / 2  # 1.41 >= alpha
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_relaxloss_ascends_below_alpha_on_even_epochs():
    logits, y = _logits_of([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]]), torch.tensor([0, 1])
    loss = RelaxLoss(alpha=1.0).relaxed_loss(logits, y, epoch=2)
    ce = -(math.log(0.9) + math.log(0.8)) / 2  # 0.16 < alpha
    assert loss.item() == pytest.approx(-ce, rel=1e-6)
    loss.backward()
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]])
    onehot = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    torch.testing.assert_close(logits.grad, -(probs - onehot) / 2)  # minus the CE gradient


def test_relaxloss_flattens_posteriors_below_alpha_on_odd_epochs():
    probs = [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.3, 0.6, 0.1]]
    logits, y = _logits_of(probs), torch.tensor([0, 1, 2])  # the last one is misclassified
    loss = RelaxLoss(alpha=2.0).relaxed_loss(logits, y, epoch=3)
    targets = torch.tensor([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.0, 0.0, 1.0]])
    expected = -(targets * torch.log(torch.tensor(probs))).sum(1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    # the targets are constants: gradient (softmax - t) / B, zero for the flattened rows
    torch.testing.assert_close(logits.grad, (torch.tensor(probs) - targets) / 3)


def test_relaxloss_uses_the_lightning_epoch():
    module = Classifier(partial(MLP, hidden=[8]))
    logits, y = _logits_of([[0.9, 0.05, 0.05]]), torch.tensor([0])
    loss = RelaxLoss(alpha=1.0).training_loss(module, logits, y, torch.tensor([0]))
    assert loss.item() == pytest.approx(math.log(0.9), rel=1e-6)  # epoch 0: ascent


# --- noisy self-distillation ---------------------------------------------------------
def _saved_classifier(tmp_path: Path, hidden: int = 16) -> tuple[Classifier, Path]:
    torch.manual_seed(1)
    teacher = Classifier(partial(MLP, hidden=[hidden]))
    path = tmp_path / "run123" / "last.ckpt"
    path.parent.mkdir()
    torch.save({"state_dict": teacher.state_dict(), "epoch": 4}, path)
    return teacher, path


def _pool_loader(n: int = 12) -> DataLoader:
    torch.manual_seed(2)
    data = TensorDataset(torch.rand(n, 64), torch.randint(0, 10, (n,)), torch.arange(n))
    return DataLoader(data, batch_size=5)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_distillation_loss_is_tempered_kl_to_the_teacher(tmp_path, temperature):
    teacher, path = _saved_classifier(tmp_path)
    student = Classifier(partial(MLP, hidden=[16]))
    loaded = load_teacher(student.net, path)
    defense = NoisySelfDistillation("t", temperature=temperature, noise_std=0.0, alpha=0.0)
    defense.set_teacher_logits(pool_logits(loaded, _pool_loader()), run_index=0)
    index = torch.tensor([7, 1, 10])
    x = _pool_loader().dataset.tensors[0][index]
    logits = student(x)
    loss = defense.training_loss(student, logits, torch.tensor([0, 1, 2]), index)
    with torch.no_grad():
        p = torch.softmax(teacher(x) / temperature, dim=1)  # the saved teacher itself
        q = torch.softmax(logits / temperature, dim=1)
        expected = temperature**2 * (p * (p.log() - q.log())).sum(1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    mixed = NoisySelfDistillation("t", temperature=temperature, noise_std=0.0, alpha=0.25)
    mixed.soft_labels = defense.soft_labels
    both = mixed.training_loss(student, logits, torch.tensor([0, 1, 2]), index)
    hard = F.cross_entropy(logits, torch.tensor([0, 1, 2]))
    assert both.item() == pytest.approx(0.75 * expected.item() + 0.25 * hard.item(), rel=1e-5)


def test_noisy_soft_labels_are_fixed_per_run_and_noised_in_logit_space():
    logits = torch.zeros(4000, 10)
    one = NoisySelfDistillation("t", temperature=2.0, noise_std=0.5)
    one.set_teacher_logits(logits, run_index=0)
    again = NoisySelfDistillation("t", temperature=2.0, noise_std=0.5)
    again.set_teacher_logits(logits, run_index=0)
    other = NoisySelfDistillation("t", temperature=2.0, noise_std=0.5)
    other.set_teacher_logits(logits, run_index=1)
    torch.testing.assert_close(one.soft_labels, again.soft_labels)  # a resume gets the same
    assert not torch.allclose(one.soft_labels, other.soft_labels)
    torch.testing.assert_close(one.soft_labels.sum(1), torch.ones(4000))
    # log t = (z + noise) / T - logsumexp: centred log-probabilities recover noise / T
    centred = one.soft_labels.log() - one.soft_labels.log().mean(1, keepdim=True)
    assert (centred * 2.0).std().item() == pytest.approx(0.5 * math.sqrt(0.9), rel=0.03)


def _group_run(tmp_path: Path, run_index: int, tags: dict | None = None) -> GroupRun:
    return GroupRun("run123", "teachers", run_index, "FINISHED", tmp_path, tags or {})


def test_missing_teacher_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="teacher group 'teachers' has no runs"):
        teacher_checkpoint([], "teachers", 0, tmp_path)
    with pytest.raises(FileNotFoundError, match="none with run_index 1"):
        teacher_checkpoint([_group_run(tmp_path, 0)], "teachers", 1, tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*run123/last.ckpt"):
        teacher_checkpoint([_group_run(tmp_path, 0)], "teachers", 0, tmp_path)
    _saved_classifier(tmp_path)
    run, path = teacher_checkpoint([_group_run(tmp_path, 0)], "teachers", 0, tmp_path)
    assert path == tmp_path / "run123" / "last.ckpt"


def test_teacher_must_match_the_students_net_and_training_set(tmp_path):
    _, path = _saved_classifier(tmp_path, hidden=16)
    with pytest.raises(ValueError, match="same model.net"):
        load_teacher(MLP((64,), 10, hidden=[32]), path)
    dm = Digits(run_index=0)
    other_split = _group_run(tmp_path, 0, {"mia.split_seed": "7", "mia.dataset": "Digits"})
    with pytest.raises(ValueError, match="split_seed=7"):
        check_same_training_set(other_split, dm)
    np.save(tmp_path / "keep.npy", ~dm.keep)
    with pytest.raises(ValueError, match="other examples"):
        check_same_training_set(_group_run(tmp_path, 0), dm)
    np.save(tmp_path / "keep.npy", dm.keep)
    check_same_training_set(_group_run(tmp_path, 0, {"mia.split_seed": "0"}), dm)


# --- end to end through mia-bench fit ------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One MLflow store (created once: its migrations take seconds) as the cwd."""
    folder = tmp_path_factory.mktemp("defense_store")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        yield folder


def _group(folder: Path, group: str):
    client = MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("mia-bench")
    (run,) = client.search_runs([exp.experiment_id], f"tags.`mia.group` = '{group}'")
    return client, run


def _epsilons(client: MlflowClient, run_id: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, "privacy/epsilon"))


@pytest.mark.slow
def test_dp_sgd_fit_logs_epsilon_checkpoints_and_resumes(store):
    """Killed (``kill -9``) in epoch 1 and resumed, the accountant continues from epoch 0."""
    args = ["fit", "-c", QUICKSTART, "-c", _defense("dp_sgd"), "--group=dp", *TINY]
    args += ["--signals.layers=[embedding]"]  # hooks inside opacus' wrapped module
    killpoints = Path(__file__).parent / "store" / "killpoints"
    env = os.environ | {"MIA_KILL_AT": "epoch", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(killpoints), env.get("PYTHONPATH")] if p)
    command = [sys.executable, "-m", "mia_bench", *args, "--trainer.max_epochs=3"]
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    client, run = _group(store, "dp")
    assert [step for step, _ in _epsilons(client, run.info.run_id)] == [0]
    last = store / "mlruns" / "checkpoints" / run.info.run_id / "last.ckpt"
    assert load_weights(Classifier(partial(MLP, hidden=[32])), last) == 0  # plain keys

    assert main([*args, "--trainer.max_epochs=3", "--ckpt_path=last"]) == 0
    batches = _members_loader_length()
    eps = _epsilons(client, run.info.run_id)
    assert [step for step, _ in eps] == [0, 1, 2] and eps[0][1] < eps[1][1] < eps[2][1]
    for epoch, value in eps:
        expected = _rdp_epsilon(1.0, 1 / batches, (epoch + 1) * batches, 1e-5)
        assert value == pytest.approx(expected, rel=1e-9)
    art = local_artifact_dir(run.info.artifact_uri)
    assert list_epochs(art) == [0, 1, 2]
    assert load_signals(art, 1, ["embedding"]).embeddings["embedding"].shape == (1797, 32)


@pytest.mark.slow
def test_self_distillation_fit_learns_from_the_teacher_group(store):
    main(["fit", "-c", QUICKSTART, "--group=teacher", "--trainer.max_epochs=1", *TINY])
    student = ["fit", "-c", QUICKSTART, "-c", _defense("self_distillation"), *TINY]
    student += ["--trainer.max_epochs=1"]
    main([*student, "--model.defense.init_args.teacher_group=teacher", "--group=student"])
    client, run = _group(store, "student")
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/acc")] == [0]
    with pytest.raises(FileNotFoundError, match="teacher group 'absent' has no runs"):
        main([*student, "--model.defense.init_args.teacher_group=absent", "--group=orphan"])


@pytest.mark.slow
def test_the_empirical_epsilon_of_a_dp_sgd_run_stays_below_its_accountants(store):
    """A lower bound from the loss attack (Jagielski et al. 2020) never exceeds the
    accountant's epsilon at the same delta (seeded DP-SGD run)."""
    from mia_bench.empirical_privacy import epsilon_lower_bound
    from mia_bench.store.artifacts import load_keep

    args = ["fit", "-c", QUICKSTART, "-c", _defense("dp_sgd"), "--group=dp_bound", *TINY]
    assert main([*args, "--trainer.max_epochs=2"]) == 0
    client, run = _group(store, "dp_bound")
    accountant = _epsilons(client, run.info.run_id)[-1][1]
    art = local_artifact_dir(run.info.artifact_uri)
    signals = load_signals(art, 1)
    logits = torch.as_tensor(signals.logits[:, 0], dtype=torch.float64)  # [N, C], plain view
    loss = F.cross_entropy(logits, torch.as_tensor(signals.labels), reduction="none")
    bound = epsilon_lower_bound(-loss.numpy(), load_keep(art), delta=1e-5)
    assert 0.0 <= bound.epsilon <= accountant, (bound, accountant)
    assert bound.delta == 1e-5 and 0 <= bound.fpr_high <= 1 and 0 <= bound.tpr_low <= 1
    # the run logs the attacks' best bound beside the accountant's, epoch by epoch
    history = json.loads((art / "mia" / "history.json").read_text())
    logged = client.get_metric_history(run.info.run_id, "privacy/epsilon_lower_bound")
    assert sorted(m.step for m in logged) == [0, 1]
    spent_by_epoch = _epsilons(client, run.info.run_id)
    for m, (_, spent) in zip(sorted(logged, key=lambda m: m.step), spent_by_epoch, strict=True):
        best = max(v["epsilon_lower_bound"] for v in history[str(m.step)].values() if "auc" in v)
        assert m.value == pytest.approx(best) and m.value <= spent
    assert history["1"]["loss"]["epsilon_lower_bound"] == pytest.approx(bound.epsilon)
