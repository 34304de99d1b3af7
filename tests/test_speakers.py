"""Speaker turns (speakers.py) on real speech of two different people: the English reader of
samples/two_cities.mp4 and the Mandarin speaker of samples/aishell_zh.mkv, joined in the middle
of speech so the change falls inside one VAD region."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from fireredasr_fast import speakers
from fireredasr_fast.audio import decode_audio
from fireredasr_fast.errors import OptionError
from fireredasr_fast.results import SAMPLE_RATE
from fireredasr_fast.speakers import SpeakerOptions, find_speakers
from fireredasr_fast.vad import SpeechSegmenter

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
# Both cuts fall inside speech (the VAD's regions of each sample), so the change is mid-region.
READER = (1.2, 12.0)  # seconds of two_cities.mp4
SECOND = (2.5, 10.9)  # seconds of aishell_zh.mkv
DEFAULTS = SpeakerOptions()

pytest.importorskip("torch")
try:
    speakers.resemblyzer_weights()
except Exception as exc:  # the optional voice encoder is not installed
    pytest.skip(f"no Resemblyzer weights: {exc}", allow_module_level=True)


def _cut(samples: np.ndarray, span: tuple[float, float]) -> np.ndarray:
    return samples[round(span[0] * SAMPLE_RATE) : round(span[1] * SAMPLE_RATE)]


@pytest.fixture(scope="module")
def voices() -> dict[str, np.ndarray]:
    reader = decode_audio(SAMPLES / "two_cities.mp4")
    second = decode_audio(SAMPLES / "aishell_zh.mkv")
    return {"one": reader, "two": np.concatenate([_cut(reader, READER), _cut(second, SECOND)])}


@pytest.fixture(scope="module")
def regions(voices) -> dict[str, list[tuple[float, float]]]:
    segmenter = SpeechSegmenter()
    return {name: segmenter(samples)[1] for name, samples in voices.items()}


def _speaker_at(turns: list[speakers.SpeakerTurn], t: float) -> str | None:
    return next((turn.speaker for turn in turns if turn.start <= t < turn.end), None)


def _check_cover(
    turns: list[speakers.SpeakerTurn], regions: list[tuple[float, float]], options: SpeakerOptions = DEFAULTS
) -> None:
    """Sorted, non-overlapping, covering the regions, inside the regions joined across pauses
    shorter than `bridge` and widened by `reach`."""
    assert all(a.end <= b.start for a, b in itertools.pairwise(turns))
    assert all(turn.start < turn.end for turn in turns)
    for start, end in regions:
        inside = sum(max(0.0, min(end, turn.end) - max(start, turn.start)) for turn in turns)
        assert inside == pytest.approx(end - start, abs=0.01)
    bridged = speakers._clean_regions(regions, float("inf"), options.bridge)
    reach = options.reach
    widened = speakers._clean_regions([(start - reach, end + reach) for start, end in bridged], float("inf"))
    for turn in turns:
        assert any(start - 1e-3 <= turn.start and turn.end <= end + 1e-3 for start, end in widened)


def test_two_voices_two_speakers_changing_where_the_voice_changes(voices, regions):
    change = READER[1] - READER[0]
    assert any(start < change - 1 and change + 1 < end for start, end in regions["two"])  # mid-region
    turns = find_speakers(voices["two"], regions["two"], SpeakerOptions())
    _check_cover(turns, regions["two"])
    assert sorted({turn.speaker for turn in turns}) == ["S1", "S2"]
    before = [turn for turn in turns if turn.start < change - 0.5]
    after = [turn for turn in turns if turn.end > change + 0.5]
    assert before and after
    assert {turn.speaker for turn in before} == {"S1"} and {turn.speaker for turn in after} == {"S2"}
    boundary = next(turn.start for turn in turns if turn.speaker == "S2")
    assert boundary == pytest.approx(change, abs=0.5)


def test_a_second_speaker_is_heard_around_the_change_between_two_long_turns(voices, regions):
    """The reader's long turn and the second voice's touch at the change (mid-region): each
    voice is also given `overlap` seconds into the other's turn; the turns stay as they were."""
    turns = [(t.start, t.end, t.speaker) for t in find_speakers(voices["two"], regions["two"], DEFAULTS)]
    change = READER[1] - READER[0]
    overlaps = speakers.overlap_turns(turns, DEFAULTS)
    assert [who for *_, who in overlaps] == ["S2", "S1"]
    (s2_start, s2_end, _), (s1_start, s1_end, _) = overlaps
    assert s2_end == s1_start == pytest.approx(change, abs=0.5)
    assert any(end == s2_end for _, end, who in turns if who == "S1")
    # The change is several seconds from either turn's far end: the whole `overlap` each side.
    assert s2_end - s2_start == pytest.approx(DEFAULTS.overlap) and s1_end - s1_start == pytest.approx(DEFAULTS.overlap)
    longest = max(end - start for start, end, _ in turns)
    assert speakers.overlap_turns(turns, SpeakerOptions(overlap_turn=longest + 1)) == []
    assert speakers.overlap_turns(turns, SpeakerOptions(overlap=0.0)) == []
    one = [(t.start, t.end, t.speaker) for t in find_speakers(voices["one"], regions["one"], DEFAULTS)]
    assert speakers.overlap_turns(one, DEFAULTS) == []  # one voice: no change, no second speaker


def test_windows_of_regions_shorter_than_min_region_take_labels_but_do_not_make_speakers(voices, regions):
    """Six stray half-second regions (3 s in all, past min_speaker) whose vectors are like
    neither voice: clustered, they would be a third speaker; as short regions they only join
    the nearest of the two voices, whose labels stay exactly as without them."""
    windows = speakers.embed_windows(voices["two"], regions["two"], DEFAULTS, speakers.default_embedder())
    stray = np.random.default_rng(0).normal(size=windows.vectors.shape[1])
    stray -= windows.vectors.mean(axis=0) * 4  # far from both voices
    noise = np.random.default_rng(1).normal(scale=0.01, size=(6, windows.vectors.shape[1]))
    vectors = speakers._unit(np.vstack([windows.vectors, speakers._unit(stray) + noise]))
    first = int(windows.region.max()) + 1
    starts = windows.end[-1] + 1.0 + np.arange(6)
    more = speakers.Windows(
        vectors,
        np.concatenate([windows.region, np.arange(first, first + 6)]),
        np.concatenate([windows.start, starts]),
        np.concatenate([windows.end, starts + 0.5]),
    )
    alone = speakers.assign(windows, DEFAULTS)
    labels = speakers.assign(more, DEFAULTS)
    assert len(set(alone.tolist())) == 2
    assert np.array_equal(labels[: len(alone)], alone) and set(labels.tolist()) == set(alone.tolist())
    clustered = speakers.assign(more, SpeakerOptions(min_region=0.0))
    assert len(set(clustered.tolist())) == 3 and len(set(clustered[len(alone) :].tolist())) == 1


def test_turns_reach_into_the_silence_beside_them_but_not_past_halfway(voices, regions):
    """The VAD's regions stop short of quiet speech: each turn reaches `reach` seconds out."""
    tight = SpeakerOptions(bridge=0.0, reach=0.0)
    wide = SpeakerOptions(bridge=0.0, reach=0.3)
    tight_turns = find_speakers(voices["two"], regions["two"], tight)
    _check_cover(tight_turns, regions["two"], tight)
    wide_turns = find_speakers(voices["two"], regions["two"], wide)
    _check_cover(wide_turns, regions["two"], wide)
    widened = sum(turn.end - turn.start for turn in wide_turns) - sum(turn.end - turn.start for turn in tight_turns)
    gaps = [b - a for (_, a), (b, _) in itertools.pairwise(regions["two"])]
    duration = len(voices["two"]) / SAMPLE_RATE
    edges = min(0.3, regions["two"][0][0]) + min(0.3, duration - regions["two"][-1][1])
    assert widened == pytest.approx(sum(min(gap, 0.6) for gap in gaps) + edges, abs=0.01)


def test_pauses_shorter_than_the_bridge_are_labelled_with_the_speech_around_them(voices, regions):
    gaps = sorted(b - a for (_, a), (b, _) in itertools.pairwise(regions["two"]))
    assert len(gaps) >= 2
    options = SpeakerOptions(bridge=(gaps[0] + gaps[1]) / 2, reach=0.0)  # only the shortest pause
    turns = find_speakers(voices["two"], regions["two"], options)
    _check_cover(turns, regions["two"], options)
    covered = sum(turn.end - turn.start for turn in turns)
    assert covered == pytest.approx(sum(end - start for start, end in regions["two"]) + gaps[0], abs=0.01)


def test_extending_turns_splits_a_short_gap_between_two_speakers_at_its_middle():
    turns = [
        speakers.SpeakerTurn(0.2, 1.0, "S1"),
        speakers.SpeakerTurn(1.2, 2.0, "S2"),
        speakers.SpeakerTurn(3.5, 4.0, "S2"),
        speakers.SpeakerTurn(4.1, 4.9, "S2"),
    ]
    assert speakers.extend_turns(turns, 5.0, 0.5) == [
        speakers.SpeakerTurn(0.0, 1.1, "S1"),  # from the file's start; to the gap's middle
        speakers.SpeakerTurn(1.1, 2.5, "S2"),  # 0.5 s into a 1.5 s gap, which stays
        speakers.SpeakerTurn(3.0, 5.0, "S2"),  # a short gap of one speaker closed; the file's end
    ]
    assert speakers.extend_turns(turns, 5.0, 0.0) == turns


def test_one_voice_is_one_speaker_in_auto_mode(voices, regions):
    turns = find_speakers(voices["one"], regions["one"], SpeakerOptions(speakers="auto"))
    _check_cover(turns, regions["one"])
    assert {turn.speaker for turn in turns} == {"S1"}


def test_a_given_number_of_speakers_is_respected(voices, regions):
    one = find_speakers(voices["two"], regions["two"], SpeakerOptions(speakers=1))
    assert {turn.speaker for turn in one} == {"S1"}
    _check_cover(one, regions["two"])
    three = find_speakers(voices["two"], regions["two"], SpeakerOptions(speakers=3, min_turn=0.0))
    assert sorted({turn.speaker for turn in three}) == ["S1", "S2", "S3"]


def test_clustering_a_bounded_number_of_units_still_separates_the_voices(voices, regions):
    """max_units far below the window count: windows are merged with their neighbours first
    (the path a multi-hour file takes)."""
    options = SpeakerOptions(max_units=3)
    windows = speakers.embed_windows(voices["two"], regions["two"], options, speakers.default_embedder())
    assert len(windows.vectors) > 4 * options.max_units
    turns = speakers.label_windows(windows, options)
    change = READER[1] - READER[0]
    assert _speaker_at(turns, change - 2) == "S1" and _speaker_at(turns, change + 2) == "S2"


def test_merging_neighbours_keeps_units_contiguous_and_bounded():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 16))
    labels = np.repeat([0, 1, 2, 0], 25)
    vectors = speakers._unit(centres[labels] + 0.1 * rng.standard_normal((100, 16)))
    owner = speakers.merge_neighbours(vectors, np.ones(100), limit=4)
    assert owner.max() + 1 == 4
    assert np.all(np.diff(owner) >= 0)  # each unit a run of neighbours
    assert np.array_equal(owner, np.repeat([0, 1, 2, 3], 25))  # the four runs found


def test_any_embedder_plugs_in_and_batches_do_not_change_the_turns(voices, regions):
    """Another model behind `Embedder` (here Resemblyzer's at its training loudness, counted);
    the windows' batching is invisible in the turns."""

    class Counted:
        def __init__(self) -> None:
            self.inner = speakers.ResemblyzerEncoder(target_dbfs=-30.0)
            self.windows = 0

        def embed(self, windows: np.ndarray) -> np.ndarray:
            self.windows += len(windows)
            return self.inner.embed(windows)

    counted = Counted()
    turns = find_speakers(voices["two"], regions["two"], SpeakerOptions(batch=5), embedder=counted)
    assert counted.windows > 10
    assert sorted({turn.speaker for turn in turns}) == ["S1", "S2"]
    assert find_speakers(voices["two"], regions["two"], SpeakerOptions(batch=64), embedder=counted) == turns


def test_no_regions_no_turns(voices):
    assert find_speakers(voices["one"], [], SpeakerOptions()) == []


def test_our_encoder_matches_resemblyzers_own():
    """Our torch module and mel front end against Resemblyzer's VoiceEncoder (librosa's mel) on
    the same real speech."""
    resemblyzer = pytest.importorskip("resemblyzer", reason="resemblyzer's own dependencies (librosa, webrtcvad)")
    import torch
    from resemblyzer import audio

    reader = decode_audio(SAMPLES / "two_cities.mp4")
    windows = np.stack([_cut(reader, (t, t + 1.6)) for t in (1.5, 6.8, 18.0, 30.0)]).astype(np.float32) / 32768
    windows = speakers.normalize_volume(windows)
    reference = resemblyzer.VoiceEncoder("cpu", verbose=False)
    with torch.no_grad():
        mels = torch.from_numpy(np.stack([audio.wav_to_mel_spectrogram(w) for w in windows]))
        theirs = reference(mels).numpy()
    ours = speakers.ResemblyzerEncoder().embed(windows)
    np.testing.assert_allclose(ours, theirs, atol=2e-4)
    # Different speech of one reader is close, but not identical: the test above can fail.
    assert 0.5 < float(ours[0] @ ours[1]) < 0.999


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("speakers", "two"),
        ("speakers", 0),
        ("speakers", 1.5),
        ("speakers", True),
        ("window", 0.1),
        ("hop", 0.0),
        ("hop", 5.0),  # more than the window: audio between windows unheard
        ("threshold", 1.5),
        ("max_speakers", 0),
        ("min_turn", -1.0),
        ("overlap", -0.5),
        ("min_region", -1.0),
        ("doubt_turn", -1.0),
        ("min_speaker", float("nan")),
        ("reach", -0.1),
        ("bridge", -1.0),
        ("max_units", 1),
        ("batch", 0),
        ("threads", 0),
    ],
)
def test_options_out_of_range_are_refused(field, value):
    with pytest.raises(OptionError) as caught:
        SpeakerOptions(**{field: value})
    assert caught.value.field == field


def test_options_accept_auto_and_a_count():
    assert SpeakerOptions(speakers=3).speakers == 3
    assert SpeakerOptions().speakers == "auto"


def test_the_benchmark_without_its_data_says_how_to_get_it(tmp_path, capsys):
    """`python -m benchmarks speakers` downloads nothing: without the sdist it stops, naming it."""
    from benchmarks.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main(["speakers", "--cache", str(tmp_path), "--long-minutes", "0"])
    assert "pip download --no-deps --no-binary :all: pyannote.audio==4.0.7" in str(stop.value.code)
    assert not any(tmp_path.iterdir())


def test_files_labelled_at_once_in_threads_get_the_same_turns_and_leave_torch_threads_alone(voices, regions):
    """The runner's front end prepares several files at once in threads."""
    import concurrent.futures

    import torch

    alone = find_speakers(voices["two"], regions["two"], SpeakerOptions(threads=1))
    before = torch.get_num_threads()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        runs = list(
            pool.map(lambda t: find_speakers(voices["two"], regions["two"], SpeakerOptions(threads=t)), (1, 2, 1))
        )
    assert runs == [alone] * 3
    assert torch.get_num_threads() == before


def test_the_benchmarks_real_cue_scoring_names_wrong_cues_changes_and_flags():
    """`--cues whisper` scores each real cue against the reference's majority speaker over its
    span (hypothesis speakers mapped as pyannote.metrics maps them); a tie is right."""
    pytest.importorskip("pyannote.metrics")
    from benchmarks.speakers import cue_records, real_cue_quality
    from fireredasr_fast.results import Cue

    reference = [(0.0, 3.0, "ann"), (3.0, 6.0, "bob"), (4.0, 4.5, "ann")]
    turns = [(0.0, 3.0, "S1"), (3.0, 6.0, "S2")]
    cues = [
        Cue(0.5, 2.5, ["right"], speaker="S1"),
        Cue(3.5, 5.5, ["wrong"], speaker="S1", flags=["speaker"]),
        Cue(2.0, 5.0, ["across the change"], speaker="S2"),  # ann alone 1 s, bob most
        Cue(4.0, 4.5, ["both at once"], speaker="S1"),  # a tie: right
        Cue(7.0, 8.0, ["nobody"], speaker="S2"),
    ]
    records = cue_records([{"uri": "x", "ref": reference}], [(cues, turns)])
    assert [r["speech"] for r in records] == [True, True, True, True, False]
    assert [r["wrong"] for r in records[:4]] == [False, True, False, False]
    assert [r["change"] for r in records[:4]] == [False, False, True, False]
    quality = real_cue_quality(records)
    assert (quality["cues"], quality["wrong_cues"], quality["change_cues"], quality["cues_without_speech"]) == (
        4,
        1,
        1,
        1,
    )
    assert (quality["precision"], quality["recall"]) == (100.0, 100.0)
    assert quality["wrong_seconds_pct"] == pytest.approx(100 * 2.0 / 7.5)
