"""FireRedASR-AED model directories: check, load safely, and write.

A model directory holds `model.pth.tar` (a torch pickle of
`{"args": argparse.Namespace, "model_state_dict": {...}}`), `cmvn.ark` (Kaldi CMVN stats),
`dict.txt` (token per line with its id) and `train_bpe1000.model` (SentencePiece, for
English pieces). This module owns that format, for reading and for writing.
"""

from __future__ import annotations

import argparse
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fireredasr_fast.errors import ModelDirError

from .features import encoder_frames, read_cmvn

if TYPE_CHECKING:
    import torch

    from .options import FireRedOptions

MODEL_FILE = "model.pth.tar"
CMVN_FILE = "cmvn.ark"
DICT_FILE = "dict.txt"
SPM_FILE = "train_bpe1000.model"
REQUIRED_FILES = (MODEL_FILE, CMVN_FILE, DICT_FILE, SPM_FILE)

DOWNLOAD_HINT = (
    "download FireRedASR-AED-L from https://huggingface.co/FireRedTeam/FireRedASR-AED-L "
    "(or ModelScope) and pass --model-dir or set FIREREDASR_MODEL_DIR"
)

# The longest segment the engines feed the model (VadOptions.max_segment, Engine.max_segment_seconds).
MAX_SEGMENT_SECONDS = 60.0

# Special token ids shared by every FireRedASR-AED model.
SPECIAL_TOKENS = ("<blank>", "<unk>", "<pad>", "<sos>", "<eos>")

# Architecture presets: "aed-l" is the released FireRedASR-AED-L shape.
PRESETS: dict[str, dict[str, Any]] = {
    "aed-l": dict(n_layers_enc=16, n_layers_dec=16, n_head=20, d_model=1280, d_inner=5120),
    "small": dict(n_layers_enc=6, n_layers_dec=4, n_head=4, d_model=256, d_inner=1024),
    "tiny": dict(n_layers_enc=2, n_layers_dec=2, n_head=2, d_model=64, d_inner=256),
}


def aed_args(preset: str = "tiny", odim: int = 7832, **overrides: Any) -> argparse.Namespace:
    """The `args` namespace of an AED checkpoint, with upstream's fixed fields."""
    fields: dict[str, Any] = dict(
        idim=80,
        kernel_size=33,
        pe_maxlen=5000,
        odim=odim,
        blank_id=0,
        unk_id=1,
        pad_id=2,
        sos_id=3,
        eos_id=4,
        residual_dropout=0.1,
        dropout_rate=0.1,
        input_length_max=60.0,
        output_length_max=250,
        model_type="aed",
    )
    fields.update(PRESETS[preset])
    fields.update(overrides)
    return argparse.Namespace(**fields)


# The decoder's absolute position table needs one row per decoding step, and upstream steps at
# most the encoder length: 1500 rows cover MAX_SEGMENT_SECONDS. Upstream's encoder ignores
# pe_maxlen (its relative table always has 2 x 5000 - 1 rows), so this only shrinks the decoder's.
SEGMENT_PE_MAXLEN = encoder_frames(MAX_SEGMENT_SECONDS)


def shrink_decoder_positions(
    args: argparse.Namespace, state_dict: dict[str, torch.Tensor], pe_maxlen: int = SEGMENT_PE_MAXLEN
) -> tuple[argparse.Namespace, dict[str, torch.Tensor]]:
    """A checkpoint's args and state dict with the decoder's position table cut to `pe_maxlen`
    rows (the table is a fixed function of position: its first rows are the smaller table)."""
    key = "decoder.positional_encoding.pe"
    table = state_dict[key]
    if table.size(1) < pe_maxlen:
        raise ValueError(f"{key} has {table.size(1)} rows, fewer than {pe_maxlen}")
    state = dict(state_dict)
    state[key] = table[:, :pe_maxlen].clone()
    return argparse.Namespace(**{**vars(args), "pe_maxlen": pe_maxlen}), state


def check_model_dir(model_dir: str | os.PathLike | None) -> Path:
    """Return the directory as a Path, or raise ModelDirError naming what is missing."""
    if not model_dir:
        raise ModelDirError(f"no FireRedASR model directory given: {DOWNLOAD_HINT}")
    path = Path(model_dir)
    if not path.is_dir():
        raise ModelDirError(f"model directory {str(path)!r} does not exist: {DOWNLOAD_HINT}")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise ModelDirError(f"model directory {str(path)!r} lacks {', '.join(missing)}: {DOWNLOAD_HINT}")
    return path


def load_package(model_file: str | os.PathLike) -> dict[str, Any]:
    """Load `model.pth.tar` without executing arbitrary pickled code.

    Only tensors, plain containers and `argparse.Namespace` are allowed; anything else is
    refused with a clear error. There is deliberately no fallback to weights_only=False.
    """
    import torch

    try:
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickle-protocol chatter; the outcome is what matters
            package = torch.load(model_file, map_location="cpu", weights_only=True, mmap=_can_mmap(model_file))
    except Exception as exc:  # torch raises many types (IndexError on garbage files)
        raise ModelDirError(f"{model_file}: refused, not a loadable FireRedASR checkpoint ({_reason(exc)})") from None
    if not isinstance(package, dict) or "model_state_dict" not in package or "args" not in package:
        raise ModelDirError(f"{model_file}: not a FireRedASR checkpoint (expected 'args' and 'model_state_dict')")
    if not isinstance(package["args"], argparse.Namespace):
        raise ModelDirError(f"{model_file}: 'args' is not an argparse.Namespace")
    return package


def check_model_files(model_dir: Path, package: dict[str, Any]) -> argparse.Namespace:
    """A model directory's files checked against each other without reading the weights: the
    checkpoint's tensors fit the model its args describe (names and shapes, on the meta
    device), cmvn.ark and dict.txt parse and fit its input and output sizes. Returns the
    checkpoint's args; ModelDirError naming the file otherwise."""
    from .model import AedModel
    from .tokenizer import read_dict

    model_file = model_dir / MODEL_FILE
    state = package["model_state_dict"]
    if not isinstance(state, dict) or not state:
        raise ModelDirError(f"{model_file}: holds no weights (model_state_dict is empty)")
    try:
        AedModel.from_package(package)
    except Exception as exc:  # missing args (AttributeError), names or shapes (RuntimeError), ...
        raise ModelDirError(f"{model_file}: its weights do not fit its args ({_state_problem(exc)})") from None
    args = package["args"]
    cmvn_file = model_dir / CMVN_FILE
    try:
        means, _ = read_cmvn(cmvn_file)
    except ModelDirError:
        raise
    except Exception as exc:  # kaldiio raises many types on a file that is not Kaldi's
        raise ModelDirError(f"{cmvn_file}: not Kaldi CMVN stats ({_first_line(exc)})") from None
    if means.size != args.idim:
        raise ModelDirError(f"{cmvn_file}: stats for {means.size} features, the model takes {args.idim}")
    dict_file = model_dir / DICT_FILE
    try:
        tokens = read_dict(dict_file)
    except (ValueError, OSError) as exc:  # UnicodeDecodeError is a ValueError
        raise ModelDirError(f"{dict_file}: not a FireRedASR token list ({_first_line(exc)})") from None
    if len(tokens) != args.odim or tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
        raise ModelDirError(
            f"{dict_file}: {len(tokens)} tokens starting {' '.join(tokens[:5])!r}; the model has {args.odim} "
            f"starting {' '.join(SPECIAL_TOKENS)!r}"
        )
    return args


def check_decoding(
    args: argparse.Namespace, state_dict: dict[str, Any], decoding: Any, max_segment: float, model_file: Path
) -> None:
    """The decoding options against the checkpoint: a beam no wider than the vocabulary, as many
    decoder steps as the longest segment can take within its position table, and (a v1 model,
    without a CTC head) an eos_penalty of at most 1, as upstream's v1 asserts. ModelDirError."""
    from fireredasr_fast.results import SAMPLE_RATE

    from .options import step_limit

    if decoding.beam_size > args.odim:
        raise ModelDirError(f"--beam-size {decoding.beam_size} is wider than {model_file}'s {args.odim} tokens")
    steps = step_limit(
        encoder_frames(max_segment), round(max_segment * SAMPLE_RATE), decoding.decode_max_len,
        decoding.max_tokens_per_second,
    )  # fmt: skip
    if steps > args.pe_maxlen:
        raise ModelDirError(
            f"{model_file} decodes at most {args.pe_maxlen} tokens a segment; --decode-max-len / --max-segment "
            f"allow {steps}"
        )
    if decoding.eos_penalty > 1.0 and not any(key.startswith("ctc.") for key in state_dict):
        raise ModelDirError(f"--eos-penalty above 1 needs a FireRedASR2 model; {model_file} is v1 (at most 1)")


def check_model(model_dir: str | os.PathLike, options: FireRedOptions, max_segment: float) -> None:
    """What needs a model directory's checkpoint read (check_model_dir has checked its files are
    there): the checkpoint unpickled safely, its files checked against each other, the decoding
    options against it, and the LM (--lm-dir) against its vocabulary. ModelDirError naming the
    file. The command runs this in a process forked from the workers' fork server, where torch
    is imported already, beside its own start (cli.py, runner/workerstart.in_fork_server)."""
    from .lm import load_lm

    path = Path(model_dir)
    package = load_package(path / MODEL_FILE)
    model_args = check_model_files(path, package)
    check_decoding(model_args, package["model_state_dict"], options.decoding, max_segment, path / MODEL_FILE)
    if options.decoding.lm_dir:  # a missing, foreign or mismatched LM, refused here
        load_lm(options.decoding.lm_dir, vocab_size=model_args.odim)


def _state_problem(exc: BaseException) -> str:
    """The first missing, unexpected or misshapen tensor in a load_state_dict error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next((line for line in lines if not line.startswith("Error(s) in loading")), "")
    return (detail or type(exc).__name__)[:200]


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(exc).__name__


def _reason(exc: BaseException) -> str:
    """The informative part of a torch.load error. torch's own text also advises retrying
    with weights_only=False, which is exactly what must not be done with an unknown file."""
    text = str(exc)
    match = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", text)
    if match:
        return f"it references the disallowed global {match.group(1)}, which was not executed"
    match = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if match:
        return f"it is not plain tensors and data: {match.group(1).strip()}"
    if "Weights only load failed" in text:
        return "it is not plain tensors and data"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else type(exc).__name__


def _can_mmap(model_file: str | os.PathLike) -> bool:
    # mmap lets worker processes share the page cache copy of the weights; it needs the
    # zip-based format that torch.save has written since 1.6.
    import zipfile

    return zipfile.is_zipfile(model_file)


def write_model_dir(
    model_dir: str | os.PathLike,
    args: argparse.Namespace,
    state_dict: dict[str, torch.Tensor],
    tokens: Sequence[str],
    spm_model_file: str | os.PathLike,
    cmvn_stats: np.ndarray,
) -> Path:
    """Write a model directory in the official format.

    `tokens` lists the vocabulary in id order (the first five are SPECIAL_TOKENS);
    `cmvn_stats` is the 2 x (dim + 1) Kaldi stats matrix (sums, sums of squares, count).
    """
    import shutil

    import kaldiio
    import torch

    if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
        raise ValueError(f"the vocabulary must start with {SPECIAL_TOKENS}")
    if len(tokens) != args.odim:
        raise ValueError(f"vocabulary has {len(tokens)} tokens but args.odim is {args.odim}")
    table = state_dict.get("decoder.positional_encoding.pe")
    if table is not None and table.size(1) != args.pe_maxlen:
        raise ValueError(f"the decoder's position table has {table.size(1)} rows, args.pe_maxlen {args.pe_maxlen}")
    # torch.save writes a view's whole storage: give views of larger tensors their own.
    state_dict = {
        k: v if v.untyped_storage().nbytes() == v.numel() * v.element_size() else v.clone()
        for k, v in state_dict.items()
    }
    path = Path(model_dir)
    path.mkdir(parents=True, exist_ok=True)
    torch.save({"args": args, "model_state_dict": state_dict}, path / MODEL_FILE)
    kaldiio.save_mat(str(path / CMVN_FILE), np.asarray(cmvn_stats, dtype=np.float64))
    with open(path / DICT_FILE, "w", encoding="utf-8") as f:
        for index, token in enumerate(tokens):
            f.write(f"{token} {index}\n")
    if Path(spm_model_file).resolve() != (path / SPM_FILE).resolve():
        shutil.copyfile(spm_model_file, path / SPM_FILE)
    (path / "config.yaml").write_text("")
    return path
