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

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import kernels
from .context import ContextGraph, ContextState
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
    context: ContextGraph | None = None,
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
    `context` biases the search towards glossary terms (context.py); confidences stay the
    decoder's own (without the bonuses).
    """
    if not eos_penalty > 0.0:  # FireRedASR2 allows > 1 (v1 asserted <= 1)
        raise ValueError("eos_penalty must be > 0")
    n_total = enc.size(0)
    nbest = min(int(nbest), beam_size)
    if cache is None:
        cache = decoder.init_cache(enc, enc_valid, beam_size)
    beams = _Beams.start(decoder, n_total, beam_size, list(max_lens), enc.device)
    beams.fuse(lm if lm_weight > 0.0 else None, context)
    results: list[SearchResult | None] = [None] * n_total
    step = 0
    while beams.active_host:
        n = len(beams.active_host)
        logits = decoder.step(beams.last, cache)
        if logits_hook is not None:
            logits = logits_hook(step, logits)
        t_scores, beams.lm_state = _token_scores(
            logits, beams.last, softmax_smoothing, beams.eos, eos_penalty, lm, lm_weight, beams.lm_state
        )
        beams.extend(t_scores, step, cache, confidence)
        step += 1
        done = beams.leaving(step, check_every)
        if done:
            for j in done:
                t_len = step + 1
                seqs, scores, confs = beams.rows_of(j, t_len, confidence)
                results[beams.active_host[j]] = _finalise(seqs, scores, confs, beams.eos, nbest, length_penalty)
            keep = [j for j in range(n) if j not in set(done)]
            if not keep:
                break
            beams.keep(keep, cache)
    return [r if r is not None else SearchResult([[]], [0.0], [[]]) for r in results]


@dataclass
class _Beams:
    """The search's rows still in the batch (beam rows per utterance): each row's score, whether
    it has ended, its last token, its tokens so far (ys) and their confidences
    (confidences[:, k]: exp of the step score that chose ys[:, k + 1]), its LM state; and the
    utterance ids of the rows and their per-utterance step limits."""

    beam: int
    eos: int
    scores: Tensor
    finished: Tensor
    last: Tensor
    ys: Tensor
    confidences: Tensor
    active_host: list[int]
    limits: list[int]
    dead_row: Tensor
    lm_state: Any = None
    context: ContextState | None = None

    @classmethod
    def start(cls, decoder: Decoder, n_total: int, beam: int, limits: list[int], device: torch.device) -> _Beams:
        rows = n_total * beam
        eos = decoder.eos_id
        scores = torch.tensor([0.0] + [_DEAD_SCORE] * (beam - 1), device=device).repeat(n_total).view(rows, 1)
        finished = torch.zeros(rows, 1, dtype=torch.bool, device=device)
        dead_row = torch.tensor([0.0] + [_DEAD_SCORE] * (beam - 1), device=device).view(1, beam)
        capacity = max(limits) + 1 if limits else 1
        ys = torch.full((rows, capacity), eos, dtype=torch.long, device=device)
        ys[:, 0] = decoder.sos_id
        last = ys[:, 0].clone()
        confidences = torch.zeros((rows, capacity), dtype=torch.float32, device=device)
        return cls(beam, eos, scores, finished, last, ys, confidences, list(range(n_total)), limits, dead_row)

    def fuse(self, lm: LstmLm | None, context: ContextGraph | None) -> None:
        """Start the external LM's state and the context graph's, each when used."""
        rows, device = self.ys.size(0), self.ys.device
        if lm is not None:
            self.lm_state = lm.init_state(rows, device)
        if context is not None and context.states > 1:
            self.context = ContextState(context, rows, device)

    def extend(self, t_scores: Tensor, step: int, cache: Any, confidence: bool) -> None:
        """One step: each utterance's best `beam` extensions of its beams."""
        top_s, top_y, own_s = self._candidates(t_scores)
        kernels = _step_kernels() if own_s is None and top_s.device.type == "cpu" else None
        if kernels is None:
            parent, new_y = self._select(top_s, top_y, own_s, step, confidence)
        else:
            parent, new_y = self._select_compiled(kernels, top_s, top_y, step, confidence)
        cache.reorder(parent)
        if self.context is not None:
            self.context.advance(parent, new_y)
        if self.lm_state is not None:
            self.lm_state = tuple(x.index_select(1, parent) for x in self.lm_state)
        self.last = new_y
        self.finished = (new_y == self.eos).view(-1, 1)

    def _select(
        self, top_s: Tensor, top_y: Tensor, own_s: Tensor | None, step: int, confidence: bool
    ) -> tuple[Tensor, Tensor]:
        """Each utterance's best `beam` of its beams' candidates: the rows' parents and new
        tokens; scores, tokens so far and confidences moved along (torch ops, any device)."""
        beam, eos = self.beam, self.eos
        n = len(self.active_host)
        # A finished beam may only extend with <eos> at no cost (its other candidates die).
        top_s = torch.where(self.finished, self.dead_row, top_s)
        own_s = top_s if own_s is None else torch.where(self.finished, self.dead_row, own_s)
        top_y = top_y.masked_fill(self.finished, eos)
        cand = (self.scores + top_s).view(n, beam * beam)
        best, best_ids = torch.topk(cand, k=beam, dim=1)
        self.scores = best.view(-1, 1)
        parent = (
            torch.div(best_ids, beam, rounding_mode="floor") + beam * torch.arange(n, device=self.ys.device)[:, None]
        ).view(-1)
        new_y = torch.gather(top_y.view(n, beam * beam), 1, best_ids).view(-1)
        self.ys[: n * beam, : step + 1] = self.ys[: n * beam, : step + 1].index_select(0, parent)
        self.ys[: n * beam, step + 1] = new_y
        if confidence:
            if step:
                self.confidences[:, :step] = self.confidences[:, :step].index_select(0, parent)
            self.confidences[:, step] = torch.gather(own_s.view(n, beam * beam), 1, best_ids).view(-1).exp()
        return parent, new_y

    def _select_compiled(
        self, kernels: tuple[Any, Any], top_s: Tensor, top_y: Tensor, step: int, confidence: bool
    ) -> tuple[Tensor, Tensor]:
        """_select on the CPU without a context graph, in two compiled calls around the same
        torch.topk (so ties go as they go there): the same values, without the two dozen
        small torch calls a step otherwise makes (docs/engine.md#the-search-step-in-two-calls)."""
        candidates, advance = kernels
        beam = self.beam
        rows = top_s.size(0)
        cand = torch.empty(rows // beam, beam * beam)
        dead = self.dead_row.view(-1).numpy()
        candidates(self.scores.numpy(), self.finished.numpy(), top_s.numpy(), dead, cand.numpy())
        best, best_ids = torch.topk(cand, k=beam, dim=1)
        self.scores = best.view(-1, 1)
        parent = torch.empty(rows, dtype=torch.long)
        new_y = torch.empty(rows, dtype=torch.long)
        own = torch.empty(rows)
        advance(
            best_ids.numpy(),
            top_s.numpy(),
            top_y.numpy(),
            self.finished.numpy(),
            dead,
            self.eos,
            step,
            confidence,
            self.ys.numpy(),
            self.confidences.numpy(),
            parent.numpy(),
            new_y.numpy(),
            own.numpy(),
        )
        if confidence:
            self.confidences[:, step] = own.exp()  # torch's exp, as _select takes it
        return parent, new_y

    def _candidates(self, t_scores: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Each row's best `beam` next tokens: their scores, ids, and (biased by a context
        graph only) the decoder's own scores of them, for the confidences."""
        if self.context is None:
            top_s, top_y = torch.topk(t_scores, k=self.beam, dim=1)
            return top_s, top_y, None
        return self.context.top(t_scores, self.beam)

    def leaving(self, step: int, check_every: int) -> list[int]:
        """Which utterances leave now: all beams ended, or the step limit reached (known on
        the host, so that needs no sync)."""
        n = len(self.active_host)
        done = [j for j in range(n) if self.limits[j] <= step]
        if step % check_every == 0 or done:
            all_done = self.finished.view(n, self.beam).all(dim=1).nonzero().view(-1).tolist()
            done = sorted(set(done) | set(all_done))
        return done

    def rows_of(self, j: int, t_len: int, confidence: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Utterance j's beams: tokens, scores and confidences."""
        rows = slice(j * self.beam, (j + 1) * self.beam)
        return self.ys[rows, :t_len], self.scores[rows, 0], self.confidences[rows, : t_len - 1 if confidence else 0]

    def keep(self, keep: list[int], cache: Any) -> None:
        """Only the utterances `keep` stay in the batch."""
        keep_t = torch.tensor(keep, device=self.ys.device)
        keep_rows = (keep_t[:, None] * self.beam + torch.arange(self.beam, device=self.ys.device)).view(-1)
        cache.keep(keep_t)
        self.scores = self.scores.index_select(0, keep_rows)
        self.finished = self.finished.index_select(0, keep_rows)
        self.last = self.last.index_select(0, keep_rows)
        self.ys = self.ys.index_select(0, keep_rows)
        self.confidences = self.confidences.index_select(0, keep_rows)
        if self.lm_state is not None:
            self.lm_state = tuple(x.index_select(1, keep_rows) for x in self.lm_state)
        if self.context is not None:
            self.context.keep(keep_rows)
        self.active_host = [self.active_host[j] for j in keep]
        self.limits = [self.limits[j] for j in keep]


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


def prepare_step_kernels() -> None:
    """The search step's compiled halves loaded (from numba's cache after the first run), for
    the workers' fork server: they start no thread."""
    _step_kernels()


@functools.cache
def _step_kernels() -> tuple[Any, Any] | None:
    """The two compiled halves of a CPU search step around its torch.topk (numba, one
    thread: a step's rows are few), or None where numba cannot run."""
    try:
        numba = kernels.numba_module()
    except ImportError:
        return None
    jit = numba.njit(cache=True, boundscheck=False, nogil=True)

    @jit
    def candidates(scores, finished, top_s, dead, cand):  # pragma: no cover - compiled
        # cand[u, b * beam + j] = score of row u * beam + b + its j-th best token's score,
        # or + dead[j] when the row has ended (only <eos>, at no cost, stays alive).
        beam = top_s.shape[1]
        for r in range(top_s.shape[0]):
            u, b = divmod(r, beam)
            for j in range(beam):
                cand[u, b * beam + j] = scores[r, 0] + (dead[j] if finished[r, 0] else top_s[r, j])

    @jit
    def advance(
        best_ids, top_s, top_y, finished, dead, eos, step, confidence, ys, confs, parent, new_y, own
    ):  # pragma: no cover
        # Each row's parent and token from the chosen candidates; the rows' tokens so far
        # (and confidences) copied from their parents where they differ, through a copy of
        # those parents' rows taken first; then the new token and its own (log) score.
        beam = top_s.shape[1]
        moved = 0
        for r in range(parent.shape[0]):
            u = r // beam
            p, j = divmod(best_ids[u, r - u * beam], beam)
            p += u * beam
            parent[r] = p
            new_y[r] = eos if finished[p, 0] else top_y[p, j]
            own[r] = dead[j] if finished[p, 0] else top_s[p, j]
            moved += p != r
        if moved:
            old_ys = ys[: parent.shape[0], : step + 1].copy()
            old_confs = confs[: parent.shape[0], :step].copy()
            for r in range(parent.shape[0]):
                if parent[r] != r:
                    ys[r, : step + 1] = old_ys[parent[r]]
                    if confidence:
                        confs[r, :step] = old_confs[parent[r]]
        for r in range(parent.shape[0]):
            ys[r, step + 1] = new_y[r]

    # Compiled (or loaded from numba's cache) here for the types a search passes, so a
    # failure means the torch ops instead, not an error in the middle of a search.
    floats, ints, ended = np.zeros((1, 1), np.float32), np.zeros((1, 1), np.int64), np.zeros((1, 1), np.bool_)
    try:
        candidates(floats, ended, floats, np.zeros(1, np.float32), floats.copy())
        advance(
            ints,
            floats,
            ints,
            ended,
            np.zeros(1, np.float32),
            0,
            0,
            True,
            np.zeros((1, 2), np.int64),
            floats.copy(),
            np.zeros(1, np.int64),
            np.zeros(1, np.int64),
            np.zeros(1, np.float32),
        )
    except Exception:  # numba reports a compiler failure as a plain error
        return None
    return candidates, advance
