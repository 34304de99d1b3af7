"""`fireredasr-fast doctor` (or `--check`): what a run would find, one line per check, before
an overnight run finds it at 3 a.m.

Each check returns ok, warn or fail with one line of detail; any fail makes the exit status 1.
The model check calls the very function a run calls (the CLI passes it in), so the doctor
and a run cannot disagree about a model directory.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .engines import EngineSpec
from .errors import FireRedFastError
from .runner.gpu import GIB, GpuProbe, NvmlProbe
from .runner.ollama import ollama_base_url, ollama_models
from .runner.plan import THREAD_ENV_VARS, make_plan, model_bytes
from .speakers import resemblyzer_weights

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK | WARN | FAIL
    detail: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.name:<8}  {self.detail}"


def check_ffmpeg() -> Check:
    """The ffmpeg a run would use, and its version."""
    from .audio import ffmpeg_executable

    try:
        exe = ffmpeg_executable()
        shown = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, text=True, timeout=30)
    except (FireRedFastError, OSError, subprocess.SubprocessError) as exc:
        return Check("ffmpeg", FAIL, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    first = (shown.stdout.splitlines() or ["(no version output)"])[0]
    version = first.split(" Copyright")[0]
    if shown.returncode != 0:
        return Check("ffmpeg", FAIL, f"{exe} -version exited with {shown.returncode}")
    return Check("ffmpeg", OK, f"{version} ({exe})")


def check_model(resolve: Callable[[], EngineSpec]) -> tuple[Check, EngineSpec | None]:
    """The run's own model resolution and checks (`resolve` is the CLI's)."""
    try:
        spec = resolve()
    except FireRedFastError as exc:
        return Check("model", FAIL, str(exc)), None
    size = model_bytes(spec.model_dir)
    where = spec.model_dir or spec.model_name
    return Check("model", OK, f"{spec.engine}: {where} ({size / 1e9:.2f} GB)"), spec


# What each engine imports in a worker; the first module's absence is fatal for that engine.
ENGINE_MODULES: dict[str, tuple[str, ...]] = {
    "firered": ("torch", "fireredasr_fast.engines.firered.engine"),
    "whisper": ("faster_whisper", "ctranslate2", "fireredasr_fast.engines.whisper.engine"),
}
# Needed by every run whatever the engine.
COMMON_MODULES = ("silero_vad", "opencc")


def _import_problem(module: str) -> str | None:
    try:
        importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken native library raising OSError
        return f"{module}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return None


def _version(module: str) -> str:
    return str(getattr(sys.modules.get(module), "__version__", "?"))


def check_engines(engine: str) -> list[Check]:
    """Every engine's imports: the chosen one's failure is a fail, the other's a warning."""
    out = []
    for name, modules in ENGINE_MODULES.items():
        problems = [p for p in (_import_problem(m) for m in modules) if p]
        if problems:
            out.append(Check(f"{name}", FAIL if name == engine else WARN, f"cannot import {problems[0]}"))
        else:
            out.append(Check(f"{name}", OK, f"importable ({modules[0]} {_version(modules[0])})"))
    problems = [p for p in (_import_problem(m) for m in COMMON_MODULES) if p]
    detail = f"cannot import {problems[0]}" if problems else "importable (" + ", ".join(COMMON_MODULES) + ")"
    out.append(Check("stages", FAIL if problems else OK, detail))
    return out


def check_threads(physical_cores: int | None = None) -> Check:
    """Thread settings inherited from the environment: workers set their own, but a value over
    the core count here means another tool on this machine may over-subscribe it."""
    import psutil

    cores = physical_cores or psutil.cpu_count(logical=False) or os.cpu_count() or 1
    settings = {name: os.environ[name] for name in THREAD_ENV_VARS if name in os.environ}
    shown = ", ".join(f"{k}={v}" for k, v in settings.items()) or "none set"
    too_many = [k for k, v in settings.items() if v.isdigit() and int(v) > cores]
    if too_many:
        return Check("threads", WARN, f"{shown}: {', '.join(too_many)} over the {cores} physical cores")
    return Check("threads", OK, f"{shown}; {cores} physical cores; each worker pins its own threads")


def check_plan(
    spec: EngineSpec | None, args: argparse.Namespace, weights_shared: Callable[[EngineSpec], bool]
) -> Check:
    """The plan (workers x threads) a run would print."""
    if spec is None:
        return Check("plan", WARN, "no model: planned without its size")
    shared = weights_shared(spec)
    plan = make_plan(model_bytes(spec.model_dir), args.workers, args.threads_per_worker, weights_shared=shared)
    return Check("plan", OK, plan.describe().removeprefix("plan: "))


def check_gpus(probe: GpuProbe, mode: str) -> Check:
    """GPUs seen through NVML with their free memory; none is fine unless GPU workers are required."""
    gpus = probe.gpus()
    if not gpus:
        status = FAIL if mode == "only" else OK
        return Check("gpu", status, "none seen through NVML (nvidia-ml-py and a driver): CPU workers only")
    shown = "; ".join(
        f"cuda:{g.index} {g.name} {g.free_bytes / GIB:.1f}/{g.total_bytes / GIB:.1f} GiB free" for g in gpus
    )
    if mode == "off":
        return Check("gpu", OK, f"{shown} (not used: --gpu off / --device cpu)")
    return Check("gpu", OK, shown)


def check_ollama(host: str | None = None, timeout: float = 1.0) -> Check:
    """ollama (which shares the GPUs) reachable, and what it holds."""
    url = ollama_base_url(host)
    models = ollama_models(host, timeout=timeout)
    if models is None:
        # Not running is normal; asked for (OLLAMA_HOST set) and not there is worth a look.
        expected = host is not None or "OLLAMA_HOST" in os.environ
        return Check("ollama", WARN if expected else OK, f"not reachable at {url}")
    if not models:
        return Check("ollama", OK, f"{url}: reachable, no model loaded")
    held = ", ".join(f"{m.name} ({m.size_vram_bytes / GIB:.1f} GiB on GPU)" for m in models)
    return Check("ollama", OK, f"{url}: holds {held}")


def check_output(output_dir: str | os.PathLike) -> Check:
    """The output folder writable: a file written there and removed, or, when the folder does
    not exist yet, its nearest existing parent writable (a run makes it; the doctor does not)."""
    folder = Path(output_dir).absolute()
    if not folder.exists():
        parent = next(p for p in folder.parents if p.exists())
        if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
            return Check("output", OK, f"{folder} will be made in {parent} (writable)")
        return Check("output", FAIL, f"{folder}: cannot be made, {parent} is not a writable folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-", suffix=".tmp"):
            pass
    except OSError as exc:
        return Check("output", FAIL, f"{folder}: not writable ({exc.strerror or exc})")
    return Check("output", OK, f"{folder} writable")


def check_log_file(log_file: str | os.PathLike) -> Check:
    """--log-file can be written: its folder exists and takes files (the file is made or
    appended to by the run, not here)."""
    path = Path(log_file).absolute()
    if path.is_dir():
        return Check("log", FAIL, f"--log-file {path}: is a folder")
    if not path.parent.is_dir():
        return Check("log", FAIL, f"--log-file {path}: folder {path.parent} does not exist")
    writable = os.access(path, os.W_OK) if path.exists() else os.access(path.parent, os.W_OK | os.X_OK)
    if not writable:
        return Check("log", FAIL, f"--log-file {path}: not writable")
    return Check("log", OK, f"{path} writable")


def check_speakers() -> Check:
    """`--speakers`: the voice encoder the diarization loads is installed."""
    try:
        return Check("speakers", OK, f"voice encoder {resemblyzer_weights()}")
    except FireRedFastError as exc:
        return Check("speakers", FAIL, str(exc))


def run_checks(
    args: argparse.Namespace,
    resolve: Callable[[], EngineSpec],
    weights_shared: Callable[[EngineSpec], bool],
    probe: GpuProbe | None = None,
) -> list[Check]:
    model, spec = check_model(resolve)
    gpu_mode = args.gpu or {"auto": "auto", "cpu": "off", "cuda": "only"}[args.device]
    return [
        check_ffmpeg(),
        model,
        *check_engines(args.engine),
        check_threads(),
        check_plan(spec, args, weights_shared),
        check_gpus(probe if probe is not None else NvmlProbe(), gpu_mode),
        check_ollama(),
        check_output(args.output_dir),
        *([check_log_file(args.log_file)] if args.log_file else []),
        *([check_speakers()] if getattr(args, "speakers", None) is not None else []),
    ]


def report(checks: Sequence[Check]) -> int:
    """Print one line per check and a closing count; 1 when any failed, else 0."""
    for check in checks:
        print(check.line())
    failed = sum(c.status == FAIL for c in checks)
    warned = sum(c.status == WARN for c in checks)
    print(f"\n{len(checks) - failed - warned} ok, {warned} warn, {failed} fail")
    return 1 if failed else 0
