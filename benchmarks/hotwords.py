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
import importlib.util
import itertools
import json
import random
import statistics
import sys
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
    p.add_argument("--no-fixture", dest="fixture", action="store_false", help="skip recall and false insertions")
    p.add_argument("--scores", type=_numbers, default=SCORES, help="bonuses per token swept on the fixture")
    p.add_argument("--cost-preset", default="small", help="random model for the step cost ('' to skip)")
    p.add_argument("--cost-steps", type=int, default=60, help="search steps per utterance on it")
    p.add_argument(
        "--cost-terms", type=_sizes, default=(len(TERMS), 1000, 5000), help="glossary sizes timed on it (12,1000,5000)"
    )
    p.add_argument("--cost-utterances", type=int, default=32, help="utterances in its one call (beam 3)")
    p.add_argument("--bias-rows", type=_sizes, default=(96,), help="rows at which biasing alone is also timed")
    p.add_argument("--compare-with", type=Path, help="another checkout: its biasing timed beside this one's")
    p.add_argument("--whisper-model", default="base", help="'' to skip the Whisper part")
    p.add_argument("--sentences", type=int, default=0, help="only the first N fixture sentences (0: all)")
    p.add_argument("--json", type=Path, help="write the results here")
    return p.parse_args(argv)


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def _numbers(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(","))


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


def _programmes(limit: int = 0, only_terms: bool = False) -> dict[str, list[tuple[str, np.ndarray]]]:
    """(reference, waveform) of every fixture sentence in every voice, split by whether it says
    a term (`only_terms`: the "terms" programme only)."""
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    from make_programme import synthesize

    out: dict[str, list[tuple[str, np.ndarray]]] = {"terms": [], "no terms": []}
    sentences = tiny_model_texts().MANDARIN_SENTENCES
    for text in sentences[:limit] if limit else sentences:
        name = "terms" if any(term in text for term in TERMS) else "no terms"
        if only_terms and name != "terms":
            continue
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


def _recognise(model: Any, waves: list[np.ndarray], glossary: Any, **decoding: Any) -> tuple[list[Any], float, int]:
    """One call per voice (as a file's batches): hypotheses (in `waves`' order), decoder
    seconds, search steps."""
    steps = [0]

    def count(step: int, logits: Any) -> Any:
        steps[0] += 1
        return logits

    ordered: list[Any] = [None] * len(waves)
    seconds = 0.0
    per_voice = len(VOICES)
    for v in range(per_voice):
        hyps = model.transcribe(waves[v::per_voice], beam_size=3, hotwords=glossary, logits_hook=count, **decoding)
        seconds += model.timings["decoder"]
        for i, hyp in zip(range(v, len(waves), per_voice), hyps, strict=True):
            ordered[i] = hyp
    return ordered, seconds, steps[0]


def review(hypotheses: Sequence[Any], references: Sequence[str], terms: Sequence[str]) -> dict[str, Any]:
    """Term occurrences of the hypotheses that the review rules (guard.review_reasons: mean
    confidence, weakest tokens) list, each utterance as one cue (the fixture's sentences fit
    one): the true ones (in the reference) and the false insertions; and how many false
    insertions have every token of the term itself at confidence >= 0.5 (what a rule on the
    term's own tokens would miss)."""
    from fireredasr_fast.guard import REVIEW_THRESHOLD, WEAK_TOKEN_THRESHOLD, review_reasons
    from fireredasr_fast.results import Cue

    out = {"true_listed": 0, "false_listed": 0, "false_term_confident": 0}
    for hyp, ref in zip(hypotheses, references, strict=True):
        confidences = hyp.token_confidences
        cue = Cue(0.0, 1.0, [hyp.text], hyp.confidence, token_confidences=confidences)
        listed = bool(review_reasons(cue, REVIEW_THRESHOLD, WEAK_TOKEN_THRESHOLD))
        pieces = [_chars(t.replace("\u2581", "")) for t in hyp.tokens]
        owner = [i for i, piece in enumerate(pieces) for _ in piece]
        joined = "".join(pieces)
        for term in terms:
            needle, start, k = _chars(term), 0, 0
            while needle and (at := joined.find(needle, start)) >= 0:
                true = k < _chars(ref).count(needle)
                own = [confidences[i] for i in set(owner[at : at + len(needle)])]
                out["true_listed" if true else "false_listed"] += listed
                out["false_term_confident"] += (not true) and min(own) >= 0.5
                start, k = at + len(needle), k + 1
    return out


def firered_part(args: argparse.Namespace, programmes: dict[str, list[tuple[str, np.ndarray]]]) -> dict[str, Any]:
    from fireredasr_fast.engines.firered.engine import load_model
    from fireredasr_fast.glossary import DEFAULT_SCORE, Glossary

    model = load_model(TINY_MODEL)
    said = "".join(text for items in programmes.values() for text, _ in items)
    alphabet = sorted({ch for ch in said if "\u4e00" <= ch <= "\u9fff"})
    extra = distractors(args.distractors, alphabet, said)
    modes: dict[str, Any] = {"none": None}
    for value in args.scores:
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
                hyps, seconds, steps = _recognise(model, waves, modes[mode])
                best[mode] = min(best.get(mode, float("inf")), seconds / max(steps, 1))
                key = f"{programme} / {mode}"
                terms = TERMS + tuple(extra)
                found = score([h.text for h in hyps], refs, terms)
                rows.setdefault(key, {**found, **review(hyps, refs, terms), "utterances": len(refs)})
                rows[key]["steps"] = steps
        for mode in modes:
            row = rows[f"{programme} / {mode}"]
            row["ms_per_step"] = round(1000 * best[mode], 3)
            row["step_vs_none"] = round(best[mode] / best["none"], 3)
    return {"model": "trained tiny fixture", "terms": list(TERMS), "distractors": len(extra), "rows": rows}


def bias_ms(state: Any, scores: Any, rounds: int, repeats: int = 100) -> float:
    """CPU milliseconds per search step that biasing adds at `scores`' rows: the biased top-k
    with the decoder's own scores gathered back and the states advanced, against the plain
    top-k; alternating rounds, each one's median counts (thread CPU time: the machine's
    other load hardly moves it). `state`: a ContextState of this checkout (its `top`) or of
    an older one (its `biased` + top-k + gather)."""
    import torch

    parent = torch.arange(scores.size(0))

    def plain() -> None:
        torch.topk(scores, 3, dim=1)

    def biased() -> None:
        if hasattr(state, "top"):
            _, top_y, _ = state.top(scores, 3)
        else:
            out, give_back = state.biased(scores)
            top_s, top_y = torch.topk(out, 3, dim=1)
            _ = (top_s + give_back[:, None], scores.gather(1, top_y))
        state.advance(parent, top_y[:, 0])

    times: dict[str, list[float]] = {"plain": [], "biased": []}
    pair = (("plain", plain), ("biased", biased))
    for r in range(max(rounds, 5) * 2):
        for name, fn in pair if r % 2 == 0 else pair[::-1]:
            t0 = time.thread_time()
            for _ in range(repeats):
                fn()
            times[name].append((time.thread_time() - t0) / repeats)
    return 1000 * (statistics.median(times["biased"]) - statistics.median(times["plain"]))


def _context_module(root: Path | None) -> Any:
    """engines/firered/context.py of this checkout, or of the checkout at `root` (loaded on its
    own: it needs only torch), to time an older version of biasing beside this one."""
    if root is None:
        from fireredasr_fast.engines.firered import context

        return context
    path = root / "fireredasr_fast" / "engines" / "firered" / "context.py"
    spec = importlib.util.spec_from_file_location("hotwords_compare_context", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _step_cpu_ms(model: Any, waves: list[np.ndarray], glossary: Any, steps: int) -> tuple[float, float]:
    """(CPU milliseconds per whole search step: decoder, scores, biasing, beam bookkeeping;
    the mean rows a step): one call of all `waves` (the engine groups them by length, each
    group its own encoder pass and search), timed between consecutive steps of one search."""
    stamps: list[tuple[float, int, int]] = []

    def stamp(step: int, logits: Any) -> Any:
        stamps.append((time.thread_time(), step, logits.size(0)))
        return logits

    model.transcribe(waves, beam_size=3, hotwords=glossary, logits_hook=stamp, decode_max_len=steps)
    pairs = [(a[0], b[0], b[2]) for a, b in itertools.pairwise(stamps) if b[1] == a[1] + 1]
    seconds = sum(t1 - t0 for t0, t1, _ in pairs)
    return 1000 * seconds / max(len(pairs), 1), statistics.fmean(rows for _, _, rows in pairs)


def cost_part(args: argparse.Namespace, waves: list[np.ndarray]) -> dict[str, Any]:
    """A random model of args.cost_preset (odim 7832), glossaries of random terms of
    args.cost_terms sizes: the whole search step's CPU ms in one call of `waves` (beam 3),
    alternating rounds, the median counts; and biasing's own CPU ms per step (bias_ms) at
    that step's mean rows, this checkout's and (--compare-with) another's side by side."""
    import torch

    from fireredasr_fast.engines.firered.engine import load_model
    from fireredasr_fast.glossary import Glossary

    model = load_model(ensure_random_model(DEFAULT_CACHE / args.cost_preset, args.cost_preset))
    vocab = model.model.args.odim
    cjk = [t for t in model.tokenizer.id_to_token if len(t) == 1 and "\u4e00" <= t <= "\u9fff"]
    modes: dict[str, Any] = {"none": None}
    for size in args.cost_terms:
        modes[f"{size} terms"] = Glossary(tuple((t, 1.0) for t in distractors(size, cjk, "", seed=size)))
    steps: dict[str, list[float]] = {mode: [] for mode in modes}
    rows = 0.0
    for r in range(args.rounds):
        for mode in list(modes) if r % 2 == 0 else list(modes)[::-1]:
            ms, rows = _step_cpu_ms(model, waves, modes[mode], args.cost_steps)
            steps[mode].append(ms)
    step = {mode: statistics.median(values) for mode, values in steps.items()}
    versions = {"this": _context_module(None)}
    if args.compare_with:
        versions["compare"] = _context_module(args.compare_with)
    shape = (round(rows), vocab)
    scores = torch.log_softmax(torch.randn(*shape, generator=torch.Generator().manual_seed(0)), dim=-1)
    out: dict[str, dict[str, Any]] = {}
    for mode, glossary in modes.items():
        row: dict[str, Any] = {"step_cpu_ms": round(step[mode], 3), "step_vs_none": round(step[mode] / step["none"], 3)}
        if glossary is not None:
            terms = [(model.tokenizer.encode(t), b) for t, b in glossary.bonuses()]
            row["states"] = model.context_graph(glossary).states
            for name, module in versions.items():
                graph = module.ContextGraph(terms, vocab)
                extra = bias_ms(module.ContextState(graph, shape[0], torch.device("cpu")), scores, args.rounds)
                row[f"bias_ms_{name}"] = round(extra, 4)
                row[f"bias_share_{name}"] = round(extra / step["none"], 4)
                for count in args.bias_rows:  # biasing alone at more rows (no whole step to compare)
                    wide = torch.log_softmax(torch.randn(count, vocab, generator=torch.Generator().manual_seed(0)), -1)
                    state = module.ContextState(graph, count, torch.device("cpu"))
                    row.setdefault("bias_alone", {}).setdefault(str(count), {})[name] = round(
                        bias_ms(state, wide, args.rounds), 4
                    )
        out[mode] = row
    return {"model": f"random {args.cost_preset}", "rows_per_step": shape[0], "rows": out}


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
    programmes = _programmes(args.sentences, only_terms=not args.fixture)
    if args.fixture:
        report["parts"]["firered"] = firered_part(args, programmes)
    if args.cost_preset:
        waves = [w for _, w in programmes["terms"]][: args.cost_utterances]
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
    print(" | ".join((*head, "ms/step or s", "vs none", "listed: true / false (term confident)")))
    for part, data in report["parts"].items():
        if part == "cost":
            continue
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
            if "true_listed" in row:
                cells += (f"{row['true_listed']} / {row['false_listed']} ({row['false_term_confident']})",)
            print(" | ".join(str(c) for c in cells))
    print("time: decoder seconds per search step (FireRedASR), seconds per call (Whisper); machine may be shared")
    if "cost" in report["parts"]:
        _print_cost(report["parts"]["cost"])


def _print_cost(data: dict[str, Any]) -> None:
    rows = data["rows_per_step"]
    print(f"cost ({data['model']}, {rows} rows a step; CPU ms)")
    keys = dict.fromkeys(key for row in data["rows"].values() for key in row)
    versions = [key[len("bias_ms_") :] for key in keys if key.startswith("bias_ms_")]
    head = ["glossary", "states", "whole step", "vs none"]
    head += [f"biasing {v}" for v in versions] + [f"share {v}" for v in versions]
    print(" | ".join(head))
    for mode, row in data["rows"].items():
        cells = [mode, row.get("states", ""), row["step_cpu_ms"], row["step_vs_none"]]
        cells += [row.get(f"bias_ms_{v}", "") for v in versions]
        cells += [f"{row[f'bias_share_{v}']:.2%}" if f"bias_share_{v}" in row else "" for v in versions]
        print(" | ".join(str(c) for c in cells))
    for mode, row in data["rows"].items():
        for count, by_version in row.get("bias_alone", {}).items():
            print(f"biasing alone, {mode}, {count} rows: " + ", ".join(f"{v} {ms}" for v, ms in by_version.items()))
