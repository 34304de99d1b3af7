"""Token timestamps for FireRedASR-AED, which has none of its own.

v1 (no CTC head): the decoder's cross-attention of the final hypothesis says where in the
encoder frames (40 ms each) each token was read. Each token gets the attention-weighted
centre of its row, made monotonic; token boundaries lie halfway between centres. The
pipeline then snaps cue starts to VAD speech onsets (cues.py), which fixes the residual
error at sentence starts, where it matters most for subtitles.
"""

from __future__ import annotations

import numpy as np

FRAME_SECONDS = 0.04  # encoder frame: 4 x 10 ms feature frames
# Centre of encoder frame k in seconds: it sees feature frames 4k .. 4k+6 (25 ms windows).
FRAME_OFFSET = 0.0425


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
    centres = np.maximum.accumulate(centres) * FRAME_SECONDS + FRAME_OFFSET
    centres = np.clip(centres, 0.0, duration)

    bounds = np.empty(n_tokens + 1)
    bounds[1:-1] = (centres[:-1] + centres[1:]) / 2
    first_half = (centres[1] - centres[0]) / 2 if n_tokens > 1 else 0.1
    last_half = (centres[-1] - centres[-2]) / 2 if n_tokens > 1 else 0.1
    bounds[0] = max(0.0, centres[0] - min(first_half, 0.3))
    bounds[-1] = min(duration, centres[-1] + min(last_half, 0.3))
    return [(float(bounds[i]), float(max(bounds[i], bounds[i + 1]))) for i in range(n_tokens)]
