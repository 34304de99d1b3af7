"""Token timestamps for FireRedASR-AED, which has none of its own.

v1 (no CTC head): the decoder's cross-attention of the final hypothesis says where in the
encoder frames (40 ms each) each token was read. Each token gets the attention-weighted
centre of its row, made monotonic; token boundaries lie halfway between centres. The
pipeline then snaps cue starts to VAD speech onsets (cues.py), which fixes the residual
error at sentence starts, where it matters most for subtitles.
"""

from __future__ import annotations

import numpy as np

from .features import ENCODER_FRAME_SECONDS

# Centre of encoder frame k in seconds: it sees feature frames 4k .. 4k+6 (25 ms windows).
FRAME_OFFSET = 0.0425
# A CTC span (a token's start to the next token's) longer than PAUSE_SPAN_FACTOR x the median
# span, whose trailing blanks last at least MIN_PAUSE seconds, holds a pause; it ends
# PAUSE_END_FACTOR x the median after its start (upstream cuts at 2 x / 1.5 x the mean, which a
# long pause inflates; the median is what a token lasts).
PAUSE_SPAN_FACTOR = 2.0
PAUSE_END_FACTOR = 1.5
MIN_PAUSE = 0.2


def token_times_from_attention(
    attention: np.ndarray, n_tokens: int, duration: float, layers: slice = slice(None)
) -> list[tuple[float, float]]:
    """(start, end) in seconds for each of `n_tokens` tokens.

    `attention` has shape (decoder layers, tokens + 1, frames): row i is the attention of
    the step that emitted token i (the last row is <eos>).
    """
    if n_tokens == 0:
        return []
    rows = attention[layers, :n_tokens, :].mean(axis=0).astype(np.float64)  # (tokens, frames)
    rows = rows / np.maximum(rows.sum(axis=1, keepdims=True), 1e-9)
    # Sharpen before taking the centre: diffuse attention to far frames would pull every
    # centre towards the middle of the segment.
    peaks = rows.argmax(axis=1)
    frames = np.arange(rows.shape[1])
    window = np.abs(frames[None, :] - peaks[:, None]) <= 3
    local = np.where(window, rows, 0.0)
    centres = (local * frames[None, :]).sum(axis=1) / np.maximum(local.sum(axis=1), 1e-9)
    centres = np.maximum.accumulate(centres) * ENCODER_FRAME_SECONDS + FRAME_OFFSET
    centres = np.clip(centres, 0.0, duration)

    bounds = np.empty(n_tokens + 1)
    bounds[1:-1] = (centres[:-1] + centres[1:]) / 2
    first_half = (centres[1] - centres[0]) / 2 if n_tokens > 1 else 0.1
    last_half = (centres[-1] - centres[-2]) / 2 if n_tokens > 1 else 0.1
    bounds[0] = max(0.0, centres[0] - min(first_half, 0.3))
    bounds[-1] = min(duration, centres[-1] + min(last_half, 0.3))
    return [(float(bounds[i]), float(max(bounds[i], bounds[i + 1]))) for i in range(n_tokens)]


def ctc_token_times(
    log_probs: np.ndarray, token_ids: list[int], duration: float, blank: int = 0
) -> list[tuple[float, float]] | None:
    """Token times by CTC forced alignment (FireRedASR2's CTC head), our own Viterbi.

    `log_probs` is (encoder frames, vocabulary). The best path through the usual CTC
    topology (blank, y1, blank, y2, ..., yL, blank) gives each token the frames where it is
    emitted; a token starts at its first frame and runs to the next token's start, except
    that a span holding a pause (longer than PAUSE_SPAN_FACTOR x the median span, with at least
    MIN_PAUSE of blanks after the token) ends PAUSE_END_FACTOR x the median, or its own emitted
    frames, after its start.
    Starts are never moved back, so the pause stays a gap (FireRedASR2 cuts long spans the same
    way, then pulls each start back to the previous end, which erases every pause: FireRedASR2S
    issues #41, #58). None when the audio is too short for the tokens (no valid path).
    """
    frames, n_tokens = log_probs.shape[0], len(token_ids)
    if n_tokens == 0:
        return []
    states = np.full(2 * n_tokens + 1, blank, dtype=np.int64)
    states[1::2] = token_ids
    n_states = states.size
    emit = log_probs[:, states].astype(np.float64)  # (frames, states)
    # A skip over a blank is allowed into a token that differs from the token two states back.
    can_skip = np.zeros(n_states, dtype=bool)
    can_skip[3::2] = states[3::2] != states[1:-2:2]
    score = np.full(n_states, -np.inf)
    score[:2] = emit[0, :2]
    came_from = np.zeros((frames, n_states), dtype=np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    for t in range(1, frames):
        step = np.full(n_states, -np.inf)
        step[1:] = score[:-1]
        skip = np.full(n_states, -np.inf)
        skip[2:] = np.where(can_skip[2:], score[:-2], -np.inf)
        choices = np.stack([score, step, skip])
        came_from[t] = choices.argmax(axis=0)
        score = choices.max(axis=0) + emit[t]
    last = n_states - 1 if score[-1] >= score[-2] else n_states - 2
    if not np.isfinite(score[last]):
        return None
    path = np.empty(frames, dtype=np.int64)
    for t in range(frames - 1, -1, -1):
        path[t] = last
        last -= int(came_from[t, last])
    first_frame = np.full(n_tokens, -1)
    last_frame = np.full(n_tokens, -1)
    for t, state in enumerate(path):
        if state % 2 == 1:
            if first_frame[state // 2] < 0:
                first_frame[state // 2] = t
            last_frame[state // 2] = t
    starts = first_frame * ENCODER_FRAME_SECONDS
    ends = np.append(starts[1:], min(duration, (last_frame[-1] + 1) * ENCODER_FRAME_SECONDS))
    emitted = (last_frame - first_frame + 1) * ENCODER_FRAME_SECONDS
    typical = float(np.median(ends - starts))
    pauses = (ends - starts > PAUSE_SPAN_FACTOR * typical) & (ends - starts - emitted >= MIN_PAUSE)
    ends = np.where(pauses, starts + np.maximum(PAUSE_END_FACTOR * typical, emitted), ends)
    return [(float(min(a, duration)), float(min(max(a, b), duration))) for a, b in zip(starts, ends, strict=True)]
