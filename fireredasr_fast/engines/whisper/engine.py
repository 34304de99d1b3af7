"""The Whisper engine: any CTranslate2 Whisper model, run through faster-whisper's model
object but batched over our own VAD segments.

faster-whisper's `WhisperModel.transcribe` runs one file at a time and its
`BatchedInferencePipeline` does its own VAD; here the pipeline has already cut the audio, so
this engine only does what is left: split each segment into <= 30 s pieces at quiet points,
pack short pieces together into 30 s windows (Whisper's fixed input: the encoder costs the same
for 3 s as for 30 s), encode and beam-search a whole batch of windows in one CTranslate2 call,
align the words of the batch in one more call, hand each word back to its piece by time, and
stitch the pieces of each segment back together.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fireredasr_fast.engines import Engine, EngineSpec
from fireredasr_fast.engines.whisper.bundled import (
    DEFAULT_MODELS,
    INSTALL_HINT,
    bundled_installed,
    bundled_model_dir,
    model_dir_for_name,
)
from fireredasr_fast.errors import ModelDirError
from fireredasr_fast.glossary import Glossary
from fireredasr_fast.guard import LOW_CONFIDENCE, REDECODED, degenerate_reasons
from fireredasr_fast.results import SAMPLE_RATE, Hypothesis
from fireredasr_fast.textlines import join_lines

from .options import REDECODE_STEPS, WhisperOptions

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from faster_whisper.tokenizer import Tokenizer

#: Whisper's encoder always sees 30 s (3000 mel frames); longer segments are split.
WINDOW_SECONDS = 30.0
#: A split point is searched for in this last stretch of each window, so that a window is
#: never shorter than 20 s unless the segment itself ends.
SPLIT_SEARCH_SECONDS = 10.0
#: Short pieces share an encoder window (the encoder always costs a full 30 s), separated by
#: this much silence so that the alignment can tell where one ends.
PACK_GAP_SECONDS = 0.5
#: With the language detected (no --language), a segment this long or longer gets a window of
#: its own per piece and its language is read from that window's encoder output, for free;
#: a shorter one is detected on its own first (an extra encoder pass) so that it can share a
#: window with short segments of the same language.
DETECT_ALONE_SECONDS = 20.0
#: A word ending less than this after a piece starts still belongs to the piece before.
WORD_OWNER_MARGIN = 0.05
#: Whisper's own rule for "this window is silence": both conditions must hold.
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0
#: A re-decode writes at most this many tokens per second of window audio (fast Mandarin,
#: ~8 characters a second, takes up to ~2 tokens a character): a loop stops there instead of
#: at Whisper's 448 tokens.
FALLBACK_TOKENS_PER_SECOND = 16
#: Words followed or preceded by these usually border a pause, where the alignment tends to
#: stretch a word over the silence.
_PAUSE_MARKS = frozenset(".,!?;:。，！？；：、")

NO_MODEL_MESSAGE = (
    "no Whisper model: pass --model-dir DIR (a CTranslate2 Whisper model directory), a model name such as "
    f"base or small (downloaded, needs a network), or install the offline models with {INSTALL_HINT}"
)


@dataclass
class _Piece:
    """One <= 30 s piece of an input waveform."""

    source: int  # index of the input waveform
    offset: float  # seconds from the start of that waveform
    audio: np.ndarray
    language: str | None = None  # given or detected; None: detected on its own window when decoded


@dataclass
class _Pack:
    """One encoder window: one or more pieces with PACK_GAP_SECONDS of silence between them."""

    pieces: list[_Piece]
    starts: list[float]  # where each piece starts in the window, seconds
    audio: np.ndarray
    language: str | None = None  # of all its pieces (one language per window); None until detected

    @property
    def speech_seconds(self) -> float:
        """Seconds of audio in its pieces (the gaps between them not counted)."""
        return sum(len(piece.audio) for piece in self.pieces) / SAMPLE_RATE


@dataclass
class _Decoded:
    text: str
    words: list[str]  # with time stamps: as aligned, leading space included
    times: list[tuple[float, float]] | None  # relative to the window
    probs: list[float] | None = None  # one per word: faster-whisper's word probability
    flags: list[str] = field(default_factory=list)  # what the guard found and did


@dataclass
class _PieceResult:
    piece: _Piece
    text: str
    words: list[str]
    times: list[tuple[float, float]] | None  # relative to the piece
    probs: list[float] | None
    flags: list[str]


def resolve_model_path(model_dir: str | None, model_name: str | None) -> str:
    """A local CTranslate2 Whisper directory for --model-dir / --model.

    Order: an explicit directory, then a name (the bundled copy of base or tiny.en when its
    package is installed, else faster-whisper's download), then the first bundled model
    installed (bundled.DEFAULT_MODELS: multilingual base, then tiny.en).
    """
    if model_dir and model_dir == model_name and not Path(model_dir).expanduser().is_dir():
        # A spec whose directory field already holds the resolved value of a model name.
        return model_name
    if model_dir:
        path = Path(model_dir).expanduser()
        if not path.is_dir():
            raise ModelDirError(f"Whisper model directory {model_dir} does not exist")
        if not (path / "model.bin").is_file():
            raise ModelDirError(
                f"{model_dir} is not a CTranslate2 Whisper model (no model.bin); convert one with "
                "ct2-transformers-converter or pass a faster-whisper model name"
            )
        return str(path.resolve())
    if model_name:
        return model_dir_for_name(model_name)
    for name in DEFAULT_MODELS:
        if bundled_installed(name):
            return str(bundled_model_dir(name))
    raise ModelDirError(NO_MODEL_MESSAGE)


def check_language(language: str | None, model: str, multilingual: bool | None) -> str | None:
    """The language to decode in (None: detect it; "auto" says so too); ModelDirError when
    faster-whisper does not know it, or when an English-only model is asked for another
    (`multilingual` None: not known yet, e.g. before the model is loaded)."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES  # what WhisperModel.supported_languages lists

    if language is None or language == "auto":
        return None
    if language not in _LANGUAGE_CODES:
        raise ModelDirError(
            f"unknown Whisper language {language!r}: a code such as en, zh, ja, de, or auto to detect it"
        )
    if multilingual is False and language != "en":
        raise ModelDirError(f"{model} is an English-only Whisper model; language {language!r} needs a multilingual one")
    return language


def split_windows(audio: np.ndarray, max_seconds: float = WINDOW_SECONDS) -> list[tuple[int, int]]:
    """(start, end) sample ranges of at most `max_seconds` covering `audio`, cut at quiet points.

    Each cut is at the lowest short-time energy within the last SPLIT_SEARCH_SECONDS of the
    window, so that a word is rarely cut in half (which would garble it in both windows).
    """
    limit = int(max_seconds * SAMPLE_RATE)
    search = min(int(SPLIT_SEARCH_SECONDS * SAMPLE_RATE), limit // 2)
    frame = SAMPLE_RATE // 50  # 20 ms energy frames
    ranges: list[tuple[int, int]] = []
    start = 0
    total = len(audio)
    while total - start > limit:
        lo = start + limit - search
        n_frames = search // frame
        region = audio[lo : lo + n_frames * frame].astype(np.float32)
        energy = np.square(region).reshape(n_frames, frame).mean(axis=1)
        # Smooth over ~100 ms so that a pause wins over a single quiet frame inside a word.
        smooth = np.convolve(energy, np.ones(5, dtype=np.float32) / 5, mode="same")
        cut = lo + int(np.argmin(smooth)) * frame + frame // 2
        ranges.append((start, cut))
        start = cut
    ranges.append((start, total))
    return ranges


def _avg_logprob(result: Any) -> float:
    """faster-whisper's mean log-probability of a generation result (the end token counted)."""
    length = len(result.sequences_ids[0])
    return float(result.scores[0]) * length / (length + 1)


def pack_lengths(lengths: Sequence[int], limit: int, gap: int) -> list[list[int]]:
    """Group item indices so that each group's lengths plus gaps fit in `limit`.

    First-fit decreasing: near-optimal in the number of groups (encoder windows), and a
    piece that fills a window alone stays alone.
    """
    groups: list[list[int]] = []
    used: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True):
        size = lengths[index]
        for g, total in enumerate(used):
            if total + gap + size <= limit:
                groups[g].append(index)
                used[g] = total + gap + size
                break
        else:
            groups.append([index])
            used.append(size)
    return groups


def tidy_word_times(times: list[tuple[float, float]], words: list[str], duration: float) -> list[tuple[float, float]]:
    """Make word times usable for subtitles: inside [0, duration], non-decreasing, and
    without words stretched over a pause.

    Cross-attention alignment tends to give the first word after a pause (and the last one
    before it) the whole pause; a subtitle cue would then appear seconds early. Such words
    are shortened to twice the median word length.
    """
    out: list[tuple[float, float]] = []
    prev_end = 0.0
    for start, end in times:
        start = min(max(start, prev_end), duration)
        end = min(max(end, start), duration)
        out.append((start, end))
        prev_end = end
    lengths = np.array([e - s for s, e in out])
    lengths = lengths[lengths > 0]
    if len(lengths) == 0:
        return out
    longest = 2 * min(0.7, float(np.median(lengths)))
    for i, (start, end) in enumerate(out):
        if end - start <= longest:
            continue
        after_pause = i == 0 or words[i - 1][-1:] in _PAUSE_MARKS
        before_pause = i == len(out) - 1 or words[i][-1:] in _PAUSE_MARKS
        if after_pause:
            start = end - longest
        elif before_pause:
            end = start + longest
        out[i] = (start, end)
    return out


def _spoken_languages(count: int, pieces: Sequence[tuple[_Piece, str | None]]) -> list[str | None]:
    """Per waveform, the language of most of its pieces' audio (None for a waveform without any)."""
    seconds: list[dict[str, int]] = [{} for _ in range(count)]
    for piece, language in pieces:
        if language is not None:
            seconds[piece.source][language] = seconds[piece.source].get(language, 0) + len(piece.audio)
    return [max(s, key=s.__getitem__) if s else None for s in seconds]


def _encoder_rows(encoder_output: Any, rows: list[int], features: np.ndarray, model: WhisperModel) -> Any:
    """Some rows of a batch's encoder output: sliced on the CPU, encoded again elsewhere (a
    CUDA StorageView has no NumPy view)."""
    import ctranslate2

    if encoder_output.device != "cpu":
        return model.encode(features[rows])
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(encoder_output)[rows]))


def _split_pieces(waveforms: Sequence[np.ndarray]) -> list[_Piece]:
    """Each waveform cut into windows (split_windows), empty ones left out."""
    pieces: list[_Piece] = []
    for i, wave in enumerate(waveforms):
        audio = np.asarray(wave, dtype=np.float32).reshape(-1)
        for start, end in split_windows(audio):
            if end > start:
                pieces.append(_Piece(i, start / SAMPLE_RATE, audio[start:end]))
    return pieces


def _add_piece(hyp: Hypothesis, item: _PieceResult) -> None:
    """A piece's words, times (offset into the waveform), probabilities and flags, appended to
    its waveform's hypothesis."""
    hyp.tokens.extend(item.words)
    if item.times is not None and hyp.token_times is not None:
        offset = item.piece.offset
        hyp.token_times.extend((round(offset + s, 3), round(offset + e, 3)) for s, e in item.times)
    if item.probs is not None:
        hyp.token_confidences = (hyp.token_confidences or []) + item.probs
    hyp.flags.extend(f for f in item.flags if f not in hyp.flags)


class WhisperEngine(Engine):
    """Whisper through CTranslate2, batched over segments.

    Segments longer than 30 s are split internally, so `max_segment_seconds()` stays at the
    pipeline's 60 s: fewer, longer segments mean fewer cuts chosen blindly by the VAD.
    """

    name = "whisper"

    def __init__(
        self, model: str, options: WhisperOptions | None = None, *, device: str = "cpu", **settings: Any
    ) -> None:
        """options: WhisperOptions (or its fields as keywords, cpu_threads=1, ..., which build it once)."""
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise ModelDirError(
                "the whisper engine needs faster-whisper: pip install 'fireredasr-fast[demo]'"
            ) from None
        if options is None:
            options = WhisperOptions.from_mapping(settings)
        elif not isinstance(options, WhisperOptions) or settings:
            raise TypeError("give a WhisperOptions, or its fields as keywords (device= is a keyword)")
        self.options = options
        # int8 is the fastest on CPU at a negligible accuracy cost; CUDA prefers float16.
        self.compute_type = options.compute_type or ("float16" if device.startswith("cuda") else "int8")
        self.model_path = model
        self.device = device
        self.beam_size = options.beam_size
        self.batch_size = options.batch_size
        self.word_timestamps = options.word_timestamps
        self.pack = options.pack
        #: Re-decode degenerate windows with options.REDECODE_STEPS (guard.py).
        self.guard = options.guard
        try:
            # cpu_threads=0 lets CTranslate2 follow OMP_NUM_THREADS, which the worker sets.
            self._model: WhisperModel = WhisperModel(
                model, device=device, compute_type=self.compute_type, cpu_threads=options.cpu_threads
            )
        except (OSError, RuntimeError, ValueError) as exc:
            where = "directory" if os.path.isdir(model) else "name"
            raise ModelDirError(f"cannot load Whisper model {where} {model}: {exc}".splitlines()[0]) from exc
        self.multilingual = bool(self._model.model.is_multilingual)
        language = check_language(options.language, Path(model).name, self.multilingual)
        # An English-only model has no language token: "en" is implied.
        self.language = language if self.multilingual else "en"
        self._tokenizers: dict[str, Tokenizer] = {}
        # The glossary's terms as faster-whisper's `hotwords` prompt, for the call under way.
        self._hotwords: str | None = None
        #: Seconds spent per stage since construction (features, encode, generate, align), so
        #: that benchmarks can say where the time goes.
        self.timings: dict[str, float] = {
            "features": 0.0,
            "encode": 0.0,
            "generate": 0.0,
            "align": 0.0,
            "detect": 0.0,
            "guard": 0.0,
            "fallback": 0.0,
        }
        #: pieces in, encoder windows decoded, windows re-decoded by the guard; pieces of
        #: untrusted packed windows decoded again alone, those of them the window had left
        #: without words, and of those the ones that got words alone (_decode_pieces).
        self.counts: dict[str, int] = dict.fromkeys(
            ("pieces", "windows", "redecoded", "unpacked", "unpacked_empty", "recovered"), 0
        )

    @classmethod
    def from_spec(cls, spec: EngineSpec) -> WhisperEngine:
        model = resolve_model_path(spec.model_dir, spec.model_name)
        return cls(model, spec.options, device=spec.device)

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "model": self.model_path,
            "compute_type": self.compute_type,
            "beam_size": self.beam_size,
            "language": self.language,
            "word_timestamps": self.word_timestamps,
            "pack": self.pack and self.word_timestamps,
            "guard": self.guard,
            "redecode_steps": [list(step) for step in REDECODE_STEPS] if self.guard else [],
        }

    # --- recognition -------------------------------------------------------------------

    def _tokenizer(self, language: str) -> Tokenizer:
        from faster_whisper.tokenizer import Tokenizer

        if language not in self._tokenizers:
            self._tokenizers[language] = Tokenizer(
                self._model.hf_tokenizer, self.multilingual, task="transcribe", language=language
            )
        return self._tokenizers[language]

    def _features(self, windows: Sequence[_Pack]) -> np.ndarray:
        from faster_whisper.audio import pad_or_trim

        # Per window, not per waveform: the log-Mel normalisation uses the window's own maximum,
        # as Whisper was trained. The last frame belongs to the padding, as in faster-whisper.
        feats = [pad_or_trim(self._model.feature_extractor(w.audio)[..., :-1]) for w in windows]
        return np.stack(feats).astype(np.float32)

    def transcribe(self, waveforms: Sequence[np.ndarray], hotwords: Glossary | None = None) -> list[Hypothesis]:
        """With `hotwords`, its terms prompt every window (faster-whisper's `hotwords`: the
        previous-text slot of the prompt; weights do not apply)."""
        self._hotwords = " ".join(term for term, _ in hotwords.terms) if hotwords else None
        try:
            return self._transcribe(waveforms)
        finally:
            self._hotwords = None

    def _transcribe(self, waveforms: Sequence[np.ndarray]) -> list[Hypothesis]:
        pieces = _split_pieces(waveforms)
        languages = self._waveform_languages(waveforms, pieces)
        for piece in pieces:
            piece.language = languages[piece.source]
        self.counts["pieces"] += len(pieces)
        per_piece, spoken = self._decode_pieces(pieces)
        per_piece.sort(key=lambda item: (item.piece.source, item.piece.offset))
        languages = _spoken_languages(len(waveforms), spoken)
        hyps = [
            Hypothesis(text="", token_times=[] if self.word_timestamps else None, language=languages[i])
            for i in range(len(waveforms))
        ]
        texts: list[list[str]] = [[] for _ in waveforms]
        for item in per_piece:
            texts[item.piece.source].append(item.text)
            _add_piece(hyps[item.piece.source], item)
        for hyp, parts in zip(hyps, texts, strict=True):
            hyp.text = join_lines(parts)
            if hyp.token_confidences is not None and len(hyp.token_confidences) != len(hyp.tokens):
                hyp.token_confidences = None  # a piece without word probabilities
            if hyp.token_confidences:
                hyp.confidence = float(np.mean(hyp.token_confidences))
        return hyps

    def _decode_packs(self, packs: Sequence[_Pack]) -> list[_Decoded]:
        self.counts["windows"] += len(packs)
        decoded: list[_Decoded] = []
        for b in range(0, len(packs), self.batch_size):
            decoded.extend(self._decode_batch(packs[b : b + self.batch_size]))
        return decoded

    def _decode_pieces(self, pieces: Sequence[_Piece]) -> tuple[list[_PieceResult], list[tuple[_Piece, str | None]]]:
        """Every piece's words (packed where it may be), and each piece with its window's language.

        A packed window in which any piece came back without words is not trusted at all: the
        decoder wrote fewer utterances than the window holds (it stops early, or repeats one,
        and the alignment then spreads what it wrote over the wrong pieces; Whisper's
        no-speech rule also empties the whole window). Its pieces are decoded again, each
        in a window of its own, as without packing (docs/benchmarks.md, "Nothing lost")."""
        packs = self._make_packs(pieces)
        per_piece: list[_PieceResult] = []
        spoken: list[tuple[_Piece, str | None]] = []
        alone: list[_Piece] = []
        empty: set[int] = set()  # id() of pieces a packed window left without words
        for pack, result in zip(packs, self._decode_packs(packs), strict=True):
            items = self._unpack(pack, result)
            if len(items) > 1 and any(not item.words for item in items):
                alone.extend(pack.pieces)
                empty.update(id(item.piece) for item in items if not item.words)
                continue
            per_piece.extend(items)
            spoken.extend((piece, pack.language) for piece in pack.pieces)
        if alone:
            self.counts["unpacked"] += len(alone)
            self.counts["unpacked_empty"] += len(empty)
            singles = [_Pack([p], [0.0], p.audio, p.language) for p in alone]
            for pack, result in zip(singles, self._decode_packs(singles), strict=True):
                (item,) = self._unpack(pack, result)
                self.counts["recovered"] += bool(item.words) and id(item.piece) in empty
                per_piece.append(item)
                spoken.append((item.piece, pack.language))
        return per_piece, spoken

    def _waveform_languages(self, waveforms: Sequence[np.ndarray], pieces: Sequence[_Piece]) -> list[str | None]:
        """Each waveform's language when it is known before decoding: the one given (or "en"
        for an English-only model), else, for a waveform shorter than DETECT_ALONE_SECONDS,
        detected on it alone (an extra encoder pass, which keeps languages apart: a window of
        pieces in two languages would be decoded in one of them). None for a longer one: its
        pieces get windows of their own, detected when decoded."""
        if self.language is not None:
            return [self.language] * len(waveforms)
        # A waveform this short is one piece.
        short = {p.source: p for p in pieces if len(waveforms[p.source]) < DETECT_ALONE_SECONDS * SAMPLE_RATE}
        order = sorted(short)
        t0 = time.perf_counter()
        detected: list[str] = []
        for b in range(0, len(order), self.batch_size):
            windows = [_Pack([], [0.0], short[i].audio) for i in order[b : b + self.batch_size]]
            detected.extend(self._detect(self._model.encode(self._features(windows))))
        self.timings["detect"] += time.perf_counter() - t0
        by_source = dict(zip(order, detected, strict=True))
        return [by_source.get(i) for i in range(len(waveforms))]

    def _detect(self, encoder_output: Any) -> list[str]:
        """The most likely language of each encoded window."""
        return [probs[0][0][2:-2] for probs in self._model.model.detect_language(encoder_output)]  # <|zh|> -> zh

    def _window_languages(self, windows: Sequence[_Pack], encoder_output: Any) -> list[str]:
        """The language of each window of a batch: its pieces', or detected from the encoder
        output already computed (a window of one piece of a long segment); recorded on the window."""
        unknown = [i for i, w in enumerate(windows) if w.language is None]
        if unknown:
            t0 = time.perf_counter()
            found = self._detect(encoder_output)
            self.timings["detect"] += time.perf_counter() - t0
            for i in unknown:
                windows[i].language = found[i]
        return [w.language or "en" for w in windows]

    def _make_packs(self, pieces: Sequence[_Piece]) -> list[_Pack]:
        # Packing needs word times to hand each word back to its piece.
        if not (self.pack and self.word_timestamps):
            return [_Pack([p], [0.0], p.audio, p.language) for p in pieces]
        packs: list[_Pack] = []
        by_language: dict[str | None, list[_Piece]] = {}
        for piece in pieces:
            by_language.setdefault(piece.language, []).append(piece)
        for language, group in by_language.items():
            if language is None:  # not detected yet: alone, to be detected on its own window
                packs.extend(_Pack([p], [0.0], p.audio) for p in group)
            else:
                packs.extend(self._pack_group(group))
        return packs

    def _pack_group(self, pieces: Sequence[_Piece]) -> list[_Pack]:
        """Pieces of one language in as few windows as they fit."""
        gap = np.zeros(int(PACK_GAP_SECONDS * SAMPLE_RATE), dtype=np.float32)
        packs: list[_Pack] = []
        for members in pack_lengths([len(p.audio) for p in pieces], int(WINDOW_SECONDS * SAMPLE_RATE), len(gap)):
            chunks: list[np.ndarray] = []
            starts: list[float] = []
            position = 0
            for k, index in enumerate(members):
                if k:
                    chunks.append(gap)
                    position += len(gap)
                starts.append(position / SAMPLE_RATE)
                chunks.append(pieces[index].audio)
                position += len(pieces[index].audio)
            audio = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
            packs.append(_Pack([pieces[i] for i in members], starts, audio, pieces[members[0]].language))
        return packs

    def _unpack(self, pack: _Pack, result: _Decoded) -> list[_PieceResult]:
        """Split a pack's words among its pieces by time, with times relative to each piece.

        The guard's flags go to every piece of the window (the window was decoded as one)."""
        if result.times is None:
            (piece,) = pack.pieces
            return [_PieceResult(piece, result.text, result.text.split(), None, None, list(result.flags))]
        owned: list[list[int]] = [[] for _ in pack.pieces]
        for w, (_start, end) in enumerate(result.times):
            # A word belongs to the last piece that starts before it ends: the first word of a
            # piece may be stretched back over the gap, its end stays inside its own piece.
            k = 0
            while k + 1 < len(pack.starts) and end > pack.starts[k + 1] + WORD_OWNER_MARGIN:
                k += 1
            owned[k].append(w)
        out: list[_PieceResult] = []
        for piece, start, members in zip(pack.pieces, pack.starts, owned, strict=True):
            raw_words = [result.words[w] for w in members]
            piece_words = [w.strip() for w in raw_words]
            relative = [(result.times[w][0] - start, result.times[w][1] - start) for w in members]
            duration = len(piece.audio) / SAMPLE_RATE
            text = "".join(raw_words).strip()
            probs = [result.probs[w] for w in members] if result.probs is not None else None
            times = tidy_word_times(relative, piece_words, duration)
            out.append(_PieceResult(piece, text, piece_words, times, probs, list(result.flags)))
        return out

    def _decode_batch(self, windows: Sequence[_Pack]) -> list[_Decoded]:
        from faster_whisper.transcribe import get_suppressed_tokens

        model = self._model
        t0 = time.perf_counter()
        features = self._features(windows)
        t1 = time.perf_counter()
        encoder_output = model.encode(features)
        t2 = time.perf_counter()
        self.timings["features"] += t1 - t0
        self.timings["encode"] += t2 - t1

        languages = self._window_languages(windows, encoder_output)

        prompts: list[list[int]] = []
        for lang in languages:
            tok = self._tokenizer(lang)
            # No timestamp tokens: window times come from our cuts and word times from the
            # alignment, and timestamp mode makes the tiny models skip words more often.
            prompts.append(model.get_prompt(tok, [], without_timestamps=True, hotwords=self._hotwords))
        first = self._tokenizer(languages[0])
        results = model.model.generate(
            encoder_output,
            prompts,
            beam_size=self.beam_size,
            max_length=model.max_length,
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(first, [-1])),
            return_scores=True,
            return_no_speech_prob=True,
        )
        self.timings["generate"] += time.perf_counter() - t2

        token_lists: list[list[int]] = []
        flags: list[list[str]] = []
        for i, (result, lang) in enumerate(zip(results, languages, strict=True)):
            tok = self._tokenizer(lang)
            ids = [t for t in result.sequences_ids[0] if t < tok.eot]
            # Whisper's silence rule: a confident "no speech" and an unconvincing text.
            avg_logprob = _avg_logprob(result)
            silence = result.no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOG_PROB_THRESHOLD
            if silence:
                ids = []
            g0 = time.perf_counter()
            reasons = [] if silence or not self.guard else self._degenerate(windows[i], tok.decode(ids), avg_logprob)
            self.timings["guard"] += time.perf_counter() - g0
            if reasons:
                ids = self._redecode(features[i : i + 1], prompts[i], windows[i], tok)
                reasons.append(REDECODED)
            token_lists.append(ids)
            flags.append(reasons)

        out = [
            _Decoded(self._tokenizer(lang).decode(ids).strip(), [], None, None, window_flags)
            for lang, ids, window_flags in zip(languages, token_lists, flags, strict=True)
        ]
        if not self.word_timestamps:
            for d in out:
                d.words = d.text.split()
            return out
        t3 = time.perf_counter()
        self._align(windows, features, encoder_output, languages, token_lists, out)
        self.timings["align"] += time.perf_counter() - t3
        return out

    @staticmethod
    def _degenerate(window: _Pack, text: str, avg_logprob: float) -> list[str]:
        """The guard's reasons to re-decode a window (guard.py), with faster-whisper's
        log-probability rule standing for "very low confidence"."""
        reasons = degenerate_reasons(text, window.speech_seconds)
        if avg_logprob < LOG_PROB_THRESHOLD:
            reasons.append(LOW_CONFIDENCE)
        return reasons

    def _redecode(self, features: np.ndarray, prompt: list[int], window: _Pack, tok: Tokenizer) -> list[int]:
        """One window again with beam search under options.REDECODE_STEPS, each stricter about
        repeats, until the text passes the guard's checks and the log-probability rule; else the
        first that passes the checks, else the strictest. Deterministic: no sampling."""
        from faster_whisper.transcribe import get_suppressed_tokens

        model = self._model
        max_new = min(model.max_length - len(prompt), math.ceil(FALLBACK_TOKENS_PER_SECOND * window.speech_seconds) + 4)
        self.counts["redecoded"] += 1
        t0 = time.perf_counter()
        # The batch's encoder output cannot be sliced per window on every device: encode again
        # (one window, only for degenerate ones).
        encoder_output = model.encode(features)
        tries: list[tuple[list[int], list[str]]] = []
        for repetition_penalty, no_repeat_ngram_size in REDECODE_STEPS:
            result = model.model.generate(
                encoder_output,
                [prompt],
                beam_size=self.beam_size,
                max_length=len(prompt) + max_new,
                repetition_penalty=repetition_penalty,
                no_repeat_ngram_size=no_repeat_ngram_size,
                suppress_blank=True,
                suppress_tokens=list(get_suppressed_tokens(tok, [-1])),
                return_scores=True,
            )[0]
            ids = [t for t in result.sequences_ids[0] if t < tok.eot]
            avg_logprob = _avg_logprob(result)
            reasons = self._degenerate(window, tok.decode(ids), avg_logprob)
            if not reasons:
                break
            tries.append((ids, reasons))
        else:
            # None passed everything: the first with plausible text (only unsure), else the
            # strictest, which the pipeline's guard cuts or drops (guard_hypothesis).
            ids = next((t for t, r in tries if r == [LOW_CONFIDENCE]), tries[-1][0])
        self.timings["fallback"] += time.perf_counter() - t0
        return ids

    def _align(
        self,
        windows: Sequence[_Pack],
        features: np.ndarray,
        encoder_output: Any,
        languages: list[str],
        token_lists: list[list[int]],
        out: list[_Decoded],
    ) -> None:
        """Word times for a batch, one CTranslate2 align call per language in the batch."""
        from faster_whisper.transcribe import merge_punctuations

        model = self._model
        groups: dict[str, list[int]] = {}
        for i, lang in enumerate(languages):
            groups.setdefault(lang, []).append(i)
        for lang, members in groups.items():
            tok = self._tokenizer(lang)
            # The alignment prompt carries the language token, so each language is aligned on
            # its own, on its rows of the encoder output.
            enc = encoder_output if len(groups) == 1 else _encoder_rows(encoder_output, members, features, model)
            frames = [min(math.ceil(len(windows[i].audio) / model.feature_extractor.hop_length), 3000) for i in members]
            alignments = model.find_alignment(tok, [token_lists[i] for i in members], enc, frames)
            for i, alignment in zip(members, alignments, strict=True):
                merge_punctuations(alignment, "\"'“¿([{-", "\"'.。,，!！?？:：”)]}、")
                kept = [w for w in alignment if w["word"].strip()]
                # Words keep their leading space: joining them rebuilds each piece's text.
                out[i].words = [w["word"] for w in kept]
                out[i].times = [(float(w["start"]), float(w["end"])) for w in kept]
                out[i].probs = [float(w["probability"]) for w in kept]
