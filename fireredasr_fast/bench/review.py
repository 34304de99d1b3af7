"""The review list's threshold and the guard's cost, measured on real recognitions.

Each file goes through the whole pipeline (ffmpeg, silero VAD, engine, guard, cues); every
cue is marked wrong when any of its characters (Mandarin) or words (English) is not in the
reference, by a diff of the file's whole recognised text against its known transcript. The
table then says, per confidence threshold, how many cues the review list would hold and how
many of the wrong cues it would catch. A second table times the guard beside recognition.

Material: the samples (two_cities with Whisper tiny.en, aishell_zh with Whisper base) and
espeak-ng Mandarin sentences (robotic, many recognition errors) with Whisper base.

    python -m fireredasr_fast.bench review --whisper-base DIR --json out.json
"""

from __future__ import annotations

import argparse
import difflib
import json
import subprocess
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
THRESHOLDS = (0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9)
# Everyday Mandarin sentences for espeak-ng (its cmn-latn-pinyin voice).
ESPEAK_SENTENCES = (
    "今天天气很好我们去公园散步吧",
    "请把门关上然后坐下来",
    "北京是中国的首都",
    "我明天早上八点去上班",
    "这家饭店的菜非常好吃",
    "他每天晚上都看书到很晚",
    "我们下个星期一起去看电影吧",
    "这个问题我们需要再讨论一下",
)


def _units(text: str, words: bool) -> list[str]:
    """Words (English, lower-cased, no punctuation) or characters (Mandarin, no punctuation)."""
    kept = "".join(ch for ch in text.lower() if not unicodedata.category(ch).startswith("P"))
    return kept.split() if words else [ch for ch in kept if not ch.isspace()]


def cue_errors(cues: list[Any], reference: str, words: bool) -> list[bool]:
    """Per cue: does any of its units fall outside the diff's matching blocks with the reference?"""
    per_cue = [_units(cue.text, words) for cue in cues]
    hyp = [u for units in per_cue for u in units]
    matched = [False] * len(hyp)
    matcher = difflib.SequenceMatcher(None, hyp, _units(reference, words), autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.a, block.a + block.size):
            matched[k] = True
    out, pos = [], 0
    for units in per_cue:
        out.append(not all(matched[pos : pos + len(units)]))
        pos += len(units)
    return out


def _espeak_file(text: str, folder: Path, index: int) -> Path:
    path = folder / f"espeak_{index}.wav"
    wav = subprocess.run(
        ["espeak-ng", "-v", "cmn-latn-pinyin", "-s", "160", "--stdout", text], check=True, capture_output=True
    ).stdout
    path.write_bytes(wav)
    return path


def run(whisper_base: Path, threads: int) -> dict[str, Any]:
    from fireredasr_fast.engines.whisper.engine import WhisperEngine, resolve_model_path
    from fireredasr_fast.transcribe import TranscribeOptions, transcribe_file
    from fireredasr_fast.vad import SpeechSegmenter

    references = json.loads((SAMPLES / "transcripts.json").read_text(encoding="utf-8"))
    tiny = WhisperEngine(resolve_model_path(None, None), cpu_threads=threads)
    base = WhisperEngine(str(whisper_base), language="zh", cpu_threads=threads)
    options = TranscribeOptions()
    segmenter = SpeechSegmenter(options.vad)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        material = [
            ("two_cities.mp4", SAMPLES / "two_cities.mp4", references["two_cities.mp4"], tiny, True),
            ("aishell_zh.mkv", SAMPLES / "aishell_zh.mkv", references["aishell_zh.mkv"], base, False),
        ]
        material += [
            (f"espeak {i}", _espeak_file(text, Path(tmp), i), text, base, False)
            for i, text in enumerate(ESPEAK_SENTENCES)
        ]
        for name, path, reference, engine, words in material:
            before = dict(engine.timings)
            start = time.perf_counter()
            result = transcribe_file(path, engine, options, segmenter)
            wall = time.perf_counter() - start
            engine_guard = engine.timings["guard"] - before["guard"]
            fallback = engine.timings["fallback"] - before["fallback"]
            errors = cue_errors(result.cues, reference, words)
            rows.append(
                {
                    "file": name,
                    "wall": wall,
                    "asr": result.info["timings"]["asr"],
                    # The guard's checks: in the pipeline, and in the engine (per window).
                    "guard": result.info["timings"]["guard"] + engine_guard,
                    "fallback": fallback,
                    "guarded": sum(1 for s in result.segments if s.flags),
                    "cues": [
                        {"text": c.text, "confidence": c.confidence, "wrong": wrong, "flags": c.flags}
                        for c, wrong in zip(result.cues, errors, strict=True)
                    ],
                }
            )
    return {"files": rows, "thresholds": threshold_table(rows)}


def threshold_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cues = [c for row in rows for c in row["cues"] if c["confidence"] is not None]
    wrong = sum(c["wrong"] for c in cues)
    table = []
    for threshold in THRESHOLDS:
        listed = [c for c in cues if c["confidence"] < threshold]
        caught = sum(c["wrong"] for c in listed)
        table.append(
            {
                "threshold": threshold,
                "listed": len(listed),
                "cues": len(cues),
                "wrong_caught": caught,
                "wrong": wrong,
                "right_listed": len(listed) - caught,
            }
        )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fireredasr_fast.bench review", description=__doc__)
    parser.add_argument("--whisper-base", type=Path, required=True, help="Whisper base CTranslate2 directory")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    data = run(args.whisper_base, args.threads)
    print("file              cues  wrong  guarded  asr s   guard ms  guard/asr  re-decode s")
    for row in data["files"]:
        n_wrong = sum(c["wrong"] for c in row["cues"])
        ratio = row["guard"] / row["asr"] if row["asr"] else 0.0
        print(
            f"{row['file']:16s} {len(row['cues']):5d} {n_wrong:6d} {row['guarded']:8d} {row['asr']:6.1f}"
            f" {row['guard'] * 1000:9.2f}  {ratio:.4%}  {row['fallback']:.1f}"
        )
    print("\nthreshold  listed/cues  wrong caught/wrong  right cues listed")
    for t in data["thresholds"]:
        print(
            f"{t['threshold']:9.2f}  {t['listed']:4d}/{t['cues']:<5d}  {t['wrong_caught']:6d}/{t['wrong']:<9d}"
            f"  {t['right_listed']:4d}"
        )
    if args.json:
        args.json.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0
