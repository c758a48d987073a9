import pytest
import torch

from mia_bench.hooks import capture_outputs, resolve_layers
from mia_bench.nets import ALL_NETS, BERT, CNN, MLP, ResNet18, TextTransformer, ViT

SHAPES = {
    MLP: (20,),
    CNN: (3, 16, 16),
    ResNet18: (3, 16, 16),
    ViT: (3, 16, 16),
    BERT: (12,),
    TextTransformer: (12,),
}
OPTIONS = {
    ViT: {"dim": 48, "depth": 2},
    BERT: {"vocab_size": 40},
    TextTransformer: {"vocab_size": 40},
}


def _example(net_cls):
    """Three examples for ``net_cls``: floats, or token ids with padding for text nets."""
    if net_cls in (BERT, TextTransformer):
        ids = torch.randint(1, 40, (3, *SHAPES[net_cls]))  # [B, L]
        ids[1, 6:] = 0
        return ids
    return torch.randn(3, *SHAPES[net_cls])


def _direct_inner(net, x):
    """Each net's first inner layer, computed by calling its submodules directly."""
    if isinstance(net, MLP):
        return "fc0", net.fc0(x.flatten(1))
    if isinstance(net, CNN):
        return "conv1", net.conv1(x).flatten(1)
    if isinstance(net, ViT):
        tokens = net.patch_embed(x).flatten(2).transpose(1, 2)  # [B, N, D]
        cls = net.cls_token.expand(len(x), -1, -1)  # [B, 1, D]
        tokens = torch.cat([cls, tokens], dim=1) + net.pos_embed  # [B, T, D]
        return "blocks.0", net.blocks[0](tokens).mean(dim=1)
    if isinstance(net, BERT):
        return "bert.embeddings", net.bert.embeddings(input_ids=x).mean(dim=1)
    if isinstance(net, TextTransformer):
        tokens = net.token_embed(x) + net.pos_embed[:, : x.shape[1]]  # [B, L, D]
        layer = net.layers[0](tokens, src_key_padding_mask=x == 0)  # [B, L, D]
        return "layers.0", layer.mean(dim=1)
    return "layer1", net.layer1(net.relu(net.bn1(net.conv1(x)))).flatten(1)


@pytest.mark.parametrize("net_cls", ALL_NETS, ids=lambda c: c.__name__)
def test_capture_equals_direct_submodule_output(net_cls):
    torch.manual_seed(0)
    net = net_cls(SHAPES[net_cls], 5, **OPTIONS.get(net_cls, {})).eval()
    x = _example(net_cls)
    with torch.no_grad():
        inner, expected_inner = _direct_inner(net, x)
        with capture_outputs(net, ["embedding", inner]) as captured:
            logits = net(x)
    (embedding,) = captured["embedding"]
    (got_inner,) = captured[inner]
    # the embedding is exactly what the head sees: head(embedding) gives the logits
    torch.testing.assert_close(net.head(embedding), logits)
    torch.testing.assert_close(got_inner, expected_inner, atol=1e-5, rtol=1e-4)
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
