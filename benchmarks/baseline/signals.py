"""The signal pass before views were batched: one forward per query view and batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mia_bench.augment import query_views
from mia_bench.hooks import capture_outputs


@torch.inference_mode()
def per_view_signals(
    net: torch.nn.Module, loader: Any, views: Sequence[str] | str, layers: Sequence[str]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """float32 logits ``[N, A, C]`` and view-0 embeddings ``{layer: [N, D]}``, in eval mode."""
    fns = query_views(views)
    was_training = net.training
    net.eval()
    logits, captured = [], {n: [] for n in layers}
    try:
        for x, _, _ in loader:
            with capture_outputs(net, layers) as got:
                per_view = [net(x).float()]  # A x [B, C]
            for n, outputs in got.items():
                captured[n].extend(outputs)
            per_view += [net(fn(x)).float() for fn in fns[1:]]
            logits.append(torch.stack(per_view, dim=1))  # [B, A, C]
    finally:
        net.train(was_training)
    embeddings = {n: torch.cat(v).numpy() for n, v in captured.items()}
    return torch.cat(logits).numpy(), embeddings
