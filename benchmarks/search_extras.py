"""`python -m benchmarks search-extras`: what FireRedASR2's search additions cost.

Side by side in one run, on the same encoder output, in alternating rounds: our beam search
without the per-token confidences (`beam_search(confidence=False)`), with them (the default,
always on in the engine), and with an external LSTM LM fused (lm.py). The confidences' cost is
also timed alone (the same tensor operations on the search's shapes, "its ops alone", as a share
of the plain search): on a loaded machine the difference of two whole searches is noise. Random-weight v2
checkpoints (CTC head, 8667 tokens) of the chosen shapes; every search runs exactly
`--tokens-per-second` x seconds steps (<eos> suppressed by a logits hook), so all rows do the
same number of steps whatever the random weights say. Times are the process's CPU time
(time.process_time, one thread): on a shared machine wall time mostly measures the other jobs.
The real FireRedASR2 LM's shape is not known here: --lm-dim / --lm-layers set the random one's.

    python -m benchmarks search-extras --presets tiny,small --seconds 5,20 --json extras.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fireredasr_fast.engines.firered.engine import FireRedModel
from fireredasr_fast.engines.firered.lm import load_lm
from fireredasr_fast.engines.firered.search import beam_search
from testsupport.random_model import write_random_lm_dir, write_random_model_dir

V2_VOCABULARY = 8667
VARIANTS = ("plain", "confidence", "lm")


def _confidence_ops_seconds(rows: int, beam: int, steps: int, rounds: int) -> float:
    """CPU seconds of the confidence bookkeeping alone over one search of `steps` steps: the
    same tensor operations beam_search adds (gather and exp of the chosen step scores, history
    reorder), on tensors of the search's shapes; fastest of `rounds`."""
    n = rows // beam
    top_s = torch.randn(rows, beam)
    best_ids = torch.randint(0, beam * beam, (n, beam))
    parent = torch.randint(0, rows, (rows,))
    confidences = torch.zeros(rows, steps + 1)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(rounds):
            start = time.process_time()
            for step in range(steps):
                if step:
                    confidences[:, :step] = confidences[:, :step].index_select(0, parent)
                confidences[:, step] = torch.gather(top_s.view(n, beam * beam), 1, best_ids).view(-1).exp()
            best = min(best, time.process_time() - start)
    return best


def _search_times(model: FireRedModel, lm: Any, seconds: float, opts: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    waves = [(rng.standard_normal(int(16000 * seconds)) * 0.05).astype(np.float32) for _ in range(opts.batch)]
    feats = model.features.batch(waves)
    with torch.inference_mode():
        enc, valid = model._encode(feats)
    steps = max(1, round(opts.tokens_per_second * seconds))
    eos = model.model.eos_id

    def no_eos(step: int, logits: torch.Tensor) -> torch.Tensor:
        logits[:, eos] = float("-inf")
        return logits

    def run(variant: str) -> float:
        cache = model._decoder.init_cache(enc, valid, opts.beam)
        start = time.process_time()
        beam_search(
            model._decoder,
            enc,
            valid,
            [steps] * len(waves),
            cache=cache,
            beam_size=opts.beam,
            softmax_smoothing=1.25,
            length_penalty=0.6,
            logits_hook=no_eos,
            confidence=variant != "plain",
            lm=lm if variant == "lm" else None,
            lm_weight=opts.lm_weight,
        )
        return time.process_time() - start

    for variant in VARIANTS:  # warm-up (numba compilation, allocator)
        run(variant)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(opts.rounds):
        for variant in VARIANTS:
            times[variant].append(run(variant))
    # The fastest of the alternating rounds (CPU seconds): on a shared machine the others
    # measure the load.
    med = {v: min(t) for v, t in times.items()}
    isolated = _confidence_ops_seconds(len(waves) * opts.beam, opts.beam, steps, 3 * opts.rounds)
    return {
        "seconds": seconds,
        "batch": opts.batch,
        "steps": steps,
        "search_s": med,
        "search_s_median": {v: statistics.median(t) for v, t in times.items()},
        "step_ms": {v: 1000 * t / steps for v, t in med.items()},
        "confidence_overhead": med["confidence"] / med["plain"] - 1.0,
        "confidence_ops_s": isolated,
        "confidence_ops_share": isolated / med["plain"],
        "lm_ms_per_step": 1000 * (med["lm"] - med["confidence"]) / steps,
        "lm_overhead": med["lm"] / med["confidence"] - 1.0,
    }


def _table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| preset | seconds x batch | steps | search plain | + confidence | confidence cost "
        "| its ops alone | + LM | LM per step | LM cost |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        s = r["search_s"]
        lines.append(
            f"| {r['preset']} | {r['seconds']:g} x {r['batch']} | {r['steps']} | {s['plain']:.3f} s | "
            f"{s['confidence']:.3f} s | {100 * r['confidence_overhead']:+.2f} % | "
            f"{1000 * r['confidence_ops_s']:.2f} ms = {100 * r['confidence_ops_share']:.2f} % | {s['lm']:.3f} s | "
            f"{r['lm_ms_per_step']:.2f} ms | {100 * r['lm_overhead']:+.1f} % |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks search-extras", description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="tiny,small", help="checkpoint shapes, comma-separated")
    parser.add_argument("--seconds", default="5,20", help="segment lengths, comma-separated")
    parser.add_argument("--batch", type=int, default=4, help="segments per search")
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--tokens-per-second", type=float, default=4.5)
    parser.add_argument("--lm-dim", type=int, default=1024, help="the random LM's embedding and hidden size")
    parser.add_argument("--lm-layers", type=int, default=2)
    parser.add_argument("--lm-weight", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=9, help="alternating rounds; the fastest of each is reported")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the rows here")
    opts = parser.parse_args(argv)
    torch.set_num_threads(opts.threads)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        lm = load_lm(write_random_lm_dir(Path(tmp) / "lm", V2_VOCABULARY, dim=opts.lm_dim, num_layers=opts.lm_layers))
        for preset in opts.presets.split(","):
            model_dir = write_random_model_dir(
                Path(tmp) / preset, preset=preset, odim=V2_VOCABULARY, with_ctc=True, mix_gain=30.0
            )
            model = FireRedModel(model_dir)
            for seconds in (float(s) for s in opts.seconds.split(",")):
                row = {"preset": preset, **_search_times(model, lm, seconds, opts)}
                rows.append(row)
                print(_table([row]).splitlines()[-1], flush=True)
            del model
    print()
    print(_table(rows))
    if opts.json:
        meta = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": platform.processor() or platform.machine(),
            "threads": opts.threads,
            "beam": opts.beam,
            "lm": {"dim": opts.lm_dim, "layers": opts.lm_layers, "weight": opts.lm_weight},
        }
        with open(opts.json, "w", encoding="utf-8") as f:
            json.dump({**meta, "rows": rows}, f, indent=2)
    return 0
