"""When a GPU worker may join the CPU workers: GPU memory probes and the policy (ollama's
answers come from ollama.py).

The user's GPUs are shared with ollama (a local LLM server) that loads models on demand and
unloads them after a keep-alive. So GPU availability is not a start-up fact but something
that changes during a run: the scheduler re-probes free memory (at most every
`recheck_seconds`), starts a GPU worker once a GPU's free memory covers the model plus a
margin, backs off from a GPU after a CUDA out-of-memory error, and tells the runner when
ollama is due to release memory so that it can re-probe then rather than poll blindly.

Everything here degrades to "no GPUs": nvidia-ml-py is an optional extra, the driver may be
missing, ollama may not be running. Nothing here raises on those conditions.
"""

from __future__ import annotations

import ctypes
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from fireredasr_fast.errors import check_number
from fireredasr_fast.runner.ollama import HELD_INDEFINITELY, OllamaModel, ollama_models

GIB = 1 << 30

# GPU working set of one worker per byte of (fp32) checkpoint: the weights themselves plus a
# share for activations of the largest batches, the encoder's attention buffers and the
# beam-search decoder caches. Activations grow with the model's width, so they are
# expressed as a share of the model rather than a constant. The constant part (CUDA
# context, cuBLAS workspaces, allocator fragmentation) is `margin_bytes` (docs/gpu.md).
WORKING_SET_FACTOR = 1.3


def gib(value: float) -> int:
    """Bytes in `value` GiB (what `--gpu-min-free-gb` means: GPU tools report MiB/GiB)."""
    check_number("gpu_min_free_gb", value, 0.0)
    return int(value * GIB)


def _fmt_gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


@dataclass(frozen=True)
class GpuInfo:
    # `index` is the CUDA device index a worker would use (`cuda:{index}`), i.e. the
    # position among the devices CUDA_VISIBLE_DEVICES exposes, not the NVML/physical index.
    index: int
    name: str
    total_bytes: int
    free_bytes: int


class GpuProbe(Protocol):
    def gpus(self) -> list[GpuInfo]: ...


class EmptyProbe:
    """No GPUs: the probe when neither NVML nor a CUDA build of torch is available."""

    def gpus(self) -> list[GpuInfo]:
        return []


def visible_nvml_indices(visible: str | None, uuids: Sequence[str]) -> list[int]:
    """NVML indices, in CUDA order, of the devices CUDA_VISIBLE_DEVICES lets CUDA see.

    NVML ignores CUDA_VISIBLE_DEVICES, so without this mapping NvmlProbe would report
    (and the runner would use) GPUs the user hid, under the wrong indices. CUDA semantics:
    unset means all devices; entries are indices or (prefixes of) UUIDs; the list stops at
    the first invalid entry; a duplicate also ends it. MIG instances are not supported
    here (their memory is not the parent GPU's) and end the list.
    """
    if visible is None:
        return list(range(len(uuids)))
    out: list[int] = []
    for raw in visible.split(","):
        entry = raw.strip()
        found: int | None = None
        if re.fullmatch(r"\d+", entry):
            found = int(entry) if int(entry) < len(uuids) else None
        elif entry.startswith("GPU-"):
            matches = [i for i, u in enumerate(uuids) if u.startswith(entry)]
            found = matches[0] if len(matches) == 1 else None
        if found is None or found in out:
            break
        out.append(found)
    return out


class NvmlProbe:
    """Free memory per GPU from NVML (nvidia-ml-py). Cheap, creates no CUDA context.

    Returns [] when nvidia-ml-py is not installed, the driver library is missing, or NVML
    fails in any way; never raises. NVML is initialised once, lazily; a failed
    initialisation is remembered so that a machine without a driver pays for it once.
    """

    def __init__(self) -> None:
        self._nvml: Any = None
        self._failed = False

    def _init(self) -> Any:
        if self._nvml is None and not self._failed:
            try:
                import pynvml  # nvidia-ml-py; optional extra "gpu"

                pynvml.nvmlInit()
                self._nvml = pynvml
            except Exception:  # ImportError, NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded, ...
                self._failed = True
        return self._nvml

    @property
    def available(self) -> bool:
        return self._init() is not None

    def gpus(self) -> list[GpuInfo]:
        nvml = self._init()
        if nvml is None:
            return []
        try:
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
            uuids = [_text(nvml.nvmlDeviceGetUUID(h)) for h in handles]
            out = []
            for cuda_index, nvml_index in enumerate(
                visible_nvml_indices(os.environ.get("CUDA_VISIBLE_DEVICES"), uuids)
            ):
                h = handles[nvml_index]
                mem = nvml.nvmlDeviceGetMemoryInfo(h)
                out.append(GpuInfo(cuda_index, _text(nvml.nvmlDeviceGetName(h)), int(mem.total), int(mem.free)))
            return out
        except Exception:  # a GPU fallen off the bus, a driver/library mismatch: no GPUs this time
            return []


def _text(value: str | bytes) -> str:
    # nvidia-ml-py returns bytes before 11.5 and str after.
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class TorchProbe:
    """Fallback probe through torch.cuda.mem_get_info, when NVML is not importable.

    Caveat: mem_get_info creates a CUDA context on every device it asks about, in the
    calling process (docs/gpu.md: for the life of the process). That is why NVML is
    preferred; the runner's workers are spawned, so the context is at least not inherited.
    """

    def gpus(self) -> list[GpuInfo]:
        try:
            import torch

            if not torch.cuda.is_available():
                return []
            out = []
            for i in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(i)
                out.append(GpuInfo(i, torch.cuda.get_device_name(i), int(total), int(free)))
            return out
        except Exception:
            return []


# The NVIDIA driver's CUDA library, by platform: every CUDA build of torch loads it.
CUDA_DRIVER_LIBRARY = {"linux": "libcuda.so.1", "win32": "nvcuda.dll"}


def cuda_driver_loads() -> bool:
    """Whether the NVIDIA driver's CUDA library loads: where it does not, no CUDA build of
    torch sees a GPU either, which is known here without importing torch (a second of CPU
    the run's main process then spends on nothing else)."""
    name = CUDA_DRIVER_LIBRARY.get(sys.platform)
    if name is None:
        return False
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def default_probe() -> GpuProbe:
    """NVML when it initialises, else torch when it sees CUDA, else no GPUs."""
    nvml = NvmlProbe()
    if nvml.available:
        return nvml
    try:
        import torch

        if torch.cuda.is_available():
            return TorchProbe()
    except Exception:
        pass
    return EmptyProbe()


# ---------------------------------------------------------------------------- policy

MODES = ("auto", "off", "only")


@dataclass(frozen=True)
class GpuPolicy:
    mode: str = "auto"  # auto: GPU workers when usable + CPU workers; off: CPU only; only: GPU only
    min_free_bytes: int | None = None  # --gpu-min-free-gb, a floor on the need
    model_bytes: int = 0  # fp32 checkpoint size of the model a GPU worker loads
    margin_bytes: int = 2 * GIB
    recheck_seconds: float = 30.0
    oom_backoff_seconds: float = 120.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"GPU mode must be one of {', '.join(MODES)}, not {self.mode!r}")

    @property
    def need_bytes(self) -> int:
        """Free GPU memory a worker needs before it may start on a GPU."""
        return max(self.min_free_bytes or 0, math.ceil(self.model_bytes * WORKING_SET_FACTOR) + self.margin_bytes)


OllamaFn = Callable[[], "list[OllamaModel] | None"]


class GpuScheduler:
    """Which GPUs a worker may start on now, from cached probes and the runner's events.

    Not thread-safe: the runner calls it from its scheduling loop only. `clock` is
    monotonic seconds (back-off and recheck timing); `wall_clock` is only for comparing
    with ollama's wall-clock expiry times.
    """

    def __init__(
        self,
        policy: GpuPolicy,
        probe: GpuProbe,
        ollama: OllamaFn = ollama_models,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.policy = policy
        self._probe = probe
        self._ollama = ollama
        self._clock = clock
        self._wall = wall_clock
        self._gpus: list[GpuInfo] = []
        self._models: list[OllamaModel] | None = None
        self._probed_at: float | None = None
        self._stale = False
        self._running: set[int] = set()
        self._backoff_until: dict[int, float] = {}

    @property
    def cpu_workers_allowed(self) -> bool:
        return self.policy.mode != "only"

    @property
    def enabled(self) -> bool:
        return self.policy.mode != "off"

    def _refresh(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = self._clock()
        # A back-off that ended since the last probe makes the snapshot stale: its free
        # memory is from the moment of the OOM, not from now.
        backoff_ended = any(
            self._probed_at is not None and self._probed_at < t <= now for t in self._backoff_until.values()
        )
        due = self._probed_at is None or now - self._probed_at >= self.policy.recheck_seconds
        if not (force or due or self._stale or backoff_ended):
            return
        self._gpus = self._probe.gpus()
        self._models = self._ollama() if self._gpus else None  # no GPUs: ollama is moot
        self._probed_at = now
        self._stale = False

    def gpus(self) -> list[GpuInfo]:
        """All GPUs as last probed (refreshing if due)."""
        self._refresh()
        return list(self._gpus)

    def _in_backoff(self, index: int) -> bool:
        until = self._backoff_until.get(index)
        return until is not None and self._clock() < until

    def usable_gpus(self) -> list[GpuInfo]:
        """GPUs a new worker may start on now, most free memory first."""
        if not self.enabled:
            return []
        self._refresh()
        need = self.policy.need_bytes
        ok = [
            g
            for g in self._gpus
            if g.free_bytes >= need and g.index not in self._running and not self._in_backoff(g.index)
        ]
        return sorted(ok, key=lambda g: -g.free_bytes)

    def started(self, index: int) -> None:
        self._running.add(index)

    def stopped(self, index: int) -> None:
        # The worker's memory is free again; the cached snapshot still shows it taken.
        self._running.discard(index)
        self._stale = True

    def out_of_memory(self, index: int) -> None:
        """A worker on `index` hit CUDA OOM (and has stopped): keep off that GPU for a while."""
        self._running.discard(index)
        self._backoff_until[index] = self._clock() + self.policy.oom_backoff_seconds

    def _holding(self) -> list[OllamaModel]:
        return [m for m in self._models or [] if m.size_vram_bytes > 0]

    def next_release(self) -> float | None:
        """Seconds until ollama's earliest GPU model expiry (0 if overdue); None if none is due.

        None when ollama is not running, holds no GPU memory, or holds it indefinitely
        (keep_alive -1).
        """
        self._refresh()
        now = self._wall()
        due = [
            (m.expires_at - now).total_seconds()
            for m in self._holding()
            if m.expires_at is not None and m.expires_at - now < HELD_INDEFINITELY
        ]
        return max(0.0, min(due)) if due else None

    def next_check(self) -> float | None:
        """Seconds until something may make a GPU usable: an ollama release, the end of a
        back-off, or the next periodic re-probe. None when the GPUs are off or absent."""
        if not self.enabled:
            return None
        self._refresh()
        if not self._gpus:
            return None
        now = self._clock()
        times = [self.policy.recheck_seconds - (now - (self._probed_at or now))]
        times += [t - now for t in self._backoff_until.values() if t > now]
        release = self.next_release()
        if release is not None:
            times.append(release)
        return max(0.0, min(times))

    def _ollama_reason(self) -> str:
        holding = self._holding()
        if not holding:
            return ""
        now = self._wall()
        parts = []
        for m in holding:
            if m.expires_at is None or m.expires_at - now >= HELD_INDEFINITELY:
                when = "until stopped"
            else:
                when = "until " + m.expires_at.astimezone().strftime("%H:%M")
            parts.append(f"{m.name} ({_fmt_gib(m.size_vram_bytes)}) {when}")
        return "ollama holds " + ", ".join(parts)

    def describe(self) -> str:
        """One line for the plan print-out."""
        if not self.enabled:
            return "GPU: off (--gpu off)"
        self._refresh()
        if not self._gpus:
            tail = "; --gpu only has nothing to run on" if self.policy.mode == "only" else ""
            return f"GPU: none found (no NVIDIA driver, nvidia-ml-py or CUDA build of torch){tail}"
        need = self.policy.need_bytes
        reason = self._ollama_reason()
        now = self._clock()
        lines = []
        for g in self._gpus:
            if g.index in self._running:
                state = "worker running"
            elif self._in_backoff(g.index):
                state = f"backing off after CUDA OOM ({self._backoff_until[g.index] - now:.0f} s left)"
            elif g.free_bytes >= need:
                state = "usable"
            else:
                state = f"waiting ({reason})" if reason else "waiting"
            lines.append(
                f"GPU {g.index} ({g.name}, {_fmt_gib(g.total_bytes)}): {_fmt_gib(g.free_bytes)} free, "
                f"needs {_fmt_gib(need)}: {state}"
            )
        return "; ".join(lines)


def is_cuda_oom(exc: BaseException) -> bool:
    """Whether `exc` (or an exception it was raised from) is CUDA running out of memory.

    Covers torch.cuda.OutOfMemoryError (the caching allocator) and the RuntimeErrors that
    CUDA/cuBLAS raise for the same condition outside the allocator ("CUDA error: out of
    memory" at context creation, CUBLAS_STATUS_ALLOC_FAILED).
    """
    # Only look torch up if it is loaded: if it is not, it cannot have raised.
    torch = sys.modules.get("torch")
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None) if torch else None
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if oom_type is not None and isinstance(e, oom_type):
            return True
        if isinstance(e, RuntimeError):
            msg = str(e)
            if "CUDA out of memory" in msg or "CUDA error: out of memory" in msg or "CUBLAS_STATUS_ALLOC_FAILED" in msg:
                return True
        e = e.__cause__ or e.__context__
    return False


# A seam for the GPU check (docs/gpu.md, "The one-call GPU check"): set in the run's
# environment, it caps each GPU worker's CUDA allocations at what its loaded engine holds
# plus this many MiB, so that a real batch runs out of memory on any GPU, however large.
HEADROOM_ENV = "FIREREDASR_FAST_GPU_HEADROOM_MIB"


def cap_worker_memory(device: str) -> None:
    """Apply HEADROOM_ENV, if set, to this process's CUDA `device` (after the engine loaded)."""
    text = os.environ.get(HEADROOM_ENV, "").strip()
    if not text or not device.startswith("cuda"):
        return
    import torch

    index = torch.device(device).index or 0
    total = torch.cuda.get_device_properties(index).total_memory
    cap = torch.cuda.memory_reserved(index) + float(text) * (1 << 20)
    torch.cuda.set_per_process_memory_fraction(min(1.0, max(cap, 0.0) / total), index)
