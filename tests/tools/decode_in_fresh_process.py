"""The same decode in many fresh processes, for tests/test_decoding_determinism.py.

    python tests/tools/decode_in_fresh_process.py MODEL_DIR [--processes 64] [--parallel 2]
        [--threads 2] [--spawn]

Each process pins its thread pools as a runner worker does (plan.set_process_threads: torch's,
and numba's for the decoder kernels), builds its inputs itself (espeak-ng speech where
espeak-ng exists, then seeded noise; mixed lengths), loads the model with the decoder kernels,
decodes the inputs in one batch (beam 3: 4 or more rows a step) and the first one alone (3 rows),
through the fused step (stepkernel.py: one numba call per layer), and
prints one JSON line: digests of its inputs, of every decoder step's logits and of the
hypotheses (token ids and confidences), the token ids, and the thread pools it ran on. Any
difference between two lines is a nondeterminism: in the inputs (the synthesis) or in the
decoding (a race).

By default the processes are forked from this one once it has imported the modules and built
the model once without kernels, before any thread pool of torch or numba has started (checked):
each child starts its own pools and loads the kernels, as a spawned worker does, without paying
the imports again. --spawn starts each one as a new interpreter instead (several times the cost).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PHRASES = (("今天天气很好", "cmn"), ("hello world", "en"), ("北京欢迎你", "cmn"))
NOISE_SECONDS = (0.4, 2.6, 1.3)
BEAM = 3
MAX_TOKENS = 16


def pin_threads(threads: int) -> None:
    from fireredasr_fast.runner.plan import set_process_threads

    set_process_threads(threads)  # before numba is imported: NUMBA_NUM_THREADS sizes its pool


def waveforms() -> list:
    import numpy as np

    sys.path.insert(0, str(FIXTURES))
    from make_programme import espeak_speech, has_espeak

    waves = [espeak_speech(text, voice) for text, voice in PHRASES] if has_espeak() else []
    rng = np.random.default_rng(0)
    waves += [(rng.standard_normal(round(16000 * s)) * 0.05).astype(np.float32) for s in NOISE_SECONDS]
    return waves


def decode(model_dir: str, threads: int) -> dict:
    pin_threads(threads)
    import numba
    import torch

    from fireredasr_fast.engines.firered import kernels
    from fireredasr_fast.engines.firered.engine import FireRedModel

    # The attention kernel at every size, as the parity tests run it: these K/V are small.
    kernels.MIN_K_BYTES_ONE_QUERY = kernels.MIN_K_BYTES_SHARED = 0
    model = FireRedModel(model_dir)
    waves = waveforms()
    steps = hashlib.sha256()

    def hook(step: int, logits: torch.Tensor) -> torch.Tensor:
        steps.update(logits.contiguous().numpy().tobytes())
        return logits

    hyps = model.transcribe(waves, beam_size=BEAM, decode_max_len=MAX_TOKENS, logits_hook=hook)
    hyps += model.transcribe(waves[:1], beam_size=BEAM, decode_max_len=MAX_TOKENS, logits_hook=hook)
    found = [[h.token_ids, h.confidence] for h in hyps]
    return {
        "pid": os.getpid(),
        "inputs": hashlib.sha256(b"".join(w.tobytes() for w in waves)).hexdigest(),
        "logits": steps.hexdigest(),
        "hypotheses": hashlib.sha256(json.dumps(found).encode()).hexdigest(),
        "token_ids": [h.token_ids for h in hyps],
        "kernels": model.decoder_kernels,
        "threading_layer": numba.threading_layer() if model.decoder_kernels else None,
        "numba_threads": numba.get_num_threads(),
        "torch_threads": torch.get_num_threads(),
    }


def os_threads() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


def prepare_for_forks(model_dir: str, threads: int) -> None:
    """Import what a child needs and build the model once without kernels (for the imports
    its construction pulls in), then check that no thread pool started beyond those the
    imports start (numpy's BLAS, which is fork-safe): fork copies only the calling thread, so
    each child must start torch's and numba's pools itself. The thread counts go to the
    environment only; the children set them."""
    from fireredasr_fast.runner.plan import THREAD_ENV_VARS

    os.environ.update({name: str(threads) for name in THREAD_ENV_VARS})
    import numba  # noqa: F401
    import torch  # noqa: F401

    from fireredasr_fast.engines.firered.engine import FireRedModel

    before = os_threads()
    FireRedModel(model_dir, decoder_kernels=False)
    if os_threads() != before:
        raise RuntimeError(f"a thread pool started before forking ({before} -> {os_threads()} threads)")


def run_child(model_dir: str, threads: int, out: Path) -> int:
    try:
        out.write_text(json.dumps(decode(model_dir, threads)))
        return 0
    except BaseException:
        out.write_text(json.dumps({"error": traceback.format_exc()}))
        return 1


def forked(model_dir: str, threads: int, out: Path) -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(run_child(model_dir, threads, out))
    return pid


def spawned(model_dir: str, threads: int, out: Path) -> subprocess.Popen:
    command = [sys.executable, __file__, model_dir, "--threads", str(threads), "--child-output", str(out)]
    return subprocess.Popen(command)


def run_all(args: argparse.Namespace) -> list[dict]:
    """args.processes children, args.parallel at a time; their results in start order."""
    if not args.spawn:
        prepare_for_forks(args.model_dir, args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        outputs = [Path(tmp) / f"{i}.json" for i in range(args.processes)]
        running: dict[int, subprocess.Popen | None] = {}
        for out in outputs:
            if len(running) == args.parallel:
                wait_one(running)
            if args.spawn:
                child = spawned(args.model_dir, args.threads, out)
                running[child.pid] = child
            else:
                running[forked(args.model_dir, args.threads, out)] = None
        while running:
            wait_one(running)
        return [json.loads(out.read_text()) if out.exists() else {"error": "no output"} for out in outputs]


def wait_one(running: dict[int, subprocess.Popen | None]) -> None:
    pid, _ = os.wait()
    child = running.pop(pid, None)
    if child is not None:
        child.returncode = 0  # reaped here; keeps Popen from waiting on it again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--processes", type=int, default=64)
    parser.add_argument("--parallel", type=int, default=2, help="children running at a time")
    parser.add_argument("--threads", type=int, default=2, help="torch and numba threads in each child")
    parser.add_argument("--spawn", action="store_true", help="a new interpreter per child instead of a fork")
    parser.add_argument("--child-output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_output:
        sys.exit(run_child(args.model_dir, args.threads, args.child_output))
    for result in run_all(args):
        print(json.dumps(result))


if __name__ == "__main__":
    main()
