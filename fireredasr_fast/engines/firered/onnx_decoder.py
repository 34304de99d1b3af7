"""Opt-in ONNX Runtime decoder step (`decoder_backend="onnx"`, CPU, fp32).

One incremental decoder step is exported as a graph (`StepGraph`: the arithmetic of
`Decoder.step`, with the cache passed in rather than written in place) and run by ONNX
Runtime; `beam_search` drives it through `OnnxDecoder`/`OnnxDecoderCache`, which offer the
interface of `Decoder`/`DecoderCache`. Cross-attention K/V are still projected once per
utterance by torch (one large GEMM) and handed to every step.

The self-attention cache is a numpy buffer laid out (capacity, layers, rows, heads, d_k):
the past is then a contiguous prefix `buf[:t]` that ORT reads without a copy, and the
step's new K/V are written into row t. ORT pre-packs the weights once per session, which
is where its few-row projections beat eager torch (docs/engine.md). Outputs differ from the
torch step by ~1e-6, so tokens can differ at near-ties: this is opt-in.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model import Decoder
from .onnx_encoder import cached_export, require_onnx, session

STEP_INPUTS = ("tokens", "pe_row", "past_k", "past_v", "self_mask", "cross_k", "cross_v", "cross_mask")
STEP_OUTPUTS = ("logits", "new_k", "new_v")


class StepGraph(nn.Module):
    """`Decoder.step` as a pure function of its inputs."""

    def __init__(self, decoder: Decoder) -> None:
        super().__init__()
        self.dec = decoder

    def forward(
        self,
        tokens: Tensor,  # (rows,) int64
        pe_row: Tensor,  # (d,) positional encoding of this step
        past_k: Tensor,  # (t, layers, rows, heads, d_k)
        past_v: Tensor,
        self_mask: Tensor,  # (rows, t + 1) bool, False at <pad> tokens
        cross_k: Tensor,  # (layers, utterances, heads, frames, d_k)
        cross_v: Tensor,
        cross_mask: Tensor,  # (utterances, 1, 1, frames) bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        dec = self.dec
        rows, n = tokens.shape[0], cross_k.shape[1]
        beam = rows // n
        h, d = dec.n_head, dec.d_model
        x = (dec.tgt_word_emb(tokens) * dec.scale + pe_row).unsqueeze(1)
        mask = self_mask[:, None, None, :]
        new_k, new_v = [], []
        for i, layer in enumerate(dec.layer_stack):
            sa, ca = layer.self_attn, layer.cross_attn
            y = layer.self_attn_norm(x)
            k, v = sa.heads(sa.w_ks(y)), sa.heads(sa.w_vs(y))  # (rows, h, 1, d_k)
            new_k.append(k[:, :, 0])
            new_v.append(v[:, :, 0])
            keys = torch.cat([past_k[:, i].permute(1, 2, 0, 3), k], 2)
            values = torch.cat([past_v[:, i].permute(1, 2, 0, 3), v], 2)
            att = F.scaled_dot_product_attention(sa.heads(sa.w_qs(y)), keys, values, attn_mask=mask)
            x = x + sa.fc(att.reshape(rows, 1, d))
            q = ca.w_qs(layer.cross_attn_norm(x)).view(n, beam, h, d // h).transpose(1, 2)
            att = F.scaled_dot_product_attention(q, cross_k[i], cross_v[i], attn_mask=cross_mask)
            x = x + ca.fc(att.transpose(1, 2).reshape(rows, 1, d))
            x = x + layer.mlp(layer.mlp_norm(x))
        logits = dec.tgt_word_prj(dec.layer_norm_out(x[:, 0]))
        return logits, torch.stack(new_k), torch.stack(new_v)  # new K/V: (layers, rows, h, d_k)


def step_example(decoder: Decoder, rows: int = 3, n: int = 1, t: int = 5, frames: int = 40) -> tuple[Tensor, ...]:
    layers, h, d = len(decoder.layer_stack), decoder.n_head, decoder.d_model
    gen = torch.Generator().manual_seed(0)
    return (
        torch.randint(5, 50, (rows,), generator=gen),
        torch.zeros(d),
        torch.randn(t, layers, rows, h, d // h, generator=gen),
        torch.randn(t, layers, rows, h, d // h, generator=gen),
        torch.ones(rows, t + 1, dtype=torch.bool),
        torch.randn(layers, n, h, frames, d // h, generator=gen),
        torch.randn(layers, n, h, frames, d // h, generator=gen),
        torch.ones(n, 1, 1, frames, dtype=torch.bool),
    )


def export_step(decoder: Decoder, path: Path) -> None:
    require_onnx()
    graph = StepGraph(decoder).eval()
    for param in graph.parameters():
        param.requires_grad_(False)
    dynamic = {
        "tokens": {0: "rows"},
        "past_k": {0: "t", 2: "rows"},
        "past_v": {0: "t", 2: "rows"},
        "self_mask": {0: "rows", 1: "t1"},
        "cross_k": {1: "n", 3: "frames"},
        "cross_v": {1: "n", 3: "frames"},
        "cross_mask": {0: "n", 3: "frames"},
        "logits": {0: "rows"},
        "new_k": {1: "rows"},
        "new_v": {1: "rows"},
    }
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter
        torch.onnx.export(
            graph,
            step_example(decoder),
            str(path),
            input_names=list(STEP_INPUTS),
            output_names=list(STEP_OUTPUTS),
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )


class OnnxDecoderCache:
    """`DecoderCache`'s interface over numpy buffers (see the module docstring for the layout)."""

    def __init__(self, cross_k: np.ndarray, cross_v: np.ndarray, cross_mask: np.ndarray, beam: int, capacity: int):
        layers, n, h, _, dk = cross_k.shape
        self.cross_k, self.cross_v, self.cross_mask = cross_k, cross_v, cross_mask
        self.beam = beam
        self.length = 0
        self.self_k = np.zeros((capacity, layers, n * beam, h, dk), dtype=np.float32)
        self.self_v = np.zeros_like(self.self_k)
        self.self_mask = np.ones((n * beam, capacity), dtype=bool)

    def ensure_capacity(self, needed: int) -> None:
        capacity = self.self_k.shape[0]
        if needed <= capacity:
            return
        grow = max(needed, 2 * capacity) - capacity
        self.self_k = np.concatenate([self.self_k, np.zeros((grow, *self.self_k.shape[1:]), np.float32)])
        self.self_v = np.concatenate([self.self_v, np.zeros((grow, *self.self_v.shape[1:]), np.float32)])
        self.self_mask = np.concatenate([self.self_mask, np.ones((self.self_mask.shape[0], grow), bool)], axis=1)

    def reorder(self, rows: Tensor) -> None:
        """Row i takes the history of row rows[i] (beam reordering)."""
        idx, t = rows.cpu().numpy(), self.length
        self.self_k[:t] = self.self_k[:t, :, idx]
        self.self_v[:t] = self.self_v[:t, :, idx]
        self.self_mask[:, :t] = self.self_mask[idx, :t]

    def keep(self, utterances: Tensor) -> None:
        """Drop every utterance not listed (finished ones leave the batch)."""
        u = utterances.cpu().numpy()
        rows = (u[:, None] * self.beam + np.arange(self.beam)).reshape(-1)
        self.self_k = self.self_k[:, :, rows]
        self.self_v = self.self_v[:, :, rows]
        self.self_mask = self.self_mask[rows]
        self.cross_k = np.ascontiguousarray(self.cross_k[:, u])
        self.cross_v = np.ascontiguousarray(self.cross_v[:, u])
        self.cross_mask = np.ascontiguousarray(self.cross_mask[u])


class OnnxDecoder:
    """What `beam_search` needs of a `Decoder`, with the step run by ONNX Runtime."""

    def __init__(self, decoder: Decoder, path: str | os.PathLike, threads: int | None = None) -> None:
        self.decoder = decoder
        self.sos_id, self.eos_id, self.pad_id = decoder.sos_id, decoder.eos_id, decoder.pad_id
        self.path = Path(path)
        self.session = session(path, threads)
        self.pe = decoder.positional_encoding.pe[0].float().numpy()

    def init_cache(self, enc: Tensor, enc_valid: Tensor, beam: int, capacity: int = 32) -> OnnxDecoderCache:
        """Cross-attention K/V projected by torch once, as `Decoder.init_cache` does."""
        torch_cache = self.decoder.init_cache(enc, enc_valid, beam, capacity=1)
        cross_k = torch.stack(torch_cache.cross_k).float().numpy()
        cross_v = torch.stack(torch_cache.cross_v).float().numpy()
        cross_mask = np.ascontiguousarray(enc_valid[:, None, None, :].cpu().numpy())
        return OnnxDecoderCache(cross_k, cross_v, cross_mask, beam, capacity)

    def step(self, tokens: Tensor, cache: OnnxDecoderCache) -> Tensor:
        """Feed one token per row at position cache.length; returns logits (rows, odim)."""
        t = cache.length
        cache.ensure_capacity(t + 1)
        ids = tokens.cpu().numpy()
        cache.self_mask[:, t] = ids != self.pad_id
        feeds = {
            "tokens": ids,
            "pe_row": self.pe[t],
            "past_k": cache.self_k[:t],
            "past_v": cache.self_v[:t],
            "self_mask": np.ascontiguousarray(cache.self_mask[:, : t + 1]),
            "cross_k": cache.cross_k,
            "cross_v": cache.cross_v,
            "cross_mask": cache.cross_mask,
        }
        logits, new_k, new_v = self.session.run(None, feeds)
        cache.self_k[t] = new_k
        cache.self_v[t] = new_v
        cache.length = t + 1
        return torch.from_numpy(logits)


def cached_step_export(decoder: Decoder, model_file: str | os.PathLike, root: Path | None = None) -> Path:
    return cached_export("decoder-step", lambda path: export_step(decoder, path), model_file, root)
