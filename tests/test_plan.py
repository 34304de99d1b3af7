"""The plan from the machine: workers x threads from cores, bounded by memory."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
import torch

from fireredasr_fast.engines import EngineSpec
from fireredasr_fast.runner.plan import (
    PRELOAD_NICE,
    THREAD_ENV_VARS,
    WORKER_OVERHEAD_BYTES,
    lower_thread_priority,
    make_plan,
)

GB = 1e9
AED_L = int(4.7 * GB)


def test_every_physical_core_gets_one_thread():
    plan = make_plan(AED_L, physical_cores=16, logical_cores=32, available_bytes=120 * GB)
    assert plan.workers * plan.threads_per_worker == 16
    assert plan.threads_per_worker == 2  # two threads per worker from 8 cores up
    small_model = make_plan(200_000_000, physical_cores=2, logical_cores=2, available_bytes=20 * GB)
    assert (small_model.workers, small_model.threads_per_worker) == (2, 1)


def test_a_large_model_on_few_cores_gets_one_worker_with_every_core():
    for cores in (2, 4):
        plan = make_plan(AED_L, physical_cores=cores, logical_cores=cores, available_bytes=20 * GB)
        assert (plan.workers, plan.threads_per_worker) == (1, cores)
        assert "large model" in plan.reason
    # Not on a big machine, and never over an explicit choice.
    assert make_plan(AED_L, physical_cores=8, available_bytes=60 * GB).workers == 4
    assert (make_plan(AED_L, workers=2, physical_cores=2, available_bytes=20 * GB).threads_per_worker) == 1


def test_explicit_workers_and_threads_win():
    plan = make_plan(AED_L, workers=3, threads_per_worker=5, physical_cores=16, available_bytes=1 * GB)
    assert (plan.workers, plan.threads_per_worker, plan.reason) == (3, 5, "explicit")
    assert make_plan(AED_L, workers=4, physical_cores=16, available_bytes=100 * GB).threads_per_worker == 4


def test_memory_bounds_the_workers_and_private_weights_bound_them_more():
    available = 30 * GB
    shared = make_plan(AED_L, physical_cores=32, logical_cores=64, available_bytes=available)
    private = make_plan(AED_L, physical_cores=32, logical_cores=64, available_bytes=available, weights_shared=False)
    assert shared.reason == private.reason == "limited by available memory"
    assert private.workers < shared.workers
    # Each worker's share of the budget covers its own copy of the weights when they are private.
    assert private.workers * (WORKER_OVERHEAD_BYTES + AED_L) <= available * 0.7


def test_onnx_backends_hold_private_weights():
    torch_spec = EngineSpec("firered", "/m", options=(("beam_size", 3), ("precision", "fp32")))
    onnx_spec = EngineSpec("firered", "/m", options=(("beam_size", 3), ("encoder_backend", "onnx")))
    onednn_spec = EngineSpec("firered", "/m", options=(("beam_size", 3), ("decoder_backend", "onednn")))
    mkl_spec = EngineSpec("firered", "/m", options=(("beam_size", 3), ("encoder_backend", "mkl")))
    assert torch_spec.options.weights_shared and mkl_spec.options.weights_shared
    assert not onnx_spec.options.weights_shared and not onednn_spec.options.weights_shared


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")


def _nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@linux_only
def test_lowering_a_threads_priority_leaves_the_rest_of_the_process_alone():
    seen: dict[str, int] = {}

    def preload() -> None:
        assert lower_thread_priority(PRELOAD_NICE)
        seen["thread"] = _nice_of_this_thread()
        # What the thread starts (ffmpeg) inherits it.
        child = subprocess.run([sys.executable, "-c", "import os; print(os.nice(0))"], capture_output=True, text=True)
        seen["child"] = int(child.stdout)

    before = _nice_of_this_thread()
    thread = threading.Thread(target=preload)
    thread.start()
    thread.join()
    assert seen == {"thread": max(before, PRELOAD_NICE), "child": max(before, PRELOAD_NICE)}
    assert _nice_of_this_thread() == before


@linux_only
@pytest.mark.parametrize("threads", [1, 2])
def test_the_runner_decodes_and_segments_at_low_priority_beside_multithreaded_workers(
    monkeypatch, samples_dir, random_model_dir, tmp_path, threads
):
    from fireredasr_fast.inputs import collect_inputs
    from fireredasr_fast.runner import frontend
    from fireredasr_fast.runner import scheduler as runner_module

    seen: list[int] = []
    real_prepare = frontend.prepare_file

    def prepare_file(*args, **kwargs):
        seen.append(_nice_of_this_thread())
        return real_prepare(*args, **kwargs)

    monkeypatch.setattr(frontend, "prepare_file", prepare_file)
    # The inline worker pins this process's thread pools: put them back afterwards.
    for name in THREAD_ENV_VARS:
        monkeypatch.setenv(name, os.environ.get(name, ""))
    torch_threads = torch.get_num_threads()
    before = _nice_of_this_thread()
    spec = EngineSpec("firered", str(random_model_dir), None, "cpu", (("beam_size", 1),))
    options = runner_module.RunOptions(tmp_path / "out", ("txt",), progress=False)
    inputs, _ = collect_inputs([str(samples_dir / "aishell_zh.mkv")])
    plan = make_plan(0, workers=0, threads_per_worker=threads)
    try:
        summary = runner_module.Runner(spec, plan, options).run(inputs)
    finally:
        torch.set_num_threads(torch_threads)
    assert [r.status for r in summary.records] == ["done"]
    # Single-threaded workers share the cores fairly with the preload thread.
    assert seen == [max(before, PRELOAD_NICE) if threads > 1 else before]
    assert _nice_of_this_thread() == before  # the scheduling loop and writing keep their priority


def test_pinning_threads_after_numbas_pool_started_leaves_numba_able_to_compile(tmp_path):
    """numba rereads its environment at each compile and refuses a NUMBA_NUM_THREADS other
    than its running pool's: pinning a process that already ran numba (a run with its worker
    in the process, a test session) must not break the next compile (librosa's, say)."""
    script = tmp_path / "pin.py"
    script.write_text(
        "import numba, numpy as np\n"
        "from fireredasr_fast.runner.plan import set_process_threads\n"
        "@numba.njit(parallel=True)\n"
        "def total(x):\n"
        "    s = 0.0\n"
        "    for i in numba.prange(x.size):\n"
        "        s += x[i]\n"
        "    return s\n"
        "total(np.ones(8))\n"  # starts the pool at NUMBA_NUM_THREADS=2
        "set_process_threads(1)\n"
        "numba.njit(lambda x: x + 1)(1)\n"  # a compile after the pin
        "print('compiled', numba.config.NUMBA_NUM_THREADS)\n"
    )
    env = {**os.environ, "NUMBA_NUM_THREADS": "2", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["compiled", "2"]
