import pytest
import torch

from mia_bench.hooks import capture_outputs, resolve_layers
from mia_bench.nets import ALL_NETS, CNN, MLP, ResNet18

SHAPES = {MLP: (20,), CNN: (3, 16, 16), ResNet18: (3, 16, 16)}


def _direct_inner(net, x):
    """Each net's first inner layer, computed by calling its submodules directly."""
    if isinstance(net, MLP):
        return "fc0", net.fc0(x.flatten(1))
    if isinstance(net, CNN):
        return "conv1", net.conv1(x).flatten(1)
    return "layer1", net.layer1(net.relu(net.bn1(net.conv1(x)))).flatten(1)


@pytest.mark.parametrize("net_cls", ALL_NETS, ids=lambda c: c.__name__)
def test_capture_equals_direct_submodule_output(net_cls):
    torch.manual_seed(0)
    net = net_cls(SHAPES[net_cls], 5).eval()
    x = torch.randn(3, *SHAPES[net_cls])
    with torch.no_grad():
        inner, expected_inner = _direct_inner(net, x)
        with capture_outputs(net, ["embedding", inner]) as captured:
            logits = net(x)
    (embedding,) = captured["embedding"]
    (got_inner,) = captured[inner]
    # the embedding is exactly what the head sees: head(embedding) gives the logits
    torch.testing.assert_close(net.head(embedding), logits)
    torch.testing.assert_close(got_inner, expected_inner)
    assert embedding.shape[0] == 3 and embedding.ndim == 2


def test_hooks_removed_after_exit_and_on_error():
    net = MLP((4,), 2)
    with capture_outputs(net, ["embedding"]) as captured:
        net(torch.randn(2, 4))
    net(torch.randn(2, 4))
    assert len(captured["embedding"]) == 1
    with pytest.raises(RuntimeError), capture_outputs(net, ["embedding"]):
        raise RuntimeError("boom")
    assert not net.embedding._forward_hooks


def test_unknown_layer_lists_available():
    with pytest.raises(ValueError, match="no layer named.*layers: .*embedding"):
        resolve_layers(MLP((4,), 2), ["nope"])
