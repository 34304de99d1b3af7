"""The same inputs give the same hypotheses in every process, with the decoder kernels on and
two threads in each of torch's and numba's pools.

64 fresh processes (tests/tools/decode_in_fresh_process.py: forked from a parent that has only
imported the modules, so each starts its own thread pools and loads the kernels) each build the
inputs themselves, as a test process does, and decode them with a tiny random model; every
process must write the same input samples, the same logits at every decoder step and the same
hypotheses. The parity tests once flipped a hypothesis in about one process in eight: their
espeak-ng speech went through sox, whose dither is seeded from the clock, so each process
decoded slightly different audio (make_programme.resample now uses ffmpeg, which adds none).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from torch import nn

from fireredasr_fast.engines.firered import kernels
from testsupport.random_model import write_random_model_dir

pytestmark = pytest.mark.skipif(not kernels.available(), reason=f"{kernels.unavailable_reason()}")

TOOL = ROOT / "tests" / "tools" / "decode_in_fresh_process.py"
PROCESSES = 64
THREADS = 2


def _run(model_dir: Path) -> list[dict]:
    # Two children at a time, two threads each, in two OpenMP runtimes (torch's and numba's) on
    # what may be two cores: threads that spin while they wait would take the cores from the
    # threads with work, so they sleep instead. Both threads of a pool still run each kernel.
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_WAIT_POLICY="PASSIVE")
    command = [sys.executable, str(TOOL), str(model_dir), "--processes", str(PROCESSES), "--threads", str(THREADS)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.slow
def test_same_hypotheses_in_64_fresh_processes_with_threads(tmp_path: Path) -> None:
    model_dir = write_random_model_dir(
        tmp_path / "model", preset="tiny", odim=1000, seed=0, mix_gain=100.0, output_gain=6.0
    )
    runs = _run(model_dir)
    assert len(runs) == PROCESSES
    assert not [run["error"] for run in runs if "error" in run]
    assert len({run["pid"] for run in runs}) == PROCESSES
    assert all(run["kernels"] and run["threading_layer"] in kernels.THREADING_LAYERS for run in runs)
    assert {(run["torch_threads"], run["numba_threads"]) for run in runs} == {(THREADS, THREADS)}

    def spread(key: str) -> Counter:
        return Counter(run[key][:12] for run in runs)

    assert len(spread("inputs")) == 1, f"the processes built different inputs: {spread('inputs')}"
    assert len(spread("logits")) == 1, f"the same inputs gave different logits: {spread('logits')}"
    assert len(spread("hypotheses")) == 1, f"the same inputs gave different hypotheses: {spread('hypotheses')}"
    # Informative: the hypotheses follow the audio (a model that said one thing whatever it
    # heard would agree with itself trivially).
    assert len({tuple(ids) for ids in runs[0]["token_ids"]}) >= 4


def test_kernels_give_the_same_bits_on_one_thread_or_two(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each output of a kernel is summed by one thread, in one order, whichever thread that
    is: no sum is split between threads (a prange reduction would be), so the thread count
    changes no bit. The kernels follow torch's thread count (kernels._match_torch_threads)."""
    numba = kernels._compiled()[0]
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba's pool has one thread here")
    monkeypatch.setattr(kernels, "MIN_K_BYTES_ONE_QUERY", 0)
    monkeypatch.setattr(kernels, "MIN_K_BYTES_SHARED", 0)
    torch.manual_seed(0)
    layer = kernels.FewRowsLinear(nn.Linear(256, 67))
    rows = [torch.randn(n, 1, 256) for n in (1, 3, 12, 96)]
    q, k, v = torch.randn(4, 2, 3, 64), torch.randn(4, 2, 300, 64), torch.randn(4, 2, 300, 64)
    bias = torch.zeros(4, 1, 1, 300).masked_fill_(torch.rand(4, 1, 1, 300) < 0.2, float("-inf"))

    def outputs(threads: int) -> tuple[list[torch.Tensor], int]:
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                got = [layer(x) for x in rows] + [kernels.attention(q, k, v, bias), kernels.attention(q, k, v, None)]
            return got, numba.get_num_threads()
        finally:
            torch.set_num_threads(1)

    (one, on_one), (two, on_two) = outputs(1), outputs(2)
    assert (on_one, on_two) == (1, 2)
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))
