"""Token timestamps: CTC forced alignment (v2) and cross-attention alignment (v1)."""

from __future__ import annotations

import numpy as np
import pytest

from fireredasr_fast.engines.firered.alignment import ctc_token_times, token_times_from_attention
from fireredasr_fast.engines.firered.features import ENCODER_FRAME_SECONDS


def peaked_log_probs(frames: int, vocab: int, emissions: dict[int, int]) -> np.ndarray:
    """Blank everywhere except the given frame -> token emissions."""
    lp = np.full((frames, vocab), -12.0)
    lp[:, 0] = -0.01
    for frame, token in emissions.items():
        lp[frame] = -12.0
        lp[frame, token] = -0.01
    return lp


def test_ctc_alignment_finds_where_each_token_is_emitted():
    lp = peaked_log_probs(40, 8, {5: 3, 6: 3, 12: 3, 20: 7, 21: 7, 33: 4})
    times = ctc_token_times(lp, [3, 3, 7, 4], duration=1.6)
    assert times is not None
    starts = [round(a / ENCODER_FRAME_SECONDS) for a, _ in times]
    assert starts == [5, 12, 20, 33]  # a repeated token needs the blank between its two emissions
    assert all(a <= b for a, b in times) and times[-1][1] <= 1.6
    assert all(times[i][1] <= times[i + 1][0] + 1e-9 for i in range(len(times) - 1))


def test_ctc_alignment_follows_the_evidence_not_the_prior():
    # The same tokens emitted later: the alignment must move with them.
    early = ctc_token_times(peaked_log_probs(40, 8, {2: 5, 8: 6}), [5, 6], 1.6)
    late = ctc_token_times(peaked_log_probs(40, 8, {22: 5, 30: 6}), [5, 6], 1.6)
    assert early is not None and late is not None
    assert late[0][0] - early[0][0] == pytest.approx(20 * ENCODER_FRAME_SECONDS)


def test_ctc_alignment_impossible_path_is_none():
    assert ctc_token_times(peaked_log_probs(2, 8, {}), [3, 4, 5], 0.08) is None
    assert ctc_token_times(peaked_log_probs(5, 8, {}), [], 0.2) == []


def test_attention_alignment_is_monotonic_and_tracks_the_attention():
    frames, tokens = 100, 5
    attention = np.full((2, tokens + 1, frames), 1e-4)
    peaks = [10, 30, 25, 60, 80]  # the third row looks back: times must still not go backwards
    for i, p in enumerate(peaks):
        attention[:, i, p] = 1.0
    times = token_times_from_attention(attention, tokens, duration=4.0)
    starts = [a for a, _ in times]
    assert starts == sorted(starts)
    assert all(a <= b for a, b in times)
    assert times[3][0] < 60 * ENCODER_FRAME_SECONDS + 0.05 < times[3][1] + 0.05
    assert times[4][1] <= 4.0


def test_v2_checkpoint_gives_ctc_token_times(tmp_path):
    from fireredasr_fast.engines import EngineSpec
    from testsupport.random_model import write_random_model_dir

    model_dir = write_random_model_dir(tmp_path / "v2", preset="tiny", with_ctc=True, seed=1, mix_gain=100.0)
    engine = EngineSpec("firered", str(model_dir), options=(("decode_max_len", 12),)).build()
    wave = (0.1 * np.random.default_rng(0).standard_normal(16000 * 2)).astype(np.float32)
    (hyp,) = engine.transcribe([wave])
    assert hyp.tokens and hyp.token_times is not None and len(hyp.token_times) == len(hyp.tokens)
    assert all(0.0 <= a <= b <= 2.0 for a, b in hyp.token_times)


def test_collapsed_alignments_are_recognised():
    from fireredasr_fast.tokentimes import plausible_token_times

    speech = [(1.0, 11.0)]
    spread = [(1.0 + 0.4 * i, 1.3 + 0.4 * i) for i in range(25)]  # 2.5 tokens a second
    piled = spread[:5] + [(10.5, 10.5)] * 30  # attention stuck on the last frames
    narrow = [(5.0 + 0.05 * i, 5.05 + 0.05 * i) for i in range(10)]  # 10 tokens in 0.5 s of 10 s
    assert plausible_token_times(spread, speech)
    assert not plausible_token_times(piled, speech)
    assert not plausible_token_times(narrow, speech)
