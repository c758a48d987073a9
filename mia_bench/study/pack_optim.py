"""Adam, AdamW and SGD over stacked parameters ``[K, ...]``, one step count per run.

K runs of one recipe share hyperparameters but not their progress: run ``k`` steps only
where ``active[k]`` is true (a run whose epoch has fewer batches skips the missing ones),
and its bias corrections use its own step count. The update is torch.optim's
single-tensor arithmetic (``torch/optim/adam.py``, ``sgd.py``) applied to the stack, so
each run's slice follows the trajectory ``torch.optim`` gives it alone, to float
rounding. States convert to and from ``torch.optim`` state dicts per run, so a packed
run's checkpoint holds the optimizer state that ``mia-bench fit`` would have saved.
"""

from __future__ import annotations

from typing import Any

import torch

SUPPORTED = ("Adam", "AdamW", "SGD")
_STATE_KEYS = {"Adam": ("exp_avg", "exp_avg_sq"), "AdamW": ("exp_avg", "exp_avg_sq")}


def unsupported_options(kind: str, options: dict[str, Any]) -> str | None:
    """Why ``torch.optim.<kind>(**options)`` cannot be vectorized here, or None.

    >>> unsupported_options("Adam", {"lr": 0.01}), unsupported_options("Adam", {"amsgrad": True})
    (None, 'amsgrad=True')
    """
    if kind not in SUPPORTED:
        return f"optimizer {kind} (packing supports {', '.join(SUPPORTED)})"
    for flag in ("amsgrad", "maximize", "decoupled_weight_decay"):
        if options.get(flag):
            return f"{flag}=True"
    if kind == "SGD" and options.get("nesterov") and not options.get("momentum"):
        return "nesterov without momentum"
    return None


class StackedOptimizer:
    """One torch.optim optimizer per run, stepped together on ``[K, ...]`` stacks.

    Args:
        kind: ``"Adam"``, ``"AdamW"`` or ``"SGD"``.
        params: ``{name: Tensor[K, ...]}``, leaf tensors whose ``.grad`` holds each run's
            gradient in its slice.
        defaults: the ``param_groups[0]`` options of the run's own torch.optim
            optimizer (``lr``, ``betas``, ``eps``, ``weight_decay``, ``momentum``, ...).
    """

    def __init__(self, kind: str, params: dict[str, torch.Tensor], defaults: dict[str, Any]):
        self.kind, self.params, self.defaults = kind, params, dict(defaults)
        k = next(iter(params.values())).shape[0]
        device = next(iter(params.values())).device
        self.steps = torch.zeros(k, dtype=torch.int64, device=device)  # [K]
        keys = _STATE_KEYS.get(kind, ("momentum_buffer",))
        self.state = {n: {s: torch.zeros_like(p) for s in keys} for n, p in params.items()}

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        """Update the runs with ``active[k]`` (``bool[K]``); the others stay as they are.

        In place, with the inactive runs' weights of every update set to zero (their
        parameters and states are left bit for bit), so no masked copy is made.
        """
        self.steps += active.long()
        on = active.to(next(iter(self.params.values())).dtype)  # [K]
        for name, p in self.params.items():
            shape = (-1,) + (1,) * (p.dim() - 1)
            if self.kind == "SGD":
                _sgd(
                    p,
                    p.grad,
                    self.steps.view(shape),
                    self.state[name],
                    self.defaults,
                    on.view(shape),
                )
            else:
                self._adam(p, p.grad, self.steps.view(shape), self.state[name], on.view(shape))

    def _adam(self, p, g, t, state, on) -> None:
        """torch.optim.Adam/AdamW's step on runs with ``on == 1``, by torch's fused kernel.

        The kernel takes one step count per tensor, so each run's slice goes in as its
        own tensor: one pass over parameters, gradients and moments, in cache per run.
        """
        runs = on.flatten().nonzero().flatten().tolist()
        if not runs:
            return
        o = self.defaults
        fused = torch._fused_adamw_ if self.kind == "AdamW" else torch._fused_adam_
        steps = t.flatten().to(torch.float32)  # [K], counts after this step
        fused(
            [p[k] for k in runs],
            [g[k] for k in runs],
            [state["exp_avg"][k] for k in runs],
            [state["exp_avg_sq"][k] for k in runs],
            [],
            [steps[k] for k in runs],
            lr=o["lr"],
            beta1=o["betas"][0],
            beta2=o["betas"][1],
            weight_decay=o["weight_decay"],
            eps=o["eps"],
            amsgrad=False,
            maximize=False,
        )

    # --- torch.optim state dicts, one per run ------------------------------------
    def run_state(self, k: int, names: list[str]) -> dict[int, dict[str, torch.Tensor]]:
        """Run ``k``'s ``optimizer.state`` as torch.optim keeps it, by parameter position."""
        steps = int(self.steps[k])
        if steps == 0:
            return {}
        out = {}
        for i, name in enumerate(names):
            entry = {key: value[k].detach().clone() for key, value in self.state[name].items()}
            if self.kind != "SGD":
                entry["step"] = torch.tensor(float(steps))
            elif not self.defaults.get("momentum"):
                entry = {"momentum_buffer": None}
            out[i] = entry
        return out

    def load_run_state(self, k: int, names: list[str], state: dict[int, dict]) -> None:
        """Put run ``k``'s torch.optim ``state`` (by parameter position) into the stacks."""
        steps = 0
        for i, name in enumerate(names):
            entry = state.get(i, {})
            for key, stacked in self.state[name].items():
                if entry.get(key) is not None:
                    stacked[k].copy_(entry[key])
            steps = int(entry["step"]) if "step" in entry else steps
        if self.kind == "SGD" and state:
            steps = max(steps, 1)  # SGD keeps no count: it only matters whether it stepped
        self.steps[k] = steps


def _sgd(p, g, t, state, o, on) -> None:
    """torch.optim.SGD's step on runs with ``on == 1``; ``t``: step counts after it."""
    lr, momentum, wd = o["lr"], o.get("momentum", 0), o.get("weight_decay", 0)
    if wd != 0:
        g = g.add(p, alpha=wd)
    if momentum != 0:
        buf = state["momentum_buffer"]
        later = buf.mul(momentum).add_(g, alpha=1 - o.get("dampening", 0))
        fresh = torch.where(t == 1, g, later)  # the first step's buffer is the gradient
        buf.copy_(torch.where(on > 0, fresh, buf))
        g = g.add(buf, alpha=momentum) if o.get("nesterov") else buf
    p.sub_(g * (lr * on))
