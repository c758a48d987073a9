"""How a net runs, not what it learns: memory format of image batches and ``torch.compile``.

``channels_last`` stores image batches ``[B, C, H, W]`` as NHWC in memory (the layout
cuDNN's tensor-core convolutions want; with bf16 autocast it is the fast path on GPUs).
It changes the convolution algorithms, hence the float rounding of what is learned, so it
is part of a recipe (``model.memory_format`` is in the config fingerprint, tag
``mia.memory_format``).

``torch.compile`` is applied to one module-level function, :func:`_forward`, that takes
the net as an argument: dynamo treats the net's parameters as inputs (torch 2.x inlines
built-in ``nn.Module`` s), so a process that trains many runs one after another (a
long-lived fleet worker) compiles each graph once, and the next model of the same class
reuses it. The compiled callable is not a submodule, so checkpoints keep the plain
``net.*`` keys. Forward hooks registered on a net's submodules after compilation do not
fire inside compiled code: signals (and their embedding hooks) are recorded through the
uncompiled net, which shares the parameters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import nn

from mia_bench.errors import UserError

MEMORY_FORMATS: dict[str, torch.memory_format] = {
    "contiguous": torch.contiguous_format,
    "channels_last": torch.channels_last,
}
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")


def check_memory_format(name: str, input_shape: Sequence[int]) -> None:
    """Refuse an unknown format, and ``channels_last`` for inputs that are not images.

    Args:
        name: ``contiguous`` or ``channels_last``.
        input_shape: one example's shape; ``channels_last`` needs ``(C, H, W)``.

    >>> check_memory_format("channels_last", (3, 32, 32))
    >>> check_memory_format("channels_last", (446,))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mia_bench.errors.UserError: --model.memory_format channels_last needs image inputs ...
    """
    if name not in MEMORY_FORMATS:
        raise UserError(
            f"--model.memory_format {name!r} is unknown: use one of {list(MEMORY_FORMATS)}"
        )
    if name == "channels_last" and len(tuple(input_shape)) != 3:
        raise UserError(
            "--model.memory_format channels_last needs image inputs (C, H, W), but this "
            f"data's input_shape is {tuple(input_shape)}: use --model.memory_format contiguous"
        )


def to_memory_format(x: torch.Tensor, name: str) -> torch.Tensor:
    """``x`` in the named memory format if it is a 4-D image batch, else ``x`` itself.

    >>> x = to_memory_format(torch.zeros(2, 3, 4, 4), "channels_last")
    >>> x.is_contiguous(memory_format=torch.channels_last), x.shape
    (True, torch.Size([2, 3, 4, 4]))
    """
    if name == "contiguous" or x.ndim != 4:
        return x
    return x.contiguous(memory_format=MEMORY_FORMATS[name])


def net_to_memory_format(net: nn.Module, name: str) -> nn.Module:
    """Convert the net's 4-D weights (convolutions) in place; returns the net."""
    if name != "contiguous":
        net.to(memory_format=MEMORY_FORMATS[name])
    return net


def _forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net(x)


@functools.cache
def compiled_forward(
    backend: str = "inductor", mode: str | None = None
) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """``torch.compile(_forward)``, built once per process and ``(backend, mode)``.

    Args:
        backend: ``inductor`` (needs a C compiler on CPU), ``aot_eager`` or ``eager``
            (no code generation: for tests and for checking a net traces).
        mode: inductor's mode: None (default), ``reduce-overhead``, ``max-autotune``...

    Returns:
        ``f(net, x) -> net(x)``, compiled; ``x`` ``[B, ...]`` gives ``[B, C]`` logits.
    """
    if backend not in COMPILE_BACKENDS:
        raise UserError(
            f"--model.compile_backend {backend!r} is unknown: use one of {list(COMPILE_BACKENDS)}"
        )
    return torch.compile(_forward, backend=backend, mode=mode)


def compile_counts() -> dict[str, int]:
    """Dynamo's process-wide counts: ``unique_graphs`` compiled so far, ``calls_captured``.

    A second model of a class already compiled in this process adds no graph.
    """
    from torch._dynamo.utils import counters

    stats = counters["stats"]
    return {name: int(stats[name]) for name in ("unique_graphs", "calls_captured")}
