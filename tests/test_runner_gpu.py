"""GPU workers in the runner, driven by a GPU memory probe fed by the test (the seam: this
machine has no GPU). The worker processes, batches and engines are real."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import SAMPLES

from fireredasr_fast.engines import EngineSpec
from fireredasr_fast.inputs import collect_inputs
from fireredasr_fast.runner.gpu import HEADROOM_ENV, GpuInfo, GpuPolicy, GpuScheduler
from fireredasr_fast.runner.plan import make_plan
from fireredasr_fast.runner.scheduler import Runner, RunOptions
from fireredasr_fast.transcribe import TranscribeOptions

GB = 1 << 30


class FakeProbe:
    def __init__(self, free_gb: float) -> None:
        self.free_gb = free_gb

    def gpus(self) -> list[GpuInfo]:
        return [GpuInfo(0, "Fake GPU", 20 * GB, int(self.free_gb * GB))]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gpu-inputs")
    for i in range(2):
        shutil.copy(SAMPLES / "aishell_zh.mkv", folder / f"zh {i}.mkv")
    shutil.copy(SAMPLES / "two_cities.mp4", folder / "en.mp4")
    return folder


def run(folder: Path, model_dir: Path, out: Path, gpu: GpuScheduler | None, device: str):
    spec = EngineSpec("firered", str(model_dir), None, "cpu", (("beam_size", 1),))
    options = RunOptions(out, ("txt",), TranscribeOptions(batch_seconds=10.0), progress=False)
    inputs, _ = collect_inputs([str(folder)])
    runner = Runner(spec, make_plan(0, workers=1, threads_per_worker=1), options, gpu=gpu, gpu_device=lambda i: device)
    return runner.run(inputs)


def texts(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(out.glob("*.txt"))}


def test_gpu_worker_joins_when_memory_is_free_and_takes_batches(folder, random_model_dir, tmp_path):
    cpu_only = run(folder, random_model_dir, tmp_path / "cpu", None, "cpu")
    scheduler = GpuScheduler(GpuPolicy(model_bytes=1 * GB), FakeProbe(free_gb=16), ollama=lambda: None)
    # A "GPU" worker on the CPU device: the scheduling is what is under test here.
    with_gpu = run(folder, random_model_dir, tmp_path / "gpu", scheduler, "cpu")
    assert [r.status for r in with_gpu.records] == ["done"] * 3
    assert with_gpu.worker_stats["batches"].get("gpu0", 0) >= 1
    assert texts(tmp_path / "gpu") == texts(tmp_path / "cpu")
    assert cpu_only.worker_stats["batches"].keys() == {"cpu"}


def test_no_gpu_worker_while_memory_is_taken(folder, random_model_dir, tmp_path):
    scheduler = GpuScheduler(GpuPolicy(model_bytes=1 * GB), FakeProbe(free_gb=1.0), ollama=lambda: None)
    summary = run(folder, random_model_dir, tmp_path / "out", scheduler, "cpu")
    assert [r.status for r in summary.records] == ["done"] * 3
    assert summary.worker_stats["batches"].keys() == {"cpu"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where a CUDA worker fails")
def test_failing_gpu_worker_hands_its_batches_back_to_the_cpu(folder, random_model_dir, tmp_path):
    scheduler = GpuScheduler(GpuPolicy(model_bytes=1 * GB), FakeProbe(free_gb=16), ollama=lambda: None)
    # The probe says a GPU is free, but CUDA is absent: the GPU worker fails for real.
    summary = run(folder, random_model_dir, tmp_path / "out", scheduler, "cuda:0")
    assert [r.status for r in summary.records] == ["done"] * 3
    assert "gpu0" not in summary.worker_stats["batches"]
    assert scheduler.usable_gpus() == []  # backing off that GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_worker_writes_what_the_cpu_writes(folder, random_model_dir, tmp_path):  # pragma: no cover - GPU only
    run(folder, random_model_dir, tmp_path / "cpu", None, "cpu")
    scheduler = GpuScheduler(GpuPolicy(model_bytes=1 * GB), FakeProbe(free_gb=16), ollama=lambda: None)
    summary = run(folder, random_model_dir, tmp_path / "gpu", scheduler, "cuda:0")
    assert [r.status for r in summary.records] == ["done"] * 3
    assert summary.worker_stats["batches"].get("gpu0", 0) >= 1
    assert texts(tmp_path / "gpu") == texts(tmp_path / "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_batch_out_of_memory_is_finished_by_the_cpu(
    folder, random_model_dir, tmp_path, monkeypatch, caplog
):  # pragma: no cover - GPU only
    # No headroom over the loaded weights (the seam in runner/gpu.py, HEADROOM_ENV): the first
    # batch's allocations run out of memory for real.
    run(folder, random_model_dir, tmp_path / "cpu", None, "cpu")
    monkeypatch.setenv(HEADROOM_ENV, "0")
    scheduler = GpuScheduler(GpuPolicy(model_bytes=1 * GB), FakeProbe(free_gb=16), ollama=lambda: None)
    summary = run(folder, random_model_dir, tmp_path / "gpu", scheduler, "cuda:0")
    assert [r.status for r in summary.records] == ["done"] * 3
    assert "gpu0" not in summary.worker_stats["batches"]
    assert "stopped (out of memory)" in caplog.text
    assert scheduler.usable_gpus() == []  # backing off that GPU
    assert texts(tmp_path / "gpu") == texts(tmp_path / "cpu")
