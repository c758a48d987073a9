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
        """Update the runs with ``active[k]`` (``bool[K]``); the others stay as they are."""
        self.steps += active.long()
        for name, p in self.params.items():
            shape = (-1,) + (1,) * (p.dim() - 1)
            new = self._update(name, p, p.grad, self.steps.view(shape))
            keep = active.view(shape)
            for key, value in new.items():
                target = p if key == "param" else self.state[name][key]
                target.copy_(torch.where(keep, value, target))

    def _update(self, name: str, p: torch.Tensor, g: torch.Tensor, t: torch.Tensor) -> dict:
        o, state = self.defaults, self.state[name]
        if self.kind == "SGD":
            return _sgd(p, g, t, state["momentum_buffer"], o)
        lr, (b1, b2), eps, wd = o["lr"], o["betas"], o["eps"], o["weight_decay"]
        if self.kind == "AdamW":
            p = p.mul(1 - lr * wd)
        elif wd != 0:
            g = g.add(p, alpha=wd)
        m = state["exp_avg"].lerp(g, 1 - b1)
        v = state["exp_avg_sq"].mul(b2).addcmul(g, g, value=1 - b2)
        t64 = t.double()
        step_size = (lr / (1 - b1**t64)).to(p.dtype)  # [K, 1, ...]
        bc2_sqrt = ((1 - b2**t64) ** 0.5).to(p.dtype)
        denom = (v.sqrt() / bc2_sqrt).add(eps)
        return {"param": p - step_size * m / denom, "exp_avg": m, "exp_avg_sq": v}

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


def _sgd(p, g, t, buf, o) -> dict:
    """torch.optim.SGD's step; ``t`` holds each run's step count after this step."""
    lr, momentum, wd = o["lr"], o.get("momentum", 0), o.get("weight_decay", 0)
    if wd != 0:
        g = g.add(p, alpha=wd)
    out = {}
    if momentum != 0:
        later = buf.mul(momentum).add(g, alpha=1 - o.get("dampening", 0))
        buf = torch.where(t == 1, g, later)  # the first step's buffer is the gradient
        g = g.add(buf, alpha=momentum) if o.get("nesterov") else buf
        out["momentum_buffer"] = buf
    return out | {"param": p.add(g, alpha=-lr)}
