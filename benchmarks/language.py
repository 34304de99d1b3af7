"""What detecting the language costs the Whisper engine: the same VAD segments decoded with the
language detected and with it given per file, side by side in one process, alternating rounds.

Encoder windows are counted (deterministic), times measured (noisy on a shared machine).
Default input: samples/ (a Mandarin and an English clip) with Whisper base, int8, 1 thread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

DEFAULT_FILES = {"samples/aishell_zh.mkv": "zh", "samples/two_cities.mp4": "en"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks language", description=__doc__)
    p.add_argument(
        "files", nargs="*", help="FILE=LANG pairs (default: the two samples: " + ", ".join(DEFAULT_FILES) + ")"
    )
    p.add_argument("--model", default="base", help="a multilingual Whisper model name (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds; each mode's best counts")
    p.add_argument("--json", type=Path, help="write the results here")
    return p.parse_args(argv)


def _segments(files: dict[str, str]) -> list[tuple[str, Any]]:
    from fireredasr_fast.audio import decode_audio, to_float32
    from fireredasr_fast.results import SAMPLE_RATE
    from fireredasr_fast.vad import SpeechSegmenter

    segmenter = SpeechSegmenter()
    out = []
    for path, language in files.items():
        samples = decode_audio(path)
        segments, _ = segmenter(samples)
        for seg in segments:
            out.append((language, to_float32(samples[round(seg.start * SAMPLE_RATE) : round(seg.end * SAMPLE_RATE)])))
    return out


def _counting(engine: Any, rows: list[int]) -> None:
    real = engine._model.encode

    def encode(features: Any, *args: Any, **kwargs: Any) -> Any:
        rows.append(len(features))
        return real(features, *args, **kwargs)

    engine._model.encode = encode


def _run(engines: dict[str | None, Any], segments: list[tuple[str, Any]]) -> dict[str, Any]:
    rows: list[int] = []
    for engine in engines.values():
        engine.timings = dict.fromkeys(engine.timings, 0.0)
        _counting(engine, rows)
    t0 = time.perf_counter()
    if None in engines:
        hyps = engines[None].transcribe([wave for _, wave in segments])
    else:
        hyps = []
        for language, engine in engines.items():
            hyps += engine.transcribe([wave for lang, wave in segments if lang == language])
    seconds = time.perf_counter() - t0
    for engine in engines.values():
        del engine._model.encode  # the class's own again
    return {
        "seconds": round(seconds, 2),
        "detect_seconds": round(sum(e.timings["detect"] for e in engines.values()), 2),
        "encoder_windows": sum(rows),
        "languages": [h.language for h in hyps],
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from fireredasr_fast.engines.whisper.engine import WhisperEngine, resolve_model_path
    from fireredasr_fast.runner.plan import set_process_threads

    set_process_threads(args.threads)
    files = dict(item.rsplit("=", 1) for item in args.files) if args.files else DEFAULT_FILES
    segments = _segments(files)
    path = resolve_model_path(None, args.model)
    modes: dict[str, dict[str | None, Any]] = {
        "detected": {None: WhisperEngine(path, cpu_threads=args.threads)},
        "given": {
            lang: WhisperEngine(path, cpu_threads=args.threads, language=lang) for lang in dict.fromkeys(files.values())
        },
    }
    for engines in modes.values():  # warm-up, outside the timings
        for engine in engines.values():
            engine.transcribe([segments[0][1][:16000]])
    best: dict[str, dict[str, Any]] = {}
    for _ in range(args.rounds):
        for mode, engines in modes.items():
            result = _run(engines, segments)
            if mode not in best or result["seconds"] < best[mode]["seconds"]:
                best[mode] = result
    print(f"{len(segments)} segments: " + ", ".join(f"{len(w) / 16000:.1f} s {lang}" for lang, w in segments))
    print(f"{'mode':10s} {'encoder windows':>15s} {'seconds':>8s} {'detect s':>8s}  languages")
    for mode, result in best.items():
        print(
            f"{mode:10s} {result['encoder_windows']:>15d} {result['seconds']:>8.1f} {result['detect_seconds']:>8.1f}"
            f"  {' '.join(result['languages'])}"
        )
    ratio = best["detected"]["seconds"] / best["given"]["seconds"]
    print(f"detected / given: {ratio:.2f}x the time")
    if args.json:
        args.json.write_text(json.dumps({"files": files, "model": args.model, "modes": best, "ratio": ratio}, indent=1))
    return 0
