"""The Python steps of the one-call GPU check (tests/tools/gpu_check.sh, docs/gpu.md).

    python tests/tools/gpu_steps.py facts RESULT.json
    python tests/tools/gpu_steps.py model DIR [--preset aed-l]
    python tests/tools/gpu_steps.py compare BASE_OUT OTHER_OUT RESULT.json [--allow-differences]
    python tests/tools/gpu_steps.py workers OUT RESULT.json [--gpu-batches some|none]
    python tests/tools/gpu_steps.py engine MODEL_DIR RESULT.json [--device cuda] [--seconds 10,30,60]

Each writes what it found to RESULT.json (gpu_check.sh gathers them into one summary) and
exits non-zero when what it checks does not hold.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _write(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    print(json.dumps(data, ensure_ascii=False))


def facts(opts: argparse.Namespace) -> int:
    """torch, CUDA and the GPU as torch and our probe see them."""
    import torch

    from fireredasr_fast.audio import ffmpeg_executable
    from fireredasr_fast.runner.gpu import default_probe

    data: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "available": False}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        data.update(
            available=True,
            device=props.name,
            capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
            bf16=torch.cuda.is_bf16_supported(),
            cudnn=torch.backends.cudnn.version(),
            # TF32 rounds fp32 matmuls/convolutions: where on, GPU fp32 may not match CPU fp32.
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
    data["ffmpeg"] = ffmpeg_executable()
    data["probe"] = [
        f"{g.index} {g.name} {g.free_bytes / 2**30:.1f}/{g.total_bytes / 2**30:.1f} GiB free"
        for g in default_probe().gpus()
    ]
    _write(opts.result, data)
    return 0


def model(opts: argparse.Namespace) -> int:
    """A random checkpoint of the official format and shape (odim as the engine benchmark's)."""
    from testsupport.random_model import write_random_model_dir

    start = time.perf_counter()
    path = write_random_model_dir(opts.dir, preset=opts.preset, odim=7832 if opts.preset != "tiny" else 256)
    size = (path / "model.pth.tar").stat().st_size
    print(f"wrote random {opts.preset} to {path}: {size / 1e9:.2f} GB in {time.perf_counter() - start:.0f} s")
    return 0


def _segments(out: Path) -> dict[str, list[Any]]:
    """Each output JSON's segments: their token ids (text where there are none)."""
    found = {}
    for path in sorted(out.glob("*.json")):
        data = json.loads(path.read_text())
        if not path.name.startswith(".") and "segments" in data:  # not the report, not the journal
            found[path.name] = [s.get("tokens") or s["text"] for s in data["segments"]]
    return found


def compare(opts: argparse.Namespace) -> int:
    """Segments whose tokens agree between two runs' outputs, file by file."""
    base, other = _segments(opts.base), _segments(opts.other)
    same = total = 0
    for name, segments in base.items():
        theirs = other.get(name, [])
        total += max(len(segments), len(theirs))
        same += sum(a == b for a, b in zip(segments, theirs, strict=False))
    identical = base == other and bool(base)
    _write(opts.result, {"files": len(base), "segments": total, "same": same, "identical": identical})
    return 0 if identical or (opts.allow_differences and base.keys() == other.keys()) else 1


def workers(opts: argparse.Namespace) -> int:
    """Batches per worker kind in a run's report, and whether every file was done."""
    summary = json.loads((opts.out / "run-report.json").read_text())["summary"]
    batches = summary["workers"].get("batches", {})
    gpu = sum(n for name, n in batches.items() if name.startswith("gpu"))
    data = {"batches": batches, "wall_seconds": summary["wall_seconds"], "files_done": summary["files_done"]}
    data["files_failed"] = summary["files_failed"]
    _write(opts.result, data)
    ok = summary["files_failed"] == 0 and summary["files_done"] > 0
    if opts.gpu_batches == "some":
        ok = ok and gpu > 0
    elif opts.gpu_batches == "none":
        ok = ok and gpu == 0
    return 0 if ok else 1


def _forced_length(length: int, eos: int) -> Any:
    """The engine benchmark's logits hook, its mask value clamped to one that fp16 holds."""
    from benchmarks.engine import forced_length_hook

    hook = forced_length_hook(length, eos)
    return lambda step, logits: hook(step, logits.float()).clamp_min(-1e4).to(logits.dtype)


def engine(opts: argparse.Namespace) -> int:
    """The engine alone on one segment at a time: fp32, fp16, bf16 on `--device`, then fp32 on
    the CPU at the shortest length, the token count forced as in the engine benchmark."""
    import numpy as np
    import torch

    from benchmarks.engine import TOKENS_PER_SECOND
    from fireredasr_fast.engines.firered.engine import FireRedModel

    torch.set_num_threads(os.cpu_count() or 1)
    seconds = [float(s) for s in opts.seconds.split(",")]
    runs = [(opts.device, p, seconds) for p in ("fp32", "fp16", "bf16")] + [("cpu", "fp32", seconds[:1])]
    rows = []
    for device, precision, lengths in runs:
        m = FireRedModel(opts.model_dir, device=device, precision=precision)
        for sec in [1.0, *lengths]:  # 1 s: the warm-up
            wave = (0.1 * np.random.default_rng(int(sec)).standard_normal(int(sec * 16000))).astype(np.float32)
            hook = _forced_length(round(TOKENS_PER_SECOND * sec), m.model.eos_id)
            start = time.perf_counter()
            m.transcribe([wave], beam_size=opts.beam, logits_hook=hook)
            total = time.perf_counter() - start
            if sec > 1.0:
                timings = {k: round(v, 3) for k, v in m.timings.items()}
                rows.append(
                    {
                        "device": device,
                        "precision": precision,
                        "seconds": sec,
                        "total": round(total, 3),
                        "rtf": round(total / sec, 4),
                        **timings,
                    }
                )
                print(f"{device:5s} {precision:5s} {sec:5.0f} s  total {total:7.3f} s  RTF {total / sec:.4f}")
        del m
    _write(opts.result, {"beam": opts.beam, "threads_cpu": torch.get_num_threads(), "rows": rows})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("facts")
    p.add_argument("result", type=Path)
    p = sub.add_parser("model")
    p.add_argument("dir", type=Path)
    p.add_argument("--preset", default="aed-l", choices=["aed-l", "small", "tiny"])
    p = sub.add_parser("compare")
    p.add_argument("base", type=Path)
    p.add_argument("other", type=Path)
    p.add_argument("result", type=Path)
    p.add_argument("--allow-differences", action="store_true", help="report, but pass (fp16/bf16 drift)")
    p = sub.add_parser("workers")
    p.add_argument("out", type=Path)
    p.add_argument("result", type=Path)
    p.add_argument("--gpu-batches", choices=["some", "none", "any"], default="any")
    p = sub.add_parser("engine")
    p.add_argument("model_dir", type=Path)
    p.add_argument("result", type=Path)
    p.add_argument("--device", default="cuda")
    p.add_argument("--seconds", default="10,30,60")
    p.add_argument("--beam", type=int, default=3)
    opts = parser.parse_args(argv)
    return {"facts": facts, "model": model, "compare": compare, "workers": workers, "engine": engine}[opts.step](opts)


if __name__ == "__main__":
    sys.exit(main())
