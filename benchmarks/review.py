"""Does the review list find the mistakes? Review rules against labelled programmes, and the
guard's cost.

Each programme goes through the whole pipeline (ffmpeg, silero VAD, engine, guard, cues) and
every cue is labelled right or wrong against the reference. The references are per utterance,
with known times: a cue belongs to the utterance it overlaps most; an utterance's cues, in
order, are aligned to its text by Levenshtein (characters for Mandarin, words for English,
lower-cased, without punctuation), and a cue is wrong when any of its units is substituted or
inserted, or reference units are missing right after it (or before it, for the utterance's
first cue). A cue over no utterance is wrong. Then, per review rule, how many of the wrong
cues the list holds (to be high) and how many of the right ones (to be low).

Programmes: espeak-ng sentences (Mandarin, English) joined with pauses, clean and with pink
noise mixed in by ffmpeg, through Whisper base; the two samples through Whisper base (each
file one utterance); and the trained FireRedASR fixture on sentences it was trained on, the
same noise mixed in.

    python -m benchmarks review --threads 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import SAMPLES, TINY_MODEL, cpu_name, ffmpeg, tiny_model_texts
from fireredasr_fast.results import SAMPLE_RATE, Cue

# Everyday sentences for Whisper (no numerals: "nine" and "9" would both be right).
MANDARIN = (
    "今天天气很好我们去公园散步吧",
    "请把门关上然后坐下来",
    "我明天早上八点去上班",
    "这家饭店的菜非常好吃",
    "他每天晚上都看书到很晚",
    "我们下个星期一起去看电影吧",
    "这个问题我们需要再讨论一下",
    "飞机因为大雾推迟起飞",
    "很多年轻人选择在大城市工作",
    "专家认为这种情况不会持续太久",
    "语音识别的准确率越来越高",
    "爷爷每天早上去公园打太极",
    "冬天的北方非常寒冷",
    "消费者信心有所回升",
    "记者从有关部门了解到",
    "他们在海边度过了一个假期",
)
ENGLISH = (
    "The quick brown fox jumps over the lazy dog.",
    "Please turn on the subtitles before the film starts.",
    "The weather is nice today, so we are going to the park.",
    "She reads a book every night before she goes to sleep.",
    "The children are playing in the garden behind the house.",
    "Speech recognition is getting better every year.",
    "The train leaves from the platform at the far end of the station.",
    "My phone is out of battery and I cannot call anyone.",
    "Write your name at the top of the page and wait.",
    "The price of houses went up again this spring.",
    "We need more time to finish the project properly.",
    "Turn left at the next corner and walk straight on.",
    "The library closes early on Sundays and holidays.",
    "Thank you for watching, and see you next time.",
    "Music makes people happy when they feel tired.",
    "Let us begin with the first question on the list.",
)
# Sentences the trained fixture knows, after the two AISHELL ones (tests/fixtures/tiny_model_texts.py).
FIXTURE_MANDARIN = tuple(tiny_model_texts().MANDARIN_SENTENCES[2:22])
SENTENCES = {
    ("base", "zh"): (MANDARIN, "cmn-latn-pinyin"),
    ("base", "en"): (ENGLISH, "en"),
    ("fixture", "zh"): (FIXTURE_MANDARIN, "cmn-latn-pinyin"),
}
# (engine, language, amplitude of the pink noise (ffmpeg anoisesrc) mixed in; 0: clean).
# Speech peaks at 0.5.
PROGRAMMES = (
    ("base", "zh", 0.0),
    ("base", "zh", 0.12),
    ("base", "en", 0.0),
    ("base", "en", 0.12),
    ("base", "en", 0.25),
    ("fixture", "zh", 0.0),
    ("fixture", "zh", 0.15),
    ("fixture", "zh", 0.3),
)
PAUSES = (0.7, 1.1, 0.9, 1.4, 0.8, 1.2)
# The fixture was trained on single sentences: its programmes pause longer than the VAD's
# merge gap, so each sentence is a segment of its own (as in tests/test_timing.py).
FIXTURE_EXTRA_PAUSE = 1.0
OLD_RULE = "old: mean < 0.75"
NEW_RULE = "new: mean < 0.7 or low2 < 0.5"


@dataclass
class Programme:
    name: str
    path: Path
    references: list[tuple[float, float, str]]  # (start, end, text) per utterance
    engine: str  # "base" (Whisper base) or "fixture" (FireRedASR tiny fixture)
    language: str  # "zh" or "en"


# --------------------------------------------------------------------------- labelling


def units(text: str, words: bool) -> list[str]:
    """Words (English, lower-cased, no punctuation) or characters (Mandarin, no punctuation)."""
    kept = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text.lower())
    return kept.split() if words else [ch for ch in kept if not ch.isspace()]


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return min(a[1], b[1]) - max(a[0], b[0])


def label_cues(cues: list[Cue], references: list[tuple[float, float, str]], words: bool) -> list[bool]:
    """Per cue: is it wrong against the utterance it lies over (module docstring)?"""
    from rapidfuzz.distance import Levenshtein

    owner: list[int | None] = []
    for cue in cues:
        overlaps = [_overlap((cue.start, cue.end), (a, b)) for a, b, _ in references]
        best = int(np.argmax(overlaps)) if overlaps else -1
        owner.append(best if overlaps and overlaps[best] > 0 else None)
    wrong = [o is None for o in owner]
    for index, (_, _, text) in enumerate(references):
        mine = [k for k, o in enumerate(owner) if o == index]
        hyp: list[str] = []
        cue_of: list[int] = []
        for k in mine:
            for unit in units(cues[k].text, words):
                hyp.append(unit)
                cue_of.append(k)
        for tag, i1, i2, _, _ in Levenshtein.opcodes(hyp, units(text, words)):
            if tag in ("replace", "delete"):
                for i in range(i1, i2):
                    wrong[cue_of[i]] = True
            elif tag == "insert" and cue_of:
                wrong[cue_of[max(i1 - 1, 0)]] = True
    return wrong


# --------------------------------------------------------------------------- programmes


def _espeak(text: str, voice: str, folder: Path, index: int) -> np.ndarray:
    """One sentence at 16 kHz (resampled by ffmpeg), without its leading and trailing silence."""
    raw, wav = folder / f"s{index}.raw.wav", folder / f"s{index}.wav"
    raw.write_bytes(
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", "165", "-p", str(40 + 5 * (index % 5)), "--stdout", text],
            check=True,
            capture_output=True,
        ).stdout
    )
    ffmpeg("-i", str(raw), "-ar", str(SAMPLE_RATE), "-ac", "1", "-c:a", "pcm_s16le", str(wav))
    audio = np.frombuffer(wav.read_bytes()[44:], dtype=np.int16).astype(np.float32) / 32768
    loud = np.flatnonzero(np.abs(audio) > 0.01 * np.abs(audio).max())
    return 0.5 * audio[loud[0] : loud[-1] + 1] / np.abs(audio).max()


def build_programme(
    sentences: tuple[str, ...], voice: str, out: Path, noise: float | None, extra_pause: float = 0.0
) -> list[tuple[float, float, str]]:
    """The sentences joined with PAUSES (1 s lead and tail) into `out`; pink noise of amplitude
    `noise` mixed in by ffmpeg. Returns (start, end, text) of every sentence."""
    folder = out.parent / (out.stem + ".parts")
    folder.mkdir(parents=True, exist_ok=True)
    pieces, refs, pos = [np.zeros(SAMPLE_RATE, np.float32)], [], float(SAMPLE_RATE)
    for i, text in enumerate(sentences):
        speech = _espeak(text, voice, folder, i)
        refs.append((pos / SAMPLE_RATE, (pos + speech.size) / SAMPLE_RATE, text))
        seconds = PAUSES[i % len(PAUSES)] + extra_pause if i + 1 < len(sentences) else 1.0
        pause = np.zeros(round(seconds * SAMPLE_RATE))
        pieces += [speech, pause.astype(np.float32)]
        pos += speech.size + pause.size
    clean = folder / "clean.wav"
    data = (np.concatenate(pieces) * 32767).astype("<i2").tobytes()
    _write_wav(clean, data)
    if noise is None:
        clean.replace(out)
    else:
        source = f"anoisesrc=color=pink:amplitude={noise}:seed=7:sample_rate={SAMPLE_RATE}"
        ffmpeg(
            "-i",
            str(clean),
            "-f",
            "lavfi",
            "-i",
            source,
            "-filter_complex",
            "[0:a][1:a]amix=inputs=2:duration=first:normalize=0",
            "-ac",
            "1",
            "-c:a",
            "pcm_s16le",
            str(out),
        )
    return refs


def _write_wav(path: Path, pcm: bytes) -> None:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm)


def programmes(folder: Path) -> list[Programme]:
    """Every programme in PROGRAMMES, built in `folder`, then the samples."""
    refs = json.loads((SAMPLES / "transcripts.json").read_text(encoding="utf-8"))
    out = []
    for engine, lang, noise in PROGRAMMES:
        tag = f"noise {noise}" if noise else "clean"
        sentences, voice = SENTENCES[(engine, lang)]
        path = folder / f"{engine}_{lang}_{noise}.wav"
        extra = FIXTURE_EXTRA_PAUSE if engine == "fixture" else 0.0
        references = build_programme(sentences, voice, path, noise or None, extra)
        out.append(Programme(f"{engine} {lang} {tag}", path, references, engine, lang))
    for name, lang in (("aishell_zh.mkv", "zh"), ("two_cities.mp4", "en")):
        out.append(Programme(f"sample {name}", SAMPLES / name, [(0.0, 1e9, refs[name])], "base", lang))
    return out


# --------------------------------------------------------------------------- rules


def _cue(c: dict[str, Any]) -> Cue:
    return Cue(c["start"], c["end"], c["text"].split("\n"), c["confidence"], [], c["token_confidences"])


def _low(c: dict[str, Any], k: int) -> float:
    tokens = sorted(c["token_confidences"] or [c["confidence"] or 1.0])[:k]
    return sum(tokens) / len(tokens)


def candidate_rules() -> dict[str, Callable[[dict[str, Any]], bool]]:
    """Rule name -> whether a cue (as recorded in the JSON) is listed: the rule before issue 28
    (mean confidence below 0.75), the one the pipeline now applies with its defaults
    (guard.review_reasons), and the alternatives it was chosen from: the mean, the weakest
    token, the mean of the k weakest, alone and with the mean."""
    from fireredasr_fast.guard import LOW_CONFIDENCE, REVIEW_THRESHOLD, WEAK_TOKEN, review_reasons

    def now(c: dict[str, Any]) -> bool:
        return bool({LOW_CONFIDENCE, WEAK_TOKEN} & set(review_reasons(_cue(c), REVIEW_THRESHOLD)))

    rules: dict[str, Callable[[dict[str, Any]], bool]] = {OLD_RULE: lambda c: (c["confidence"] or 1.0) < 0.75}
    rules[NEW_RULE] = now
    for t in (0.8, 0.85):
        rules[f"mean < {t}"] = lambda c, t=t: (c["confidence"] or 1.0) < t
    for k, name in ((1, "min"), (2, "low2"), (3, "low3")):
        for t in (0.3, 0.4, 0.5, 0.6):
            rules[f"{name} < {t}"] = lambda c, t=t, k=k: _low(c, k) < t
            rules[f"mean < 0.75 or {name} < {t}"] = lambda c, t=t, k=k: rules[OLD_RULE](c) or _low(c, k) < t
    return rules


def rule_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per rule, per programme and in all: wrong cues listed, right cues listed."""
    table = []
    for name, listed in candidate_rules().items():
        entry: dict[str, Any] = {"rule": name, "programmes": {}}
        groups = [(row["programme"], row["cues"]) for row in rows]
        for engine in sorted({row["engine"] for row in rows}, reverse=True):
            groups.append((f"all {engine}", [c for row in rows if row["engine"] == engine for c in row["cues"]]))
        groups.append(("all", [c for row in rows for c in row["cues"]]))
        for label, cues in groups:
            wrong = [c for c in cues if c["wrong"]]
            right = [c for c in cues if not c["wrong"]]
            entry["programmes"][label] = {
                "wrong_listed": sum(listed(c) for c in wrong),
                "wrong": len(wrong),
                "right_listed": sum(listed(c) for c in right),
                "right": len(right),
            }
        table.append(entry)
    return table


# --------------------------------------------------------------------------- the run


def _engines(whisper_base: Path, threads: int) -> dict[str, Any]:
    from fireredasr_fast.engines import EngineSpec
    from fireredasr_fast.engines.whisper.engine import WhisperEngine

    return {
        "base zh": WhisperEngine(str(whisper_base), language="zh", cpu_threads=threads),
        "base en": WhisperEngine(str(whisper_base), language="en", cpu_threads=threads),
        "fixture zh": EngineSpec("firered", str(TINY_MODEL)).build(),
    }


def run(whisper_base: Path, threads: int, only: str | None = None) -> dict[str, Any]:
    from fireredasr_fast.cues import CueOptions, build_cues, reads_too_fast
    from fireredasr_fast.guard import FAST
    from fireredasr_fast.transcribe import TranscribeOptions, transcribe_file
    from fireredasr_fast.vad import SpeechSegmenter

    engines = _engines(whisper_base, threads)
    options = TranscribeOptions()
    segmenter = SpeechSegmenter(options.vad)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for prog in programmes(Path(tmp)):
            if only and only not in prog.name:
                continue
            engine = engines[f"{prog.engine} {prog.language}"]
            start = time.perf_counter()
            result = transcribe_file(prog.path, engine, options, segmenter)
            wall = time.perf_counter() - start
            wrong = label_cues(result.cues, prog.references, words=prog.language == "en")
            # The same segments cued without reading speed limits (the timing before issue 28).
            spoken = [seg for seg in result.segments if seg.text.strip()]
            plain = build_cues(spoken, result.speech, result.duration, CueOptions(max_cps=0, max_cps_cjk=0))
            rows.append(
                {
                    "programme": prog.name,
                    "engine": "FireRedASR fixture" if prog.engine == "fixture" else "Whisper base",
                    "utterances": len(prog.references),
                    "wall": wall,
                    "asr": result.info["timings"]["asr"],
                    "guard": result.info["timings"]["guard"],
                    "reading": {
                        "too_fast_without_limits": sum(reads_too_fast(c, options.cues) for c in plain),
                        "too_fast": sum(reads_too_fast(c, options.cues) for c in result.cues),
                        "listed_fast": sum(FAST in c.flags for c in result.cues),
                        "shortest": min((c.end - c.start for c in result.cues), default=None),
                    },
                    "cues": [
                        {
                            "start": c.start,
                            "end": c.end,
                            "text": c.text,
                            "confidence": c.confidence,
                            "token_confidences": c.token_confidences,
                            "wrong": bad,
                            "flags": c.flags,
                        }
                        for c, bad in zip(result.cues, wrong, strict=True)
                    ],
                }
            )
            print(f"{prog.name}: {len(result.cues)} cues, {sum(wrong)} wrong, {wall:.1f} s", flush=True)
    return {"machine": cpu_name(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "files": rows}


def _share(n: int, d: int) -> str:
    return f"{n}/{d} ({100 * n / d:.0f} %)" if d else "-"


def print_tables(data: dict[str, Any], rules: list[str]) -> None:
    print(f"{'programme':22s} {'engine':18s} cues  wrong  asr s  too fast: no limits / limits (listed)  shortest s")
    for row in data["files"]:
        n_wrong = sum(c["wrong"] for c in row["cues"])
        r = row["reading"]
        print(
            f"{row['programme']:22s} {row['engine']:18s} {len(row['cues']):4d} {n_wrong:6d} {row['asr']:6.1f}"
            f"  {r['too_fast_without_limits']:17d} / {r['too_fast']} ({r['listed_fast']})  {r['shortest'] or 0:17.2f}"
        )
    table = {e["rule"]: e for e in rule_table(data["files"])}
    print(f"\n{'rule':28s} {'wrong cues listed':>18s} {'right cues listed':>18s}   (all programmes)")
    for name, entry in table.items():
        p = entry["programmes"]["all"]
        print(f"{name:28s} {_share(p['wrong_listed'], p['wrong']):>18s} {_share(p['right_listed'], p['right']):>18s}")
    for name in rules:
        print(f"\nper programme, {name}: wrong listed | right listed")
        for label, p in table[name]["programmes"].items():
            print(
                f"  {label:22s} {_share(p['wrong_listed'], p['wrong']):>14s} | {_share(p['right_listed'], p['right'])}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks review", description=__doc__)
    parser.add_argument(
        "--whisper-base", type=Path, help="Whisper base CTranslate2 directory (default: the bundled one, .[demo])"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", help="run only the programmes whose name contains this")
    parser.add_argument("--from-json", type=Path, help="tabulate a previous run's JSON instead of running")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.from_json:
        data = json.loads(args.from_json.read_text(encoding="utf-8"))
    else:
        from fireredasr_fast.engines.whisper.engine import resolve_model_path

        base = args.whisper_base or Path(resolve_model_path(None, "base"))
        data = run(base, args.threads, args.only)
    print_tables(data, [OLD_RULE, NEW_RULE])
    if args.json:
        args.json.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0
