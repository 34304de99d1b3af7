"""FireRedASR2's external LSTM language model, for shallow fusion in the beam search.

An LM directory holds `model.pth.tar` in the ASR checkpoint's format: a torch pickle of
`{"args": argparse.Namespace, "model_state_dict": ...}`, loaded here with weights_only=True and
the same allow-list (checkpoint.load_package). args: idim and odim (the vocabulary, the ASR's),
embedding_dim, hidden_size (equal to embedding_dim: the output layer reads the LSTM's output
with embedding_dim inputs), num_layers, dropout, tie_weights. Parameter names are upstream's
(`embedding`, `lstm`, `fc`), and its fixed ids are kept: <sos> 3, <eos> 4, <pad> 2.

Fusion (FireRedASR2's batch_beam_search): at each step the decoder's smoothed log-probs of the
next token get lm_weight x the LM's log-softmax added, the LM's <eos> log-prob first multiplied
by LM_EOS_FACTOR (3), before the eos penalty and the top-k. The LM reads the token each beam
chose last (<sos> first) and carries its (h, c) state through the beam reorders.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from fireredasr_fast.errors import ModelDirError

from .checkpoint import MODEL_FILE, load_package

# Upstream's LstmLm.from_args sets these whatever the checkpoint's args say.
LM_PAD_ID, LM_SOS_ID, LM_EOS_ID = 2, 3, 4
# FireRedASR2 multiplies the LM's <eos> log-prob by 3 before weighting it.
LM_EOS_FACTOR = 3.0
_ARGS = ("idim", "odim", "embedding_dim", "hidden_size", "num_layers")


class LstmLm(nn.Module):
    """Embedding -> LSTM -> Linear, one token per step."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__()
        self.args = args
        self.embedding = nn.Embedding(args.idim, args.embedding_dim, padding_idx=LM_PAD_ID)
        self.lstm = nn.LSTM(
            args.embedding_dim,
            args.hidden_size,
            args.num_layers,
            batch_first=True,
            dropout=float(getattr(args, "dropout", 0.0)),
        )
        self.fc = nn.Linear(args.embedding_dim, args.odim)
        if getattr(args, "tie_weights", False):
            self.fc.weight = self.embedding.weight
        self.eos_id = LM_EOS_ID

    @property
    def vocab_size(self) -> int:
        return int(self.args.odim)

    def init_state(self, rows: int, device: torch.device) -> tuple[Tensor, Tensor]:
        shape = (self.lstm.num_layers, rows, self.lstm.hidden_size)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def step(self, tokens: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Feed one token per row; returns the next token's log-probs (rows, odim) and the state."""
        out, state = self.lstm(self.embedding(tokens[:, None]), state)
        return torch.log_softmax(self.fc(out)[:, -1], dim=-1), state


def load_lm(lm_dir: str | os.PathLike, device: str | torch.device = "cpu", vocab_size: int | None = None) -> LstmLm:
    """Load a FireRedASR2 LM directory safely; ModelDirError naming the file otherwise, or when
    its vocabulary is not `vocab_size` (the ASR model's)."""
    model_file = Path(lm_dir) / MODEL_FILE
    if not model_file.is_file():
        raise ModelDirError(f"LM directory {str(lm_dir)!r} lacks {MODEL_FILE}")
    package = load_package(model_file)
    args = package["args"]
    missing = [name for name in _ARGS if not hasattr(args, name)]
    if missing:
        raise ModelDirError(f"{model_file}: not a FireRedASR2 LSTM LM (args lack {', '.join(missing)})")
    lm = LstmLm(args)
    try:
        # Extra entries are ignored, as upstream's strict=False does; a missing one would
        # leave random weights, so it is refused.
        missing, _ = lm.load_state_dict(package["model_state_dict"], strict=False)
    except RuntimeError as exc:
        raise ModelDirError(f"{model_file}: weights do not fit an LSTM LM of its args ({exc})") from None
    if missing:
        raise ModelDirError(f"{model_file}: LM weights lack {', '.join(missing)}")
    if vocab_size is not None and lm.vocab_size != vocab_size:
        raise ModelDirError(f"{model_file}: LM vocabulary {lm.vocab_size} != the ASR model's {vocab_size}")
    return lm.to(device).eval()
