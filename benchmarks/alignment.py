"""`python -m benchmarks alignment`: the token-time pass after the beam search.

The pipeline asks the FireRedASR engine for token times (cue timing): after each search, a
teacher-forced pass over the best hypotheses returns the decoder's cross-attention. Two ways
of running that pass, on the same searches, alternating rounds, one process, one model:

  per utterance  the previous code (kept here as `previous_pass`): one pass per segment,
                 its cross-attention K/V projected again from the encoder output;
  batched        the engine's way (FireRedModel.alignments): one pass for the group's
                 segments together, on the K/V the search already projected, the scores
                 in one reused buffer, the last layer stopped after its attention.

The segments are the runner folder's (common.build_folder: real speech, the real VAD), cut
into batches across files as the runner does (batching.make_batches), and each batch goes
through the engine's own grouping. Also reported: each batch's search alone, for the share
the pass takes of a call.

    python -m benchmarks alignment --preset aed-l --minutes 4 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fireredasr_fast.batching import make_batches
from fireredasr_fast.engines.firered.engine import FireRedModel
from fireredasr_fast.engines.firered.model import DecoderCache
from fireredasr_fast.engines.firered.options import step_limit
from fireredasr_fast.engines.firered.search import beam_search

from .common import add_folder_options, as_float, report_header, resolve_model, segmented_folder


def previous_pass(decoder: Any, enc: torch.Tensor, enc_valid: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The engine's alignment pass before it was batched (kept here as the baseline): one
    utterance, its cross-attention K/V projected again, probabilities (n, layers, heads,
    tokens, frames)."""
    n, length = tokens.shape
    x = decoder.tgt_word_emb(tokens) * decoder.scale + decoder.positional_encoding.pe[:, :length].to(enc.dtype)
    causal = torch.ones(length, length, dtype=torch.bool, device=enc.device).tril()
    self_mask = causal[None, None] & (tokens != decoder.pad_id)[:, None, None, :]
    cross_mask = enc_valid[:, None, None, :]
    weights = []
    for layer in decoder.layer_stack:
        sa = layer.self_attn
        y = layer.self_attn_norm(x)
        att = F.scaled_dot_product_attention(
            sa.heads(sa.w_qs(y)), sa.heads(sa.w_ks(y)), sa.heads(sa.w_vs(y)), attn_mask=self_mask
        )
        x = x + sa.fc(att.transpose(1, 2).reshape(n, length, -1))
        ca = layer.cross_attn
        q = ca.heads(ca.w_qs(layer.cross_attn_norm(x)))
        k, v = ca.heads(ca.w_ks(enc)), ca.heads(ca.w_vs(enc))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(q.size(-1))
        probs = scores.masked_fill(~cross_mask, float("-inf")).softmax(-1)
        weights.append(probs)
        x = x + ca.fc(torch.matmul(probs, v).transpose(1, 2).reshape(n, length, -1))
        x = x + layer.mlp(layer.mlp_norm(x))
    return torch.stack(weights, dim=1)


def main(argv: list[str] | None = None) -> int:
    prog = "python -m benchmarks alignment"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    add_folder_options(parser, rounds=3)
    parser.add_argument("--batch-seconds", type=float, default=240.0, help="runner batch size (padded seconds)")
    opts = parser.parse_args(argv)

    torch.set_num_threads(opts.threads)
    jobs = [job for file_jobs in segmented_folder(opts.minutes) for job in file_jobs]
    batches = [[as_float(job) for job in b.jobs] for b in make_batches(jobs, opts.batch_seconds)]
    model_dir, kind = resolve_model(opts.model_dir, opts.preset, opts.cache_dir)
    model = FireRedModel(model_dir)
    decoder = model.model.decoder
    seconds = [[round(w.size / 16000, 2) for w in waves] for waves in batches]
    print(f"model: {kind}; {len(batches)} batches, segments (s): {seconds}", flush=True)

    # The searches once, kept: both ways align the same hypotheses on the same encoder output.
    groups: list[dict[str, Any]] = []
    search_seconds = 0.0
    with torch.inference_mode():
        for waves in batches:
            feats = model.features.batch(waves)
            for group in model.encoder_batches([f.shape[0] for f in feats]):
                start = time.perf_counter()
                enc, valid = model.encode_features([feats[i] for i in group])
                # As the engine does: the encoder length, capped at --tokens-per-second.
                frames = valid.sum(dim=1).tolist()
                limits = [
                    step_limit(int(n), len(waves[i]), 0, opts.tokens_per_second)
                    for n, i in zip(frames, group, strict=True)
                ]
                cache = decoder.init_cache(enc, valid, 3)
                assert isinstance(cache, DecoderCache)
                cross = (list(cache.cross_k), list(cache.cross_v))
                found = beam_search(
                    decoder, enc, valid, limits, beam_size=3, softmax_smoothing=1.25, length_penalty=0.6, cache=cache
                )
                search_seconds += time.perf_counter() - start
                groups.append({"enc": enc, "valid": valid, "found": found, "cross": cross})

    def per_utterance(g: dict[str, Any]) -> list[np.ndarray]:
        out = []
        for j, result in enumerate(g["found"]):
            tokens = torch.tensor([[model.model.sos_id, *result.sequences[0]]])
            att = previous_pass(decoder, g["enc"][j : j + 1], g["valid"][j : j + 1], tokens)
            out.append(att[0].mean(dim=1)[:, :, : int(g["valid"][j].sum())].numpy())
        return out

    ways = {
        "per utterance": per_utterance,
        "batched": lambda g: model.alignments(g["enc"], g["valid"], g["found"], g["cross"]),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    outputs: dict[str, list[np.ndarray]] = {}
    with torch.inference_mode():
        for r in range(opts.rounds):
            for name in ways if r % 2 == 0 else list(ways)[::-1]:
                start = time.perf_counter()
                result = [att for g in groups for att in ways[name](g)]
                times[name].append(time.perf_counter() - start)
                outputs.setdefault(name, result)
                print(f"round {r + 1} {name:14s} {times[name][-1]:7.2f} s", flush=True)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(outputs["per utterance"], outputs["batched"], strict=True))

    audio = sum(sum(s) for s in seconds)
    rows = []
    print(f"\n{'pass':14s} {'best':>8s} {'median':>8s} {'of search':>10s}")
    for name, values in times.items():
        row = {"way": name, "best": min(values), "median": float(np.median(values)), "rounds": values}
        row["share_of_search"] = row["best"] / search_seconds
        rows.append(row)
        print(f"{name:14s} {row['best']:7.2f}s {row['median']:7.2f}s {100 * row['share_of_search']:9.1f}%")
    ratio = rows[0]["best"] / rows[1]["best"]
    print(
        f"\naudio {audio:.1f} s in {sum(len(g['found']) for g in groups)} segments, {len(groups)} groups; "
        f"encoder + search {search_seconds:.1f} s; per utterance / batched (best): {ratio:.2f}x; "
        f"max abs difference of the attention {diff:.1e}"
    )
    if opts.json:
        report = {
            **report_header("alignment", opts.threads, kind),
            "segments_seconds": seconds,
            "audio_seconds": audio,
            "search_seconds": search_seconds,
            "rows": rows,
            "speedup": ratio,
            "max_abs_difference": diff,
        }
        opts.json.write_text(json.dumps(report, indent=2))
    return 0
