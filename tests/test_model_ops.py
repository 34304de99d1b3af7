"""Building blocks of model.py checked against their straightforward formulations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fireredasr_fast.engines.firered import model
from fireredasr_fast.engines.firered.model import ConvModule, Decoder, DecoderCache, _rel_position_bias


def _strided_reference(q_v: torch.Tensor, p: torch.Tensor, scale: float) -> torch.Tensor:
    """The relative shift as one `as_strided` view of the full product (the formulation
    model.py used before it had to export to ONNX)."""
    n, h, t, _ = q_v.shape
    full = torch.matmul(q_v, p.transpose(-2, -1)).contiguous()
    width = 2 * t - 1
    view = full.as_strided((n, h, t, t), (h * t * width, t * width, width - 1, 1), full.storage_offset() + t - 1)
    return view * scale


def _upstream_rel_shift(q_v: torch.Tensor, p: torch.Tensor, scale: float) -> torch.Tensor:
    """Upstream's pad/reshape rel_shift, then the first t columns."""
    n, h, t, _ = q_v.shape
    x = torch.matmul(q_v, p.transpose(-2, -1))
    padded = torch.cat([x.new_zeros(n, h, t, 1), x], dim=-1).view(n, h, 2 * t, t)
    return padded[:, :, 1:].reshape(n, h, t, 2 * t - 1)[..., :t] * scale


@pytest.mark.parametrize("scale", [0.125, 0.3])  # a power of two is folded into q_v
@pytest.mark.parametrize("t", [1, 2, 3, 7, 64, 251])
@pytest.mark.parametrize("n", [1, 3])
def test_rel_position_bias_is_bit_identical(n: int, t: int, scale: float) -> None:
    gen = torch.Generator().manual_seed(t * 10 + n)
    q_v = torch.randn(n, 4, t, 16, generator=gen)
    p = torch.randn(1, 4, 2 * t - 1, 16, generator=gen)
    got = _rel_position_bias(q_v, p, scale)
    assert got.shape == (n, 4, t, t)
    assert torch.equal(got, _strided_reference(q_v, p, scale))
    assert torch.equal(got, _upstream_rel_shift(q_v, p, scale))


@pytest.mark.parametrize("parents", [[0, 1, 2, 3, 4, 5], [0, 0, 2, 5, 3, 4], [1, 0, 2, 4, 4, 4], [2, 2, 2, 3, 3, 3]])
def test_cache_reorder_equals_a_full_copy(parents: list[int]) -> None:
    """reorder copies only the rows that take another row's history; the result must equal
    rebuilding every row from its parent (swaps, duplicates and the identity included), and
    the slots beyond the current length stay untouched."""
    gen = torch.Generator().manual_seed(0)
    rows, heads, capacity, d_k, length = 6, 2, 8, 4, 5

    def buffers() -> list[torch.Tensor]:
        return [torch.randn(rows, heads, capacity, d_k, generator=gen) for _ in range(2)]

    self_k, self_v = buffers(), buffers()
    mask = torch.rand(rows, capacity, generator=gen) > 0.3
    cache = DecoderCache(
        self_k=[b.clone() for b in self_k],
        self_v=[b.clone() for b in self_v],
        cross_k=[],
        cross_v=[],
        cross_bias=None,
        self_mask=mask.clone(),
        beam=3,
        length=length,
    )
    index = torch.tensor(parents)
    cache.reorder(index)
    for ours, original in zip([*cache.self_k, *cache.self_v], [*self_k, *self_v], strict=True):
        expected = original.clone()
        expected[:, :, :length] = original[:, :, :length].index_select(0, index)
        assert torch.equal(ours, expected)
    expected_mask = mask.clone()
    expected_mask[:, :length] = mask[:, :length].index_select(0, index)
    assert torch.equal(cache.self_mask, expected_mask)


@pytest.mark.parametrize("lengths", [[7, 7], [7, 4]])
def test_decoder_cache_attention_inputs_give_the_masked_reference_step(lengths: list[int]) -> None:
    """init_cache lays cross-attention K/V out contiguously per head and turns the padding
    mask into an additive one (none without padding); a step on that cache must give the
    same bits as the same step attending over the plain strided projections with the boolean
    mask, which is what the cache held before."""
    torch.manual_seed(0)
    decoder = Decoder(sos_id=1, eos_id=2, pad_id=0, odim=11, n_layers=2, n_head=2, d_model=8, pe_maxlen=64).eval()
    enc = torch.randn(len(lengths), max(lengths), 8)
    valid = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    tokens = torch.tensor([1, 5, 6, 1, 3, 0])  # one <pad> token: the self-attention mask matters
    with torch.inference_mode():
        cache = decoder.init_cache(enc, valid, beam=3)
        assert all(k.is_contiguous() for k in cache.cross_k + cache.cross_v)
        assert (cache.cross_bias is None) == (min(lengths) == max(lengths))
        if cache.cross_bias is not None:
            assert torch.equal(cache.cross_bias == 0, valid[:, None, None, :])
        plain = decoder.init_cache(enc, valid, beam=3)
        plain.cross_k = [layer.cross_attn.heads(layer.cross_attn.w_ks(enc)) for layer in decoder.layer_stack]
        plain.cross_v = [layer.cross_attn.heads(layer.cross_attn.w_vs(enc)) for layer in decoder.layer_stack]
        plain.cross_bias = valid[:, None, None, :]  # the boolean mask, as scaled_dot_product_attention takes it
        for _ in range(3):
            got, expected = decoder.step(tokens, cache), decoder.step(tokens, plain)
            assert torch.equal(got, expected)


@pytest.mark.parametrize("scale", [0.125, 0.3])
@pytest.mark.parametrize("t", [129, 130, 131, 200, 258, 300])  # longer than one block: the blocked path
def test_blocked_rel_position_bias_is_bit_identical(t: int, scale: float) -> None:
    assert t > model._BIAS_BLOCK
    gen = torch.Generator().manual_seed(t)
    q_v = torch.randn(2, 3, t, 16, generator=gen)
    p = torch.randn(1, 3, 2 * t - 1, 16, generator=gen)
    got = _rel_position_bias(q_v, p, scale)
    assert got.shape == (2, 3, t, t)
    assert torch.equal(got, _upstream_rel_shift(q_v, p, scale))


@pytest.mark.parametrize("lengths", [[300, 300], [300, 211], [260, 3]])
@pytest.mark.parametrize("prefix", [True, False])
def test_attention_by_query_blocks_is_one_call_with_the_whole_bias(lengths: list[int], prefix: bool) -> None:
    """The encoder's attention runs a block of queries at a time, each with its own rows of
    the bias and only the padded keys masked (or, for a mask that is not a prefix, every
    masked key): the same bits as one scaled_dot_product_attention call with the whole
    masked (n, h, t, t) bias, on the strided (n, t, h, d_k) -> (n, h, t, d_k) views the
    layer passes."""
    gen = torch.Generator().manual_seed(sum(lengths))
    n, t, h, dk = len(lengths), max(lengths), 4, 16
    q, k, v, q_v = (torch.randn(n, t, h, dk, generator=gen).transpose(1, 2) for _ in range(4))
    p = torch.randn(1, 2 * t - 1, h, dk, generator=gen).transpose(1, 2)
    valid = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
    if not prefix:
        valid[:, 1::7] = False
    scale = 0.25
    with torch.inference_mode():
        bias = _rel_position_bias(q_v, p, scale).masked_fill_(~valid[:, None, None, :], float("-inf"))
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale).transpose(1, 2)
        got = model._attention_by_query_blocks(q, k, v, model._bias_blocks(q_v, p, scale), valid, scale)
    assert (model._prefix_lengths(valid) is not None) == prefix
    assert torch.equal(got, expected)


def test_depthwise_convolution_in_time_major_layout_matches_conv1d() -> None:
    """ConvModule runs its depthwise convolution on the (n, t, c) tensor as channels-last;
    the result must be the Conv1d on (n, c, t) that the checkpoint's layer defines."""
    torch.manual_seed(0)
    module = ConvModule(d_model=8, kernel_size=5).eval()
    x = torch.randn(2, 23, 8)
    pad = torch.zeros(2, 23, 1, dtype=torch.bool)
    pad[1, 17:] = True
    with torch.inference_mode():
        got = module(x, pad)
        y = module.pre_layer_norm(x).masked_fill(pad, 0.0)
        y = torch.nn.functional.glu(module.pointwise_conv1(y), dim=-1)
        y = module.depthwise_conv(y.transpose(1, 2)).transpose(1, 2)
        y = torch.nn.functional.silu(module.batch_norm(y))
        expected = module.pointwise_conv2(y).masked_fill(pad, 0.0) + x
    assert torch.equal(got, expected)


@pytest.mark.parametrize("shape", [(1, 206), (1, 300), (3, 251)])
def test_subsampling_on_onednn_layout_matches_the_plain_convolutions(shape: tuple[int, int]) -> None:
    """Where torch runs both convolutions through oneDNN, Subsampling runs them on oneDNN's
    blocked layout (no reorders between them); elsewhere (a single short segment, which torch
    gives its native kernel) the plain modules. Either way the bits of the plain modules."""
    torch.manual_seed(0)
    module = model.Subsampling(idim=80, d_model=16).eval()
    feats = torch.randn(*shape, 80)
    with torch.inference_mode():
        x = module.conv(feats.unsqueeze(1))
        n, c, t, d = x.shape
        expected = module.out(x.transpose(1, 2).reshape(n, t, c * d))
        got = module(feats)
        blocked = module._onednn_takes_both(feats.unsqueeze(1))
    assert torch.equal(got, expected)
    if torch.backends.mkldnn.is_available() and hasattr(torch._C, "_select_conv_backend"):
        assert blocked == (shape != (1, 206))  # one segment of 206 frames: torch's native kernel
