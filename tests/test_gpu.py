"""GPU scheduling policy, against a fake memory probe and a real local HTTP server for ollama.

No GPU on the test machine: the probe is the seam (a list of GpuInfo the test changes over
time), and the clock is a fake so that back-off and recheck intervals take no real time.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fireredasr_fast.runner.gpu import (
    GIB,
    GpuInfo,
    GpuPolicy,
    GpuScheduler,
    NvmlProbe,
    TorchProbe,
    default_probe,
    is_cuda_oom,
    visible_nvml_indices,
)
from fireredasr_fast.runner.ollama import OllamaModel, ollama_base_url, ollama_models, parse_rfc3339

# ------------------------------------------------------------------ fakes at the seams


class FakeProbe:
    """GPU memory as the test sets it; counts calls to check the recheck caching."""

    def __init__(self, *free_gib: float) -> None:
        self.free = list(free_gib)
        self.calls = 0

    def gpus(self) -> list[GpuInfo]:
        self.calls += 1
        return [GpuInfo(i, "RTX 4000", 20 * GIB, int(f * GIB)) for i, f in enumerate(self.free)]


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


NOW = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def scheduler(probe: FakeProbe, clock: FakeClock, ollama=lambda: None, **policy) -> GpuScheduler:
    # 4 GiB of model: need = 4 * 1.3 + 2 = 7.2 GiB.
    policy.setdefault("model_bytes", 4 * GIB)
    return GpuScheduler(GpuPolicy(**policy), probe, ollama=ollama, clock=clock, wall_clock=lambda: NOW)


# ------------------------------------------------------------------ policy


def test_need_is_model_working_set_plus_margin_with_a_floor() -> None:
    assert GpuPolicy(model_bytes=4 * GIB).need_bytes == pytest.approx(7.2 * GIB, abs=2)  # 4 GiB x 1.3 + 2 GiB margin
    assert GpuPolicy(model_bytes=4 * GIB, min_free_bytes=12 * GIB).need_bytes == 12 * GIB
    assert GpuPolicy(model_bytes=4 * GIB, min_free_bytes=1 * GIB).need_bytes == pytest.approx(
        7.2 * GIB, abs=2
    )  # 4 GiB x 1.3 + 2 GiB margin
    with pytest.raises(ValueError):
        GpuPolicy(mode="sometimes")


def test_gpu_becomes_usable_when_free_memory_rises_above_the_need() -> None:
    probe, clock = FakeProbe(3.1, 19.0), FakeClock()
    s = scheduler(probe, clock)
    assert [g.index for g in s.usable_gpus()] == [1]
    probe.free[0] = 7.0  # ollama unloaded something, still short of 7.2 GiB
    clock.t += 30
    assert [g.index for g in s.usable_gpus()] == [1]
    probe.free[0] = 19.5
    clock.t += 30
    # Most free first: the runner takes the first.
    assert [g.index for g in s.usable_gpus()] == [0, 1]


def test_not_usable_while_a_worker_runs_on_it_and_reprobed_when_it_stops() -> None:
    probe, clock = FakeProbe(19.0), FakeClock()
    s = scheduler(probe, clock)
    assert [g.index for g in s.usable_gpus()] == [0]
    s.started(0)
    probe.free[0] = 10.0  # the worker's own memory
    clock.t += 60
    assert s.usable_gpus() == []
    assert "worker running" in s.describe()
    probe.free[0] = 19.0
    s.stopped(0)
    calls = probe.calls
    assert [g.index for g in s.usable_gpus()] == [0]
    assert probe.calls == calls + 1  # stopping invalidates the snapshot without waiting 30 s


def test_oom_backs_off_then_usable_after_backoff_and_a_reprobe() -> None:
    probe, clock = FakeProbe(19.0, 19.0), FakeClock()
    s = scheduler(probe, clock, oom_backoff_seconds=120, recheck_seconds=30)
    s.started(0)
    s.out_of_memory(0)
    probe.free[0] = 19.0  # memory is free again at once, but the GPU is still backed off
    assert [g.index for g in s.usable_gpus()] == [1]
    assert "backing off after CUDA OOM" in s.describe()
    clock.t += 119
    assert [g.index for g in s.usable_gpus()] == [1]
    # Memory taken while backed off: after the back-off the decision must use a new probe.
    probe.free[0] = 2.0
    clock.t += 1
    assert [g.index for g in s.usable_gpus()] == [1]
    probe.free[0] = 18.0
    clock.t += 30
    assert [g.index for g in s.usable_gpus()] == [1, 0]  # most free first


def test_backoff_end_forces_a_reprobe_even_within_the_recheck_interval() -> None:
    probe, clock = FakeProbe(19.0), FakeClock()
    s = scheduler(probe, clock, oom_backoff_seconds=10, recheck_seconds=1000)
    s.usable_gpus()
    s.out_of_memory(0)
    probe.free[0] = 1.0  # another process grabbed the memory in the meantime
    clock.t += 10
    assert s.usable_gpus() == []
    assert probe.calls == 2


def test_probe_is_called_at_most_every_recheck_seconds() -> None:
    probe, clock = FakeProbe(3.0), FakeClock()
    s = scheduler(probe, clock, recheck_seconds=30)
    for _ in range(5):
        s.usable_gpus()
        s.describe()
        s.next_release()
        clock.t += 5
    assert probe.calls == 1  # t = 0..20
    clock.t = 1000 + 30
    s.usable_gpus()
    assert probe.calls == 2
    probe.free[0] = 19.0
    clock.t = 1000 + 59
    assert s.usable_gpus() == []  # cached: the rise is not seen before the recheck
    clock.t = 1000 + 60
    assert [g.index for g in s.usable_gpus()] == [0]


def test_mode_off_never_probes_and_only_forbids_cpu_workers() -> None:
    probe, clock = FakeProbe(19.0), FakeClock()
    off = scheduler(probe, clock, mode="off")
    assert off.usable_gpus() == []
    assert off.cpu_workers_allowed
    assert off.next_check() is None
    assert "off" in off.describe()
    assert probe.calls == 0

    only = scheduler(FakeProbe(19.0), clock, mode="only")
    assert not only.cpu_workers_allowed
    assert [g.index for g in only.usable_gpus()] == [0]

    auto = scheduler(FakeProbe(19.0), clock, mode="auto")
    assert auto.cpu_workers_allowed
    assert [g.index for g in auto.usable_gpus()] == [0]


def test_describe_names_ollama_models_when_waiting() -> None:
    expires = NOW + timedelta(minutes=31)
    models = [OllamaModel("qwen2:7b", 5 * GIB, expires), OllamaModel("cpu-only", 0, expires)]
    s = scheduler(FakeProbe(3.1), FakeClock(), ollama=lambda: models)
    line = s.describe()
    local = expires.astimezone().strftime("%H:%M")
    assert line == (
        "GPU 0 (RTX 4000, 20.0 GiB): 3.1 GiB free, needs 7.2 GiB: "
        f"waiting (ollama holds qwen2:7b (5.0 GiB) until {local})"
    )
    assert "none found" in scheduler(FakeProbe(), FakeClock(), mode="only").describe()


def test_next_release_is_the_earliest_expiry_of_models_holding_vram() -> None:
    models = [
        OllamaModel("big", 8 * GIB, NOW + timedelta(seconds=300)),
        OllamaModel("small", 2 * GIB, NOW + timedelta(seconds=90)),
        OllamaModel("on-cpu", 0, NOW + timedelta(seconds=5)),  # holds no GPU memory
        OllamaModel("pinned", 4 * GIB, NOW + timedelta(days=100_000)),  # keep_alive -1
    ]
    clock = FakeClock()
    s = scheduler(FakeProbe(3.0), clock, ollama=lambda: models)
    assert s.next_release() == pytest.approx(90.0)
    # The runner's wake-up: the release, unless the periodic re-probe comes first.
    assert s.next_check() == pytest.approx(30.0)
    clock.t += 20
    assert s.next_check() == pytest.approx(10.0)

    assert scheduler(FakeProbe(3.0), FakeClock(), ollama=lambda: None).next_release() is None
    assert scheduler(FakeProbe(3.0), FakeClock(), ollama=lambda: [models[3]]).next_release() is None
    overdue = [OllamaModel("late", GIB, NOW - timedelta(seconds=5))]
    assert scheduler(FakeProbe(3.0), FakeClock(), ollama=lambda: overdue).next_release() == 0.0


def test_is_cuda_oom() -> None:
    import torch

    assert is_cuda_oom(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_cuda_oom(RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 19.7 GiB total)"))
    assert is_cuda_oom(RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be ..."))
    try:
        try:
            raise torch.cuda.OutOfMemoryError("boom")
        except Exception as inner:
            raise ValueError("batch 12 failed") from inner
    except ValueError as wrapped:
        assert is_cuda_oom(wrapped)
    assert not is_cuda_oom(RuntimeError("shape mismatch"))
    assert not is_cuda_oom(MemoryError("CUDA out of memory"))  # host RAM, not a GPU to leave
    assert not is_cuda_oom(ValueError("CUDA out of memory"))


# ------------------------------------------------------------------ probes


def _has_nvidia_gpu() -> bool:
    import torch

    return torch.cuda.is_available() or Path("/dev/nvidia0").exists()


@pytest.mark.skipif(_has_nvidia_gpu(), reason="this machine has an NVIDIA GPU")
def test_nvml_and_torch_probes_return_nothing_without_a_gpu() -> None:
    # No NVIDIA driver on the test machine: whether nvidia-ml-py is installed or not, the
    # probe must answer [] rather than raise.
    probe = NvmlProbe()
    assert probe.gpus() == []
    assert probe.gpus() == []
    assert not probe.available
    assert TorchProbe().gpus() == []
    assert default_probe().gpus() == []


@pytest.mark.skipif(not _has_nvidia_gpu(), reason="needs an NVIDIA GPU (the real CUDA path)")
def test_real_gpu_probe_agrees_with_torch_and_a_real_oom_is_recognised() -> None:
    import torch

    gpus = default_probe().gpus()
    assert [g.index for g in gpus] == list(range(torch.cuda.device_count()))
    for g in gpus:
        _free, total = torch.cuda.mem_get_info(g.index)
        assert g.total_bytes == pytest.approx(total, rel=0.03)  # NVML may count driver-reserved memory
        assert 0 < g.free_bytes <= g.total_bytes
    with pytest.raises(Exception) as caught:
        torch.empty(2 * gpus[0].total_bytes, dtype=torch.uint8, device="cuda:0")
    assert is_cuda_oom(caught.value)
    s = GpuScheduler(GpuPolicy(model_bytes=GIB), default_probe(), ollama=lambda: None)
    assert s.usable_gpus()  # 1 GiB x 1.3 + 2 GiB fits on any idle GPU this test runs on
    assert s.describe().startswith("GPU 0 (")


def test_visible_devices_map_cuda_indices_to_nvml_indices() -> None:
    uuids = ["GPU-aaaa-1111", "GPU-bbbb-2222"]
    assert visible_nvml_indices(None, uuids) == [0, 1]
    assert visible_nvml_indices("1", uuids) == [1]
    assert visible_nvml_indices("1,0", uuids) == [1, 0]
    assert visible_nvml_indices("GPU-bbbb", uuids) == [1]
    assert visible_nvml_indices("0,7,1", uuids) == [0]  # CUDA stops at the first invalid entry
    assert visible_nvml_indices("", uuids) == []
    assert visible_nvml_indices("-1", uuids) == []


# ------------------------------------------------------------------ ollama

PS_BODY = {
    "models": [
        {
            "name": "qwen2:7b",
            "model": "qwen2:7b",
            "size": 5_137_025_024,
            "digest": "abc",
            "details": {"family": "qwen2"},
            "expires_at": "2025-03-01T04:31:12.837530123-08:00",
            "size_vram": 5_137_025_024,
        },
        {"name": "nomic-embed-text:latest", "size_vram": 0, "expires_at": "2025-03-01T12:05:00Z"},
        {"name": "pinned:latest", "size_vram": 1024, "expires_at": "0001-01-01T00:00:00Z"},
    ]
}


@pytest.fixture
def ollama_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(PS_BODY).encode() if self.path == "/api/ps" else b"{}"
            self.send_response(200 if self.path == "/api/ps" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_ollama_ps_is_parsed_from_a_real_server(ollama_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    models = ollama_models(ollama_server, timeout=2.0)
    assert models is not None
    assert [m.name for m in models] == ["qwen2:7b", "nomic-embed-text:latest", "pinned:latest"]
    assert models[0].size_vram_bytes == 5_137_025_024
    assert models[0].expires_at == datetime(2025, 3, 1, 12, 31, 12, 837530, tzinfo=timezone.utc)
    assert models[1].expires_at == datetime(2025, 3, 1, 12, 5, tzinfo=timezone.utc)
    assert models[2].expires_at is None  # Go's zero time

    # The same server found through OLLAMA_HOST, written the way ollama accepts it.
    port = ollama_server.rsplit(":", 1)[1]
    monkeypatch.setenv("OLLAMA_HOST", f"0.0.0.0:{port}")
    found = ollama_models(timeout=2.0)
    assert found is not None and len(found) == 3


def test_ollama_not_running_returns_none() -> None:
    with socket.socket() as s:  # a port bound but not listening: connection refused
        s.bind(("127.0.0.1", 0))
        assert ollama_models(f"127.0.0.1:{s.getsockname()[1]}", timeout=0.5) is None


def test_ollama_that_never_answers_returns_none_instead_of_hanging() -> None:
    # A listening socket nobody accepts from: the kernel completes the TCP handshake, then
    # the request waits forever for a response. Reaching the assert at all is the check.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        assert ollama_models(f"127.0.0.1:{s.getsockname()[1]}", timeout=0.3) is None


def test_ollama_host_forms() -> None:
    assert ollama_base_url("") == "http://127.0.0.1:11434"
    assert ollama_base_url("0.0.0.0") == "http://127.0.0.1:11434"
    assert ollama_base_url("0.0.0.0:8080") == "http://127.0.0.1:8080"
    assert ollama_base_url("gpu-box:11500") == "http://gpu-box:11500"
    assert ollama_base_url("https://ollama.lan") == "https://ollama.lan:443"
    assert ollama_base_url("http://[::1]:11434/") == "http://[::1]:11434"


def test_rfc3339_forms() -> None:
    utc = timezone.utc
    assert parse_rfc3339("2025-03-01T12:00:00Z") == datetime(2025, 3, 1, 12, tzinfo=utc)
    assert parse_rfc3339("2025-03-01T13:30:00.5+01:30") == datetime(2025, 3, 1, 12, 0, 0, 500000, tzinfo=utc)
    assert parse_rfc3339("2318-09-20T10:00:00.123456789+02:00") is not None  # keep_alive -1
    assert parse_rfc3339("not a time") is None
