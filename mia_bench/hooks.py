"""Capture the outputs of named submodules with forward hooks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


def signal_net(module: nn.Module) -> nn.Module:
    """The module signals are computed through, whose module paths name the layers.

    A module with a ``net`` (mia-bench's Classifier) is queried through that net, so
    layer names are paths inside it (``embedding``, ``layer1.0``) and a compiled
    Classifier is recorded uncompiled; opacus' ``GradSampleModule`` is unwrapped. Any
    other LightningModule is queried through its own ``forward``, its layers named by
    its module paths.

    >>> class Holder(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.net = nn.Linear(2, 2)
    >>> type(signal_net(Holder())).__name__, type(signal_net(nn.ReLU())).__name__
    ('Linear', 'ReLU')
    """
    net = getattr(module, "net", module)
    return getattr(net, "_module", net)


def resolve_layers(module: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """Map layer names (module paths such as ``embedding`` or ``layer1.0``) to modules.

    Raises:
        ValueError: naming the unknown layers and listing the module's layer names.
    """
    available = dict(module.named_modules())
    missing = [n for n in names if n not in available or n == ""]
    if missing:
        listed = ", ".join(n for n in available if n) or "(none)"
        raise ValueError(f"no layer named {missing} in {type(module).__name__}; layers: {listed}")
    return {n: available[n] for n in names}


def _as_features(output: torch.Tensor) -> torch.Tensor:
    """``[B, D]`` features of one layer output: tokens averaged, anything else flattened.

    >>> _as_features(torch.ones(2, 5, 3)).shape, _as_features(torch.ones(2, 4, 3, 3)).shape
    (torch.Size([2, 3]), torch.Size([2, 36]))
    """
    if output.ndim == 3:  # [B, T, D]: one vector per token
        return output.mean(dim=1)  # [B, D]
    return output.flatten(1)


@contextmanager
def capture_outputs(
    module: nn.Module, names: Sequence[str]
) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record what the named submodules output while the context is open.

    Each forward pass appends the layer's output, detached, as ``[B, D]`` to
    ``captured[name]``: a sequence layer's ``[B, T, D]`` output (transformer blocks,
    token embeddings) is averaged over its T tokens, any other output (conv feature
    maps ``[B, C, H, W]``) is flattened. Hooks are removed on exit, also on error.

    >>> net = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    >>> with capture_outputs(net, ["0"]) as captured:
    ...     _ = net(torch.ones(4, 3))
    >>> captured["0"][0].shape
    torch.Size([4, 2])
    """
    captured: dict[str, list[torch.Tensor]] = {n: [] for n in names}

    def recorder(name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            if isinstance(output, tuple):  # e.g. transformer layers return tuples
                output = output[0]
            captured[name].append(_as_features(output.detach()))

        return hook

    handles = [
        m.register_forward_hook(recorder(n)) for n, m in resolve_layers(module, names).items()
    ]
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()
