"""Who speaks when (`--speakers auto|N`): speaker turns over the VAD's speech regions.

Offline, with no model download: Resemblyzer's voice encoder (PyPI `resemblyzer`, Apache-2.0,
its `pretrained.pt`: a 3-layer LSTM over 40-band mel frames -> a 256-dim unit vector) run by our
own small torch module and mel front end, so its package's librosa/webrtcvad are not needed
(`pip install --no-deps resemblyzer==0.1.4`). Any other embedding model plugs in behind
`Embedder`.

The steps: speech regions closer than `bridge` seconds are joined; fixed windows (`window`
seconds every `hop` seconds) inside each region are embedded in batches, streaming (only the
embeddings are kept: 1 KB per window). For clustering (only the windows of regions at least
`min_region` long) each window's vector is averaged with
`context` neighbours on each side (more speech per vector tells speakers apart better); windows
are merged with their most similar neighbour until at most `max_units` units remain (bounded
time and memory on a multi-hour file), and the units are clustered agglomeratively (average
linkage on cosine distance; cut at `threshold` for "auto", or into N clusters). Each window then
joins the centroid nearest its own vector, so a speaker change inside a long region falls
between two windows; turns shorter than `min_turn` between speech of one other speaker are
absorbed, and each turn reaches `reach` seconds into the silence on each side (never past
halfway to the next turn). Around a change between two long turns both speakers are taken to
speak for a while (overlap_turns: the JSON's `speaker_overlaps`; segments, words and cues keep
the one speaker of the turn), and cues in a very short turn go to the review list
(flag_doubtful_cues). Figures: docs/benchmarks.md, "Speaker labels".
"""

from __future__ import annotations

import argparse
import functools
import heapq
import importlib.util
import itertools
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import ModelDirError, OptionError, check_number
from .flags import SPEAKERS, section
from .results import SAMPLE_RATE, Cue, Turn

# The review list's reason for a cue whose speaker label is doubtful (flag_doubtful_cues).
DOUBTFUL_SPEAKER = "speaker"


@dataclass(frozen=True)
class SpeakerTurn:
    """Who speaks when, in seconds of the file."""

    start: float
    end: float
    speaker: str  # "S1", "S2", ... numbered by first appearance


@dataclass(frozen=True)
class SpeakerOptions:
    speakers: str | int = "auto"  # "auto" (estimated) or the number of speakers, >= 1
    window: float = 1.6  # seconds of audio per embedding (Resemblyzer's partial utterance)
    hop: float = 0.8  # seconds between window starts inside a speech region
    # "auto": clusters whose average cosine similarity is below this stay apart.
    threshold: float = 0.7
    max_speakers: int = 8  # "auto" never finds more
    # A turn shorter than this, between turns of one other speaker, joins them.
    min_turn: float = 1.0
    # A cluster holding less speech than this (seconds) is merged into its nearest ("auto").
    min_speaker: float = 2.0
    # Speech regions closer than this (seconds) are embedded and labelled as one. Off: a change
    # of speaker mostly falls in a pause, and joined regions blur it (docs/benchmarks.md).
    bridge: float = 0.0
    # Each turn reaches this far (seconds) into the silence beside it, up to halfway to the
    # next turn: the VAD's regions stop short of the quiet speech at their edges.
    reach: float = 0.3
    # Neighbouring windows (each side, same region) averaged into each window's vector.
    context: int = 1
    # The windows of speech regions shorter than this (seconds) take a speaker from the clusters
    # but do not shape them: such a window is mostly the audio around its speech (one window's
    # length; docs/benchmarks.md).
    min_region: float = 1.6
    # At a change between touching turns of two speakers that both last at least
    # `overlap_turn` seconds, each is also said to speak up to `overlap` seconds into the
    # other's turn (overlap_turns): people talk over each other most where the floor changes.
    # Short turns are left out: they are mostly labels gone wrong (docs/benchmarks.md). 0: none.
    overlap: float = 2.0
    overlap_turn: float = 3.0
    # Cues in a turn shorter than this (seconds) go to the review list, reason `speaker`: short
    # turns hold most of the wrong labels (docs/benchmarks.md). 0: never.
    doubt_turn: float = 1.5
    max_units: int = 1500  # windows are merged with neighbours down to this many before clustering
    batch: int = 64  # windows per encoder call
    threads: int = 1  # torch threads while embedding

    def __post_init__(self) -> None:
        if self.speakers != "auto":
            try:
                check_number("speakers", self.speakers, 1, integer=True)
            except OptionError:
                raise OptionError("speakers", f"must be 'auto' or an integer >= 1, not {self.speakers!r}") from None
        check_number("window", self.window, 0.5, 10.0)
        check_number("hop", self.hop, 0.1, self.window)
        check_number("threshold", self.threshold, -1.0, 1.0)
        check_number("max_speakers", self.max_speakers, 1, integer=True)
        check_number("min_turn", self.min_turn, 0.0)
        check_number("min_speaker", self.min_speaker, 0.0)
        check_number("bridge", self.bridge, 0.0)
        check_number("reach", self.reach, 0.0)
        check_number("context", self.context, 0, 10, integer=True)
        for name in ("min_region", "overlap", "overlap_turn", "doubt_turn"):
            check_number(name, getattr(self, name), 0.0)
        check_number("max_units", self.max_units, 2, integer=True)
        check_number("batch", self.batch, 1, integer=True)
        check_number("threads", self.threads, 1, integer=True)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        section(parser, SPEAKERS).add_argument(
            "--speakers",
            type=speakers_flag,
            default=None,
            help="label who speaks: auto (the number of speakers estimated) or N; cues never span two speakers "
            "(JSON speaker, VTT <v S1>, ASS Name, TXT 'S1: ' at each change; default: off)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SpeakerOptions | None:
        """None when --speakers is not given (labels off)."""
        return None if args.speakers is None else cls(speakers=args.speakers)


def speakers_flag(value: str) -> str | int:
    """--speakers' value: `auto`, or a number (SpeakerOptions checks it; other text is left for it to refuse)."""
    return int(value) if value.strip().lstrip("-").isdigit() else value


class Embedder(Protocol):
    """A speaker-embedding model: float32 windows (n, samples) at 16 kHz in [-1, 1] -> (n, dim)."""

    def embed(self, windows: np.ndarray) -> np.ndarray: ...


# --------------------------------------------------------------------------- Resemblyzer

MEL_BANDS = 40
FFT_SIZE = 400  # 25 ms
FFT_HOP = 160  # 10 ms
# Each window's volume is raised to this RMS level, never lowered. Resemblyzer trained at -30;
# on far-field meetings -20 separates speakers better (docs/benchmarks.md, "Speaker labels").
TARGET_DBFS = -20.0


def resemblyzer_weights() -> Path:
    """`pretrained.pt` of the installed `resemblyzer` package, found without importing it."""
    spec = importlib.util.find_spec("resemblyzer")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "pretrained.pt"
        if path.is_file():
            return path
    raise ModelDirError("speaker labels need Resemblyzer's voice encoder: pip install --no-deps resemblyzer==0.1.4")


def mel_filters(bands: int = MEL_BANDS, n_fft: int = FFT_SIZE, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Slaney-style mel filterbank (bands, n_fft // 2 + 1), as librosa builds it by default."""

    def hz_to_mel(hz: np.ndarray) -> np.ndarray:
        linear = hz / (200.0 / 3)
        log = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(hz >= 1000.0, log, linear)

    def mel_to_hz(mel: np.ndarray) -> np.ndarray:
        linear = mel * (200.0 / 3)
        log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
        return np.where(mel >= 15.0, log, linear)

    fft_hz = np.linspace(0, rate / 2, n_fft // 2 + 1)
    mel_hz = mel_to_hz(np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(rate / 2.0)), bands + 2))
    gaps = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / gaps[:-1, None]
    upper = ramps[2:] / gaps[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]
    return weights.astype(np.float32)


def _torch_encoder(weights: Path) -> Any:
    import torch

    class VoiceEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(MEL_BANDS, 256, 3, batch_first=True)
            self.linear = torch.nn.Linear(256, 256)

        def forward(self, mels: torch.Tensor) -> torch.Tensor:
            _, (hidden, _) = self.lstm(mels)
            raw = torch.relu(self.linear(hidden[-1]))
            return raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)

    state = torch.load(weights, map_location="cpu", weights_only=True)["model_state"]
    model = VoiceEncoder()
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("similarity_")})
    return model.eval()


class ResemblyzerEncoder:
    """Resemblyzer's voice encoder: mel power frames (not log) of volume-normalised audio."""

    def __init__(self, weights: Path | None = None, target_dbfs: float = TARGET_DBFS) -> None:
        import torch

        self.target_dbfs = target_dbfs
        self._model = _torch_encoder(weights or resemblyzer_weights())
        self._mel = torch.from_numpy(mel_filters())
        self._window = torch.hann_window(FFT_SIZE, periodic=True)

    def mels(self, windows: np.ndarray) -> Any:
        """(n, samples) float32 -> (n, frames, 40) mel power frames, centred, zero-padded."""
        import torch

        audio = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        spec = torch.stft(
            audio, FFT_SIZE, FFT_HOP, window=self._window, center=True, pad_mode="constant", return_complex=True
        )
        return (self._mel @ spec.abs().square()).transpose(1, 2)

    def embed(self, windows: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self._model(self.mels(normalize_volume(windows, self.target_dbfs))).numpy()


def normalize_volume(windows: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Each row's volume raised to `target_dbfs` (RMS), never lowered (Resemblyzer's rule)."""
    rms = np.sqrt(np.mean(np.square(windows, dtype=np.float64), axis=1, keepdims=True))
    gain = np.clip(10 ** (target_dbfs / 20) / np.maximum(rms, 1e-9), 1.0, None)
    return (windows * gain).astype(np.float32)


@functools.lru_cache(maxsize=1)
def default_embedder() -> Embedder:
    return ResemblyzerEncoder()


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Windows:
    """One embedding per window: `region` index, `center` (s), and the span it labels."""

    vectors: np.ndarray  # (n, dim) unit rows
    region: np.ndarray  # (n,) int
    start: np.ndarray  # (n,) seconds: the part of its region this window labels
    end: np.ndarray


def _window_spans(region: tuple[float, float], options: SpeakerOptions) -> list[tuple[float, float, float]]:
    """(window start, label start, label end) for one region: windows every `hop`, the last
    one ending at the region's end; each labels the region up to halfway to its neighbours."""
    start, end = region
    if end - start <= options.window:
        middle = (start + end) / 2
        return [(middle - options.window / 2, start, end)]
    count = int(np.ceil((end - start - options.window) / options.hop)) + 1
    starts = np.linspace(start, end - options.window, count)
    centers = starts + options.window / 2
    bounds = [start, *((centers[:-1] + centers[1:]) / 2).tolist(), end]
    return [(float(s), bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


def _cut(samples: np.ndarray, start: float, length: int) -> np.ndarray:
    first = round(start * SAMPLE_RATE)
    piece = np.zeros(length, dtype=np.float32)
    lo, hi = max(first, 0), min(first + length, len(samples))
    if hi > lo:
        piece[lo - first : hi - first] = samples[lo:hi].astype(np.float32) / 32768.0
    return piece


def _batches(
    samples: np.ndarray, regions: Sequence[tuple[float, float]], options: SpeakerOptions
) -> Iterator[tuple[np.ndarray, list[tuple[int, float, float]]]]:
    """Windows of audio in batches, with (region, label start, label end) for each."""
    length = round(options.window * SAMPLE_RATE)
    audio: list[np.ndarray] = []
    spans: list[tuple[int, float, float]] = []
    for index, region in enumerate(regions):
        for start, label_start, label_end in _window_spans(region, options):
            audio.append(_cut(samples, start, length))
            spans.append((index, label_start, label_end))
            if len(audio) == options.batch:
                yield np.stack(audio), spans
                audio, spans = [], []
    if audio:
        yield np.stack(audio), spans


# torch's thread count is the process's: files embedded at once in several threads (the
# runner's front end) take turns, so each runs with its own count and the count before is restored.
_TORCH_THREADS = threading.Lock()


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    import torch

    with _TORCH_THREADS:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def embed_windows(
    samples: np.ndarray, regions: Sequence[tuple[float, float]], options: SpeakerOptions, embedder: Embedder
) -> Windows:
    vectors: list[np.ndarray] = []
    spans: list[tuple[int, float, float]] = []
    with _torch_threads(options.threads):
        for audio, batch_spans in _batches(samples, regions, options):
            vectors.append(_unit(np.asarray(embedder.embed(audio), dtype=np.float32)))
            spans += batch_spans
    table = np.array(spans, dtype=np.float64).reshape(-1, 3)
    return Windows(np.concatenate(vectors), table[:, 0].astype(int), table[:, 1], table[:, 2])


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


# --------------------------------------------------------------------------- clustering


def merge_neighbours(vectors: np.ndarray, weights: np.ndarray, limit: int) -> np.ndarray:
    """Unit index of each row after merging the most similar neighbouring rows (in time order)
    until at most `limit` units remain: O(n log n), so a 3-hour file clusters a bounded set."""
    n = len(vectors)
    if n <= limit:
        return np.arange(n)
    sums = vectors * weights[:, None]
    alive = np.ones(n, dtype=bool)
    nxt, prv = np.arange(1, n + 1), np.arange(-1, n - 1)
    version = np.zeros(n, dtype=int)
    heap = [(-_cosine(sums[i], sums[i + 1]), i, 0, 0) for i in range(n - 1)]
    heapq.heapify(heap)
    owner = np.arange(n)
    count = n
    while count > limit and heap:
        _, left, v_left, v_right = heapq.heappop(heap)
        right = nxt[left]
        if not alive[left] or right >= n or version[left] != v_left or version[right] != v_right:
            continue
        sums[left] += sums[right]
        alive[right] = False
        owner[right] = left
        nxt[left] = nxt[right]
        if nxt[left] < n:
            prv[nxt[left]] = left
        version[left] += 1
        count -= 1
        for a in (prv[left], left):
            b = nxt[a] if a >= 0 else n
            if a >= 0 and b < n:
                heapq.heappush(heap, (-_cosine(sums[a], sums[b]), a, version[a], version[b]))
    while not np.array_equal(owner, owner[owner]):
        owner = owner[owner]
    return np.unique(owner, return_inverse=True)[1]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def cluster_units(vectors: np.ndarray, seconds: np.ndarray, options: SpeakerOptions) -> np.ndarray:
    """Cluster label of each unit: average linkage on cosine distance, cut at the threshold
    ("auto") or into the given number of speakers."""
    from scipy.cluster.hierarchy import fcluster, linkage

    if len(vectors) == 1:
        return np.zeros(1, dtype=int)
    tree = linkage(_unit(vectors), method="average", metric="cosine")
    if options.speakers != "auto":
        return _given_count(tree, vectors, seconds, int(options.speakers), options.min_speaker)
    labels = fcluster(tree, t=1.0 - options.threshold, criterion="distance") - 1
    if labels.max() + 1 > options.max_speakers:
        labels = fcluster(tree, t=options.max_speakers, criterion="maxclust") - 1
    return _drop_small(labels, vectors, seconds, options.min_speaker)


def _given_count(tree: np.ndarray, vectors: np.ndarray, seconds: np.ndarray, count: int, least: float) -> np.ndarray:
    """`count` clusters: the tree cut into the fewest clusters of which `count` hold at least
    `least` seconds (a cut at `count` alone spends clusters on single odd windows); the largest
    `count` are kept and the rest join the nearest of them."""
    from scipy.cluster.hierarchy import fcluster

    count = min(count, len(vectors))
    for k in range(count, len(vectors) + 1):
        labels = fcluster(tree, t=k, criterion="maxclust") - 1
        totals = np.bincount(labels, weights=seconds)
        if np.count_nonzero(totals >= least) >= count:
            break
    keep = np.argsort(-totals, kind="stable")[:count]
    centroids = _centroids(vectors, labels, np.ones(len(vectors)))
    return keep[np.argmax(centroids @ centroids[keep].T, axis=1)][labels]


def _centroids(vectors: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    count = int(labels.max()) + 1
    sums = np.zeros((count, vectors.shape[1]))
    np.add.at(sums, labels, vectors * weights[:, None])
    return _unit(sums)


def _drop_small(labels: np.ndarray, vectors: np.ndarray, seconds: np.ndarray, least: float) -> np.ndarray:
    """Clusters with less than `least` seconds of speech join their nearest larger cluster."""
    totals = np.bincount(labels, weights=seconds)
    keep = np.flatnonzero(totals >= least)
    if len(keep) == 0 or len(keep) == len(totals):
        return labels
    centroids = _centroids(vectors, labels, np.ones(len(vectors)))
    return keep[np.argmax(centroids @ centroids[keep].T, axis=1)][labels]


def _in_context(windows: Windows, context: int) -> np.ndarray:
    """Each window's vector averaged with up to `context` neighbours on each side in its region:
    longer speech per vector separates speakers better; the change still falls between windows."""
    if context == 0:
        return windows.vectors
    total = np.zeros_like(windows.vectors)
    for shift in range(-context, context + 1):
        index = np.clip(np.arange(len(windows.vectors)) + shift, 0, len(windows.vectors) - 1)
        same = windows.region[index] == windows.region
        total += windows.vectors[index] * same[:, None]
    return _unit(total)


def assign(windows: Windows, options: SpeakerOptions) -> np.ndarray:
    """A cluster per window: the units of the windows of regions at least `min_region` long
    clustered, then each window to the nearest centroid."""
    core = _core(windows, options.min_region)
    seconds = core.end - core.start
    vectors = _in_context(core, options.context)
    owner = merge_neighbours(vectors, seconds, options.max_units)
    unit_vectors = np.zeros((int(owner.max()) + 1, vectors.shape[1]))
    np.add.at(unit_vectors, owner, vectors * seconds[:, None])
    unit_seconds = np.bincount(owner, weights=seconds)
    labels = cluster_units(unit_vectors, unit_seconds, options)[owner]
    labels = np.unique(labels, return_inverse=True)[1]
    # Each window's own vector picks its speaker: the context blurs where a change falls.
    centroids = _centroids(core.vectors, labels, seconds)
    return np.argmax(windows.vectors @ centroids.T, axis=1)


def _core(windows: Windows, least: float) -> Windows:
    """The windows of regions at least `least` seconds long (all of them when fewer than two
    are): a window centred on a shorter region is mostly the audio around its speech."""
    spans = windows.end - windows.start
    region_seconds = np.bincount(windows.region, weights=spans)[windows.region]
    keep = region_seconds >= least - 1e-9
    if keep.all() or keep.sum() < 2:
        return windows
    return Windows(windows.vectors[keep], windows.region[keep], windows.start[keep], windows.end[keep])


# --------------------------------------------------------------------------- turns


def _raw_turns(windows: Windows, labels: np.ndarray) -> list[list[Any]]:
    """[start, end, label] runs: neighbouring windows of one cluster in one region joined."""
    turns: list[list[Any]] = []
    for i, label in enumerate(labels.tolist()):
        same_region = i > 0 and windows.region[i] == windows.region[i - 1]
        if turns and same_region and turns[-1][2] == label:
            turns[-1][1] = float(windows.end[i])
        else:
            turns.append([float(windows.start[i]), float(windows.end[i]), label])
    return turns


def smooth(turns: list[list[Any]], min_turn: float) -> list[list[Any]]:
    """A turn shorter than `min_turn` whose neighbours (touching it) are one speaker becomes
    theirs, the shortest first; touching turns of one speaker are then joined."""
    turns = [list(t) for t in turns]
    while True:
        flips = [
            i
            for i in range(1, len(turns) - 1)
            if turns[i][1] - turns[i][0] < min_turn
            and turns[i - 1][2] == turns[i + 1][2] != turns[i][2]
            and turns[i - 1][1] >= turns[i][0] - 1e-6
            and turns[i + 1][0] <= turns[i][1] + 1e-6
        ]
        if not flips:
            return turns
        i = min(flips, key=lambda k: turns[k][1] - turns[k][0])
        turns[i - 1 : i + 2] = [[turns[i - 1][0], turns[i + 1][1], turns[i - 1][2]]]


def extend_turns(turns: list[SpeakerTurn], duration: float, reach: float) -> list[SpeakerTurn]:
    """Each turn stretched up to `reach` seconds into the silence on each side, never past the
    middle of the gap to its neighbour nor the file's ends; touching turns of one speaker join."""
    if reach <= 0 or not turns:
        return turns
    out: list[SpeakerTurn] = []
    for i, turn in enumerate(turns):
        before = turns[i - 1].end if i > 0 else -reach
        after = turns[i + 1].start if i + 1 < len(turns) else duration + reach
        start = max(turn.start - reach, (before + turn.start) / 2, 0.0)
        end = min(turn.end + reach, (turn.end + after) / 2, duration)
        if out and out[-1].speaker == turn.speaker and out[-1].end >= start - 1e-9:
            out[-1] = SpeakerTurn(out[-1].start, round(end, 3), turn.speaker)
        else:
            out.append(SpeakerTurn(round(start, 3), round(end, 3), turn.speaker))
    return out


def _clean_regions(
    regions: Sequence[tuple[float, float]], duration: float, bridge: float = 0.0
) -> list[tuple[float, float]]:
    """Sorted, inside the file, empty ones dropped, those overlapping or closer than `bridge` joined."""
    out: list[list[float]] = []
    for start, end in sorted((max(0.0, float(s)), min(duration, float(e))) for s, e in regions):
        if end <= start:
            continue
        if out and start <= out[-1][1] + bridge:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


def find_speakers(
    samples: np.ndarray,
    regions: Sequence[tuple[float, float]],
    options: SpeakerOptions = SpeakerOptions(),
    embedder: Embedder | None = None,
) -> list[SpeakerTurn]:
    """Speaker turns covering `regions` (speech, seconds) of `samples` (int16 mono 16 kHz), the
    pauses shorter than `options.bridge` between them and up to `options.reach` seconds around
    them: sorted, non-overlapping, speakers named S1, S2, ... by first appearance."""
    duration = len(samples) / SAMPLE_RATE
    regions = _clean_regions(regions, duration, options.bridge)
    if not regions:
        return []
    windows = embed_windows(samples, regions, options, embedder or default_embedder())
    return extend_turns(label_windows(windows, options), duration, options.reach)


def label_windows(windows: Windows, options: SpeakerOptions) -> list[SpeakerTurn]:
    """Turns from embedded windows (the clustering half of find_speakers)."""
    turns = smooth(_raw_turns(windows, assign(windows, options)), options.min_turn)
    names: dict[int, str] = {}
    for turn in turns:
        names.setdefault(turn[2], f"S{len(names) + 1}")
    rounded = [SpeakerTurn(round(s, 3), round(e, 3), names[label]) for s, e, label in turns]
    return [turn for turn in rounded if turn.end > turn.start]


# --------------------------------------------------------------------------- overlaps, doubts


def overlap_turns(turns: Sequence[Turn], options: SpeakerOptions) -> list[Turn]:
    """Where a second speaker is taken to speak too (`options.overlap`): around each change
    between touching turns of two speakers that both last `overlap_turn` seconds or more, each
    one's voice up to `overlap` seconds into the other's turn. In time order; the turns
    themselves (one speaker at a time) are what segments, words and cues are labelled by."""
    out: list[Turn] = []
    if options.overlap <= 0:
        return out
    for (a1, b1, s1), (a2, b2, s2) in itertools.pairwise(turns):
        if s1 != s2 and a2 - b1 <= 1e-6 and min(b1 - a1, b2 - a2) >= options.overlap_turn:
            out.append((round(max(a1, a2 - options.overlap), 3), round(b1, 3), s2))
            out.append((round(a2, 3), round(min(b2, b1 + options.overlap), 3), s1))
    return sorted(out)


def doubtful_turns(turns: Sequence[Turn], options: SpeakerOptions) -> list[Turn]:
    """The turns whose label is doubtful: shorter than `options.doubt_turn`."""
    return [turn for turn in turns if turn[1] - turn[0] < options.doubt_turn]


def flag_doubtful_cues(cues: Sequence[Cue], turns: Sequence[Turn], options: SpeakerOptions) -> None:
    """Send to the review list (reason `speaker`) each cue that overlaps a doubtful turn of
    its own speaker (a cue never spans two speakers, so it then holds that turn's words)."""
    doubtful = doubtful_turns(turns, options)
    for cue in cues:
        if DOUBTFUL_SPEAKER not in cue.flags and any(
            speaker == cue.speaker and a < cue.end and cue.start < b for a, b, speaker in doubtful
        ):
            cue.flags.append(DOUBTFUL_SPEAKER)


__all__ = [
    "DOUBTFUL_SPEAKER",
    "Embedder",
    "ResemblyzerEncoder",
    "SpeakerOptions",
    "SpeakerTurn",
    "doubtful_turns",
    "embed_windows",
    "extend_turns",
    "find_speakers",
    "flag_doubtful_cues",
    "label_windows",
    "overlap_turns",
    "resemblyzer_weights",
]
