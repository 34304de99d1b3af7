"""The batched beam search over the decoder of model.py.

Semantics follow upstream exactly: softmax smoothing, eos penalty, the way a finished beam
keeps its score and only extends with eos, top-k pruning over beam x beam candidates, GNMT
length penalty applied once at the end, n-best; and FireRedASR2's additions: a confidence per
token (exp of the step score that chose it, carried along the beam reorders like the tokens)
and shallow fusion with an external LSTM language model (lm.py). What differs is the work
done: utterances whose beams have all ended leave the batch, and a reorder copies only the rows
whose parent changed (model.DecoderCache).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .lm import LM_EOS_FACTOR, LstmLm
from .model import Decoder

# Upstream's "minus infinity" for dead beams: finite, so arithmetic on it stays finite.
_DEAD_SCORE = -1e10

#: Called as hook(step, logits) -> logits before the log-softmax (benchmarks force lengths).
LogitsHook = Callable[[int, Tensor], Tensor]


@dataclass
class SearchResult:
    """n-best token id sequences (without <sos>/<eos>) and their final scores, best first, with
    each token's confidence: exp of the step score that chose it (after softmax smoothing, LM
    fusion and eos penalty), FireRedASR2's definition."""

    sequences: list[list[int]]
    scores: list[float]
    confidences: list[list[float]] = field(default_factory=list)


@torch.inference_mode()
def beam_search(
    decoder: Decoder,
    enc: Tensor,
    enc_valid: Tensor,
    max_lens: Sequence[int],
    beam_size: int = 1,
    nbest: int = 1,
    softmax_smoothing: float = 1.0,
    length_penalty: float = 0.0,
    eos_penalty: float = 1.0,
    logits_hook: LogitsHook | None = None,
    check_every: int = 1,
    cache: Any = None,
    lm: LstmLm | None = None,
    lm_weight: float = 0.0,
    confidence: bool = True,
) -> list[SearchResult]:
    """Upstream's batch beam search with caches and a shrinking batch.

    `max_lens[i]` is utterance i's step limit (upstream: decode_max_len, or the encoder
    length). `check_every` spaces out the host-side "is anyone finished?" checks (each is a
    device sync on CUDA); a finished utterance that stays in the batch a few steps longer
    is frozen by the search rule itself, so results do not depend on it. `cache` is
    `decoder.init_cache(enc, enc_valid, beam_size)` when the caller made it (to keep its
    cross-attention K/V for an alignment pass); the search consumes it. With `lm` and
    `lm_weight` > 0, each step adds lm_weight x the LM's log-probabilities of the next token
    (its <eos> log-prob multiplied by LM_EOS_FACTOR) to the decoder's, as FireRedASR2 does.
    `confidence=False` skips the per-token confidences (their results are then empty lists):
    for the benchmark that measures what they cost (benchmarks/search_extras.py).
    """
    if not eos_penalty > 0.0:  # FireRedASR2 allows > 1 (v1 asserted <= 1)
        raise ValueError("eos_penalty must be > 0")
    n_total = enc.size(0)
    beam = beam_size
    nbest = min(int(nbest), beam)
    device = enc.device
    eos = decoder.eos_id
    if cache is None:
        cache = decoder.init_cache(enc, enc_valid, beam)
    rows = n_total * beam
    # Utterance ids of the rows still in the batch, and their per-utterance step limits.
    limits = list(max_lens)
    active_host = list(range(n_total))
    scores = torch.tensor([0.0] + [_DEAD_SCORE] * (beam - 1), device=device).repeat(n_total).view(rows, 1)
    finished = torch.zeros(rows, 1, dtype=torch.bool, device=device)
    dead_row = torch.tensor([0.0] + [_DEAD_SCORE] * (beam - 1), device=device).view(1, beam)
    capacity = max(limits) + 1 if limits else 1
    ys = torch.full((rows, capacity), eos, dtype=torch.long, device=device)
    ys[:, 0] = decoder.sos_id
    last = ys[:, 0].clone()
    # confidences[:, k]: exp of the step score that chose ys[:, k + 1].
    confidences = torch.zeros((rows, capacity), dtype=torch.float32, device=device)
    lm_state = lm.init_state(rows, device) if lm is not None and lm_weight > 0.0 else None
    results: list[SearchResult | None] = [None] * n_total

    def retire(local: list[int], t_len: int) -> None:
        for j in local:
            u = active_host[j]
            seqs = ys[j * beam : (j + 1) * beam, :t_len]
            confs = confidences[j * beam : (j + 1) * beam, : t_len - 1 if confidence else 0]
            results[u] = _finalise(seqs, scores[j * beam : (j + 1) * beam, 0], confs, eos, nbest, length_penalty)

    step = 0
    while active_host:
        n = len(active_host)
        logits = decoder.step(last, cache)
        if logits_hook is not None:
            logits = logits_hook(step, logits)
        t_scores, lm_state = _token_scores(logits, last, softmax_smoothing, eos, eos_penalty, lm, lm_weight, lm_state)
        top_s, top_y = torch.topk(t_scores, k=beam, dim=1)
        # A finished beam may only extend with <eos> at no cost (its other candidates die).
        top_s = torch.where(finished, dead_row, top_s)
        top_y = top_y.masked_fill(finished, eos)
        cand = (scores + top_s).view(n, beam * beam)
        best, best_ids = torch.topk(cand, k=beam, dim=1)
        scores = best.view(-1, 1)
        parent = (
            torch.div(best_ids, beam, rounding_mode="floor") + beam * torch.arange(n, device=device)[:, None]
        ).view(-1)
        new_y = torch.gather(top_y.view(n, beam * beam), 1, best_ids).view(-1)
        ys[: n * beam, : step + 1] = ys[: n * beam, : step + 1].index_select(0, parent)
        ys[: n * beam, step + 1] = new_y
        if confidence:
            if step:
                confidences[:, :step] = confidences[:, :step].index_select(0, parent)
            confidences[:, step] = torch.gather(top_s.view(n, beam * beam), 1, best_ids).view(-1).exp()
        cache.reorder(parent)
        if lm_state is not None:
            lm_state = tuple(x.index_select(1, parent) for x in lm_state)
        last = new_y
        finished = (new_y == eos).view(-1, 1)
        step += 1

        # Which utterances leave now: all beams ended, or the step limit reached (known on
        # the host, so that needs no sync).
        done = [j for j in range(n) if limits[j] <= step]
        if step % check_every == 0 or done:
            all_done = finished.view(n, beam).all(dim=1).nonzero().view(-1).tolist()
            done = sorted(set(done) | set(all_done))
        if done:
            retire(done, step + 1)
            keep = [j for j in range(n) if j not in set(done)]
            if not keep:
                break
            keep_t = torch.tensor(keep, device=device)
            keep_rows = (keep_t[:, None] * beam + torch.arange(beam, device=device)).view(-1)
            cache.keep(keep_t)
            scores = scores.index_select(0, keep_rows)
            finished = finished.index_select(0, keep_rows)
            last = last.index_select(0, keep_rows)
            ys = ys.index_select(0, keep_rows)
            confidences = confidences.index_select(0, keep_rows)
            if lm_state is not None:
                lm_state = tuple(x.index_select(1, keep_rows) for x in lm_state)
            active_host = [active_host[j] for j in keep]
            limits = [limits[j] for j in keep]
    return [r if r is not None else SearchResult([[]], [0.0], [[]]) for r in results]


def _token_scores(
    logits: Tensor,
    last: Tensor,
    softmax_smoothing: float,
    eos: int,
    eos_penalty: float,
    lm: LstmLm | None,
    lm_weight: float,
    lm_state: Any,
) -> tuple[Tensor, Any]:
    """One step's scores of every next token: the smoothed log-softmax, plus lm_weight x the
    LM's log-probabilities (its <eos> x LM_EOS_FACTOR) when an LM state is carried, then the
    eos penalty; and the LM's next state."""
    t_scores = F.log_softmax(logits.float() / softmax_smoothing, dim=-1)
    if lm_state is not None:
        lm_scores, lm_state = lm.step(last, lm_state)
        lm_scores[:, lm.eos_id] *= LM_EOS_FACTOR
        t_scores = t_scores + lm_weight * lm_scores
    if eos_penalty != 1.0:
        t_scores[:, eos] *= eos_penalty
    return t_scores, lm_state


def _finalise(
    seqs: Tensor, scores: Tensor, confidences: Tensor, eos: int, nbest: int, length_penalty: float
) -> SearchResult:
    """GNMT length penalty, n-best selection and trimming, as upstream does at the end."""
    lengths = (seqs != eos).sum(dim=-1).int()  # counts <sos>, as upstream does
    scores = scores.clone()
    if length_penalty > 0.0:
        scores /= torch.pow((5 + lengths.float()) / (5.0 + 1), length_penalty)
    top, ids = torch.topk(scores, k=nbest)
    seq_list = [seqs[i, 1 : int(lengths[i])].tolist() for i in ids.tolist()]
    conf_list = [confidences[i, : int(lengths[i]) - 1].tolist() for i in ids.tolist()]
    return SearchResult(seq_list, (-top).tolist(), conf_list)
