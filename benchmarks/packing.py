"""Nothing lost: the Whisper engine with short pieces packed into shared 30 s windows against
each piece in a window of its own, on programmes of 20+ short utterances, side by side in one
process (alternating rounds, --rounds; each mode's best time counts).

Programmes: Mandarin, samples/aishell_zh.mkv ten times with short silences between (20
utterances); English, 24 sentences spoken by espeak-ng with pauses between. Both go through
the pipeline as the runner runs one file: decode, VAD, the file's segments batched
(make_batches), recognised, cues built. Counted per mode: VAD segments in, segments with
text, Whisper pieces (<= 30 s) and windows decoded, pieces that a packed window left empty and
how many of them got text when decoded again alone; CER (Mandarin) and WER (English) of the
whole transcript against the reference.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import SAMPLES, cpu_name, ffmpeg, report_header

# The Dickens sample's clauses and a few plain sentences: 24 utterances for espeak-ng.
ENGLISH = [
    *(
        part.strip()
        for part in re.split(r"[,–]", json.loads((SAMPLES / "transcripts.json").read_text())["two_cities.mp4"])
        if part.strip()
    ),
    "The train to the coast leaves at seven in the morning",
    "Please remember to close the windows before you go",
    "Our neighbours planted three apple trees last spring",
    "The library will be closed on the first Monday of May",
    "She wrote a long letter to her brother in Canada",
]
ZH_REPEATS = 10
PAUSE_SECONDS = 1.5


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks packing", description=__doc__)
    p.add_argument("--model", default="base", help="a multilingual Whisper model name (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds; each mode's best time counts")
    p.add_argument("--json", type=Path, help="write the results here")
    return p.parse_args(argv)


def _mandarin(folder: Path) -> tuple[Path, str]:
    """The Mandarin sample ZH_REPEATS times, a pause after each, through ffmpeg's concat."""
    clip, pause = folder / "zh1.wav", folder / "pause.wav"
    ffmpeg("-i", str(SAMPLES / "aishell_zh.mkv"), "-ar", "16000", "-ac", "1", str(clip))
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", str(PAUSE_SECONDS), str(pause))
    listing = folder / "zh.txt"
    listing.write_text("".join(f"file '{clip}'\nfile '{pause}'\n" for _ in range(ZH_REPEATS)))
    out = folder / "zh_programme.wav"
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c:a", "pcm_s16le", str(out))
    reference = json.loads((SAMPLES / "transcripts.json").read_text())["aishell_zh.mkv"]
    return out, reference * ZH_REPEATS


def _english(folder: Path) -> tuple[Path, str]:
    """ENGLISH spoken by espeak-ng, one rendering each, PAUSE_SECONDS of silence between."""
    from fireredasr_fast.audio import decode_audio

    pause = np.zeros(int(PAUSE_SECONDS * 16000), dtype=np.int16)
    parts = [pause]
    for i, text in enumerate(ENGLISH):
        path = folder / f"en_{i}.wav"
        rendered = subprocess.run(
            ["espeak-ng", "-v", "en", "-s", "160", "--stdout", text], check=True, capture_output=True
        )
        path.write_bytes(rendered.stdout)
        parts += [decode_audio(path), pause]
    raw = folder / "en_programme.s16"
    np.concatenate(parts).astype("<i2").tofile(raw)
    out = folder / "en_programme.wav"
    ffmpeg("-f", "s16le", "-ar", "16000", "-ac", "1", "-i", str(raw), str(out))
    return out, " ".join(ENGLISH)


def _normalise(text: str, words: bool) -> str:
    kept = "".join(ch if not unicodedata.category(ch).startswith("P") else " " for ch in text)
    return " ".join(kept.lower().split()) if words else "".join(kept.split())


def _score(hypothesis: str, reference: str, words: bool) -> float:
    import jiwer

    hyp, ref = _normalise(hypothesis, words), _normalise(reference, words)
    return float(jiwer.wer(ref, hyp) if words else jiwer.cer(ref, hyp))


def _transcribe(engine: Any, prepared: Any) -> Any:
    """One file as the runner does it: its segments batched on their own, recognised, assembled."""
    from fireredasr_fast.batching import make_batches
    from fireredasr_fast.transcribe import TranscribeOptions, assemble_result, recognise

    options = TranscribeOptions()
    hyps: dict[int, Any] = {}
    for batch in make_batches(prepared.jobs(0), options.batch_seconds, options.max_batch_size):
        for job, hyp in zip(batch.jobs, recognise(engine, batch.jobs), strict=True):
            hyps[job.segment_index] = hyp
    return assemble_result(prepared, [hyps[i] for i in range(len(hyps))], options)


def _measure(engine: Any, prepared: Any, reference: str, words: bool) -> dict[str, Any]:
    engine.counts = dict.fromkeys(engine.counts, 0)
    result = _transcribe(engine, prepared)
    text = " ".join(seg.text for seg in result.segments if seg.text.strip())
    return {
        "segments": len(result.segments),
        "segments_with_text": sum(1 for seg in result.segments if seg.text.strip()),
        "pieces": engine.counts["pieces"],
        "windows": engine.counts["windows"],
        "left_empty_in_pack": engine.counts["unpacked_empty"],
        "recovered": engine.counts["recovered"],
        "review_rows": sum(1 for seg in result.segments if not seg.text.strip()) + len(result.lost),
        "covered_share": round(result.covered_seconds / max(result.speech_seconds, 1e-9), 4),
        ("wer" if words else "cer"): round(_score(text, reference, words), 4),
        "text": text,
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from fireredasr_fast.engines.whisper.engine import WhisperEngine, resolve_model_path
    from fireredasr_fast.runner.plan import set_process_threads
    from fireredasr_fast.transcribe import prepare_file
    from fireredasr_fast.vad import SpeechSegmenter

    set_process_threads(args.threads)
    path = resolve_model_path(None, args.model)
    engines = {
        mode: WhisperEngine(path, cpu_threads=args.threads, pack=mode == "packed") for mode in ("packed", "alone")
    }
    segmenter = SpeechSegmenter()
    report: dict[str, Any] = {**report_header("packing", args.threads, args.model), "programmes": {}}
    with tempfile.TemporaryDirectory(prefix="bench-packing-") as tmp:
        programmes = {"zh": _mandarin(Path(tmp)), "en": _english(Path(tmp))}
        prepared = {name: (prepare_file(media, segmenter), ref) for name, (media, ref) in programmes.items()}
    for engine in engines.values():  # warm-up, outside the timings
        engine.transcribe([np.zeros(16000, dtype=np.float32)])
    for name, (file, reference) in prepared.items():
        rows: dict[str, dict[str, Any]] = {}
        seconds: dict[str, list[float]] = {mode: [] for mode in engines}
        for r in range(args.rounds):
            for mode in list(engines) if r % 2 == 0 else list(engines)[::-1]:
                t0 = time.perf_counter()
                row = _measure(engines[mode], file, reference, name == "en")
                seconds[mode].append(time.perf_counter() - t0)
                rows.setdefault(mode, row)
        for mode, row in rows.items():
            row["seconds"] = round(min(seconds[mode]), 2)
        rows["packed"]["time_vs_alone"] = round(rows["packed"]["seconds"] / rows["alone"]["seconds"], 3)
        report["programmes"][name] = {"speech_seconds": round(sum(b - a for a, b in file.speech), 1), "modes": rows}
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1))
    return 0


def _print(report: dict[str, Any]) -> None:
    print(f"{cpu_name()}, {report['machine']['threads']} threads, Whisper {report['model']}, {report['date']}")
    head = ("programme", "mode", "segments", "with text", "pieces", "windows", "empty in pack", "recovered")
    head += ("review", "covered", "CER/WER", "seconds", "packed/alone")
    print(" | ".join(head))
    for name, programme in report["programmes"].items():
        for mode, row in programme["modes"].items():
            error = row.get("cer", row.get("wer"))
            cells = (name, mode, row["segments"], row["segments_with_text"], row["pieces"], row["windows"])
            cells += (row["left_empty_in_pack"], row["recovered"], row["review_rows"], f"{row['covered_share']:.1%}")
            cells += (f"{error:.1%}", row["seconds"], row.get("time_vs_alone", ""))
            print(" | ".join(str(c) for c in cells))
    print("time: best of the alternating rounds; the machine may be shared")
