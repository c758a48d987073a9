"""Recipe options of the GPU path, checked on CPU: channels-last, torch.compile (once per
process), and what they leave unchanged (checkpoint keys, recorded signals)."""

from __future__ import annotations

import functools

import pytest
import torch

from mia_bench.acceleration import compile_counts, compiled_forward
from mia_bench.callbacks.signal_recorder import compute_signals
from mia_bench.classifier import Classifier
from mia_bench.defenses import DPSGD
from mia_bench.errors import UserError
from mia_bench.hooks import capture_outputs
from mia_bench.nets import CNN, MLP

TINY_CNN = functools.partial(CNN, channels=(4, 8, 8), hidden=16)
BACKEND = "aot_eager"  # traces and runs dynamo's graphs without generating C++


def _model(**kwargs) -> Classifier:
    return Classifier(TINY_CNN, num_classes=10, input_shape=(3, 16, 16), **kwargs)


def _loader(n: int = 24) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Two batches ``(x, y, index)`` of a fixed pool of n images."""
    x = torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    y = torch.zeros(n, dtype=torch.long)
    return [(x[:16], y[:16], torch.arange(16)), (x[16:], y[16:], torch.arange(16, n))]


def test_channels_last_converts_weights_and_gives_the_same_logits():
    torch.manual_seed(0)
    plain = _model()
    fast = _model(memory_format="channels_last")
    fast.load_state_dict(plain.state_dict())
    assert fast.net.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain.net.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(5, 3, 16, 16)
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"memory_format": "nhwc"}, "--model.memory_format 'nhwc' is unknown"),
        ({"compile": True, "compile_backend": "tvm"}, "--model.compile_backend 'tvm' is unknown"),
    ],
)
def test_bad_options_are_refused_in_one_line(kwargs, message):
    with pytest.raises(UserError, match=message) as err:
        _model(**kwargs)
    assert "\n" not in str(err.value)


def test_channels_last_is_refused_for_inputs_that_are_not_images():
    with pytest.raises(
        UserError, match="needs image inputs .* use --model.memory_format contiguous"
    ):
        Classifier(MLP, num_classes=3, input_shape=(64,), memory_format="channels_last")


def test_compile_is_refused_with_dp_sgd():
    with pytest.raises(UserError, match="does not work with DPSGD.*drop --model.compile"):
        _model(compile=True, compile_backend=BACKEND, defense=DPSGD())


def test_a_second_model_reuses_the_compiled_graphs():
    """A fleet worker trains run after run in one process: the next model compiles nothing."""
    torch.manual_seed(0)
    first = _model(compile=True, compile_backend=BACKEND)
    x = torch.randn(8, 3, 16, 16)
    first(x).sum().backward()  # train mode
    with torch.no_grad():
        first.eval()(x)  # eval mode: its own graph
    after_first = compile_counts()["unique_graphs"]
    second = _model(compile=True, compile_backend=BACKEND)
    assert second._compiled is first._compiled  # one compiled callable per process
    second(x).sum().backward()
    with torch.no_grad():
        out = second.eval()(x)
    assert compile_counts()["unique_graphs"] == after_first
    torch.testing.assert_close(out, second.net(x))  # and it runs the second model's weights


def test_compiled_checkpoints_load_into_an_uncompiled_classifier():
    compiled = _model(compile=True, compile_backend=BACKEND)
    compiled(torch.randn(4, 3, 16, 16))
    state = compiled.state_dict()
    assert not any("_orig_mod" in key or "_compiled" in key for key in state)
    plain = _model()
    plain.load_state_dict(state)  # strict: same keys
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(plain.eval()(x), compiled.eval()(x))


def test_hooks_do_not_fire_inside_compiled_code_so_signals_use_the_uncompiled_net():
    """Why the recorder queries ``module.net``: a hook added after compilation is not seen."""
    model = _model(compile=True, compile_backend=BACKEND).eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        model(x)
        with capture_outputs(model.net, ["embedding"]) as captured:
            model(x)
    assert captured["embedding"] == []
    signals = compute_signals(model.net, _loader(), "lira2", ["embedding"])
    uncompiled = _model()
    uncompiled.load_state_dict(model.state_dict())
    reference = compute_signals(uncompiled.net, _loader(), "lira2", ["embedding"])
    assert signals.embeddings["embedding"].shape == (24, 16)
    torch.testing.assert_close(signals.logits, reference.logits)
    torch.testing.assert_close(signals.embeddings, reference.embeddings)


def test_compiled_forward_is_built_once_per_backend_and_mode():
    assert compiled_forward(BACKEND) is compiled_forward(BACKEND)
    assert compiled_forward(BACKEND) is not compiled_forward("eager")
