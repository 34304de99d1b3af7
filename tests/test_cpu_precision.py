"""Reduced precision on CPU (issue 32): bf16 and int8 where the CPU has a unit for them.

The precision is gated by the CPU's flags (engines/firered/cpuflags.py): read from a
cpuinfo file, refused in one line naming --precision where the CPU lacks the unit (the flags
are the seam: a test cannot change the CPU), and, where it has one, bf16 and int8 decode the
trained fixture agreeing with fp32 on nearly every token (docs/engine.md#precision-modes).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from fireredasr_fast import cli
from fireredasr_fast.engines.firered import cpuflags
from fireredasr_fast.engines.firered.cpuflags import cpu_flags, cpu_unit, missing_unit_message

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY_MODEL = FIXTURES / "tiny_model"
sys.path.insert(0, str(FIXTURES))

from precision_drift import edit_distance  # noqa: E402
from tiny_model_texts import ENGLISH_SENTENCES, MANDARIN_SENTENCES  # noqa: E402

AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma", "avx_vnni"})  # the i9-14900KF's kind
# Token agreement with fp32 that a working reduced path keeps on the fixture (measured 99-100 %,
# docs/engine.md); a broken one (garbage, empty or truncated output) falls far below.
MIN_AGREEMENT = 0.9


def test_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16\n\nprocessor\t: 1\n")
    flags = cpu_flags(str(info))
    assert {"avx2", "avx512_bf16"} <= flags and "amx_bf16" not in flags
    assert cpu_unit("bf16", flags) == "AVX512_BF16" and cpu_unit("int8", flags) == "AVX512_VNNI"
    amx = flags | {"amx_bf16", "amx_int8", "amx_tile"}
    assert cpu_unit("bf16", amx) == "AMX-BF16" and cpu_unit("int8", amx) == "AMX-INT8"
    assert cpu_unit("bf16", AVX2_ONLY) is None and cpu_unit("int8", AVX2_ONLY) == "AVX-VNNI"
    assert cpu_unit("fp32", frozenset()) == "fp32"
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()  # off Linux: no reduced precision


def _cli_code(args: list[str]) -> int:
    try:
        return cli.main(args)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_missing_unit_is_one_line_naming_the_flag(precision, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(cpuflags, "cpu_flags", lambda: frozenset({"sse4_2"}))  # a CPU without AVX2
    out = tmp_path / "out"
    args = ["--device", "cpu", "--precision", precision, "--model-dir", str(TINY_MODEL), "-o", str(out), "x.wav"]
    code = _cli_code(args)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert "--precision" in lines[0] and missing_unit_message(precision) in lines[0]
    assert not out.exists()


def test_bf16_without_the_unit_falls_back_to_fp32_with_a_warning(capsys, monkeypatch) -> None:
    """With GPU workers possible, --precision bf16 is theirs; CPU workers without a bf16 unit
    run fp32 and the run says so (never silently)."""
    monkeypatch.setattr(cpuflags, "cpu_flags", lambda: AVX2_ONLY)
    args = cli.build_parser().parse_args(["--precision", "bf16", "--model-dir", str(TINY_MODEL), "x.wav"])
    cli.check_options(args, {"precision", "model_dir"})
    err = capsys.readouterr().err
    assert "warning: CPU workers run fp32" in err and "AVX512_BF16" in err
    assert cli.FireRedOptions.from_args(args).precision == "fp32"
    assert cli.FireRedOptions.from_args(args).for_gpu("bf16").precision == "bf16"


def test_reduced_precision_workers_hold_a_private_copy() -> None:
    """int8 and bf16 convert the weights in every worker: the plan must count the copy."""
    from fireredasr_fast.engines.firered.options import FireRedOptions

    assert FireRedOptions().weights_shared
    assert not FireRedOptions(precision="bf16").weights_shared
    assert not FireRedOptions(precision="int8").weights_shared


def test_bad_precision_value_is_one_line(capsys) -> None:
    assert _cli_code(["--precision", "bf8", "x.wav"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--precision" in lines[0]


@pytest.fixture(scope="module")
def fixture_speech() -> list[np.ndarray]:
    """Trained sentences in held-out espeak voices (as tests/fixtures/precision_drift.py)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng")
    from make_programme import synthesize, trim

    zh = [trim(synthesize(text, "cmn+f3", 175, 58)) for text in MANDARIN_SENTENCES[:5]]
    en = [trim(synthesize(text, "en+m3", 150, 43)) for text in ENGLISH_SENTENCES[:5]]
    return [w.astype(np.float32) / 32768.0 for w in zh + en]


@pytest.fixture(scope="module")
def fp32_tokens(fixture_speech) -> list[list[int]]:
    from fireredasr_fast.engines.firered.engine import load_model

    hyps = load_model(TINY_MODEL).transcribe(fixture_speech, beam_size=3)
    assert sum(len(h.token_ids) for h in hyps) > 60  # the fixture recognises these
    return [h.token_ids for h in hyps]


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_agrees_with_fp32(precision, fixture_speech, fp32_tokens) -> None:
    if cpu_unit(precision) is None:
        pytest.skip(f"this CPU has no {precision} unit ({missing_unit_message(precision)})")
    import torch

    from fireredasr_fast.engines.firered.engine import load_model

    model = load_model(TINY_MODEL, precision=precision)
    if precision == "bf16":  # the path is really engaged: bf16 weights, oneDNN's Linears
        assert model.model.decoder.tgt_word_prj.weight.dtype == torch.bfloat16
    hyps = model.transcribe(fixture_speech, beam_size=3)
    tokens = sum(len(t) for t in fp32_tokens)
    edits = sum(edit_distance(a, h.token_ids) for a, h in zip(fp32_tokens, hyps, strict=True))
    assert 1 - edits / tokens >= MIN_AGREEMENT, (edits, tokens)
