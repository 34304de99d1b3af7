"""Random-weight FireRedASR-AED model directories in the official format.

For tests and benchmarks where the real 4.7 GB model is not available: the directory has
the same files (model.pth.tar, cmvn.ark, dict.txt with Chinese characters and English
SentencePiece pieces, a real SentencePiece model, config.yaml), so every loader is
exercised exactly as with the official one.

Plain random decoders repeat one token whatever the audio: the tied output projection
favours the input token, which the residual stream carries. `mix_gain` scales the decoder
MLP outputs so a random nonlinear function of (token, position, audio) dominates the
residual stream instead; with seed 0 and mix_gain 100 the tiny preset's hypotheses vary
along the utterance and between utterances, with mix_gain 30 some of them end with <eos>
before the length limit. `audio_gain` scales the cross-attention value/output projections. `output_gain` scales the
decoder's final layer norm, i.e. the logits alone: at a v2-sized vocabulary (8667 tokens) plain
logits give near-flat distributions (every token's probability ~1e-3), so the search's scores
and confidences would say nothing; `eos_gain` scales the <eos> row of the tied embedding, which
only the output sees (<eos> is never fed back to a live beam), so hypotheses can end.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fireredasr_fast.engines.firered.checkpoint import SPECIAL_TOKENS, SPM_FILE, aed_args, write_model_dir
from fireredasr_fast.engines.firered.model import AedModel

_ENGLISH = [
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "SPEECH RECOGNITION TURNS AUDIO INTO TEXT",
    "SUBTITLES FOR LONG VIDEOS ARE WRITTEN IN BATCHES",
    "WE MEASURE THE SPEED OF THE ENCODER AND THE DECODER",
    "HELLO WORLD THIS IS A SMALL TEST OF THE TOKENIZER",
    "A BEAM SEARCH KEEPS THE BEST HYPOTHESES AT EVERY STEP",
    "MACHINE LEARNING MODELS NEED DATA AND COMPUTE",
    "PLEASE OPEN THE WINDOW BEFORE THE MEETING STARTS",
]


def _train_spm(workdir: Path, vocab_size: int = 96) -> Path:
    import sentencepiece as spm

    text = workdir / "spm_train.txt"
    text.write_text("\n".join(_ENGLISH * 4) + "\n", encoding="utf-8")
    prefix = workdir / "train_bpe"
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


def _vocabulary(spm_file: Path, odim: int) -> list[str]:
    """Special tokens, then English pieces, then CJK characters up to `odim` tokens."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_file))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    pieces = [p for p in pieces if not (p.startswith("<") and p.endswith(">"))]
    tokens = list(SPECIAL_TOKENS)
    n_cjk = max(0, odim - len(tokens) - len(pieces))
    tokens += [chr(0x4E00 + i) for i in range(n_cjk)]  # 一 丁 丂 ... (common block start)
    tokens += pieces
    return tokens[:odim]


def _cmvn_stats(dim: int = 80, count: float = 100000.0, mean: float = 11.0, std: float = 3.0) -> np.ndarray:
    """Plausible log-mel statistics (means around 11, std 3), with a little per-bin spread."""
    rng = np.random.default_rng(1234)
    means = mean + rng.uniform(-2.0, 2.0, dim)
    stds = std * rng.uniform(0.8, 1.2, dim)
    stats = np.zeros((2, dim + 1))
    stats[0, :dim] = means * count
    stats[1, :dim] = (stds**2 + means**2) * count
    stats[0, dim] = count
    return stats


def random_state_dict(
    args: Any,
    seed: int = 0,
    with_ctc: bool = False,
    audio_gain: float = 1.0,
    mix_gain: float = 1.0,
    output_gain: float = 1.0,
    eos_gain: float = 1.0,
) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = AedModel(args, with_ctc=with_ctc)
    with torch.no_grad():
        # Upstream initialises embeddings N(0, 1); with the tied output projection that makes
        # logits huge. A trained model's embeddings are far smaller.
        model.decoder.tgt_word_emb.weight.normal_(0.0, args.d_model**-0.5)
        for layer in model.decoder.layer_stack:
            layer.cross_attn.w_vs.weight.mul_(audio_gain)
            layer.cross_attn.fc.weight.mul_(audio_gain)
            layer.mlp.w_2.weight.mul_(mix_gain)
        model.decoder.layer_norm_out.weight.mul_(output_gain)
        model.decoder.layer_norm_out.bias.mul_(output_gain)
        model.decoder.tgt_word_emb.weight[args.eos_id].mul_(eos_gain)
    # No copies: at AED-L size every extra copy is 4.6 GB. The tied embedding/projection
    # stay one storage, which torch.save writes once, as in official files.
    return {k: v.detach() for k, v in model.state_dict().items()}


def write_random_model_dir(
    path: str | os.PathLike,
    preset: str = "tiny",
    odim: int = 256,
    seed: int = 0,
    with_ctc: bool = False,
    audio_gain: float = 1.0,
    mix_gain: float = 1.0,
    output_gain: float = 1.0,
    eos_gain: float = 1.0,
    **overrides: Any,
) -> Path:
    """Write a random model directory (official format) and return its path."""
    args = aed_args(preset, odim=odim, **overrides)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        spm_file = _train_spm(Path(tmp))
        tokens = _vocabulary(spm_file, odim)
        if len(tokens) != odim:
            raise ValueError(f"odim {odim} is too small for {len(tokens)} special and English tokens")
        state = random_state_dict(
            args,
            seed=seed,
            with_ctc=with_ctc,
            audio_gain=audio_gain,
            mix_gain=mix_gain,
            output_gain=output_gain,
            eos_gain=eos_gain,
        )
        write_model_dir(path, args, state, tokens, spm_file, _cmvn_stats(args.idim))
    assert (path / SPM_FILE).is_file()
    return path


def write_random_lm_dir(
    path: str | os.PathLike,
    odim: int,
    dim: int = 32,
    num_layers: int = 2,
    seed: int = 0,
    output_gain: float = 1.0,
    tie_weights: bool = False,
) -> Path:
    """A random FireRedASR2 LSTM LM directory (`model.pth.tar` in upstream's format, lm.py).
    `output_gain` scales the output layer, so the LM's preferences are strong enough to change
    what the search chooses."""
    import argparse

    from fireredasr_fast.engines.firered.checkpoint import MODEL_FILE
    from fireredasr_fast.engines.firered.lm import LstmLm

    args = argparse.Namespace(
        idim=odim,
        odim=odim,
        embedding_dim=dim,
        hidden_size=dim,
        num_layers=num_layers,
        dropout=0.0,
        tie_weights=tie_weights,
    )
    torch.manual_seed(seed)
    lm = LstmLm(args)
    with torch.no_grad():
        lm.fc.weight.mul_(output_gain)
        lm.fc.bias.mul_(output_gain)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.save({"args": args, "model_state_dict": lm.state_dict()}, path / MODEL_FILE)
    return path
