"""Segmentation rules on real speech and on controlled probability tracks."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES
from make_programme import real_speech_programme

from fireredasr_fast import vad, vadgraph
from fireredasr_fast.audio import decode_audio
from fireredasr_fast.vad import WINDOW_SECONDS, SileroVad, SpeechSegmenter, VadOptions, segment_speech


@pytest.fixture(scope="module")
def english():
    return decode_audio(SAMPLES / "two_cities.mp4")


def _speech_frames(probs: np.ndarray, threshold: float) -> np.ndarray:
    return np.flatnonzero(probs >= threshold)


def _assert_rules(segments, probs, duration, options: VadOptions):
    # Ordered, non-overlapping, inside the file.
    for a, b in itertools.pairwise(segments):
        assert a.end <= b.start + 1e-9
    assert segments[0].start >= 0 and segments[-1].end <= duration + 1e-9
    for seg in segments:
        assert seg.duration <= options.max_segment + 1e-6
        assert seg.duration >= min(options.min_segment, duration) - 1e-6
    # No speech lost: every frame the VAD calls speech lies inside some segment.
    for frame in _speech_frames(probs, options.threshold):
        t = (frame + 0.5) * WINDOW_SECONDS
        assert any(seg.start <= t <= seg.end for seg in segments), f"speech at {t:.2f}s dropped"


@pytest.mark.parametrize("max_segment", [60.0, 10.0, 4.0])
def test_real_speech_bounds_and_nothing_dropped(english, max_segment):
    options = VadOptions(max_segment=max_segment)
    segmenter = SpeechSegmenter(options)
    probs = segmenter.probabilities(english)
    duration = english.size / 16000
    segments = segment_speech(probs, duration, options)
    assert segments
    _assert_rules(segments, probs, duration, options)
    if max_segment == 60.0:
        # 44 s of continuous reading with short pauses: merged into one segment.
        assert len(segments) == 1
    else:
        assert len(segments) >= duration / max_segment


def test_split_happens_at_the_quietest_point():
    # 100 s of speech with one dip at 37 s and a deeper dip at 45 s: with a 60 s maximum the
    # cut must be at the deepest dip inside [30 s, 60 s].
    frames = int(100 / WINDOW_SECONDS)
    probs = np.full(frames, 0.95, dtype=np.float32)
    probs[int(37 / WINDOW_SECONDS)] = 0.4
    probs[int(45 / WINDOW_SECONDS)] = 0.2
    segments = segment_speech(probs, 100.0, VadOptions(speech_pad=0.0))
    assert len(segments) == 2
    assert abs(segments[0].end - 45.0) < 2 * WINDOW_SECONDS
    assert segments[1].start == segments[0].end


def test_short_neighbours_are_merged_and_a_lone_short_utterance_is_padded():
    frames = int(30 / WINDOW_SECONDS)
    probs = np.zeros(frames, dtype=np.float32)

    def speak(a: float, b: float) -> None:
        probs[int(a / WINDOW_SECONDS) : int(b / WINDOW_SECONDS)] = 0.9

    speak(1.0, 1.6)  # short, near the next one: merged
    speak(2.2, 3.5)
    speak(15.0, 15.3)  # lone and short, far from everything: kept and padded to 2 s
    options = VadOptions(speech_pad=0.0, merge_gap=1.0)
    segments = segment_speech(probs, 30.0, options)
    assert len(segments) == 2
    assert segments[0].start <= 1.0 and segments[0].end >= 3.5 - WINDOW_SECONDS
    lone = segments[1]
    assert abs(lone.duration - 2.0) < 1e-6 and lone.start <= 15.0 and lone.end >= 15.3
    _assert_rules(segments, probs, 30.0, options)


def test_silence_gives_no_segments():
    segmenter = SpeechSegmenter()
    segments, speech = segmenter(np.zeros(16000 * 3, dtype=np.int16))
    assert segments == [] and speech == []


def test_the_vad_loads_without_torch_and_keeps_the_thread_count() -> None:
    """silero_vad's import sets torch to one thread process-wide (and costs a VAD process ~2
    CPU s): the VAD runs its sequence model through onnxruntime alone, so a process that
    segments imports neither, and one that then recognises (transcribe_file) keeps the
    thread count it chose. Nor does it import onnx (~0.7 CPU s), once the fast graph is in
    the cache (vadgraph.py). A fresh interpreter, because imports happen once per process."""
    assert SileroVad()._model.fast  # the fast graph built and cached, if it was not yet
    code = (
        "import sys\n"
        "from fireredasr_fast.vad import SpeechSegmenter\n"
        "assert SpeechSegmenter()._vad._model.fast\n"
        "print(sorted({'torch', 'silero_vad', 'onnx'} & set(sys.modules)))\n"
        "import torch; torch.set_num_threads(3)\n"
        "SpeechSegmenter()\n"
        "print(torch.get_num_threads())\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=root)
    assert out.stdout.split("\n")[:2] == ["[]", "3"]


def test_silero_s_own_graph_gives_silero_s_own_probabilities(english):
    """Bit for bit what silero_vad's SileroVADSequence gives a block, long or short (several
    ONNX calls or one, the last frame padded), with silero's own graph (fast=False)."""
    from silero_vad import load_silero_vad

    reference = load_silero_vad(sequence=True)
    ours = SileroVad(fast=False)
    assert not ours._model.fast
    for part in (english, english[12345 : 12345 + 700 * 512 + 77], english[:517]):
        expected = reference.audio_forward(part.astype(np.float32) / 32768.0, 16000)
        assert np.array_equal(ours.block_probabilities(part), np.asarray(expected, dtype=np.float32))


@pytest.fixture(scope="module")
def mandarin():
    return decode_audio(SAMPLES / "aishell_zh.mkv")


@pytest.fixture(scope="module")
def programme(english, mandarin):
    """24 utterances of real speech (pieces of both samples, 0.6-4 s, at gains from -14 to
    0 dB) between pauses of 0.1-3 s, over faint noise: ~1.5 min, 2800 windows."""
    return real_speech_programme(english, mandarin)


def test_the_fast_graph_gives_silero_s_probabilities_and_segments(english, mandarin, programme):
    """The VAD by default runs silero's graph rebuilt as large matrix products (vadgraph.py):
    its probabilities within vadgraph.TOLERANCE of silero's own graph's, on blocks long and
    short (state carried across 512-window calls, the last frame padded), and the same
    segments on real speech."""
    fast, own = SileroVad(), SileroVad(fast=False)
    assert fast._model.fast
    parts = (english, english[12345 : 12345 + 700 * 512 + 77], english[:517], mandarin, programme)
    for part in parts:
        probs, expected = fast.probabilities(part), own.probabilities(part)
        assert probs.dtype == np.float32 and probs.shape == expected.shape
        assert np.abs(probs - expected).max() <= vadgraph.TOLERANCE
    for audio in (english, mandarin, programme):
        duration = audio.size / 16000
        expected = segment_speech(own.probabilities(audio), duration)
        assert segment_speech(fast.probabilities(audio), duration) == expected
    assert len(expected) >= 10  # the programme's segments


def test_one_sample_of_misalignment_is_far_outside_the_tolerance(english):
    """What the tolerance guards: the rebuilt graph given windows one sample off (as an
    off-by-one in the framing, the context or the padding would be) moves the probabilities
    of real speech by far more than vadgraph.TOLERANCE, over calls of 512 windows."""
    session = SileroVad()._model.session
    audio = english[: 1100 * 512].astype(np.float32) / 32768.0
    starts = range(0, audio.size - 577, 512)
    probs = [vadgraph.run_windows(session, np.stack([audio[s + k : s + k + 576] for s in starts])) for k in (0, 1)]
    assert np.abs(probs[1] - probs[0]).max() > 100 * vadgraph.TOLERANCE


def test_a_model_the_fast_graph_does_not_fit_is_refused_once(tmp_path, caplog):
    """Not the sequence model (silero's frame-by-frame model in the same folder), or a
    sequence model that computes something else than the rebuild assumes (reflect padding
    changed to zeros, which no shape shows): refused with a warning, the refusal cached (no
    second warning), and the VAD runs the file's own graph."""
    onnx = pytest.importorskip("onnx")
    sequence = vad._sequence_model()
    changed = onnx.load(str(sequence))
    pad = next(node for node in changed.graph.node if node.op_type == "Pad")
    next(a for a in pad.attribute if a.name == "mode").s = b"constant"
    onnx.save(changed, str(tmp_path / "changed.onnx"))
    frame_by_frame = sequence.parent / "silero_vad.onnx"
    for model, cause in ((frame_by_frame, "operators differ"), (tmp_path / "changed.onnx", "differs")):
        caplog.clear()
        assert vadgraph.fast_graph(model, tmp_path / "cache") is None
        assert [r.levelname for r in caplog.records] == ["WARNING"] and cause in caplog.text
        caplog.clear()
        assert vadgraph.fast_graph(model, tmp_path / "cache") is None
        assert not caplog.records
    assert len(list((tmp_path / "cache").glob("*.refused"))) == 2
    assert vadgraph.fast_graph(sequence, tmp_path / "cache") is not None


def test_a_damaged_cached_graph_falls_back_to_silero_s_own(tmp_path, monkeypatch, caplog, english):
    """A cached fast graph that onnxruntime cannot load (a damaged cache): a warning, and the
    VAD runs silero's own graph (its bit-exact probabilities)."""
    monkeypatch.setenv("FIREREDASR_FAST_CACHE", str(tmp_path))
    assert vadgraph.fast_graph(vad._sequence_model()) is not None
    (cached,) = (tmp_path / "vad").glob("*.onnx")
    cached.write_bytes(cached.read_bytes()[:1000])
    damaged = SileroVad()
    assert not damaged._model.fast and "does not load" in caplog.text
    assert np.array_equal(damaged.probabilities(english), SileroVad(fast=False).probabilities(english))
