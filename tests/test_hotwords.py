"""The glossary (`--hotwords`): its files, the context graph that biases FireRedASR's beam search,
the trained fixture recognising a misheard term once it is in the glossary, and a run that
applies a folder's own glossary, reports where the terms were heard and redoes a file whose
glossary changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, require_espeak

from fireredasr_fast.engines.firered.context import ContextGraph, ContextState
from fireredasr_fast.errors import ModelDirError, OptionError
from fireredasr_fast.glossary import Glossary, GlossaryError, HotwordOptions, parse_glossary, read_glossary

TINY = FIXTURES / "tiny_model"
# Renderings the fixture mishears (an unseen voice, fast): it writes another sentence it knows.
MISHEARD = {
    "上海": ("我的朋友住在上海", "cmn+m3", 230, 40, 1.0),
    "电费": ("这个月的电费很高", "cmn+f3", 240, 60, 1.0),
}
HEARD = ("请把窗户关上", "cmn", 160, 50, 1.0)  # recognised right without any glossary
# Misheard in a run too (the VAD's cut and padding differ from the bare rendering's).
MISHEARD_IN_RUN = ("我的朋友住在上海", "cmn+m7", 220, 70, 1.05)
# Recognised right, and not listed for review, without a glossary; with 电费 in it the fixture
# writes 这个月的电费很高, whose term tokens themselves look confident (a false insertion).
FORCED = ("这个问题很难回答", "cmn+m3", 230, 40, 1.0)


# ---------------------------------------------------------------- glossary files


def test_glossary_file_terms_weights_comments(tmp_path: Path) -> None:
    text = "# names\n阿里巴巴 2.0\n\n  New  York   # a city\niPhone 15 1.0\n上海\n阿里巴巴 3\n"
    assert parse_glossary(text, "g.txt") == (("New York", 1.0), ("iPhone 15", 1.0), ("上海", 1.0), ("阿里巴巴", 3.0))
    path = tmp_path / "g.txt"
    path.write_bytes("\ufeff一二线城市 1.5\n".encode())  # a BOM, as Windows editors write
    assert read_glossary(path, score=2.0) == Glossary((("一二线城市", 1.5),), 2.0, (str(path),))


@pytest.mark.parametrize(
    ("content", "cause"),
    [
        ("上海 0\n", "line 1: weight 0 must be > 0"),
        ("ok\n上海 nan\n", None),  # "nan" is not a number here: part of the term
        ("2.5\n", "line 1: a weight without a term"),
        ("上海 99\n", "line 1: weight 99 must be > 0 and <= 10"),
        (b"\xff\xfe\x00bad", "not UTF-8 text (byte 0xff at offset 0)"),
    ],
)
def test_bad_glossary_is_one_line_naming_file_and_cause(tmp_path: Path, content, cause) -> None:
    path = tmp_path / "glossary.txt"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    if cause is None:
        assert HotwordOptions(str(path)).glossary.terms == (("ok", 1.0), ("上海 nan", 1.0))
        return
    with pytest.raises(OptionError) as raised:
        HotwordOptions(str(path))
    message = str(raised.value)
    assert raised.value.field == "hotwords" and str(path) in message and cause in message
    assert "\n" not in message


def test_missing_glossary_refused_by_the_cli_before_any_model(tmp_path: Path, capsys) -> None:
    from fireredasr_fast.cli import main

    missing = tmp_path / "none.txt"
    assert main(["--hotwords", str(missing), "--model-dir", str(tmp_path), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --hotwords") and str(missing) in err and "cannot be read" in err
    assert len(err.splitlines()) == 1


def test_folder_glossary_adds_to_the_global_one_and_wins(tmp_path: Path) -> None:
    (tmp_path / "global.txt").write_text("上海 1.0\n北京 2.0\n", encoding="utf-8")
    show = tmp_path / "show"
    show.mkdir()
    (show / "hotwords.txt").write_text("北京 3.0\n电费\n", encoding="utf-8")
    options = HotwordOptions(str(tmp_path / "global.txt"))
    mine = options.for_file(show / "a.mp4")
    assert mine.terms == (("上海", 1.0), ("北京", 3.0), ("电费", 1.0))
    assert mine.sources == (str(tmp_path / "global.txt"), str(show / "hotwords.txt"))
    assert options.for_file(tmp_path / "b.mp4").terms == (("上海", 1.0), ("北京", 2.0))
    assert not HotwordOptions(folder_file="").for_file(show / "a.mp4")
    (show / "hotwords.txt").write_text("北京 -1\n", encoding="utf-8")
    with pytest.raises(GlossaryError, match=r"hotwords\.txt: line 1: weight -1"):
        options.for_file(show / "a.mp4")


# ---------------------------------------------------------------- the context graph

TERMS = [([1, 2, 3, 4], 1.0), ([1, 2], 0.5), ([2, 3, 9], 2.0), ([5], 1.0), ([3, 4, 7], 1.0)]


def _total(graph: ContextGraph, tokens: list[int]) -> tuple[float, int]:
    state, total = 0, 0.0
    for token in tokens:
        state, change = graph.step(state, token)
        total += change
    return total, state


def test_partial_term_gives_its_bonus_back() -> None:
    graph = ContextGraph([([1, 2, 3, 4], 1.5)], vocab=10)
    assert _total(graph, [1, 2, 3]) == (4.5, 3)  # gains per token while in the term
    assert _total(graph, [1, 2, 3, 0])[0] == pytest.approx(0.0)  # leaves: all given back
    assert _total(graph, [1, 2, 3, 4])[0] == pytest.approx(6.0)  # finished: kept
    assert _total(graph, [1, 2, 3, 4, 0, 6])[0] == pytest.approx(6.0)
    # Leaving one start of the term for another: the first prefix's bonus back, the new one gained.
    assert _total(graph, [1, 2, 1, 2])[0] == pytest.approx(3.0)


def test_shorter_term_inside_a_longer_one_is_kept_when_the_longer_is_left() -> None:
    graph = ContextGraph([([1, 2, 3, 4], 1.0), ([1, 2], 1.0), ([2, 3, 9], 2.0)], vocab=10)
    assert _total(graph, [1, 2, 3, 0])[0] == pytest.approx(2.0)  # [1, 2] finished, 3 given back
    # Failure link: 1 2 3 -> the suffix 2 3 of another term, continued by 9 to its end.
    total, state = _total(graph, [1, 2, 3, 9])
    assert total == pytest.approx(2.0 + 6.0)  # both terms, each once
    assert graph.acc[state] == pytest.approx(6.0) and graph.pending[state] == 0.0


def test_search_tables_agree_with_the_graph() -> None:
    graph = ContextGraph(TERMS, vocab=12)
    rows = graph.states * 12
    state = ContextState(graph, rows, torch.device("cpu"))
    state.state = torch.arange(graph.states).repeat_interleave(12)
    biased, give_back = state.biased(torch.zeros(rows, 12))
    tokens = torch.arange(12).repeat(graph.states)
    chosen = biased[torch.arange(rows), tokens] + give_back
    state.advance(torch.arange(rows), tokens)
    for row in range(rows):
        expected_state, expected_change = graph.step(row // 12, row % 12)
        assert chosen[row].item() == pytest.approx(expected_change)
        assert state.state[row].item() == expected_state


def test_in_place_top_k_is_the_dense_one_bit_for_bit() -> None:
    # Few tokens start a term in a vocabulary of 400: `top` biases those columns in place.
    sparse = ContextGraph(TERMS, vocab=400)
    assert sparse.root_tokens is not None and ContextGraph(TERMS, vocab=12).root_tokens is None
    rows = sparse.states * 4
    state = ContextState(sparse, rows, torch.device("cpu"))
    state.state = torch.arange(sparse.states).repeat_interleave(4)
    scores = torch.log_softmax(torch.randn(rows, 400, generator=torch.Generator().manual_seed(3)), dim=-1)
    scores[:, 1:6] = scores[:, 11:16]  # ties between a term's tokens and others
    before = scores.clone()
    biased, give_back = state.biased(scores)
    top_s, top_y = torch.topk(biased, k=3, dim=1)
    got_s, got_y, own = state.top(scores, 3)
    assert torch.equal(scores, before)  # put back bit for bit
    assert torch.equal(got_y, top_y) and torch.equal(got_s, top_s + give_back[:, None])
    assert torch.equal(own, before.gather(1, top_y))
    assert set(top_y.view(-1).tolist()) & {1, 2, 5}  # the bonuses did pick term tokens


# ---------------------------------------------------------------- the fixture model


@pytest.fixture(scope="module")
def tiny():
    from fireredasr_fast.engines.firered.engine import load_model

    return load_model(TINY)


def _speech(text: str, voice: str, speed: int, pitch: int, rate: float) -> np.ndarray:
    from make_programme import synthesize

    require_espeak()
    return synthesize(text, voice, speed, pitch, rate).astype(np.float32) / 32768.0


@pytest.fixture(scope="module")
def waves() -> dict[str, np.ndarray]:
    cases = {**MISHEARD, "heard": HEARD, "run": MISHEARD_IN_RUN, "forced": FORCED}
    return {key: _speech(*case) for key, case in cases.items()}


def test_glossary_corrects_a_misheard_term_and_changes_nothing_else(tiny, waves) -> None:
    batch = [waves["上海"], waves["电费"], waves["heard"]]
    plain = tiny.transcribe(batch, beam_size=3)
    assert plain[0].text != MISHEARD["上海"][0] and plain[1].text != MISHEARD["电费"][0]
    assert plain[2].text == HEARD[0]
    # One batch: each row's context state follows its beams and its utterance leaving the batch.
    biased = tiny.transcribe(batch, beam_size=3, hotwords=Glossary((("上海", 1.0), ("电费", 1.0))))
    assert [h.text for h in biased] == [MISHEARD["上海"][0], MISHEARD["电费"][0], HEARD[0]]
    assert biased[2].token_ids == plain[2].token_ids  # speech without the terms: no insertion
    assert all(0.0 < c <= 1.0 for h in biased for c in h.token_confidences)  # bonuses left out
    # A term the speech lacks leaves a misheard utterance as it was.
    other = tiny.transcribe([waves["上海"]], beam_size=3, hotwords=Glossary((("电费", 1.0),)))
    assert other[0].token_ids == plain[0].token_ids


def test_empty_glossary_gives_identical_tokens(tiny, waves) -> None:
    batch = [waves[key] for key in (*MISHEARD, "heard")]
    plain = tiny.transcribe_nbest(batch, beam_size=3, nbest=2)
    for hotwords in (Glossary(), Glossary((("\u2603", 1.0),))):  # none, or none the model can write
        again = tiny.transcribe_nbest(batch, beam_size=3, nbest=2, hotwords=hotwords)
        assert [[h.token_ids for h in n] for n in again] == [[h.token_ids for h in n] for n in plain]
        assert [[h.token_confidences for h in n] for n in again] == [[h.token_confidences for h in n] for n in plain]


def _review(hyp, seconds: float) -> list[list[str]]:
    """The review flags of the cues of one hypothesis, as a file's segment gets them."""
    from fireredasr_fast.cues import CueOptions, build_cues
    from fireredasr_fast.guard import REVIEW_THRESHOLD, WEAK_TOKEN_THRESHOLD, mark_for_review
    from fireredasr_fast.results import Segment

    segment = Segment(0.0, seconds, hyp.text, list(hyp.tokens), None, hyp.token_confidences, hyp.confidence, [])
    cues = build_cues([segment], [(0.0, seconds)], seconds, CueOptions())
    mark_for_review(cues, REVIEW_THRESHOLD, None, WEAK_TOKEN_THRESHOLD, CueOptions())
    return [cue.flags for cue in cues]


def test_a_term_the_glossary_forces_reaches_the_review_list(tiny, waves) -> None:
    """A term the bias writes where the speech lacks it lands on the review list: here through
    the cue's weakest tokens (where the sentence left the speech), not the term's own."""
    seconds = len(waves["forced"]) / 16000
    plain = tiny.transcribe([waves["forced"]], beam_size=3)[0]
    forced = tiny.transcribe([waves["forced"]], beam_size=3, hotwords=Glossary((("电费", 1.0),)))[0]
    assert plain.text == FORCED[0] and _review(plain, seconds) == [[]]
    assert "电费" in forced.text and forced.text != FORCED[0]
    term = [c for token, c in zip(forced.tokens, forced.token_confidences, strict=True) if token in "电费"]
    assert min(term) > 0.5  # the term's own tokens look sure: the rules must look past them
    assert all(flags for flags in _review(forced, seconds))


# ---------------------------------------------------------------- a run


def _write_wav(path: Path, wave: np.ndarray) -> None:
    from make_programme import write_wav

    pad = np.zeros(16000, dtype=np.int16)
    write_wav(path, np.concatenate([pad, (wave * 32768).astype(np.int16), pad]))


def test_run_applies_the_folder_glossary_reports_it_and_redoes_on_change(tmp_path: Path, waves) -> None:
    from fireredasr_fast.cli import main

    show, out = tmp_path / "show", tmp_path / "out"
    show.mkdir()
    _write_wav(show / "a.wav", waves["run"])
    args = ["--model-dir", str(TINY), "--workers", "0", "--formats", "json", "--no-progress", "-o", str(out)]
    assert main([*args, str(show)]) == 0
    data = json.loads((out / "a.json").read_text())
    assert "上海" not in "".join(s["text"] for s in data["segments"]) and "hotwords" not in data

    (show / "hotwords.txt").write_text("# the show's names\n上海 1.0\n", encoding="utf-8")
    assert main([*args, str(show)]) == 0  # the glossary is part of the fingerprint: redone
    data = json.loads((out / "a.json").read_text())
    assert data["segments"][0]["text"] == MISHEARD["上海"][0]
    report = data["hotwords"]
    assert report["terms"] == [{"term": "上海", "weight": 1.0}] and report["files"] == [str(show / "hotwords.txt")]
    (found,) = report["found"]
    segment, cue = data["segments"][0], next(c for c in data["cues"] if "上海" in c["text"])
    assert (found["term"], found["segment"]) == ("上海", 0)
    assert (found["segment_start"], found["segment_end"]) == (segment["start"], segment["end"])
    assert "上海" in cue["text"] and (found["start"], found["end"]) == (cue["start"], cue["end"])


# ---------------------------------------------------------------- Whisper


def test_whisper_prompts_every_window_with_the_terms(waves) -> None:
    pytest.importorskip("faster_whisper")
    from fireredasr_fast.engines import EngineSpec

    try:
        engine = EngineSpec(engine="whisper", model_name="tiny.en", options=(("cpu_threads", 1),)).build()
    except ModelDirError as exc:  # no model here: nothing to check
        pytest.skip(f"Whisper tiny.en unavailable: {exc}")
    generate = engine._model.model.generate
    prompts: list[list[int]] = []

    def spy(features, batch_prompts, **kwargs):  # the real generate, its prompts recorded
        prompts.extend(batch_prompts)
        return generate(features, batch_prompts, **kwargs)

    engine._model.model = type("Spied", (), {"__getattr__": lambda _, name: getattr(generate.__self__, name)})()
    engine._model.model.generate = spy
    speech = [_speech("please open the window", "en", 160, 50, 1.0)] * 2
    plain = engine.transcribe(speech)
    hyps = engine.transcribe(speech, hotwords=Glossary((("Fireredasr", 1.0), ("Zanzibar", 2.0))))
    tok = engine._tokenizer("en")
    terms = tok.encode(" Fireredasr Zanzibar")
    assert all(p[0] != tok.sot_prev for p in prompts[: len(prompts) // 2])
    for prompt in prompts[len(prompts) // 2 :]:
        assert prompt[0] == tok.sot_prev and prompt[1 : 1 + len(terms)] == terms
    assert [h.text for h in hyps] and all(h.text for h in plain)
    assert engine._hotwords is None  # the next call without a glossary is not prompted


def test_run_fails_only_the_files_of_a_folder_with_a_bad_glossary(tmp_path: Path, waves, capsys) -> None:
    from fireredasr_fast.cli import main

    good, bad, out = tmp_path / "good", tmp_path / "bad", tmp_path / "out"
    for folder in (good, bad):
        folder.mkdir()
        _write_wav(folder / "a.wav", waves["heard"])
    (bad / "hotwords.txt").write_text("上海 lots\n上海 -2\n", encoding="utf-8")
    args = ["--model-dir", str(TINY), "--workers", "0", "--formats", "json", "--no-progress", "-o", str(out)]
    assert main([*args, str(tmp_path / "good"), str(tmp_path / "bad")]) == 1
    assert json.loads((out / "good" / "a.json").read_text())["segments"][0]["text"] == HEARD[0]
    assert not (out / "bad" / "a.json").exists()
    report = {Path(f["source"]).parent.name: f for f in json.loads((out / "run-report.json").read_text())["files"]}
    assert report["good"]["status"] == "done" and report["bad"]["status"] == "failed"
    assert report["bad"]["error"] == f"{bad / 'hotwords.txt'}: line 2: weight -2 must be > 0 and <= 10"
