"""DP-SGD: per-example clipping plus Gaussian noise, through opacus.

Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar, Zhang, "Deep Learning with
Differential Privacy", CCS 2016 (arXiv:1607.00133).

Each optimizer step, for a batch ``B`` sampled with rate ``q``::

    g_i   = grad of loss(x_i)                            per-example gradient (all params)
    g_i  <- g_i * min(1, C / (||g_i||_2 + 1e-6))         clip to norm C (opacus' "flat")
    g     = (sum_i g_i + N(0, (sigma * C)^2 I)) / (q * n)

and the wrapped optimizer (SGD, Adam, ...) takes that ``g`` as its gradient. ``q * n`` is
opacus' expected batch size ``int(n / len(train_loader))``. The privacy spent so far is
``privacy/epsilon`` at the configured ``delta``, logged every epoch.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import torch

from mia_bench.classifier import Classifier, Defense
from mia_bench.extras import require


def _opacus(module: str = "opacus") -> ModuleType:
    """``module`` of opacus (the ``dp`` extra), or a one-line install hint.

    Asked for when training starts, not when the defense is built: instantiating a DP-SGD
    config (as checkpoint audits do) needs no opacus.
    """
    return require(module, extra="dp", what="the dp_sgd defense (DP-SGD)")


class DPSGD(Defense):
    """Differentially private training with opacus' ``PrivacyEngine``.

    Integration with Lightning and mia-bench:

    * ``make_private(..., wrap_model=False)`` attaches opacus' per-sample-gradient hooks
      to ``module.net`` without wrapping it, so the net, its layer names (signal
      recording hooks ``embedding``) and the checkpoint keys (``net.*``) are exactly
      those of an undefended run: ``mia_bench.audit.checkpoint.load_weights`` loads a DP-SGD
      checkpoint into a plain :class:`Classifier` of the same config.
    * The ``DPOptimizer`` (clipping, noise, accountant step hook) is what
      ``configure_optimizers`` returns, so Lightning steps it.
    * ``poisson_sampling=True`` (default): the datamodule's ``train_dataloader`` is
      replaced, on this datamodule instance only, by opacus' ``DPDataLoader`` over the
      same members: every member joins each batch independently with ``q = 1 /
      len(train_loader)``, for ``len(train_loader)`` batches per epoch (batches vary in
      size and may be empty). That is the sampling the RDP/PRV accountants assume; it
      wraps the datamodule's per-example DataLoader (``example_dataloader("train")``).
      ``poisson_sampling=False`` keeps the shuffled fixed-size batches (tensor batches
      where the pool has them: same size and count per epoch) and accounts them
      as if Poisson-sampled with the same ``q`` (the approximation opacus' own
      Lightning example makes); the epsilon is then not a proven bound.
    * Nets with BatchNorm (ResNet18) mix examples within a batch, which per-example
      clipping cannot bound: refused with an error, or with ``fix_batchnorm=True``
      replaced by GroupNorm through ``opacus.validators.ModuleValidator.fix``. Such a
      run's checkpoints hold GroupNorm weights, so they load only into a net with the
      same replacement, not into the config's BatchNorm net.
    * ``--ckpt_path last`` resumes: weights and optimizer state come from the
      checkpoint; the accountant counts the steps taken before the resume from
      ``trainer.global_step`` (sigma and q are constant over a run), so
      ``privacy/epsilon`` covers the whole run.

    Args:
        noise_multiplier: sigma, noise std relative to ``max_grad_norm``.
        max_grad_norm: C, the bound on each example's gradient norm (all parameters).
        delta: the delta of the reported (epsilon, delta); None = 1 / (number of members).
        poisson_sampling: sample batches as the accountant assumes (see above).
        accountant: opacus accountant, ``"rdp"`` (Renyi DP, as Abadi et al.'s moments
            accountant), ``"prv"`` or ``"gdp"``.
        fix_batchnorm: replace layers opacus cannot train privately (BatchNorm) with
            their ``ModuleValidator.fix`` equivalents instead of refusing the net.
    """

    supports_compile = False  # opacus' per-sample-gradient hooks do not fire in compiled code

    def __init__(
        self,
        noise_multiplier: float = 1.0,
        max_grad_norm: float = 1.0,
        delta: float | None = 1e-5,
        poisson_sampling: bool = True,
        accountant: str = "rdp",
        fix_batchnorm: bool = False,
    ) -> None:
        if noise_multiplier < 0 or max_grad_norm <= 0:
            raise ValueError(
                f"DP-SGD needs noise_multiplier >= 0 and max_grad_norm > 0, got "
                f"{noise_multiplier} and {max_grad_norm}"
            )
        if delta is not None and not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        if accountant not in ("rdp", "prv", "gdp"):
            raise ValueError(f"accountant must be 'rdp', 'prv' or 'gdp', got {accountant!r}")
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.delta = delta
        self.poisson_sampling = poisson_sampling
        self.accountant = accountant
        self.fix_batchnorm = fix_batchnorm
        self.engine: Any = None  # opacus.PrivacyEngine, once the optimizer is built
        self.hooks: Any = None  # opacus' per-sample-gradient hooks on the net
        self.sample_rate: float | None = None
        self.num_examples: int | None = None

    # --- Defense hooks -----------------------------------------------------------
    def check_installed(self) -> None:
        _opacus()

    def setup(self, module: Classifier) -> None:
        module.net = self.private_net(module.net)

    def training_loss(
        self, module: Classifier, logits: torch.Tensor, y: torch.Tensor, index: torch.Tensor
    ) -> torch.Tensor:
        if len(y) == 0:  # an empty Poisson batch: no gradient, the step adds noise only
            return logits.sum() * 0.0
        return super().training_loss(module, logits, y, index)

    def configure_optimizer(
        self, module: Classifier, optimizer: torch.optim.Optimizer
    ) -> torch.optim.Optimizer:
        datamodule = _datamodule(module)
        loader = _original_train_dataloader(datamodule)()
        dp_optimizer, _ = self.make_private(module.net, optimizer, loader)
        if self.poisson_sampling:
            serve_poisson_batches(datamodule)
        return dp_optimizer

    def epoch_metrics(self, module: Classifier) -> dict[str, float]:
        if self.engine is None:
            return {}
        self.count_steps_before_resume(module.trainer.global_step)
        return {"privacy/epsilon": self.epsilon()}

    # --- the parts, usable without a Trainer ------------------------------------
    def private_net(self, net: torch.nn.Module) -> torch.nn.Module:
        """``net`` if opacus can train it privately, else its fixed copy or an error."""
        ModuleValidator = _opacus("opacus.validators").ModuleValidator

        errors = ModuleValidator.validate(net, strict=False)
        if not errors:
            return net
        if not self.fix_batchnorm:
            reasons = "; ".join(sorted({str(e).split(".")[0] for e in errors}))
            raise ValueError(
                f"DP-SGD cannot train {type(net).__name__} with per-example clipping: "
                f"{reasons}. Use a net without BatchNorm (MLP, CNN), or set "
                "--model.defense.init_args.fix_batchnorm=true to replace BatchNorm with "
                "GroupNorm (opacus.validators.ModuleValidator.fix); its checkpoints then "
                "load only into the fixed architecture."
            )
        fixed = ModuleValidator.fix(net)
        left = ModuleValidator.validate(fixed, strict=False)
        if left:
            raise ValueError(f"ModuleValidator.fix could not make the net private: {left}")
        return fixed

    def make_private(
        self,
        net: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loader: torch.utils.data.DataLoader,
    ) -> tuple[torch.optim.Optimizer, torch.utils.data.DataLoader]:
        """Attach opacus to ``net`` (left unwrapped) and wrap ``optimizer``.

        Returns:
            opacus' ``DPOptimizer`` and the loader it accounts for (a ``DPDataLoader``
            with Poisson sampling, else ``loader`` itself).
        """
        PrivacyEngine = _opacus().PrivacyEngine

        if self.hooks is not None:  # built again (e.g. a second fit): no double hooks
            self.hooks.cleanup()
        self.engine = PrivacyEngine(accountant=self.accountant)
        self.hooks, dp_optimizer, dp_loader = self.engine.make_private(
            module=net,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            poisson_sampling=self.poisson_sampling,
            wrap_model=False,
        )
        self.sample_rate = 1 / len(loader)
        self.num_examples = len(loader.dataset)
        return dp_optimizer, dp_loader

    def steps_taken(self) -> int:
        """Optimizer steps the accountant has recorded."""
        return sum(steps for _, _, steps in self.engine.accountant.history)

    def count_steps_before_resume(self, global_step: int) -> None:
        """Account the steps a resumed run took before this process started."""
        missing = global_step - self.steps_taken()
        if missing > 0:
            self.engine.accountant.history.insert(
                0, (self.noise_multiplier, self.sample_rate, missing)
            )

    def epsilon(self) -> float:
        """Epsilon spent so far at ``delta`` (1 / members when delta is None)."""
        if self.engine is None or self.steps_taken() == 0:
            return 0.0
        delta = self.delta if self.delta is not None else 1 / self.num_examples
        return float(self.engine.get_epsilon(delta))


def _datamodule(module: Classifier) -> Any:
    datamodule = getattr(module.trainer, "datamodule", None)
    if datamodule is None:
        raise ValueError(
            "DP-SGD needs the members' DataLoader to set its sample rate: fit with a "
            "datamodule (trainer.fit(model, datamodule=...), as mia-bench fit does)."
        )
    return datamodule


def _original_train_dataloader(datamodule: Any) -> Any:
    """What makes the members' per-example ``DataLoader``, which opacus wraps and accounts.

    A :class:`~mia_bench.data.membership.MembershipDataModule` may serve training as
    tensor batches; opacus' Poisson sampler needs a DataLoader with a dataset, so it asks
    for ``example_dataloader("train")`` (same members, batch size and number of batches).
    """
    example_dataloader = getattr(datamodule, "example_dataloader", None)
    if example_dataloader is not None:
        return functools.partial(example_dataloader, "train")
    fn = datamodule.train_dataloader
    return getattr(fn, "dp_original", fn)


def serve_poisson_batches(datamodule: Any) -> None:
    """Make ``datamodule.train_dataloader()`` return opacus' Poisson-sampling loader.

    Only this datamodule instance changes; the loader wraps the datamodule's own
    (members, transforms, workers) with ``q = 1 / len(loader)``.
    """
    DPDataLoader = _opacus("opacus.data_loader").DPDataLoader
    original = _original_train_dataloader(datamodule)

    def train_dataloader() -> torch.utils.data.DataLoader:  # opacus' DPDataLoader
        return DPDataLoader.from_data_loader(original())

    train_dataloader.dp_original = original
    datamodule.train_dataloader = train_dataloader
