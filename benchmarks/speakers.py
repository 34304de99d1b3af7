"""Speaker labels (`--speakers`, fireredasr_fast/speakers.py) on real meetings: diarization error
rate on the AMI clips that the pyannote-audio 4.0.7 sdist ships with RTTM references, and the
cost on a long file.

The clips (30 s each, 1-4 speakers, overlapping speech) are split as the sdist splits them:
trn* tuned the defaults, dev* and tst* are reported. DER by pyannote.metrics (collar 0.25 s,
overlap counted) with its parts: missed speech, false alarm, speaker confusion; once with our
VAD's speech regions (the system: missed and false alarm are the VAD's errors and the speech
two people share, which a one-label system misses) and once with the reference's speech regions
(oracle: what the clustering alone gets wrong; not joined across pauses nor widened, as the
reference's regions are exact). The long file is the clips tiled to
`--long-minutes`, their VAD regions tiled with them: seconds per hour of audio and the peak
memory (RSS above the start) of `find_speakers`.

The review reason `speaker` is scored on stand-in cues (each turn's speech cut into pieces),
and with `--cues whisper` also on real cues: each clip and meeting through the whole pipeline
(`transcribe_file`, as `fireredasr-fast --engine whisper --language en --speakers auto` runs it,
with the offline Whisper base of `.[demo]`), each cue scored against the reference's majority
speaker over its span.

Needs `pip install --no-deps resemblyzer==0.1.4` and `pip install pyannote.metrics`, and the
sdist, downloaded once by hand (nothing is downloaded here):

    pip download --no-deps --no-binary :all: pyannote.audio==4.0.7 -d DIR
    python -m benchmarks speakers --sdist DIR/pyannote_audio-4.0.7.tar.gz --json out.json

Without --sdist it looks in the benchmarks' cache folder for the unpacked sdist or its tarball.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from fireredasr_fast.audio import decode_audio
from fireredasr_fast.results import SAMPLE_RATE, Cue
from fireredasr_fast.speakers import (
    DOUBTFUL_SPEAKER,
    Embedder,
    ResemblyzerEncoder,
    SpeakerOptions,
    SpeakerTurn,
    embed_windows,
    find_speakers,
    flag_doubtful_cues,
    overlap_turns,
)
from fireredasr_fast.vad import SpeechSegmenter

from .common import DEFAULT_CACHE, cpu_name, report_header, write_wav

SDIST = "pyannote_audio-4.0.7"
SPLITS = {"trn": "debug.train", "dev": "debug.development", "tst": "debug.test"}
COLLAR = 0.25  # seconds around each reference boundary not scored (the usual AMI setting)
CLIP_SECONDS = 30.0
REGIONS = ("vad", "oracle")  # the speech regions given: our VAD's, or the reference's
# The review flag is scored on stand-in cues (the clips have no transcripts): each turn's
# speech cut into equal pieces of at most this many seconds (about two lines of English).
CUE_SECONDS = 4.0
# `--cues whisper`: real cues, from the whole pipeline (transcribe_file) with this Whisper model
# (the offline base of `.[demo]`) on the English clips. A cue spans a true speaker change where
# a reference speaker other than its majority one speaks alone in it for this long (a phrase,
# more than a backchannel's "yeah").
WHISPER_MODEL = "base"
CHANGE_SECONDS = 1.0


def find_sdist(given: Path | None, cache: Path) -> Path:
    """The unpacked sdist's folder: `given` (a tarball or a folder) or the cache's copy."""
    candidates = [given] if given is not None else [cache / SDIST, cache / f"{SDIST}.tar.gz"]
    for path in candidates:
        if path is not None and path.is_dir() and (path / "tests" / "data").is_dir():
            return path
        if path is not None and path.is_file() and path.name.endswith(".tar.gz"):
            target = cache / SDIST
            if not (target / "tests" / "data").is_dir():
                cache.mkdir(parents=True, exist_ok=True)
                with tarfile.open(path) as tar:
                    tar.extractall(cache, filter="data")
            return target
    raise SystemExit(
        f"speakers: no {SDIST} sdist at {' or '.join(str(c) for c in candidates)}; download it once with\n"
        f"  pip download --no-deps --no-binary :all: pyannote.audio==4.0.7 -d DIR\n"
        f"and pass --sdist DIR/{SDIST}.tar.gz"
    )


def read_rttm(path: Path) -> dict[str, list[tuple[float, float, str]]]:
    """uri -> [(start, end, speaker)] from an RTTM file."""
    turns: dict[str, list[tuple[float, float, str]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[0] == "SPEAKER":
            start, length = float(fields[3]), float(fields[4])
            turns.setdefault(fields[1], []).append((start, start + length, fields[7]))
    return turns


def clip_path(data: Path, uri: str) -> Path:
    """The clip's WAV: trn00's file is spelled trñ00.wav in the sdist (a test of odd names)."""
    path = data / f"{uri}.wav"
    return path if path.is_file() else data / f"{uri.replace('trn', 'trñ')}.wav"


def union(spans: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]


def load_clips(sdist: Path, split: str) -> list[dict[str, Any]]:
    data = sdist / "tests" / "data"
    reference = read_rttm(data / f"{SPLITS[split]}.rttm")
    uris = [line.strip() for line in (data / f"{SPLITS[split]}.lst").read_text(encoding="utf-8").splitlines()]
    segmenter = SpeechSegmenter()
    clips = []
    for uri in (u.replace("ñ", "n") for u in uris if u.strip()):
        samples = decode_audio(clip_path(data, uri))
        _, vad_regions = segmenter(samples)
        ref = reference.get(uri, [])
        oracle = union([(a, b) for a, b, _ in ref])
        clips.append({"uri": uri, "samples": samples, "vad": vad_regions, "oracle": oracle, "ref": ref})
    return clips


def meetings(clips: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The clips of one meeting (sharing a speaker) joined in order into one recording: the
    speakers come back after others spoke, as in a long file."""
    groups: list[list[dict[str, Any]]] = []
    for clip in clips:
        names = {who for _, _, who in clip["ref"]}
        home = next((g for g in groups if names & {who for c in g for _, _, who in c["ref"]}), None)
        if home is None:
            groups.append([clip])
        else:
            home.append(clip)
    joined = []
    for group in groups:
        offsets = np.cumsum([0.0] + [len(c["samples"]) / SAMPLE_RATE for c in group])
        joined.append(
            {
                "uri": "+".join(c["uri"] for c in group),
                "samples": np.concatenate([c["samples"] for c in group]),
                "seconds": float(offsets[-1]),
                **{
                    key: [(a + o, b + o, *rest) for c, o in zip(group, offsets, strict=False) for a, b, *rest in c[key]]
                    for key in ("vad", "oracle", "ref")
                },
            }
        )
    return joined


def _annotation(uri: str, turns: Sequence[tuple[float, float, str]]) -> Any:
    from pyannote.core import Annotation, Segment

    annotation = Annotation(uri=uri)
    for i, (start, end, who) in enumerate(turns):
        if end > start:
            annotation[Segment(start, end), i] = who
    return annotation


Turns = list[tuple[float, float, str]]


def _labelled(clips: list[dict[str, Any]], regions: str, options: SpeakerOptions) -> list[Turns]:
    """Each clip's turns (one speaker at a time), as FileResult.turns holds them."""
    return [[(t.start, t.end, t.speaker) for t in find_speakers(c["samples"], c[regions], options)] for c in clips]


def score(
    clips: list[dict[str, Any]], turns: list[list[tuple[float, float, str]]], options: SpeakerOptions
) -> dict[str, float]:
    """DER and its parts (percent of reference speech) over the clips, pooled: the turns with
    the second speakers of overlap_turns (the system), and the turns alone (`one_label`)."""
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    metric = DiarizationErrorRate(collar=COLLAR, skip_overlap=False)
    # The same without the speech two people share: what a one-label-at-a-time system can reach.
    single = DiarizationErrorRate(collar=COLLAR, skip_overlap=True)
    one_label = DiarizationErrorRate(collar=COLLAR, skip_overlap=False)
    for clip, labels in zip(clips, turns, strict=True):
        reference = _annotation(clip["uri"], clip["ref"])
        hypothesis = _annotation(clip["uri"], labels + overlap_turns(labels, options))
        uem = Timeline([Segment(0, clip.get("seconds", CLIP_SECONDS))])
        metric(reference, hypothesis, uem=uem)
        single(reference, hypothesis, uem=uem)
        one_label(reference, _annotation(clip["uri"], labels), uem=uem)
    parts = metric[:]
    total = parts["total"]
    return {
        "der": 100 * abs(metric),
        "missed": 100 * parts["missed detection"] / total,
        "false_alarm": 100 * parts["false alarm"] / total,
        "confusion": 100 * parts["confusion"] / total,
        "speech_s": total,
        "der_no_overlap": 100 * abs(single),
        "der_one_label": 100 * abs(one_label),
    }


def flag_quality(
    clips: list[dict[str, Any]], turns: list[list[tuple[float, float, str]]], options: SpeakerOptions
) -> dict[str, float]:
    """How well the review reason `speaker` finds wrong labels, on stand-in cues (each turn's
    VAD speech cut into pieces of at most CUE_SECONDS) flagged by flag_doubtful_cues. A cue's
    wrong seconds: reference speech in it where its speaker (mapped to the reference's by
    pyannote's optimal mapping) is not speaking; a wrong cue: wrong for over half its speech."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    mapper = DiarizationErrorRate(collar=COLLAR)
    rows = []
    for clip, labels in zip(clips, turns, strict=True):
        mapping = mapper.optimal_mapping(_annotation(clip["uri"], clip["ref"]), _annotation(clip["uri"], labels))
        cues = _stand_in_cues(clip["vad"], labels)
        flag_doubtful_cues(cues, labels, options)
        for cue in cues:
            wrong, spoken = _wrong_seconds(clip["ref"], cue, mapping.get(cue.speaker))
            rows.append((DOUBTFUL_SPEAKER in cue.flags, wrong, spoken))
    flagged = [r for r in rows if r[0]]
    wrong_cues = [r for r in rows if r[2] > 0 and r[1] > r[2] / 2]
    caught = [r for r in wrong_cues if r[0]]
    return {
        "cues": len(rows),
        "flagged": len(flagged),
        "wrong_cues": len(wrong_cues),
        "flagged_wrong": len(caught),
        "precision": 100 * len(caught) / max(len(flagged), 1),
        "recall": 100 * len(caught) / max(len(wrong_cues), 1),
        "wrong_s": sum(r[1] for r in rows),
        "wrong_s_flagged": sum(r[1] for r in flagged),
    }


def _stand_in_cues(regions: Sequence[tuple[float, float]], turns: Sequence[tuple[float, float, str]]) -> list[Cue]:
    cues = []
    for start, end, who in turns:
        for a, b in regions:
            lo, hi = max(a, start), min(b, end)
            pieces = int(np.ceil((hi - lo) / CUE_SECONDS)) if hi > lo else 0
            edges = np.linspace(lo, hi, pieces + 1)
            cues += [Cue(float(x), float(y), [""], speaker=who) for x, y in itertools.pairwise(edges)]
    return cues


def _wrong_seconds(reference: list[tuple[float, float, str]], cue: Cue, truth: str | None) -> tuple[float, float]:
    """(reference speech in the cue without `truth` speaking, reference speech in the cue)."""
    points = sorted({cue.start, cue.end} | {t for a, b, _ in reference for t in (a, b) if cue.start < t < cue.end})
    wrong = spoken = 0.0
    for a, b in itertools.pairwise(points):
        who = {name for start, end, name in reference if start <= (a + b) / 2 < end}
        if who:
            spoken += b - a
            wrong += (b - a) * (truth not in who)
    return wrong, spoken


def pipeline_cues(units: list[dict[str, Any]], engine: Any, options: SpeakerOptions) -> list[tuple[list[Cue], Turns]]:
    """Each unit (a clip or a joined meeting) through the whole pipeline as `--speakers` runs
    it (transcribe_file: VAD, recognition, speaker turns, cues cut at speaker changes, review
    flags): its cues and its turns."""
    from fireredasr_fast.transcribe import TranscribeOptions, transcribe_file

    settings = TranscribeOptions(speakers=options)
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-speakers-") as tmp:
        for unit in units:
            path = write_wav(Path(tmp) / f"{unit['uri']}.wav", unit["samples"])
            result = transcribe_file(path, engine, settings)
            out.append((result.cues, list(result.turns or [])))
    return out


def cue_records(units: list[dict[str, Any]], transcribed: list[tuple[list[Cue], Turns]]) -> list[dict[str, Any]]:
    """One record per cue: its seconds, whether the reference has speech in its span, whether
    it is flagged `speaker`, and where the reference has speech: whether its speaker (mapped to
    the reference's by pyannote's optimal mapping of the turns) is not the reference's majority
    speaker over the span (`wrong`; a tie for the most speech is right), and whether it spans a
    true speaker change (another speaker alone in it for CHANGE_SECONDS)."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    mapper = DiarizationErrorRate(collar=COLLAR)
    records = []
    for unit, (cues, turns) in zip(units, transcribed, strict=True):
        mapping = mapper.optimal_mapping(_annotation(unit["uri"], unit["ref"]), _annotation(unit["uri"], turns))
        for cue in cues:
            heard, alone = _speaker_seconds(unit["ref"], cue.start, cue.end)
            if not heard:  # text where the reference hears no one
                records.append(
                    {"seconds": cue.end - cue.start, "speech": False, "flagged": DOUBTFUL_SPEAKER in cue.flags}
                )
                continue
            # Ties are common (a short cue inside overlapped speech): a cue whose speaker is
            # one of the speakers heard most in it is right.
            most = max(heard.values())
            own = heard.get(mapping.get(cue.speaker), 0.0)
            records.append(
                {
                    "seconds": cue.end - cue.start,
                    "speech": True,
                    "wrong": own < most - 1e-6,
                    "change": _spans_change(alone, heard, most),
                    "flagged": DOUBTFUL_SPEAKER in cue.flags,
                }
            )
    return records


def _spans_change(alone: dict[str, float], heard: dict[str, float], most: float) -> bool:
    """Whether a speaker other than the one(s) heard most speaks alone for CHANGE_SECONDS."""
    return any(seconds >= CHANGE_SECONDS for who, seconds in alone.items() if heard[who] < most - 1e-6)


def _speaker_seconds(
    reference: list[tuple[float, float, str]], start: float, end: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Each reference speaker's seconds of speech in [start, end], and their seconds alone."""
    points = sorted({start, end} | {t for a, b, _ in reference for t in (a, b) if start < t < end})
    heard: dict[str, float] = {}
    alone: dict[str, float] = {}
    for a, b in itertools.pairwise(points):
        who = {name for lo, hi, name in reference if lo <= (a + b) / 2 < hi}
        for name in who:
            heard[name] = heard.get(name, 0.0) + b - a
        if len(who) == 1:
            (name,) = who
            alone[name] = alone.get(name, 0.0) + b - a
    return heard, alone


def real_cue_quality(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The labels as an editor meets them on real cues (those over reference speech), and the
    review reason's hits."""
    silent = [r for r in records if not r["speech"]]
    records = [r for r in records if r["speech"]]
    seconds = sum(r["seconds"] for r in records)
    wrong = [r for r in records if r["wrong"]]
    flagged = [r for r in records if r["flagged"]]
    caught = [r for r in wrong if r["flagged"]]
    change = [r for r in records if r["change"]]
    return {
        "cues": len(records),
        "cue_s": seconds,
        "cues_without_speech": len(silent),
        "wrong_cues": len(wrong),
        "wrong_pct": 100 * len(wrong) / max(len(records), 1),
        "wrong_seconds_pct": 100 * sum(r["seconds"] for r in wrong) / max(seconds, 1e-9),
        "change_cues": len(change),
        "change_pct": 100 * len(change) / max(len(records), 1),
        "change_flagged": sum(r["flagged"] for r in change),
        "flagged": len(flagged),
        "flagged_wrong": len(caught),
        "precision": 100 * len(caught) / max(len(flagged), 1),
        "recall": 100 * len(caught) / max(len(wrong), 1),
    }


def _real_cue_rows(
    by_split: dict[str, list[dict[str, Any]]], engine: Any, options: SpeakerOptions
) -> list[dict[str, Any]]:
    """real_cue_quality of each split's clips and meetings, and of all splits pooled."""
    print(f"real cues (Whisper {WHISPER_MODEL}, English, the whole pipeline), review reason `{DOUBTFUL_SPEAKER}`:")
    rows, pooled = [], {}
    for split, clips in by_split.items():
        for unit, units in (("clips", clips), ("meetings", meetings(clips))):
            records = cue_records(units, pipeline_cues(units, engine, options))
            pooled.setdefault(unit, []).extend(records)
            rows.append({"split": split, "unit": unit, **real_cue_quality(records)})
            _print_real_row(rows[-1])
    for unit, records in pooled.items():
        rows.append({"split": "all", "unit": unit, **real_cue_quality(records)})
        _print_real_row(rows[-1])
    return rows


def _print_real_row(row: dict[str, Any]) -> None:
    print(
        f"  {row['split']:4s} {row['unit']:9s} cues {row['cues']} ({row['cue_s']:.0f} s; and"
        f" {row['cues_without_speech']} over no reference speech): wrong speaker {row['wrong_cues']}"
        f" ({row['wrong_pct']:.0f} %, {row['wrong_seconds_pct']:.0f} % of cue-seconds); spanning a change"
        f" {row['change_cues']} ({row['change_pct']:.0f} %, {row['change_flagged']} flagged); flagged"
        f" {row['flagged']}, {row['flagged_wrong']} wrong (precision {row['precision']:.0f} %, recall"
        f" {row['recall']:.0f} %)"
    )


def separation(clips: list[dict[str, Any]], embedder: Embedder, options: SpeakerOptions) -> float:
    """How well single windows tell speakers apart: the AUC of the cosine similarity of window
    pairs of one speaker against pairs of two (windows inside the reference's speech with one
    speaker for most of the window and no other; pairs sharing audio left out)."""
    from scipy.stats import mannwhitneyu

    vectors, names, places = [], [], []
    for number, clip in enumerate(clips):
        windows = embed_windows(clip["samples"], clip["oracle"], options, embedder)
        for index, (vector, start, end) in enumerate(zip(windows.vectors, windows.start, windows.end, strict=True)):
            middle = (start + end) / 2
            who = _sole_speaker(clip["ref"], middle - options.window / 2, middle + options.window / 2)
            if who is not None:
                vectors.append(vector)
                names.append(who)
                places.append((number, index))
    similarity = np.stack(vectors) @ np.stack(vectors).T
    same, other = [], []
    for i, j in itertools.combinations(range(len(names)), 2):
        apart = places[i][0] != places[j][0] or abs(places[i][1] - places[j][1]) * options.hop >= options.window
        if apart:
            (same if names[i] == names[j] else other).append(similarity[i, j])
    return float(mannwhitneyu(same, other).statistic) / (len(same) * len(other))


def _sole_speaker(reference: list[tuple[float, float, str]], start: float, end: float) -> str | None:
    heard: dict[str, float] = {}
    for a, b, who in reference:
        heard[who] = heard.get(who, 0.0) + max(0.0, min(b, end) - max(a, start))
    if not heard:
        return None
    main = max(heard, key=lambda who: heard[who])
    others = sum(heard.values()) - heard[main]
    return main if heard[main] >= 0.7 * (end - start) and others <= 0.1 * (end - start) else None


def long_file_cost(clips: list[dict[str, Any]], minutes: float, options: SpeakerOptions) -> dict[str, Any]:
    """find_speakers on the clips tiled to `minutes`: seconds per hour, peak RSS above the start."""
    copies = max(1, round(minutes * 60 / (CLIP_SECONDS * len(clips))))
    samples = np.concatenate([c["samples"] for c in clips] * copies)
    regions, offset = [], 0.0
    for _ in range(copies):
        for clip in clips:
            regions += [(a + offset, b + offset) for a, b in clip["vad"]]
            offset += len(clip["samples"]) / SAMPLE_RATE
    hours = len(samples) / SAMPLE_RATE / 3600
    peak, seconds, turns = _peak_rss(lambda: find_speakers(samples, regions, options))
    return {
        "audio_h": hours,
        "speech_h": sum(b - a for a, b in regions) / 3600,
        "seconds": seconds,
        "s_per_audio_h": seconds / hours,
        "peak_rss_mib": peak / 2**20,
        "audio_mib": samples.nbytes / 2**20,
        "speakers": len({t.speaker for t in turns}),
    }


def _peak_rss(work: Callable[[], list[SpeakerTurn]]) -> tuple[int, float, list[SpeakerTurn]]:
    process = psutil.Process()
    base = process.memory_info().rss
    peak = [base]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], process.memory_info().rss)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.perf_counter()
    try:
        turns = work()
    finally:
        seconds = time.perf_counter() - start
        done.set()
        watcher.join()
    return max(peak[0], process.memory_info().rss) - base, seconds, turns


def _options(args: argparse.Namespace) -> SpeakerOptions:
    fields = {f.name for f in dataclasses.fields(SpeakerOptions)}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return SpeakerOptions(**given)


def _print_row(row: dict[str, Any]) -> None:
    print(
        f"{row['split']:6s} {row['unit']:9s} {row['regions']:8s} {row['speech_s']:8.1f} {row['der']:7.1f}"
        f" {row['missed']:7.1f} {row['false_alarm']:6.1f} {row['confusion']:9.1f} {row['der_no_overlap']:15.1f}"
        f" {row['der_one_label']:9.1f}"
    )


def _der_rows(
    sdist: Path, splits: Sequence[str], options: SpeakerOptions
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The DER rows of each split and all splits pooled, the review flag's quality (VAD
    regions), and the clips of each split."""
    print(
        f"{'split':6s} {'unit':9s} {'regions':8s} {'speech s':>8s} {'DER %':>7s} {'missed':>7s} {'FA':>6s}"
        f" {'confusion':>9s} {'DER w/o overlap':>15s} {'one label':>9s}"
    )
    rows, flags, by_split = [], [], {}
    pooled: dict[tuple[str, str], tuple[list[Any], list[Any]]] = {}
    for split in splits:
        clips = by_split[split] = load_clips(sdist, split)
        for (unit, units), regions in itertools.product((("clips", clips), ("meetings", meetings(clips))), REGIONS):
            # The reference's regions are exact: joined or widened, they only add false alarm.
            given = options if regions == "vad" else dataclasses.replace(options, bridge=0.0, reach=0.0)
            turns = _labelled(units, regions, given)
            pool = pooled.setdefault((unit, regions), ([], []))
            pool[0].extend(units)
            pool[1].extend(turns)
            rows.append({"split": split, "unit": unit, "regions": regions, **score(units, turns, given)})
            _print_row(rows[-1])
            if regions == "vad":
                flags.append({"split": split, "unit": unit, **flag_quality(units, turns, given)})
    for (unit, regions), (units, turns) in pooled.items():
        given = options if regions == "vad" else dataclasses.replace(options, bridge=0.0, reach=0.0)
        rows.append({"split": "all", "unit": unit, "regions": regions, **score(units, turns, given)})
        _print_row(rows[-1])
        if regions == "vad":
            flags.append({"split": "all", "unit": unit, **flag_quality(units, turns, given)})
    print(f"review reason `{DOUBTFUL_SPEAKER}` (turns under {options.doubt_turn:g} s), stand-in cues, VAD regions:")
    for f in flags:
        print(
            f"  {f['split']:4s} {f['unit']:9s} flagged {f['flagged']}/{f['cues']} cues, {f['flagged_wrong']} of them"
            f" wrong (precision {f['precision']:.0f} %); wrong cues caught {f['flagged_wrong']}/{f['wrong_cues']}"
            f" (recall {f['recall']:.0f} %); wrong s in flagged cues {f['wrong_s_flagged']:.1f}/{f['wrong_s']:.1f}"
        )
    return rows, flags, by_split


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks speakers", description=__doc__)
    parser.add_argument("--sdist", type=Path, help=f"{SDIST}.tar.gz or its unpacked folder")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--splits", nargs="+", default=["trn", "dev", "tst"], choices=sorted(SPLITS))
    parser.add_argument("--long-minutes", type=float, default=60.0, help="0: no long-file cost")
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--min-turn", dest="min_turn", type=float)
    parser.add_argument("--bridge", type=float, help="seconds of pause across which speech regions are joined")
    parser.add_argument("--reach", type=float, help="seconds each turn reaches into the silence beside it")
    parser.add_argument("--window", type=float)
    parser.add_argument("--hop", type=float)
    parser.add_argument("--overlap", type=float, help="seconds a second speaker is taken to speak around a change")
    parser.add_argument("--overlap-turn", dest="overlap_turn", type=float)
    parser.add_argument("--doubt-turn", dest="doubt_turn", type=float, help="turns shorter are flagged (seconds)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--cues",
        choices=("stand-in", "whisper"),
        default="stand-in",
        help="whisper: also score the review reason on real cues (the whole pipeline, Whisper base, English)",
    )
    parser.add_argument(
        "--loudness", type=float, nargs="*", default=[-30.0, -20.0], help="dBFS the windows are raised to (AUC rows)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    options = _options(args)
    sdist = find_sdist(args.sdist, args.cache)
    report = report_header("speakers", options.threads, "resemblyzer 0.1.4 voice encoder")
    report["options"] = dataclasses.asdict(options)
    print(f"# speaker labels on the AMI clips of {SDIST} ({cpu_name()}, {options.threads} thread(s))")
    rows, flags, by_split = _der_rows(sdist, args.splits, options)
    all_clips = [clip for split in args.splits for clip in by_split[split]]
    report["der"] = rows
    report["speaker_flag"] = flags
    if args.cues == "whisper":
        from fireredasr_fast.engines.whisper.engine import WhisperEngine, resolve_model_path

        engine = WhisperEngine(resolve_model_path(None, WHISPER_MODEL), language="en", cpu_threads=options.threads)
        report["real_cues"] = _real_cue_rows(by_split, engine, options)
    report["separation_auc"] = {}
    for loudness in args.loudness:
        encoder = ResemblyzerEncoder(target_dbfs=loudness)
        aucs = {split: separation(by_split[split], encoder, options) for split in args.splits}
        report["separation_auc"][loudness] = aucs
        print(f"window pairs, one speaker against two, AUC at {loudness:g} dBFS: {aucs}")
    if args.long_minutes > 0:
        cost = long_file_cost(all_clips, args.long_minutes, options)
        report["long_file"] = cost
        print(
            f"long file: {cost['audio_h']:.2f} h of audio ({cost['speech_h']:.2f} h speech) in {cost['seconds']:.1f} s"
            f" = {cost['s_per_audio_h']:.0f} s per hour; peak RSS +{cost['peak_rss_mib']:.0f} MiB"
            f" (the audio itself: {cost['audio_mib']:.0f} MiB)"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0
