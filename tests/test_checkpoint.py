"""Our AED module loads official-format checkpoints strictly; random model dirs are in the
official format; unsafe or incomplete model dirs are refused."""

from __future__ import annotations

import argparse
import os
import pickle
from pathlib import Path

import pytest
import torch

from fireredasr_fast.engines.firered.checkpoint import (
    MAX_SEGMENT_SECONDS,
    SEGMENT_PE_MAXLEN,
    aed_args,
    check_model_dir,
    encoder_frames,
    load_package,
    shrink_decoder_positions,
    write_model_dir,
)
from fireredasr_fast.engines.firered.engine import load_model
from fireredasr_fast.engines.firered.model import AedModel
from fireredasr_fast.errors import ModelDirError
from testsupport.random_model import write_random_model_dir
from testsupport.reference import load_reference

aed_module = pytest.importorskip("fireredasr.models.fireredasr_aed")


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_state_dict_keys_and_shapes_match_upstream() -> None:
    args = aed_args("tiny", odim=300, n_layers_enc=3, n_layers_dec=3)
    assert _shapes(AedModel(args)) == _shapes(aed_module.FireRedAsrAed.from_args(args))


def test_aed_l_shape_has_the_official_parameter_counts() -> None:
    with torch.device("meta"):  # no 4.6 GB allocation
        model = AedModel(aed_args("aed-l", odim=7832))
    shapes = _shapes(model)
    assert shapes["encoder.layer_stack.15.conv.pointwise_conv1.weight"] == (5120, 1280, 1)
    assert shapes["decoder.tgt_word_prj.weight"] == (7832, 1280)

    def count(prefix: str) -> float:  # parameters only (buffers are the stored pe tables)
        return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix)) / 1e6

    assert round(count("encoder."), 1) == 710.5
    assert round(count("decoder."), 1) == 429.8


def test_encoder_frames_is_the_encoder_output_length(tmp_path: Path) -> None:
    import numpy as np

    path = write_random_model_dir(tmp_path / "m", preset="tiny", odim=180, seed=3, pe_maxlen=SEGMENT_PE_MAXLEN)
    model = load_model(path)
    seconds = [0.025, 0.1, 1.0, 7.33, MAX_SEGMENT_SECONDS]
    waves = [np.zeros(round(s * 16000), np.float32) for s in seconds]
    assert [int(e.shape[0]) for e in model.encode(waves)] == [encoder_frames(s) for s in seconds]
    assert SEGMENT_PE_MAXLEN == encoder_frames(MAX_SEGMENT_SECONDS) == 1500


def test_shrunk_decoder_table_is_the_fresh_smaller_table(tmp_path: Path) -> None:
    args = aed_args("tiny", odim=180)
    state = aed_module.FireRedAsrAed.from_args(args).state_dict()
    small_args, small = shrink_decoder_positions(args, state, 700)
    fresh = aed_module.FireRedAsrAed.from_args(small_args)
    assert args.pe_maxlen == 5000 and small_args.pe_maxlen == 700
    assert torch.equal(small["decoder.positional_encoding.pe"], fresh.state_dict()["decoder.positional_encoding.pe"])
    # Upstream's encoder ignores pe_maxlen: its relative table keeps 2 x 5000 - 1 rows.
    assert small["encoder.positional_encoding.pe"].shape == (1, 9999, args.d_model)
    fresh.load_state_dict(small, strict=True)
    AedModel(small_args).load_state_dict(small, strict=True)


def test_write_model_dir_saves_compact_tables(tmp_path: Path) -> None:
    from testsupport.random_model import _cmvn_stats, _train_spm

    args = aed_args("tiny", odim=5 + 26)
    state = aed_module.FireRedAsrAed.from_args(args).state_dict()
    tokens = ["<blank>", "<unk>", "<pad>", "<sos>", "<eos>", *[chr(65 + i) for i in range(26)]]
    spm = _train_spm(tmp_path)
    small_args = argparse.Namespace(**{**vars(args), "pe_maxlen": 100})
    with pytest.raises(ValueError, match="pe_maxlen"):
        write_model_dir(tmp_path / "bad", small_args, state, tokens, spm, _cmvn_stats(80))
    view = dict(state, **{"decoder.positional_encoding.pe": state["decoder.positional_encoding.pe"][:, :100]})
    full = write_model_dir(tmp_path / "full", args, state, tokens, spm, _cmvn_stats(80)) / "model.pth.tar"
    small = write_model_dir(tmp_path / "small", small_args, view, tokens, spm, _cmvn_stats(80)) / "model.pth.tar"
    # The 4900 rows cut off are not written along with the view.
    assert full.stat().st_size - small.stat().st_size >= 4900 * args.d_model * 4
    aed_module.FireRedAsrAed.from_args(small_args).load_state_dict(load_package(small)["model_state_dict"])


def test_random_dir_loads_strictly_in_both(tmp_path: Path) -> None:
    path = write_random_model_dir(tmp_path / "m", preset="tiny", odim=180, seed=3)
    assert sorted(p.name for p in path.iterdir()) == [
        "cmvn.ark",
        "config.yaml",
        "dict.txt",
        "model.pth.tar",
        "train_bpe1000.model",
    ]
    package = load_package(path / "model.pth.tar")
    assert isinstance(package["args"], argparse.Namespace) and package["args"].odim == 180
    state = package["model_state_dict"]
    assert state["encoder.layer_stack.0.conv.pointwise_conv1.weight"].dim() == 3  # conv-shaped on disk
    AedModel(package["args"]).load_state_dict(state, strict=True)
    aed_module.FireRedAsrAed.from_args(package["args"]).load_state_dict(state, strict=True)
    dict_lines = (path / "dict.txt").read_text(encoding="utf-8").splitlines()
    assert dict_lines[:5] == ["<blank> 0", "<unk> 1", "<pad> 2", "<sos> 3", "<eos> 4"]
    assert any(line.startswith("▁") for line in dict_lines) and "丁 6" in dict_lines
    # Our module's state dict round-trips to the same tensors (tied projection included).
    model = AedModel.from_package(package)
    again = model.state_dict()
    assert again.keys() == state.keys()
    assert all(torch.equal(again[k], state[k]) for k in state)


def test_v2_checkpoint_with_ctc_head(tmp_path: Path) -> None:
    path = write_random_model_dir(tmp_path / "v2", preset="tiny", odim=150, with_ctc=True)
    package = load_package(path / "model.pth.tar")
    assert "ctc.ctc_lo.weight" in package["model_state_dict"]
    model = AedModel.from_package(package)
    enc = torch.randn(2, 7, 64)
    log_probs = model.ctc_log_probs(enc)
    assert log_probs.shape == (2, 7, 150)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2, 7))
    # The engine and the reference adapter both load it; the reference ignores the head.
    fast = load_model(path)
    assert fast.has_ctc
    assert load_reference(path).model is not None
    plain = AedModel.from_package(load_package(write_random_model_dir(tmp_path / "v1", odim=150) / "model.pth.tar"))
    with pytest.raises(ValueError, match="CTC"):
        plain.ctc_log_probs(enc)


def test_incomplete_or_missing_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    path = write_random_model_dir(tmp_path / "m", preset="tiny", odim=150)
    os.remove(path / "cmvn.ark")
    with pytest.raises(ModelDirError, match=r"cmvn\.ark"):
        check_model_dir(path)
    with pytest.raises(ModelDirError):
        load_model(path)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_with_foreign_global_is_refused(tmp_path: Path) -> None:
    path = write_random_model_dir(tmp_path / "m", preset="tiny", odim=150)
    torch.save({"args": _Exploit(), "model_state_dict": {}}, path / "model.pth.tar", pickle_module=pickle)
    with pytest.raises(ModelDirError, match="refused"):
        load_model(path)
    with pytest.raises(ModelDirError, match="refused"):
        load_reference(path)
