"""`python -m benchmarks grouping`: how the engine groups segments of mixed lengths.

The runner's folder (common.build_folder: real speech, 1-3 minute videos) is segmented by the
real VAD, then each file's segments go to the FireRedASR engine in one call, the way the
runner's first batches leave as soon as a file is ready. Two ways of cutting a call into
padded encoder batches and beam searches, alternating rounds, one process, one model:

  grouped  the engine's rule (batching.group_by_length): split where padding would cost
           more than one more beam search;
  greedy   the previous rule: longest first, each group as large as the frame budget allows.

    python -m benchmarks grouping --preset aed-l --minutes 4 --rounds 2

A random checkpoint never says <eos>: --tokens-per-second (default 4.5) caps every segment at
the rate of real speech, the same for both. Tokens must come out identical.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

import numpy as np
import torch

from fireredasr_fast.engines.firered.engine import FireRedModel

from .common import add_folder_options, as_float, report_header, resolve_model, segmented_folder


def greedy_groups(lengths: Sequence[int], max_padded: int) -> list[list[int]]:
    """The previous rule: longest first, a group grows while count x longest fits."""
    order = sorted((i for i, n in enumerate(lengths) if n > 0), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= max_padded:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def padded_seconds(groups: list[list[int]], frames: Sequence[int]) -> float:
    """Audio seconds the encoder runs over, padding included (10 ms frames)."""
    return sum(len(g) * frames[g[0]] for g in groups) / 100.0


def main(argv: list[str] | None = None) -> int:
    prog = "python -m benchmarks grouping"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    add_folder_options(parser, rounds=2)
    opts = parser.parse_args(argv)

    torch.set_num_threads(opts.threads)
    calls = [[as_float(job) for job in jobs] for jobs in segmented_folder(opts.minutes)]
    model_dir, kind = resolve_model(opts.model_dir, opts.preset, opts.cache_dir)
    model = FireRedModel(model_dir)
    seconds = [[round(w.size / 16000, 2) for w in waves] for waves in calls]
    print(f"model: {kind}; {len(calls)} calls (one per file), segments (s): {seconds}", flush=True)

    frames = [[model.features.num_frames(w.size) for w in waves] for waves in calls]
    rules = {
        "grouped": model.encoder_batches,  # bound now, before the loop below swaps the attribute
        "greedy": lambda lengths: greedy_groups(lengths, model.batch_frames),
    }
    plans = {name: [rule(f) for f in frames] for name, rule in rules.items()}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in rules}
    tokens: dict[str, list[list[int]]] = {}
    for r in range(opts.rounds):
        for name in rules if r % 2 == 0 else list(rules)[::-1]:
            model.encoder_batches = rules[name]  # type: ignore[method-assign]
            spent = {"encoder": 0.0, "decoder": 0.0}
            ids: list[list[int]] = []
            start = time.perf_counter()
            for waves in calls:
                hyps = model.transcribe(waves, beam_size=3, max_tokens_per_second=opts.tokens_per_second)
                ids += [h.token_ids for h in hyps]
                for part in spent:
                    spent[part] += model.timings[part]
            runs[name].append({"wall": time.perf_counter() - start, **spent})
            tokens.setdefault(name, ids)
            if ids != tokens[name]:
                raise SystemExit(f"{name}: tokens changed between rounds")
            print(f"round {r + 1} {name:8s} {runs[name][-1]['wall']:8.1f} s", flush=True)
    identical = tokens["grouped"] == tokens["greedy"]

    rows = []
    columns = ("groups", "padded s", "wall best", "median", "encoder", "decoder")
    print("\n" + f"{'rule':8s} " + " ".join(f"{c:>9s}" for c in columns))
    for name, results in runs.items():
        walls = sorted(x["wall"] for x in results)
        best = min(results, key=lambda x: x["wall"])
        row = {
            "rule": name,
            "groups": sum(len(p) for p in plans[name]),
            "padded_seconds": sum(padded_seconds(p, f) for p, f in zip(plans[name], frames, strict=True)),
            "wall_best": walls[0],
            "wall_median": float(np.median(walls)),
            "encoder_best": best["encoder"],
            "decoder_best": best["decoder"],
            "rounds": results,
        }
        rows.append(row)
        print(
            f"{name:8s} {row['groups']:9d} {row['padded_seconds']:9.1f} {row['wall_best']:8.1f}s "
            f"{row['wall_median']:8.1f}s {row['encoder_best']:8.1f}s {row['decoder_best']:8.1f}s"
        )
    ratio = rows[1]["wall_best"] / rows[0]["wall_best"]
    audio = sum(sum(s) for s in seconds)
    print(f"\naudio {audio:.1f} s; greedy / grouped wall (best): {ratio:.2f}x; identical tokens: {identical}")
    if opts.json:
        report = {
            **report_header("grouping", opts.threads, kind),
            "segments_seconds": seconds,
            "audio_seconds": audio,
            "rows": rows,
            "speedup": ratio,
            "identical_tokens": identical,
        }
        opts.json.write_text(json.dumps(report, indent=2))
    return 0 if identical else 1
