"""Command line: `fireredasr-fast [options] INPUT...` (also `python long_video_transcribe.py`).

Exit codes: 0 every input succeeded (or was already done), 1 some input failed,
2 usage or configuration error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fireredasr_fast.runner.plan import make_plan, model_bytes

from .cues import CueOptions
from .engines import EngineSpec
from .errors import FireRedFastError
from .inputs import collect_inputs, expand_audio_streams
from .transcribe import TranscribeOptions
from .vad import VadOptions
from .writers import FORMATS

log = logging.getLogger("fireredasr_fast")

DEFAULT_FORMATS = "srt,vtt,txt,json"
# Engine options (and CLI flags) that run a part of FireRedASR on another backend (ONNX Runtime, oneDNN).
BACKEND_OPTIONS = ("encoder_backend", "decoder_backend")
BACKENDS = ("torch", "mkl", "onnx", "onednn")  # firered.BACKENDS, without importing torch here
# Backends that run the memory-mapped checkpoint weights every worker shares.
SHARED_WEIGHT_BACKENDS = ("torch", "mkl")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fireredasr-fast",
        description="Transcribe videos and audio (files, folders, globs) into SRT/VTT/ASS/TXT/JSON/TSV.",
        epilog="Options go before the inputs; use -- before inputs that start with a dash.",
    )
    p.add_argument("inputs", nargs="+", help="media files, folders (searched recursively) or glob patterns")
    p.add_argument("-o", "--output-dir", default="transcripts", help="where outputs go (default: %(default)s)")
    p.add_argument(
        "--formats", default=DEFAULT_FORMATS, help=f"comma list of {','.join(FORMATS)} (default: %(default)s)"
    )
    p.add_argument("--overwrite", action="store_true", help="redo inputs the journal says are done")
    p.add_argument("--log-file", help="also write a log of every file's outcome here (for unattended runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = p.add_argument_group("engine")
    e.add_argument("--engine", choices=("firered", "whisper"), default="firered")
    e.add_argument("--model-dir", help="model directory (firered: or FIREREDASR_MODEL_DIR; whisper: CTranslate2)")
    e.add_argument("--model", help="whisper only: a faster-whisper model name (needs a network)")
    e.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: CPU workers, plus GPU workers when GPU memory is free; cpu; cuda (GPU workers only)",
    )
    e.add_argument(
        "--gpu",
        choices=("auto", "off", "only"),
        default=None,
        help="GPU workers: auto (join when memory frees), off, only (no CPU workers); default from --device",
    )
    e.add_argument(
        "--gpu-min-free-gb",
        type=float,
        default=None,
        help="free GPU memory required before a GPU worker starts (default: model size x 1.3 + 2 GiB)",
    )
    e.add_argument(
        "--precision",
        choices=("fp32", "int8", "fp16", "bf16"),
        default=None,
        help="firered: fp32 (default, exact), int8 (CPU), fp16/bf16 (CUDA); whisper: compute type",
    )
    e.add_argument(
        "--encoder-backend",
        choices=BACKENDS,
        default="torch",
        help="firered, CPU fp32: torch (default: Linears through oneDNN on the shared weights), mkl (torch's own "
        "Linear, the old default, for comparison), onnx (ONNX Runtime, exported once into ~/.cache/fireredasr-fast, "
        "needs the onnx package) or onednn (oneDNN with pre-packed weights); onnx and onednn are opt-in: a private "
        "copy of the weights per worker, results may differ at near-ties (docs/engine.md)",
    )
    e.add_argument(
        "--decoder-backend",
        choices=BACKENDS,
        default="torch",
        help="firered, CPU fp32: the same choices for each decoder step (torch also runs the step's attention and "
        "Linears of up to 96 rows through numba kernels; onednn: pre-packed weights, a private 1.5 GB copy of the "
        "AED-L decoder per worker, level with the default from ~48 rows a step)",
    )
    e.add_argument("--language", help="whisper only: language code")

    d = p.add_argument_group("decoding (upstream FireRedASR defaults)")
    d.add_argument("--beam-size", type=int, default=3)
    d.add_argument("--nbest", type=int, default=1)
    d.add_argument("--decode-max-len", type=int, default=0, help="0 = up to the number of encoder frames")
    d.add_argument("--softmax-smoothing", type=float, default=1.25)
    d.add_argument("--length-penalty", type=float, default=0.6)
    d.add_argument("--eos-penalty", type=float, default=1.0)
    d.add_argument(
        "--max-tokens-per-second",
        type=float,
        default=0.0,
        help="firered: at most this many tokens per second of segment (0 = off, upstream's limit only); "
        "stops a decoder that loops on noise, e.g. 12",
    )

    v = p.add_argument_group("segmentation (silero VAD)")
    v.add_argument("--vad-threshold", type=float, default=VadOptions.threshold)
    v.add_argument("--min-segment", type=float, default=VadOptions.min_segment, help="seconds (default: %(default)s)")
    v.add_argument("--max-segment", type=float, default=VadOptions.max_segment, help="seconds (default: %(default)s)")
    v.add_argument("--speech-pad", type=float, default=VadOptions.speech_pad, help="seconds (default: %(default)s)")
    v.add_argument("--merge-gap", type=float, default=VadOptions.merge_gap, help="seconds (default: %(default)s)")
    v.add_argument(
        "--audio-stream",
        type=_audio_stream,
        default=None,
        help="index among the audio streams (0 = first); 'all': one set of outputs per stream, "
        "named <name>.a0.srt, <name>.a1.srt, ... (default: the stream with the most speech; "
        "ffmpeg's choice when they tie)",
    )

    c = p.add_argument_group("subtitles")
    c.add_argument(
        "--max-line-width",
        type=float,
        default=CueOptions.max_line_width,
        help="CJK characters per line; a Latin character counts half (default: %(default)s)",
    )
    c.add_argument("--max-lines", type=int, default=CueOptions.max_lines)
    c.add_argument("--max-cue-duration", type=float, default=CueOptions.max_duration)
    c.add_argument("--min-cue-duration", type=float, default=CueOptions.min_duration)

    r = p.add_argument_group("parallelism")
    r.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: from the machine; 0 = in this process)"
    )
    r.add_argument("--threads-per-worker", type=int, default=None)
    r.add_argument(
        "--batch-seconds",
        type=float,
        default=TranscribeOptions.batch_seconds,
        help="padded audio seconds per batch (default: %(default)s)",
    )
    r.add_argument("--preload-seconds", type=float, default=3600.0, help="audio decoded ahead of the workers")
    r.add_argument(
        "--frontend-processes",
        type=int,
        default=None,
        help="processes running the VAD, files decoded at once (default: one per core beside GPU "
        "workers or a cluster; else 0: one thread, enough for CPU workers; docs/tuning.md)",
    )

    k = p.add_argument_group("cluster (Ray; pip install 'fireredasr-fast[cluster]')")
    k.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run the workers on a Ray cluster: ray://HOST:PORT, HOST:PORT, auto (the cluster this machine "
        "is part of) or local (a private one on this machine); --workers/--threads-per-worker apply per node",
    )
    k.add_argument(
        "--ship-model",
        action="store_true",
        help="send the model to each node once through Ray's object store (default: every node reads "
        "--model-dir, which must then be on shared storage)",
    )
    return p


def _audio_stream(value: str) -> int | str:
    if value == "all":
        return value
    try:
        index = int(value)
    except ValueError:
        index = -1
    if index < 0:
        raise argparse.ArgumentTypeError(f"expected a stream index (0, 1, ...) or 'all', not {value!r}")
    return index


def _gpu_mode(args: argparse.Namespace) -> str:
    """--gpu, else what --device implies."""
    return args.gpu or {"auto": "auto", "cpu": "off", "cuda": "only"}[args.device]


def _gpu_scheduler(args: argparse.Namespace, model_size: int):
    """The GPU policy from --gpu / --device, or None when no CUDA GPU can be used."""
    mode = _gpu_mode(args)
    if mode == "off":
        return None
    import torch

    if not torch.cuda.is_available():
        if mode == "only":
            raise FireRedFastError("GPU requested (--gpu only / --device cuda) but CUDA is not available")
        return None  # auto on a machine without CUDA: CPU workers only, silently
    from fireredasr_fast.runner.gpu import GpuPolicy, GpuScheduler, default_probe, gib

    min_free = gib(args.gpu_min_free_gb) if args.gpu_min_free_gb is not None else None
    return GpuScheduler(GpuPolicy(mode=mode, min_free_bytes=min_free, model_bytes=model_size), default_probe())


def _engine_spec(args: argparse.Namespace, device: str) -> EngineSpec:
    """Resolve and check the model in this process, so a bad model directory is one clear
    line here rather than a crash in every worker."""
    if args.engine == "firered":
        from fireredasr_fast.engines.firered.checkpoint import MODEL_FILE, check_model_dir, load_package

        model_dir = check_model_dir(args.model_dir or os.environ.get("FIREREDASR_MODEL_DIR"))
        # Unpickle (safely) here once: a hostile or foreign checkpoint is refused before any
        # worker starts. The weights are memory-mapped, so this costs little even at 4.7 GB.
        load_package(model_dir / MODEL_FILE)
        options: dict[str, Any] = {
            "beam_size": args.beam_size,
            "nbest": args.nbest,
            "decode_max_len": args.decode_max_len,
            "softmax_smoothing": args.softmax_smoothing,
            "length_penalty": args.length_penalty,
            "eos_penalty": args.eos_penalty,
            # fp16/bf16 are GPU-only: CPU workers then run fp32 (see gpu_spec in main).
            "precision": args.precision if args.precision in ("fp32", "int8") else "fp32",
        }
        if args.max_tokens_per_second < 0:
            raise FireRedFastError("--max-tokens-per-second must be >= 0 (0 = off)")
        if args.max_tokens_per_second:
            # Only when set, like the backends below.
            options["max_tokens_per_second"] = args.max_tokens_per_second
        for option in BACKEND_OPTIONS:
            backend = getattr(args, option)
            if backend != "torch":
                # Only when asked for: unchanged settings keep earlier runs' fingerprints valid.
                if options["precision"] != "fp32":
                    raise FireRedFastError(f"--{option.replace('_', '-')} {backend} runs on CPU in fp32 only")
                options[option] = backend
        return EngineSpec("firered", str(model_dir.resolve()), None, device, tuple(sorted(options.items())))
    from fireredasr_fast.engines.whisper.engine import resolve_model_path

    model_path = resolve_model_path(args.model_dir, args.model)
    options = {"language": args.language}
    if args.precision:
        options["compute_type"] = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}.get(
            args.precision, args.precision
        )
    return EngineSpec("whisper", model_path, args.model, device, tuple(sorted(options.items())))


def _weights_shared(spec: EngineSpec) -> bool:
    """Torch workers share the memory-mapped weights; ONNX Runtime sessions and oneDNN's
    packed weights are private copies."""
    return not any(key in BACKEND_OPTIONS and value not in SHARED_WEIGHT_BACKENDS for key, value in spec.options)


def _cluster_setup(args: argparse.Namespace, spec: EngineSpec, gpu_spec: EngineSpec):
    """Join the Ray cluster and plan its worker slots (raises FireRedFastError)."""
    from fireredasr_fast.runner.cluster import cluster_setup, connect
    from fireredasr_fast.runner.gpu import gib

    connect(args.cluster, local_cpus=args.workers * (args.threads_per_worker or 1) if args.workers else None)
    return cluster_setup(
        spec,
        gpu_spec,
        model_bytes(spec.model_dir),
        workers=args.workers,
        threads_per_worker=args.threads_per_worker,
        gpu_mode=_gpu_mode(args),
        ship=args.ship_model,
        weights_shared=_weights_shared(spec),
        min_gpu_free_bytes=gib(args.gpu_min_free_gb) if args.gpu_min_free_gb is not None else None,
    )


def _model_identity(path: str | None) -> dict[str, Any]:
    """Size and mtime of the model files: a replaced checkpoint changes the fingerprint."""
    if not path or not Path(path).is_dir():
        return {"path": path}
    files = sorted(f for f in Path(path).iterdir() if f.is_file())
    return {"path": path, "files": {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files}}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    formats = tuple(f.strip().lower() for f in args.formats.split(",") if f.strip())
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        parser.error(f"unknown format(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}")

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("fireredasr_fast").setLevel(logging.WARNING)
    if args.log_file:
        handler = logging.FileHandler(args.log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler.setLevel(logging.INFO)
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        logging.getLogger().handlers[0].setLevel(logging.WARNING)

    try:
        # CPU workers always run on the CPU; GPU workers get their own device (see runner).
        spec = _engine_spec(args, "cpu")
        # On a cluster the GPUs are the nodes' own (cluster.py), not this machine's.
        gpu = None if args.cluster else _gpu_scheduler(args, model_bytes(spec.model_dir))
    except FireRedFastError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    inputs, problems = collect_inputs(args.inputs)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not inputs:
        print("error: no media files to transcribe", file=sys.stderr)
        return 2
    if args.audio_stream == "all":
        inputs = expand_audio_streams(inputs)

    vad = VadOptions(
        threshold=args.vad_threshold,
        min_segment=args.min_segment,
        max_segment=args.max_segment,
        speech_pad=args.speech_pad,
        merge_gap=args.merge_gap,
    )
    cues = CueOptions(
        max_line_width=args.max_line_width,
        max_lines=args.max_lines,
        max_duration=args.max_cue_duration,
        min_duration=args.min_cue_duration,
    )
    transcribe = TranscribeOptions(
        vad=vad,
        cues=cues,
        audio_stream=None if args.audio_stream == "all" else args.audio_stream,
        batch_seconds=args.batch_seconds,
    )
    settings = {
        "engine": {"engine": spec.engine, "options": dict(spec.options)},
        "gpu_precision": args.precision,
        "model": _model_identity(spec.model_dir),
        "vad": asdict(vad),
        "cues": asdict(cues),
        "audio_stream": args.audio_stream,
        "formats": list(formats),
    }

    from fireredasr_fast.runner.scheduler import Runner, RunOptions, print_summary

    gpu_spec = spec
    if spec.engine == "firered" and args.precision in ("fp16", "bf16"):
        gpu_spec = dataclasses.replace(
            spec, options=tuple(sorted({**dict(spec.options), "precision": args.precision}.items()))
        )
    if any(k in BACKEND_OPTIONS for k, _ in gpu_spec.options):
        # The mkl/onnx/onednn backends run on CPU workers only; GPU workers use torch on CUDA.
        options_gpu = {k: v for k, v in gpu_spec.options if k not in BACKEND_OPTIONS}
        gpu_spec = dataclasses.replace(gpu_spec, options=tuple(sorted(options_gpu.items())))
    groups = None
    if args.cluster:
        try:
            cluster = _cluster_setup(args, spec, gpu_spec)
        except FireRedFastError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        plan, groups, gpu = cluster.plan, cluster.groups, None  # GPU actors are the cluster's own
        print(cluster.description, file=sys.stderr)
    else:
        plan = make_plan(
            model_bytes(spec.model_dir), args.workers, args.threads_per_worker, weights_shared=_weights_shared(spec)
        )
        print(plan.describe(), file=sys.stderr)
    if gpu is not None:
        print(gpu.describe(), file=sys.stderr)
    options = RunOptions(
        output_dir=Path(args.output_dir),
        formats=formats,
        transcribe=transcribe,
        overwrite=args.overwrite,
        preload_seconds=args.preload_seconds,
        frontend_processes=args.frontend_processes,
        progress=not args.no_progress and sys.stderr.isatty(),
        settings=settings,
    )
    try:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        probe = Path(args.output_dir) / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        print(f"error: {args.output_dir}: output directory is not writable ({exc.strerror or exc})", file=sys.stderr)
        return 2

    try:
        summary = Runner(spec, plan, options, gpu=gpu, gpu_spec=gpu_spec, groups=groups).run(inputs)
    finally:
        if args.cluster:
            from fireredasr_fast.runner.cluster import disconnect

            disconnect()
    print_summary(summary)
    if summary.interrupted:
        return 130
    return 1 if summary.failed or problems else 0


if __name__ == "__main__":
    sys.exit(main())
