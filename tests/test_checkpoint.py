"""Our AED module loads official-format checkpoints strictly; random model dirs are in the
official format; unsafe or incomplete model dirs are refused."""

from __future__ import annotations

import argparse
import os
import pickle
from pathlib import Path

import pytest
import torch

from fireredasr_fast.checkpoint import aed_args, check_model_dir, load_package
from fireredasr_fast.errors import ModelDirError
from fireredasr_fast.firered import load_model
from fireredasr_fast.model import AedModel
from fireredasr_fast.random_model import write_random_model_dir

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
    assert load_model(path, implementation="reference").model is not None
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
        load_model(path, implementation="reference")
