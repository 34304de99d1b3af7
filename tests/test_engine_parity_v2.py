"""Our engine against FireRedASR2's own AED code (PyPI `fasr-asr-firered` 0.5.8, package
`fireredasr2`, wrapped by testsupport/reference2.py) on v2 checkpoints: identical token ids
in fp32, the same per-hypothesis confidence (within 1e-4), eos_penalty above 1, and shallow
fusion with an external LSTM LM giving the same hypotheses.

The checkpoints are random, in the official format, with a CTC head and v2's 8667-token
vocabulary; their logits are scaled (random_model.py: output_gain) so that the scores, and so
the confidences, are far from flat, and one of them ends hypotheses with <eos> (eos_gain).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from make_programme import espeak_speech, has_espeak

from fireredasr_fast.engines import EngineSpec
from fireredasr_fast.engines.firered import kernels
from fireredasr_fast.engines.firered.engine import FireRedEngine, load_model
from fireredasr_fast.engines.firered.lm import load_lm
from fireredasr_fast.engines.firered.options import DecodingOptions
from fireredasr_fast.errors import ModelDirError
from fireredasr_fast.results import Hypothesis
from testsupport.random_model import write_random_lm_dir, write_random_model_dir
from testsupport.reference import load_reference

pytest.importorskip("kaldi_native_fbank")
reference2 = pytest.importorskip("testsupport.reference2")
try:
    reference2._import_fireredasr2("models.fireredasr_aed")
except ImportError:
    pytest.skip("needs `pip install --no-deps fasr-asr-firered==0.5.8`", allow_module_level=True)

V2_VOCABULARY = 8667
PHRASES = [("今天天气很好", "cmn"), ("hello world", "en"), ("北京欢迎你", "cmn")]
CONFIDENCE_TOLERANCE = 1e-4


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _attention_kernel_at_any_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the decoder's attention kernel at these small sizes too (as test_engine_parity.py)."""
    monkeypatch.setattr(kernels, "MIN_K_BYTES_ONE_QUERY", 0)
    monkeypatch.setattr(kernels, "MIN_K_BYTES_SHARED", 0)


@pytest.fixture(scope="module")
def waveforms() -> list[np.ndarray]:
    """6 waveforms of mixed lengths (0.1 to 3 s): synthetic speech where espeak-ng
    exists, then noise."""
    rng = np.random.default_rng(0)
    waves = []
    if has_espeak():
        waves = [espeak_speech(text, voice) for text, voice in PHRASES]
    waves += [(rng.standard_normal(int(16000 * s)) * 0.05).astype(np.float32) for s in rng.uniform(0.1, 3, 6)]
    return waves[:6]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("v2-models")
    common = dict(preset="tiny", odim=V2_VOCABULARY, with_ctc=True, seed=0, mix_gain=100.0, output_gain=6.0)
    return {
        # Hypotheses run to the length limit, with tokens that vary along them.
        "varied": write_random_model_dir(root / "varied", **common),
        # Hypotheses end with <eos> at different lengths.
        "ending": write_random_model_dir(root / "ending", eos_gain=2.7, **common),
        # A v1-shaped checkpoint (no CTC head, smaller vocabulary): the same confidence.
        "v1": write_random_model_dir(root / "v1", preset="tiny", odim=256, seed=0, mix_gain=30.0, output_gain=6.0),
    }


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_lm_dir(tmp_path_factory.mktemp("lm") / "lm", odim=V2_VOCABULARY, output_gain=5.0)


@pytest.fixture(scope="module")
def models(model_dirs: dict[str, Path]) -> dict[str, tuple]:
    return {name: (load_model(d), reference2.Reference2Model(d)) for name, d in model_dirs.items()}


def _ids(hyps: list[Hypothesis]) -> list[list[int]]:
    return [h.token_ids for h in hyps]


def _assert_same(ours: list[Hypothesis], theirs: list[Hypothesis]) -> None:
    """Token ids identical; confidence as fireredasr2's within the tolerance; one confidence
    per token, in [0, 1], whose mean is the hypothesis' confidence."""
    assert _ids(ours) == _ids(theirs)
    for a, b in zip(ours, theirs, strict=True):
        if not a.token_ids:
            assert a.confidence is None and b.confidence is None
            continue
        assert a.confidence == pytest.approx(b.confidence, abs=CONFIDENCE_TOLERANCE)
        assert len(a.token_confidences) == len(a.token_ids)
        assert all(0.0 <= c <= 1.0 for c in a.token_confidences)
        assert a.confidence == pytest.approx(float(np.mean(a.token_confidences)), abs=1e-6)


def test_v2_random_checkpoints_are_informative(model_dirs, models, waveforms) -> None:
    """Guard: parity on tokens and confidences that do not depend on the input would prove little."""
    fast, _ = models["varied"]
    hyps = fast.transcribe(waveforms, beam_size=3, decode_max_len=20)
    assert load_model(model_dirs["varied"]).model.args.odim == V2_VOCABULARY and fast.has_ctc
    assert all(len(set(h.token_ids)) > 3 for h in hyps if len(h.token_ids) > 5)
    assert len({tuple(h.token_ids) for h in hyps}) >= 5
    per_token = np.concatenate([h.token_confidences for h in hyps])
    assert per_token.std() > 0.1 and 0.1 < per_token.mean() < 0.9  # far from flat (1 / 8667)
    fast, _ = models["ending"]
    lengths = [len(h.token_ids) for h in fast.transcribe(waveforms, beam_size=3)]
    limits = [(w.size - 400) // 160 // 4 for w in waveforms]
    ended = [n for n, lim in zip(lengths, limits, strict=True) if n < lim - 2]
    assert len(set(ended)) >= 2  # ended by <eos>, at different lengths


@pytest.mark.parametrize("beam", [1, 3])
@pytest.mark.parametrize("name", ["varied", "ending", "v1"])
def test_parity_with_fireredasr2_per_utterance(models, waveforms, name, beam) -> None:
    """decode_max_len=0: each utterance's own encoder length, the reference's limit when it
    decodes that utterance alone; ours decodes them all in one call."""
    fast, ref = models[name]
    ours = fast.transcribe(waveforms, beam_size=beam)
    theirs = [ref.transcribe([w], beam_size=beam)[0] for w in waveforms]
    _assert_same(ours, theirs)


@pytest.mark.parametrize("beam", [1, 3])
def test_parity_with_fireredasr2_batched_mixed_lengths(models, waveforms, beam) -> None:
    for name in ("varied", "ending"):
        fast, ref = models[name]
        theirs: list[Hypothesis] = []
        for s in range(0, len(waveforms), 3):
            theirs += ref.transcribe(waveforms[s : s + 3], beam_size=beam, decode_max_len=20)
        fast.batch_frames = 600  # several sub-batches in ours, order restored
        try:
            ours = fast.transcribe(waveforms, beam_size=beam, decode_max_len=20)
        finally:
            fast.batch_frames = 40000
        _assert_same(ours, theirs)


def test_eos_penalty_above_one_as_fireredasr2(models, waveforms) -> None:
    """FireRedASR2 accepts eos_penalty > 1 (v1 asserted <= 1): a stronger <eos> penalty."""
    fast, ref = models["ending"]
    opts = dict(beam_size=3, nbest=2, eos_penalty=3.0, decode_max_len=30)
    ours = fast.transcribe_nbest(waveforms, **opts)
    theirs = ref.transcribe_nbest(waveforms, **opts)
    for a, b in zip(ours, theirs, strict=True):
        assert len(a) == 2
        _assert_same(a, b)
    plain = fast.transcribe(waveforms, beam_size=3, decode_max_len=30)
    assert _ids([h[0] for h in ours]) != _ids(plain)  # the penalty changed something
    assert DecodingOptions(eos_penalty=3.0).eos_penalty == 3.0
    with pytest.raises(ValueError, match="eos_penalty"):
        DecodingOptions(eos_penalty=0.0)


@pytest.mark.parametrize("beam", [1, 3])
def test_lm_fusion_as_fireredasr2(models, waveforms, lm_dir, beam) -> None:
    """The same hypotheses and confidences as fireredasr2 with the same LM and weight, on one
    mixed-length batch; and the LM changes them (else this would prove nothing)."""
    fast, ref = models["ending"]
    opts = dict(beam_size=beam, decode_max_len=20, lm_dir=str(lm_dir), lm_weight=0.3)
    ours = fast.transcribe(waveforms, **opts)
    _assert_same(ours, ref.transcribe(waveforms, **opts))
    without = fast.transcribe(waveforms, beam_size=beam, decode_max_len=20)
    assert sum(a != b for a, b in zip(_ids(ours), _ids(without), strict=True)) >= len(waveforms) // 2


def test_lm_options_and_engine(model_dirs, models, waveforms, lm_dir) -> None:
    spec = EngineSpec(model_dir=str(model_dirs["ending"]), options=(("lm_dir", str(lm_dir)), ("lm_weight", 0.3)))
    engine = FireRedEngine.from_spec(spec)
    assert engine.describe()["decoding"]["lm_weight"] == 0.3
    fast, _ = models["ending"]
    expected = fast.transcribe(waveforms[:3], lm_dir=str(lm_dir), lm_weight=0.3)
    assert _ids(engine.transcribe(waveforms[:3])) == _ids(expected)
    with pytest.raises(ValueError, match="lm_dir and lm_weight"):
        DecodingOptions(lm_dir=str(lm_dir))
    with pytest.raises(ValueError, match="lm_dir and lm_weight"):
        DecodingOptions(lm_weight=0.5)
    with pytest.raises(ValueError, match="lm_weight"):
        DecodingOptions(lm_dir=str(lm_dir), lm_weight=-1.0)


def test_lm_is_loaded_safely(tmp_path, models, lm_dir) -> None:
    """The LM file is a pickle: loaded with weights_only=True and the checkpoint's allow-list;
    a file that references any other global is refused without running it."""
    lm = load_lm(lm_dir)
    assert lm.vocab_size == V2_VOCABULARY
    with pytest.raises(ModelDirError, match=r"lacks model\.pth\.tar"):
        load_lm(tmp_path)
    evil = tmp_path / "evil"
    evil.mkdir()
    with torch.serialization.safe_globals([argparse.Namespace]):
        package = torch.load(lm_dir / "model.pth.tar", weights_only=True)
    package["hook"] = _Unsafe()
    torch.save(package, evil / "model.pth.tar")
    with pytest.raises(ModelDirError, match="refused"):
        load_lm(evil)
    assert not _Unsafe.ran
    small = write_random_lm_dir(tmp_path / "small", odim=100)
    fast, _ = models["varied"]
    with pytest.raises(ModelDirError, match="vocabulary 100"):
        fast.transcribe([np.zeros(16000, np.float32)], lm_dir=str(small), lm_weight=0.3)


class _Unsafe:
    ran = False

    def __reduce__(self):  # a pickle that would run code if it were loaded unsafely
        return (_mark_ran, ())


def _mark_ran() -> None:
    _Unsafe.ran = True


def test_v1_reference_refuses_lm(model_dirs, waveforms, lm_dir) -> None:
    pytest.importorskip("fireredasr.models.fireredasr_aed")
    ref = load_reference(model_dirs["v1"])
    with pytest.raises(ValueError, match="no LM fusion"):
        ref.transcribe(waveforms[:1], lm_dir=str(lm_dir), lm_weight=0.3)


def test_ctc_token_times_keep_the_pauses_fireredasr2_erases() -> None:
    """On CTC log-probs whose blanks show a 1.1 s pause: our alignment puts every token where
    FireRedASR2's own Viterbi does (its times are 20 ms earlier: frame end minus its 60 ms
    shift), but it keeps the pause as a gap, where upstream's `start = min(start, last_end)`
    pulls the first token after the pause back to the end of the one before."""
    from fireredasr_fast.engines.firered.alignment import ctc_token_times
    from fireredasr_fast.engines.firered.features import ENCODER_FRAME_SECONDS as FRAME_SECONDS

    ctc = reference2._import_fireredasr2("models.module.ctc").CTC
    frames, vocab = 70, 12
    emissions = {3: 5, 4: 5, 8: 6, 12: 7, 41: 8, 45: 9, 49: 10, 50: 10, 56: 11}  # pause: frames 13-40
    ids = [5, 6, 7, 8, 9, 10, 11]
    log_probs = np.full((frames, vocab), -12.0, dtype=np.float32)
    log_probs[:, 0] = -0.01
    for frame, token in emissions.items():
        log_probs[frame] = -12.0
        log_probs[frame, token] = -0.01
    duration = frames * FRAME_SECONDS
    ours = ctc_token_times(log_probs, ids, duration)
    assert ours is not None

    path = ctc.ctc_align(torch.from_numpy(log_probs), np.array(ids))
    starts, ends = ctc.ctc_alignment_to_timestamp(path, 4)
    shift, last_end, theirs = 0.06, duration, []  # as FireRedAsr2._get_and_fix_timestamp
    for start, end in zip(starts, ends, strict=True):
        start = min(max(0.0, start - shift), last_end)
        last_end = min(max(0.0, end - shift), duration)
        theirs.append((start, last_end))

    assert [a for a, _ in ours] == pytest.approx([s - shift + 0.02 for s in starts])  # the same alignment
    assert [a for a, _ in ours] == pytest.approx([f * FRAME_SECONDS for f in (3, 8, 12, 41, 45, 49, 56)])
    pause_before = 3  # the token after the pause
    assert theirs[pause_before][0] == pytest.approx(theirs[pause_before - 1][1])  # upstream: no gap left
    assert ours[pause_before][0] - ours[pause_before - 1][1] > 0.8  # ours: the pause stays
    assert all(ours[i][1] <= ours[i + 1][0] + 1e-9 for i in range(len(ours) - 1))
    assert all(b - a > 0.0 for a, b in ours)
