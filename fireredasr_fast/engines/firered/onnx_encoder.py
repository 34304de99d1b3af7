"""Opt-in ONNX Runtime encoder (`encoder_backend="onnx"`, CPU, fp32).

The encoder of a loaded `AedModel` is exported once with the TorchScript exporter (dynamic
batch and time axes) into a per-user cache, keyed by the checkpoint file (path, size, mtime),
the torch version and the export format below, and run by ONNX Runtime on the CPU. The model
directory is never written to. An export is built in a private temporary directory and
renamed into place, so concurrent workers either find a complete export or build their own;
the loser of the rename race discards its copy.

ORT's kernels sum in a different order from MKL's: encoder outputs differ from the torch path
by ~1e-6 relative, so tokens can in principle differ at near-ties. That is why this is opt-in;
docs/engine.md has the measured speed and drift. Exporting needs the `onnx` package
(a core dependency; absent only where installed without dependencies).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fireredasr_fast.fsutil import cache_dir, directory_made_once, file_identity

from .model import Encoder

# Bump when model.py's encoder changes what the exported graph computes.
EXPORT_FORMAT = 1
ENCODER_FILE = "encoder.onnx"


def export_key(model_file: str | os.PathLike) -> str:
    path = Path(model_file).resolve()
    ident = [str(path), *file_identity(path), torch.__version__, EXPORT_FORMAT]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:20]


def export_encoder(encoder: Encoder, idim: int, path: Path) -> None:
    """torch.onnx.export of `encoder` to `path` (external weight files beside it when the
    graph exceeds protobuf's 2 GB)."""
    try:
        import onnx  # noqa: F401  (the exporter needs it; say so plainly)
    except ImportError as exc:
        raise RuntimeError(
            "encoder_backend='onnx' needs the onnx package to export the encoder: pip install onnx"
        ) from exc
    for param in encoder.parameters():
        param.requires_grad_(False)  # inference-only model; the tracer refuses grad constants
    # Two items of different lengths, so the padding masks are traced as data, not constants.
    feats = torch.randn(2, 700, idim)
    lengths = torch.tensor([700, 523])
    dynamic = {
        "feats": {0: "batch", 1: "frames"},
        "lengths": {0: "batch"},
        "enc": {0: "batch", 1: "enc_frames"},
        "valid": {0: "batch", 1: "enc_frames"},
    }
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter
        torch.onnx.export(
            encoder,
            (feats, lengths),
            str(path),
            input_names=["feats", "lengths"],
            output_names=["enc", "valid"],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )


def cached_export(
    kind: str, write: Callable[[Path], None], model_file: str | os.PathLike, root: Path | None = None
) -> Path:
    """Path of the `kind` export ("encoder", "decoder-step") for this checkpoint, made by
    `write(path)` first if the cache does not have it yet."""
    final = (root or cache_dir()) / f"{kind}-{export_key(model_file)}"
    return directory_made_once(final, lambda staging: write(staging / f"{kind}.onnx")) / f"{kind}.onnx"


def cached_encoder_export(encoder: Encoder, idim: int, model_file: str | os.PathLike, root: Path | None = None) -> Path:
    """Path of the exported encoder for this checkpoint, exporting it first if needed."""
    return cached_export("encoder", lambda path: export_encoder(encoder, idim, path), model_file, root)


def require_onnx() -> None:
    try:
        import onnx  # noqa: F401  (the exporter needs it; say so plainly)
    except ImportError as exc:
        raise RuntimeError("the onnx backends need the onnx package to export the model: pip install onnx") from exc


def session(path: str | os.PathLike, threads: int | None = None) -> Any:
    """An ORT CPU session: `threads` intra-op threads (default: torch's), all graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxEncoder:
    """Runs an exported encoder: same call and outputs as `Encoder.forward` (CPU, fp32)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        self.path = Path(path)
        self.session = session(path, threads)

    def __call__(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        enc, valid = self.session.run(
            None, {"feats": feats.float().contiguous().numpy(), "lengths": lengths.long().numpy()}
        )
        return torch.from_numpy(enc), torch.from_numpy(valid)
