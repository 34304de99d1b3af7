"""The glossary (`--hotwords`): term recall with and without it, false insertions on speech that
lacks the terms, CER/WER overall, and what biasing costs per search step, side by side in one run.

FireRedASR (the trained fixture, tests/fixtures/tiny_model): the fixture's Mandarin sentences
rendered by espeak-ng in VOICES (the default voice, and unseen voices at fast speeds, where the
fixture often writes another sentence it knows instead). Sentences holding one of TERMS are the
"terms" programme, the others "no terms". Modes: no glossary; the glossary of TERMS; TERMS plus
--distractors two-character terms the programmes never say. Each programme is one batched
call per voice, as the engine gets a file's segments; decoder seconds per search step come
from the same calls (alternating rounds, --rounds, the best counts). The fixture's decoder is
tiny (d_model 64), so biasing's share of a step is also measured on a random model of
--cost-preset (random weights, odim 7832, steps capped at --cost-steps).

Whisper (--whisper-model, default base, on samples/): the AISHELL sample (it says 一二线城市, which
base hears as 一二线尝试) with and without the glossary of WHISPER_TERMS, and the English sample
as speech without the terms; seconds per call side by side.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    DEFAULT_CACHE,
    ROOT,
    SAMPLES,
    TINY_MODEL,
    cpu_name,
    ensure_random_model,
    report_header,
    tiny_model_texts,
)

# Named terms of the fixture's sentences (places, things); each is in at least one sentence.
TERMS = ("上海", "北京", "农民", "电费", "夏天", "视频", "电脑", "医院", "公园", "机场", "图书馆", "地铁")
# (espeak-ng voice, words per minute, pitch, resampling factor): the default voice, then unseen
# voices spoken fast.
VOICES = (
    ("cmn", 160, 50, 1.0),
    ("cmn+m3", 230, 40, 1.0),
    ("cmn+f3", 240, 60, 1.0),
    ("cmn+f4", 250, 30, 0.95),
    ("cmn+m7", 220, 70, 1.05),
)
WHISPER_TERMS = ("一二线城市",)
# Bonuses per token swept on the fixture (the default among them).
SCORES = (0.5, 1.0, 1.5)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks hotwords", description=__doc__)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1, help="alternating timing rounds; the best counts")
    p.add_argument("--distractors", type=int, default=200, help="extra terms the speech never says")
    p.add_argument("--cost-preset", default="small", help="random model for the step cost ('' to skip)")
    p.add_argument("--cost-steps", type=int, default=60, help="search steps per utterance on it")
    p.add_argument("--whisper-model", default="base", help="'' to skip the Whisper part")
    p.add_argument("--sentences", type=int, default=0, help="only the first N fixture sentences (0: all)")
    p.add_argument("--json", type=Path, help="write the results here")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- scoring


def _chars(text: str) -> str:
    return "".join(text.split()).lower()


def score(hypotheses: Sequence[str], references: Sequence[str], terms: Sequence[str], words: bool = False) -> dict:
    """Term occurrences in the references and how many the hypotheses have (recall), term
    occurrences the hypotheses add (false insertions), and CER (WER with `words`) overall."""
    import jiwer

    said = found = inserted = 0
    for hyp, ref in zip(hypotheses, references, strict=True):
        for term in terms:
            in_ref, in_hyp = _chars(ref).count(_chars(term)), _chars(hyp).count(_chars(term))
            said += in_ref
            found += min(in_ref, in_hyp)
            inserted += max(0, in_hyp - in_ref)
    refs = [" ".join(r.lower().split()) if words else _chars(r) for r in references]
    hyps = [" ".join(h.lower().split()) if words else _chars(h) for h in hypotheses]
    error = jiwer.wer(refs, hyps) if words else jiwer.cer(refs, hyps)
    return {
        "terms_said": said,
        "terms_found": found,
        "recall": round(found / said, 4) if said else None,
        "false_insertions": inserted,
        ("wer" if words else "cer"): round(float(error), 4),
    }


# --------------------------------------------------------------------------- FireRedASR


def _programmes(limit: int = 0) -> dict[str, list[tuple[str, np.ndarray]]]:
    """(reference, waveform) of every fixture sentence in every voice, split by whether it says a term."""
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    from make_programme import synthesize

    out: dict[str, list[tuple[str, np.ndarray]]] = {"terms": [], "no terms": []}
    sentences = tiny_model_texts().MANDARIN_SENTENCES
    for text in sentences[:limit] if limit else sentences:
        name = "terms" if any(term in text for term in TERMS) else "no terms"
        for voice, speed, pitch, rate in VOICES:
            wave = synthesize(text, voice, speed, pitch, rate).astype(np.float32) / 32768.0
            out[name].append((text, wave))
    return out


def distractors(count: int, alphabet: Sequence[str], avoid: str, seed: int = 0) -> list[str]:
    """`count` two-character terms of `alphabet` that `avoid` never holds."""
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < count:
        term = "".join(rng.sample(list(alphabet), 2))
        if term not in avoid:
            out.add(term)
    return sorted(out)


def _recognise(model: Any, waves: list[np.ndarray], glossary: Any, **decoding: Any) -> tuple[list[str], float, int]:
    """One call per voice (as a file's batches): texts, decoder seconds, search steps."""
    steps = [0]

    def count(step: int, logits: Any) -> Any:
        steps[0] += 1
        return logits

    texts: list[str] = []
    seconds = 0.0
    per_voice = len(VOICES)
    for v in range(per_voice):
        hyps = model.transcribe(waves[v::per_voice], beam_size=3, hotwords=glossary, logits_hook=count, **decoding)
        seconds += model.timings["decoder"]
        texts += [h.text for h in hyps]
    order = [i for v in range(per_voice) for i in range(v, len(waves), per_voice)]
    ordered = [""] * len(waves)
    for text, i in zip(texts, order, strict=True):
        ordered[i] = text
    return ordered, seconds, steps[0]


def firered_part(args: argparse.Namespace, programmes: dict[str, list[tuple[str, np.ndarray]]]) -> dict[str, Any]:
    from fireredasr_fast.engines.firered.engine import load_model
    from fireredasr_fast.glossary import DEFAULT_SCORE, Glossary

    model = load_model(TINY_MODEL)
    said = "".join(text for items in programmes.values() for text, _ in items)
    alphabet = sorted({ch for ch in said if "\u4e00" <= ch <= "\u9fff"})
    extra = distractors(args.distractors, alphabet, said)
    modes: dict[str, Any] = {"none": None}
    for value in SCORES:
        modes[f"score {value:g}" + (" (default)" if value == DEFAULT_SCORE else "")] = Glossary(
            tuple((t, 1.0) for t in TERMS), value
        )
    modes[f"default + {len(extra)} unsaid terms"] = Glossary(tuple((t, 1.0) for t in (*TERMS, *extra)))
    rows: dict[str, dict[str, Any]] = {}
    for programme, items in programmes.items():
        refs, waves = [t for t, _ in items], [w for _, w in items]
        best: dict[str, float] = {}
        for r in range(args.rounds):
            for mode in list(modes) if r % 2 == 0 else list(modes)[::-1]:
                texts, seconds, steps = _recognise(model, waves, modes[mode])
                best[mode] = min(best.get(mode, float("inf")), seconds / max(steps, 1))
                key = f"{programme} / {mode}"
                rows.setdefault(key, {**score(texts, refs, TERMS + tuple(extra)), "utterances": len(refs)})
                rows[key]["steps"] = steps
        for mode, glossary in modes.items():
            row = rows[f"{programme} / {mode}"]
            row["ms_per_step"] = round(1000 * best[mode], 3)
            row["step_vs_none"] = round(best[mode] / best["none"], 3)
            if glossary is not None:
                added = bias_ms(model.context_graph(glossary), 32 * 3, model.model.args.odim, args.rounds)
                row["bias_ms_96_rows"] = round(added, 3)
                row["bias_share_of_step"] = round(added / (1000 * best["none"]), 4)
    return {"model": "trained tiny fixture", "terms": list(TERMS), "distractors": len(extra), "rows": rows}


def bias_ms(graph: Any, rows: int, vocab: int, rounds: int, repeats: int = 200) -> float:
    """Milliseconds per search step that biasing adds at `rows` rows: the biased top-k, the
    decoder's own scores gathered back and the states advanced, against the plain top-k, timed
    alternately (each one's best round counts)."""
    import torch

    from fireredasr_fast.engines.firered.context import ContextState

    state = ContextState(graph, rows, torch.device("cpu"))
    scores = torch.log_softmax(torch.randn(rows, vocab, generator=torch.Generator().manual_seed(0)), dim=-1)
    parent = torch.arange(rows)

    def plain() -> None:
        torch.topk(scores, 3, dim=1)

    def biased() -> None:
        out, give_back = state.biased(scores)
        top_s, top_y = torch.topk(out, 3, dim=1)
        _ = (top_s + give_back[:, None], scores.gather(1, top_y))
        state.advance(parent, top_y[:, 0])

    best = {"plain": float("inf"), "biased": float("inf")}
    pair = (("plain", plain), ("biased", biased))
    for r in range(max(rounds, 3) * 2):
        for name, fn in pair if r % 2 == 0 else pair[::-1]:
            t0 = time.perf_counter()
            for _ in range(repeats):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / repeats)
    return 1000 * (best["biased"] - best["plain"])


def cost_part(args: argparse.Namespace, waves: list[np.ndarray]) -> dict[str, Any]:
    """A random model of args.cost_preset (odim 7832): decoder ms per step of whole searches
    with and without glossaries of random terms, and biasing's own ms per step (bias_ms) at
    the rows of a 32-segment batch against that step."""
    from fireredasr_fast.engines.firered.engine import load_model
    from fireredasr_fast.glossary import Glossary

    model = load_model(ensure_random_model(DEFAULT_CACHE / args.cost_preset, args.cost_preset))
    vocab = model.model.args.odim
    cjk = [t for t in model.tokenizer.id_to_token if len(t) == 1 and "\u4e00" <= t <= "\u9fff"]
    modes: dict[str, Any] = {"none": None}
    for size in (len(TERMS), 1000):
        modes[f"{size} terms"] = Glossary(tuple((t, 1.0) for t in distractors(size, cjk, "", seed=size)))
    best: dict[str, float] = {}
    for r in range(args.rounds):
        for mode in list(modes) if r % 2 == 0 else list(modes)[::-1]:
            _, seconds, steps = _recognise(model, waves, modes[mode], decode_max_len=args.cost_steps)
            best[mode] = min(best.get(mode, float("inf")), seconds / max(steps, 1))
    rows: dict[str, dict[str, Any]] = {}
    for mode, glossary in modes.items():
        row: dict[str, Any] = {"ms_per_step": round(1000 * best[mode], 3)}
        row["step_vs_none"] = round(best[mode] / best["none"], 3)
        if glossary is not None:
            extra = bias_ms(model.context_graph(glossary), 32 * 3, vocab, args.rounds)
            row["bias_ms_96_rows"] = round(extra, 3)
            row["bias_share_of_step"] = round(extra / (1000 * best["none"]), 4)
        rows[mode] = row
    return {"model": f"random {args.cost_preset}", "rows": rows}


# --------------------------------------------------------------------------- Whisper


def whisper_part(args: argparse.Namespace) -> dict[str, Any]:
    from fireredasr_fast.audio import to_float32
    from fireredasr_fast.engines.whisper.engine import WhisperEngine, resolve_model_path
    from fireredasr_fast.glossary import Glossary
    from fireredasr_fast.transcribe import prepare_file
    from fireredasr_fast.vad import SpeechSegmenter

    engine = WhisperEngine(resolve_model_path(None, args.whisper_model), cpu_threads=args.threads)
    references = json.loads((SAMPLES / "transcripts.json").read_text(encoding="utf-8"))
    segmenter = SpeechSegmenter()
    glossary = Glossary(tuple((t, 1.0) for t in WHISPER_TERMS))
    rows: dict[str, dict[str, Any]] = {}
    for name, programme in (("aishell_zh.mkv", "terms"), ("two_cities.mp4", "no terms")):
        waves = [to_float32(job.samples) for job in prepare_file(SAMPLES / name, segmenter).jobs(0)]
        for mode, hotwords in (("none", None), ("glossary", glossary)):
            t0 = time.perf_counter()
            text = " ".join(h.text for h in engine.transcribe(waves, hotwords=hotwords))
            seconds = time.perf_counter() - t0
            row = score([text], [references[name]], WHISPER_TERMS, words=programme == "no terms")
            rows[f"{programme} / {mode}"] = {**row, "seconds": round(seconds, 2), "text": text}
        rows[f"{programme} / glossary"]["time_vs_none"] = round(
            rows[f"{programme} / glossary"]["seconds"] / rows[f"{programme} / none"]["seconds"], 3
        )
    return {"model": f"Whisper {args.whisper_model}", "terms": list(WHISPER_TERMS), "rows": rows}


# --------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from fireredasr_fast.runner.plan import set_process_threads

    set_process_threads(args.threads)
    report: dict[str, Any] = {**report_header("hotwords", args.threads, "fixture + whisper"), "parts": {}}
    programmes = _programmes(args.sentences)
    report["parts"]["firered"] = firered_part(args, programmes)
    if args.cost_preset:
        waves = [w for _, w in programmes["terms"]][:15]
        report["parts"]["cost"] = cost_part(args, waves)
    if args.whisper_model:
        report["parts"]["whisper"] = whisper_part(args)
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1))
    return 0


def _print(report: dict[str, Any]) -> None:
    print(f"{cpu_name()}, {report['machine']['threads']} thread(s), {report['date']}")
    head = ("part", "programme / mode", "utterances", "terms said", "found", "recall", "false ins.", "CER/WER")
    print(" | ".join((*head, "ms/step or s", "vs none", "bias ms/step (96 rows)", "share of step")))
    for part, data in report["parts"].items():
        for key, row in data["rows"].items():
            error = row.get("cer", row.get("wer"))
            recall = row.get("recall")
            cells = (f"{part} ({data['model']})", key, row.get("utterances", ""), row.get("terms_said", ""))
            cells += (row.get("terms_found", ""), "" if recall is None else f"{recall:.0%}")
            cells += (row.get("false_insertions", ""), "" if error is None else f"{error:.1%}")
            cells += (
                row.get("ms_per_step", row.get("seconds", "")),
                row.get("step_vs_none", row.get("time_vs_none", "")),
            )
            share = row.get("bias_share_of_step")
            cells += (row.get("bias_ms_96_rows", ""), "" if share is None else f"{share:.1%}")
            print(" | ".join(str(c) for c in cells))
    print("time: decoder seconds per search step (FireRedASR), seconds per call (Whisper); machine may be shared")
