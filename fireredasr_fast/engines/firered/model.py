"""FireRedASR-AED as our own inference-oriented nn.Module (the search is in search.py).

The module tree mirrors the official checkpoint's parameter names exactly, so
`load_state_dict(strict=True)` accepts `model_state_dict` from an official `model.pth.tar`
(and a v2 file with a `ctc.ctc_lo` head). The arithmetic is the same as upstream's; what
differs is how much of it is done:

* encoder: attention through `scaled_dot_product_attention` with the relative-position term
  passed as an additive float bias (read from the full product through reshape/slice views
  instead of pad/concat copies); pointwise convolutions run as matmuls in (N, T, C) layout.
* decoder: cross-attention K/V projected once per utterance and layer, shared by all beams
  (beams of one utterance are the query rows of one attention call); self-attention K/V
  appended per step; only the newest token is embedded; a beam reorder copies only the rows
  whose parent changed; utterances whose beams have all ended leave the batch.

Beam-search semantics follow upstream exactly: softmax smoothing, eos penalty, the way a
finished beam keeps its score and only extends with eos, top-k pruning over beam x beam
candidates, GNMT length penalty applied once at the end, n-best.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

# Queries per block of the relative-position product (measured: docs/engine.md#measured-numbers).
_BIAS_BLOCK = 128


def _sinusoids(positions: Tensor, d_model: int) -> Tensor:
    """Interleaved sin/cos table, the layout of the checkpoints' stored `pe` buffers."""
    inv_freq = torch.exp(torch.arange(0, d_model, 2).float() * -(math.log(10000.0) / d_model))
    angles = positions.float().unsqueeze(1) * inv_freq
    table = torch.zeros(positions.numel(), d_model)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table


class PositionTable(nn.Module):
    """Holds the `pe` buffer that official checkpoints store (so strict loading works)."""

    def __init__(self, positions: range, d_model: int) -> None:
        super().__init__()
        if torch.empty(0).is_meta:  # built for the checkpoint's table (AedModel.from_package)
            self.register_buffer("pe", torch.empty(1, len(positions), d_model))
            return
        table = _sinusoids(torch.arange(positions.start, positions.stop, positions.step), d_model)
        self.register_buffer("pe", table.unsqueeze(0))


class _MetaBuild(TorchFunctionMode):
    """Inside torch.device("meta"): torch.nn.init's fills of meta tensors are skipped. Their
    values do not exist, and running them (like any computation on the meta device, hence
    PositionTable's shortcut) goes through torch's Python reference kernels, which import
    torch._dynamo and sympy: seconds of CPU and tens of MB in every worker
    (docs/tuning.md#worker-start-up-and-memory)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")
        if getattr(func, "__module__", "") == "torch.nn.init" and isinstance(target, Tensor) and target.is_meta:
            return target
        return func(*args, **kwargs)


class PointwiseConv(nn.Linear):
    """A kernel-1 Conv1d stored as the checkpoint stores it, (out, in, 1), run as a matmul.

    Running it as Linear on (N, T, C) avoids two transposes per use and lets int8 dynamic
    quantisation treat it like every other Linear.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features, bias=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        key = prefix + "weight"
        if key in state_dict and state_dict[key].dim() == 3:
            state_dict[key] = state_dict[key].squeeze(-1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # type: ignore[override]
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight"] = destination[prefix + "weight"].unsqueeze(-1)


# ----------------------------------------------------------------------------- encoder


class Subsampling(nn.Module):
    """Two stride-2 3x3 convolutions: 10 ms fbank frames -> 40 ms encoder frames."""

    # Frames of right context the convolutions need; upstream pads this many minus one.
    context = 7

    def __init__(self, idim: int, d_model: int, channels: int = 32) -> None:
        super().__init__()
        # In-place ReLUs: the first convolution's output is the encoder's largest temporary
        # (channels x the input's size / 4), and a second one would be paged in afresh.
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 2),
            nn.ReLU(inplace=True),
        )
        self.out = nn.Linear(channels * (((idim - 1) // 2 - 1) // 2), d_model)

    def forward(self, feats: Tensor) -> Tensor:
        x = feats.unsqueeze(1)
        x = self._convolve_blocked(x) if self._onednn_takes_both(x) else self.conv(x)
        n, c, t, d = x.shape
        return self.out(x.transpose(1, 2).reshape(n, t, c * d))

    def _onednn_takes_both(self, x: Tensor) -> bool:
        """Whether torch itself would run both convolutions through oneDNN for this input
        (it does not for a single short segment, where its native kernel sums in another
        order), so that _convolve_blocked gives the same bits."""
        if x.device.type != "cpu" or x.dtype != torch.float32 or torch.onnx.is_in_onnx_export():
            return False
        select = getattr(torch._C, "_select_conv_backend", None)
        if select is None or not torch.backends.mkldnn.is_available():
            return False
        first, _, second, _ = self.conv
        t = (x.size(2) - 3) // 2 + 1
        d = (x.size(3) - 3) // 2 + 1
        stand_in = x.new_empty(x.size(0), first.out_channels, t, d)  # its shape is what counts
        return all(
            select(data, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, False, (0, 0), conv.groups)
            == torch._C._ConvBackend.Mkldnn
            for data, conv in ((x, first), (stand_in, second))
        )

    def _convolve_blocked(self, x: Tensor) -> Tensor:
        """Both convolutions and their ReLUs on oneDNN's blocked layout (`to_mkldnn`): the
        primitives torch runs on plain tensors, the same bits, without the reorders torch
        puts around each of them (the first one's output, the encoder's largest temporary,
        was reordered out of the blocked layout and back in; measured:
        docs/benchmarks.md#engine-overhead-at-small-sizes-issue-32)."""
        first, _, second, _ = self.conv
        y = x.to_mkldnn()
        for conv in (first, second):
            shape = (conv.padding, conv.stride, conv.dilation, conv.groups)
            y = torch.relu_(torch.mkldnn_convolution(y, conv.weight, conv.bias, *shape))
        return y.to_dense()


class MacaronFeedForward(nn.Module):
    def __init__(self, d_model: int) -> None:
        super().__init__()
        # Indices 0, 1 and 4 carry the checkpoint's parameters; the Identities stand where
        # upstream keeps dropouts, so the names line up.
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, d_model * 4),
            nn.SiLU(inplace=True),  # on the Linear's fresh output: one 4d-wide temporary fewer
            nn.Identity(),
            nn.Linear(d_model * 4, d_model),
            nn.Identity(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x) + x


class RelPosSelfAttention(nn.Module):
    """Transformer-XL style relative-position self-attention (the Conformer's MHSA)."""

    def __init__(self, n_head: int, d_model: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.d_k = d_model // n_head
        self.w_qs = nn.Linear(d_model, d_model, bias=False)
        self.w_ks = nn.Linear(d_model, d_model, bias=False)
        self.w_vs = nn.Linear(d_model, d_model, bias=False)
        self.layer_norm_q = nn.LayerNorm(d_model)
        self.layer_norm_k = nn.LayerNorm(d_model)
        self.layer_norm_v = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, d_model, bias=False)
        self.linear_pos = nn.Linear(d_model, d_model, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(n_head, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(n_head, self.d_k))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)

    def forward(self, x: Tensor, pos_emb: Tensor, key_valid: Tensor) -> Tensor:
        n, t, d = x.shape
        h, dk = self.n_head, self.d_k
        q = self.w_qs(self.layer_norm_q(x)).view(n, t, h, dk)
        k = self.w_ks(self.layer_norm_k(x)).view(n, t, h, dk).transpose(1, 2)
        v = self.w_vs(self.layer_norm_v(x)).view(n, t, h, dk).transpose(1, 2)
        p = self.linear_pos(pos_emb).view(1, 2 * t - 1, h, dk).transpose(1, 2)
        q_u = (q + self.pos_bias_u).transpose(1, 2)
        q_v = (q + self.pos_bias_v).transpose(1, 2)
        scale = 1.0 / math.sqrt(dk)
        if torch.onnx.is_in_onnx_export():
            # One set of operations for every length and batch: the whole (n, h, t, t) bias.
            bias = _rel_position_bias(q_v, p, scale)
            bias.masked_fill_(~key_valid[:, None, None, :], float("-inf"))
            out = F.scaled_dot_product_attention(q_u, k, v, attn_mask=bias, scale=scale).transpose(1, 2)
        else:
            out = _attention_by_query_blocks(q_u, k, v, _bias_blocks(q_v, p, scale), key_valid, scale)
        return self.fc(out.reshape(n, t, d)) + x


def _attention_by_query_blocks(
    q: Tensor, k: Tensor, v: Tensor, blocks: Iterator[tuple[int, int, Tensor]], key_valid: Tensor, scale: float
) -> Tensor:
    """scaled_dot_product_attention of q (n, h, t, d_k) against k, v, one block of queries at
    a time, each with its own rows of the additive bias as `blocks` gives them (start, stop,
    bias (n, h, stop - start, t)), the padded keys masked in them; returns (n, t, h, d_k).

    A query's output does not depend on the other queries of the call (the same bits as one
    call with the whole (n, h, t, t) bias: tests/test_model_ops.py), so the bias never exists
    whole: no (n, h, t, t) buffer to write, fault in and read back, and a block's bias is
    still in cache when the attention reads it (measured: docs/benchmarks.md#engine-overhead-at-small-sizes-issue-32).
    """
    n, h, t, dk = q.shape
    lengths = _prefix_lengths(key_valid)
    out = q.new_empty(n, t, h, dk)
    for start, stop, bias in blocks:
        if lengths is None:
            bias.masked_fill_(~key_valid[:, None, None, :], float("-inf"))
        else:
            for row, length in enumerate(lengths):
                if length < t:  # only the padded keys are written, not a pass over the bias
                    bias[row, :, :, length:] = float("-inf")
        block = F.scaled_dot_product_attention(q[:, :, start:stop], k, v, attn_mask=bias, scale=scale)
        out[:, start:stop] = block.transpose(1, 2)
    return out


def _prefix_lengths(valid: Tensor) -> list[int] | None:
    """Each row's count of valid keys when every row's valid keys come first (the encoder's
    padding mask), else None."""
    lengths = valid.sum(dim=1)
    prefix = torch.arange(valid.size(1), device=valid.device)[None, :] < lengths[:, None]
    return lengths.tolist() if bool(torch.equal(prefix, valid)) else None


def _scaled_early(q_v: Tensor, scale: float) -> tuple[Tensor, bool]:
    """The queries to multiply by the positions, and whether `scale` is already in them.
    Scaling by a power of two (1/sqrt(64) for FireRedASR's heads) is exact, so it can go on
    the small (t, d_k) operand instead of the (t, t) result: the same bits, and no pass over
    the scores. Any other scale is left for the result, as upstream applies it."""
    exact = math.frexp(scale)[0] == 0.5
    return (q_v * scale if exact else q_v), exact


def _bias_blocks(q_v: Tensor, p: Tensor, scale: float) -> Iterator[tuple[int, int, Tensor]]:
    """(q + v) . p for every (query i, key j) at relative position i - j, times `scale`, a
    block of queries at a time: yields (start, stop, rows start..stop-1 of the (n, h, t, t)
    result), each a fresh tensor the caller may write into.

    `p` holds positions t-1 .. -(t-1), so query i needs rows t-1-i .. 2t-2-i of it: a window
    of t positions that slides by one per query. Upstream multiplies every query by all 2t-1
    positions and shifts the (t, 2t-1) product with pad/reshape copies. Here each block of
    _BIAS_BLOCK queries is multiplied by only the t + block - 1 positions that block needs
    (about half the arithmetic, and the product stays small enough to stay in cache), and its
    windows are lined up by reshape/slice views (_windows): the same bits as upstream
    (measured: docs/engine.md#measured-numbers; tests/test_model_ops.py).
    """
    t = q_v.size(2)
    q, exact = _scaled_early(q_v, scale)
    start = 0
    while start < t:
        stop = min(t, start + _BIAS_BLOCK)
        if t - stop < _BIAS_BLOCK // 8:  # no tiny last block: a product of 1-3 rows takes
            stop = t  # matrix-vector kernels that sum in another order
        # Queries start..stop-1 need positions t-stop .. 2t-2-start of p.
        block = torch.matmul(q[:, :, start:stop], p[:, :, t - stop : 2 * t - 1 - start].transpose(-2, -1))
        windows = _windows(block, t)
        yield start, stop, windows if exact else windows * scale
        start = stop


def _rel_position_bias(q_v: Tensor, p: Tensor, scale: float) -> Tensor:
    """The whole (n, h, t, t) relative-position bias (see _bias_blocks). An exported graph
    takes one product for every length (a dynamic length traces; no `as_strided`); eager
    calls assemble _bias_blocks' blocks."""
    n, h, t, _ = q_v.shape
    if torch.onnx.is_in_onnx_export():
        q, exact = _scaled_early(q_v, scale)
        shifted = _windows(torch.matmul(q, p.transpose(-2, -1)), t)
        return shifted if exact else shifted * scale
    out = q_v.new_empty(n, h, t, t)
    for start, stop, bias in _bias_blocks(q_v, p, scale):
        out[:, :, start:stop] = bias
    return out


def _windows(product: Tensor, t: int) -> Tensor:
    """Row r of `product` (n, h, rows, t + rows - 1) needs columns rows-1-r .. rows-2-r+t.

    Flat element (t + rows - 1) r + rows - 1 - r + j = (t + rows - 2) r + (rows - 1) + j, so
    dropping the first rows - 1 flat elements and reading rows of width t + rows - 2 lines
    every window up at column 0: views of the contiguous product only, and reshapes and slices
    rather than `as_strided`, so it exports to ONNX with a dynamic length. A single row is its
    own window (width t), which the `1 // rows` term gives without a branch.
    """
    n, h, rows, width = product.shape
    width = width - 1 + 1 // rows  # t + rows - 2, or t for a single row, in traceable arithmetic
    flat = product.reshape(n, h, -1)[:, :, rows - 1 : rows - 1 + rows * width]
    return flat.reshape(n, h, rows, width)[..., :t]


class ConvModule(nn.Module):
    def __init__(self, d_model: int, kernel_size: int) -> None:
        super().__init__()
        self.pre_layer_norm = nn.LayerNorm(d_model)
        self.pointwise_conv1 = PointwiseConv(d_model, d_model * 4)
        self.depthwise_conv = nn.Conv1d(
            d_model * 2, d_model * 2, kernel_size, padding=(kernel_size - 1) // 2, groups=d_model * 2, bias=False
        )
        self.batch_norm = nn.LayerNorm(d_model * 2)  # named so upstream; it is a LayerNorm
        self.pointwise_conv2 = PointwiseConv(d_model * 2, d_model)

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:
        # `pad` is (n, t, 1), True at padding frames: they are zeroed so the depthwise
        # convolution sees the same zeros a lone, unpadded utterance would.
        y = self.pre_layer_norm(x).masked_fill(pad, 0.0)
        y = F.glu(self.pointwise_conv1(y), dim=-1)
        # (n, t, c) memory is the channels-last layout of (n, c, 1, t), where oneDNN's depthwise
        # kernel runs an order of magnitude faster than on channels-first, the same bits
        # (measured: docs/engine.md#measured-numbers), and the transposes around it are views.
        conv = self.depthwise_conv
        y = F.conv2d(
            y.transpose(1, 2).unsqueeze(2), conv.weight.unsqueeze(2), padding=(0, conv.padding[0]), groups=conv.groups
        )
        y = y.squeeze(2).transpose(1, 2)
        y = F.silu(self.batch_norm(y), inplace=True)
        y = self.pointwise_conv2(y).masked_fill(pad, 0.0)
        return y + x


class ConformerLayer(nn.Module):
    def __init__(self, d_model: int, n_head: int, kernel_size: int) -> None:
        super().__init__()
        self.ffn1 = MacaronFeedForward(d_model)
        self.mhsa = RelPosSelfAttention(n_head, d_model)
        self.conv = ConvModule(d_model, kernel_size)
        self.ffn2 = MacaronFeedForward(d_model)
        self.layer_norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, pos_emb: Tensor, valid: Tensor, pad: Tensor) -> Tensor:
        out = 0.5 * x + 0.5 * self.ffn1(x)
        out = self.mhsa(out, pos_emb, valid)
        out = self.conv(out, pad)
        out = 0.5 * out + 0.5 * self.ffn2(out)
        return self.layer_norm(out)


class Encoder(nn.Module):
    def __init__(self, idim: int, n_layers: int, n_head: int, d_model: int, kernel_size: int, pe_maxlen: int = 5000):
        super().__init__()
        self.input_preprocessor = Subsampling(idim, d_model)
        # Upstream's relative table always spans 5000 positions each way, whatever pe_maxlen.
        self.positional_encoding = PositionTable(range(4999, -5000, -1), d_model)
        self.layer_stack = nn.ModuleList(ConformerLayer(d_model, n_head, kernel_size) for _ in range(n_layers))

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """feats (n, t, idim) zero-padded; returns encoder output (n, t', d) and its
        validity mask (n, t') (True at real frames)."""
        feats = F.pad(feats, (0, 0, 0, Subsampling.context - 1))
        # Upstream's frame mask, subsampled by slicing exactly as it does it.
        mask = torch.arange(feats.size(1), device=feats.device)[None, :] < lengths[:, None]
        valid = mask[:, :-2:2][:, :-2:2]
        x = self.input_preprocessor(feats)
        t = x.size(1)
        pe = self.positional_encoding.pe
        center = pe.size(1) // 2
        pos_emb = pe[:, center - t + 1 : center + t].to(x.dtype)
        pad = ~valid[:, :, None]
        for layer in self.layer_stack:
            x = layer(x, pos_emb, valid, pad)
        return x, valid


# ----------------------------------------------------------------------------- decoder

# With torch's own Linear (the `mkl` backend, and CPUs without oneDNN), up to this many rows
# run as W @ x^T: MKL's x @ W^T path re-packs the whole weight on every call, which for a
# handful of rows costs more than the weight read itself
# (measured: docs/engine.md#backends-torchcompile-onnx-runtime-onednn). The default CPU path
# replaces the Linears by onednn.SharedLinear, which this leaves alone.
_SMALL_ROWS = 16


def _linear(module: nn.Module, x: Tensor) -> Tensor:
    """module(x) for the decoder's per-step projections, small row counts done weight-major."""
    weight = getattr(module, "weight", None)
    if type(module) is not nn.Linear or weight is None or weight.device.type != "cpu":
        return module(x)
    flat = x.reshape(-1, x.size(-1))
    if flat.size(0) > _SMALL_ROWS:
        return module(x)
    out = torch.mm(weight, flat.t()).t()
    if module.bias is not None:
        out = out + module.bias
    return out.reshape(*x.shape[:-1], weight.size(0))


class DecoderAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.d_k = d_model // n_head
        self.w_qs = nn.Linear(d_model, d_model)
        self.w_ks = nn.Linear(d_model, d_model, bias=False)
        self.w_vs = nn.Linear(d_model, d_model)
        self.fc = nn.Linear(d_model, d_model)

    def heads(self, x: Tensor) -> Tensor:
        """(n, t, d) -> (n, h, t, d_k)."""
        return x.view(x.size(0), x.size(1), self.n_head, self.d_k).transpose(1, 2)


class PositionwiseFeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(d_model, d_ff)
        self.act = nn.GELU()
        self.w_2 = nn.Linear(d_ff, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(self.act(self.w_1(x)))


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(d_model)
        self.self_attn = DecoderAttention(d_model, n_head)
        self.cross_attn_norm = nn.LayerNorm(d_model)
        self.cross_attn = DecoderAttention(d_model, n_head)
        self.mlp_norm = nn.LayerNorm(d_model)
        self.mlp = PositionwiseFeedForward(d_model, d_model * 4)


@dataclass
class DecoderCache:
    """Per-layer attention state of a batch of beams during decoding.

    Self-attention K/V live in buffers (rows, heads, capacity, d_k) that grow by doubling
    (positions past `length` are never read, so they are left uninitialised); cross-attention
    K/V are contiguous (utterances, heads, frames, d_k), one copy per utterance shared by its
    beams.
    """

    self_k: list[Tensor]
    self_v: list[Tensor]
    cross_k: list[Tensor]
    cross_v: list[Tensor]
    # Encoder padding as an additive mask (utterances, 1, 1, frames), 0 or -inf, made once
    # instead of by every attention call; None when no utterance has padding (adding 0.0
    # changes no score).
    cross_bias: Tensor | None
    self_mask: Tensor  # (rows, capacity) bool, False where the token was <pad>
    beam: int
    length: int = 0

    @property
    def rows(self) -> int:
        return self.self_mask.size(0)

    def ensure_capacity(self, needed: int) -> None:
        capacity = self.self_mask.size(1)
        if needed <= capacity:
            return
        new_cap = max(needed, 2 * capacity)

        def grow(buf: Tensor) -> Tensor:
            out = buf.new_empty(*buf.shape[:2], new_cap, buf.size(3))
            out[:, :, :capacity] = buf
            return out

        self.self_k = [grow(b) for b in self.self_k]
        self.self_v = [grow(b) for b in self.self_v]
        mask = self.self_mask.new_ones(self.rows, new_cap)
        mask[:, :capacity] = self.self_mask
        self.self_mask = mask

    def reorder(self, rows: Tensor) -> None:
        """Row i takes the history of row rows[i] (beam reordering), in place."""
        t = self.length
        targets = torch.arange(rows.numel(), device=rows.device)
        if rows.device.type == "cpu":
            # Most steps leave most beams where they were, and a row's history is
            # heads x t x d_k per buffer: copy only the rows that take another row's history
            # (measured: docs/engine.md#what-the-fast-path-does-differently). On CUDA
            # finding them would cost a sync per step, so every row is copied there.
            targets = (rows != targets).nonzero().view(-1)
            if targets.numel() == 0:
                return
            rows = rows.index_select(0, targets)
        for buf in (*self.self_k, *self.self_v, self.self_mask[:, None, :, None]):
            history = buf[:, :, :t]
            history.index_copy_(0, targets, history.index_select(0, rows))

    def keep(self, utterances: Tensor) -> None:
        """Drop every utterance not listed (finished ones leave the batch)."""
        rows = (utterances[:, None] * self.beam + torch.arange(self.beam, device=utterances.device)).reshape(-1)
        self.self_k = [b.index_select(0, rows) for b in self.self_k]
        self.self_v = [b.index_select(0, rows) for b in self.self_v]
        self.self_mask = self.self_mask.index_select(0, rows)
        self.cross_k = [b.index_select(0, utterances) for b in self.cross_k]
        self.cross_v = [b.index_select(0, utterances) for b in self.cross_v]
        if self.cross_bias is not None:
            self.cross_bias = self.cross_bias.index_select(0, utterances)


def _additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """A boolean attention mask (True = attend) as the float one scaled_dot_product_attention
    makes of it internally (0 or -inf), so the scores get the same additions."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> Tensor:
    """The decoder's attention by default: torch's scaled_dot_product_attention, `bias`
    an additive mask or None."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


class Decoder(nn.Module):
    def __init__(
        self, sos_id: int, eos_id: int, pad_id: int, odim: int, n_layers: int, n_head: int, d_model: int, pe_maxlen: int
    ) -> None:
        super().__init__()
        self.sos_id, self.eos_id, self.pad_id = sos_id, eos_id, pad_id
        self.n_head = n_head
        self.d_model = d_model
        self.tgt_word_emb = nn.Embedding(odim, d_model, padding_idx=pad_id)
        self.positional_encoding = PositionTable(range(pe_maxlen), d_model)
        self.layer_stack = nn.ModuleList(DecoderLayer(d_model, n_head) for _ in range(n_layers))
        self.tgt_word_prj = nn.Linear(d_model, odim, bias=False)
        self.layer_norm_out = nn.LayerNorm(d_model)
        self.tgt_word_prj.weight = self.tgt_word_emb.weight
        self.scale = d_model**0.5
        # How a step attends, to its own history and to the encoder: (q, k, v, additive bias
        # or None) -> output. kernels.attention replaces it on CPU in fp32 (FireRedModel).
        self.attention: Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor] = sdpa_attention
        # The whole step as one call per layer, on CPU in fp32 (stepkernel.install): (the
        # step's embedded input, cache) -> logits, or None for a step it does not take.
        self.fused_step: Callable[[Tensor, DecoderCache], Tensor | None] | None = None

    def init_cache(self, enc: Tensor, enc_valid: Tensor, beam: int, capacity: int = 32) -> DecoderCache:
        """Project the encoder output to every layer's cross-attention K/V, once."""
        n = enc.size(0)
        rows = n * beam
        h, dk = self.n_head, self.d_model // self.n_head
        cross_k, cross_v = [], []
        for layer in self.layer_stack:
            # Contiguous per head: every step reads these whole, and a head's frames in one
            # run stream faster than the strided view of the projection, same bits
            # (measured: docs/engine.md#measured-numbers).
            cross_k.append(layer.cross_attn.heads(layer.cross_attn.w_ks(enc)).contiguous())
            cross_v.append(layer.cross_attn.heads(layer.cross_attn.w_vs(enc)).contiguous())
        cross_bias = None if bool(enc_valid.all()) else _additive_mask(enc_valid[:, None, None, :], enc.dtype)
        return DecoderCache(
            self_k=[enc.new_empty(rows, h, capacity, dk) for _ in self.layer_stack],
            self_v=[enc.new_empty(rows, h, capacity, dk) for _ in self.layer_stack],
            cross_k=cross_k,
            cross_v=cross_v,
            cross_bias=cross_bias,
            self_mask=torch.ones(rows, capacity, dtype=torch.bool, device=enc.device),
            beam=beam,
        )

    def embed(self, tokens: Tensor, t: int) -> Tensor:
        """The step's input at position t: (rows, d)."""
        pe = self.positional_encoding.pe[0, t].to(self.tgt_word_emb.weight.dtype)
        return self.tgt_word_emb(tokens) * self.scale + pe

    def step(self, tokens: Tensor, cache: DecoderCache) -> Tensor:
        """Feed one token per row at position cache.length; returns logits (rows, odim)."""
        t = cache.length
        cache.ensure_capacity(t + 1)
        embedded = self.embed(tokens, t)
        cache.self_mask[:, t] = tokens != self.pad_id
        if self.fused_step is not None:
            logits = self.fused_step(embedded, cache)
            if logits is not None:
                return logits
        rows, beam = tokens.size(0), cache.beam
        n = rows // beam
        h, dk, d = self.n_head, self.d_model // self.n_head, self.d_model
        x = embedded.unsqueeze(1)  # (rows, 1, d)
        self_mask = _additive_mask(cache.self_mask[:, None, None, : t + 1], x.dtype)
        for i, layer in enumerate(self.layer_stack):
            sa = layer.self_attn
            y = layer.self_attn_norm(x)
            cache.self_k[i][:, :, t : t + 1] = sa.heads(_linear(sa.w_ks, y))
            cache.self_v[i][:, :, t : t + 1] = sa.heads(_linear(sa.w_vs, y))
            att = self.attention(
                sa.heads(_linear(sa.w_qs, y)), cache.self_k[i][:, :, : t + 1], cache.self_v[i][:, :, : t + 1], self_mask
            )
            x = x + _linear(sa.fc, att.reshape(rows, 1, d))
            ca = layer.cross_attn
            # The beams of one utterance become the query rows of one attention call, so
            # the encoder-side K/V is never copied per beam.
            q = _linear(ca.w_qs, layer.cross_attn_norm(x)).view(n, beam, h, dk).transpose(1, 2)
            att = self.attention(q, cache.cross_k[i], cache.cross_v[i], cache.cross_bias)
            x = x + _linear(ca.fc, att.transpose(1, 2).reshape(rows, 1, d))
            y = layer.mlp_norm(x)
            x = x + _linear(layer.mlp.w_2, layer.mlp.act(_linear(layer.mlp.w_1, y)))
        cache.length = t + 1
        return _linear(self.tgt_word_prj, self.layer_norm_out(x[:, 0]))

    def cross_attention_weights(
        self,
        enc: Tensor,
        enc_valid: Tensor,
        tokens: Tensor,
        cross: tuple[Sequence[Tensor], Sequence[Tensor]] | None = None,
    ) -> Tensor:
        """Teacher-forced pass over `tokens` (n, L, starting with <sos>, <pad> after a
        shorter sequence) returning each layer's cross-attention probabilities averaged over
        heads, (n, layers, L, frames).

        Used only when an alignment is asked for, after the search, on the best hypotheses:
        the default decoding path never materialises these weights. `cross` is the
        cross-attention K/V the search projected (DecoderCache.cross_k / cross_v, taken
        before any utterance left), which saves projecting every frame again.
        """
        n, length = tokens.shape
        x = self.tgt_word_emb(tokens) * self.scale + self.positional_encoding.pe[:, :length].to(enc.dtype)
        causal = torch.ones(length, length, dtype=torch.bool, device=enc.device).tril()
        self_mask = causal[None, None] & (tokens != self.pad_id)[:, None, None, :]
        h, frames = self.n_head, enc.size(1)
        # The scores (utterances x heads x tokens x frames) are the largest tensor here:
        # scale the queries instead, and mask padding in place, only where there is some.
        cross_bias = None if bool(enc_valid.all()) else _additive_mask(enc_valid[:, None, None, :], enc.dtype)
        # One buffer for every layer's scores: a fresh one per layer is page-faulted in anew.
        scores = enc.new_empty(n, h, length, frames)
        weights = []
        for i, layer in enumerate(self.layer_stack):
            sa = layer.self_attn
            y = layer.self_attn_norm(x)
            att = F.scaled_dot_product_attention(
                sa.heads(sa.w_qs(y)), sa.heads(sa.w_ks(y)), sa.heads(sa.w_vs(y)), attn_mask=self_mask
            )
            x = x + sa.fc(att.transpose(1, 2).reshape(n, length, -1))
            ca = layer.cross_attn
            q = ca.heads(ca.w_qs(layer.cross_attn_norm(x)))
            if cross is None:
                k, v = ca.heads(ca.w_ks(enc)), ca.heads(ca.w_vs(enc))
            else:
                k, v = cross[0][i], cross[1][i]
            torch.matmul(q * (1.0 / math.sqrt(q.size(-1))), k.transpose(-2, -1), out=scores)
            if cross_bias is not None:
                scores += cross_bias
            probs = torch.softmax(scores, dim=-1, out=scores)
            weights.append(probs.mean(dim=1))
            if i == len(self.layer_stack) - 1:
                break  # the rest of the last layer changes no attention weight
            x = x + ca.fc(torch.matmul(probs, v).transpose(1, 2).reshape(n, length, -1))
            x = x + layer.mlp(layer.mlp_norm(x))
        return torch.stack(weights, dim=1)


class CtcHead(nn.Module):
    """FireRedASR2's CTC projection (`ctc.ctc_lo`)."""

    def __init__(self, d_model: int, odim: int) -> None:
        super().__init__()
        self.ctc_lo = nn.Linear(d_model, odim)

    def forward(self, enc: Tensor) -> Tensor:
        return F.log_softmax(self.ctc_lo(enc).float(), dim=-1)


class AedModel(nn.Module):
    """Encoder + decoder (+ optional CTC head), parameter names as in official checkpoints."""

    def __init__(self, args: argparse.Namespace, with_ctc: bool = False) -> None:
        super().__init__()
        self.args = args
        self.sos_id, self.eos_id, self.pad_id = args.sos_id, args.eos_id, args.pad_id
        self.encoder = Encoder(
            args.idim, args.n_layers_enc, args.n_head, args.d_model, args.kernel_size, args.pe_maxlen
        )
        self.decoder = Decoder(
            args.sos_id,
            args.eos_id,
            args.pad_id,
            args.odim,
            args.n_layers_dec,
            args.n_head,
            args.d_model,
            args.pe_maxlen,
        )
        self.ctc = CtcHead(args.d_model, args.odim) if with_ctc else None

    @classmethod
    def from_package(cls, package: dict) -> AedModel:
        """Build from a loaded checkpoint package; a `ctc.*` head is kept when present."""
        state = package["model_state_dict"]
        # Build on the meta device and adopt the checkpoint's tensors instead of copying them:
        # they are memory-mapped (checkpoint.load_package), so every worker process shares
        # one page-cache copy of the weights rather than holding a private one.
        with torch.device("meta"), _MetaBuild():
            model = cls(package["args"], with_ctc=any(k.startswith("ctc.") for k in state))
        model.load_state_dict(state, strict=True, assign=True)
        model.decoder.tgt_word_prj.weight = model.decoder.tgt_word_emb.weight  # tied, as upstream
        for name, tensor in list(model.named_buffers()):
            if tensor.is_meta:
                raise ValueError(f"checkpoint lacks buffer {name}")
        return model.eval()

    def ctc_log_probs(self, enc: Tensor) -> Tensor:
        if self.ctc is None:
            raise ValueError("this checkpoint has no CTC head (ctc.ctc_lo): only FireRedASR2 models do")
        return self.ctc(enc)
