#!/usr/bin/env bash
# The one-call GPU check (docs/gpu.md, "The one-call GPU check"): every GPU check in one run,
# made to fit one device call (timeout_s 600). Each step is time-boxed and the run goes on
# after a failure; without CUDA every CUDA step reports "skipped: no CUDA".
#
#     bash tests/tools/gpu_check.sh                       # on the device: after gpu_wheels.sh here
#     OUT=/tmp/gpuout GPU_CHECK_NO_INSTALL=1 bash tests/tools/gpu_check.sh   # anywhere, to try it
#
# Writes $OUT/gpu_check.log and $OUT/gpu_check.json; the exit status is the number of failed steps.
# GPU_CHECK_BUDGET (seconds, default 480): steps that would start after it are skipped.
# GPU_CHECK_STEPS (names, comma-separated): run only these (and install), e.g. the failed ones again.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu_check}
WORK=${GPU_CHECK_WORK:-/tmp/gpu_check_work}
BUDGET=${GPU_CHECK_BUDGET:-480}
PY=${PYTHON:-python3}
# A rerun of some steps (GPU_CHECK_STEPS) keeps what the earlier run wrote: checkpoint, outputs.
[[ -z ${GPU_CHECK_STEPS:-} ]] && rm -rf "$WORK"
mkdir -p "$OUT" "$WORK/results"
exec > >(tee "$OUT/gpu_check.log") 2>&1
TEE=$!
HAVE_CUDA=0
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
STEPS="$WORK/steps.tsv"
: >"$STEPS"
T0=$SECONDS

# step NAME SECONDS cuda|any COMMAND: runs COMMAND (a bash string) under `timeout`, logs it and
# records NAME, its status and its seconds.
step() {
    local name=$1 limit=$2 needs=$3 cmd=$4 status left start
    left=$((BUDGET - (SECONDS - T0)))
    echo; echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s, ${left}s of the budget left)"
    start=$SECONDS
    if [[ -n ${GPU_CHECK_STEPS:-} && $name != install && ,$GPU_CHECK_STEPS, != *,$name,* ]]; then
        status="skipped: not asked"
    elif [[ $needs == cuda && $HAVE_CUDA != 1 ]]; then
        status="skipped: no CUDA"
    elif ((left < 20)); then
        status="skipped: out of time"
    else
        timeout -k 10 "$((limit < left ? limit : left))" bash -c "$cmd"
        case $? in 0) status=ok ;; 124 | 137) status=timeout ;; *) status=failed ;; esac
    fi
    echo "=== $name: $status ($((SECONDS - start)) s)"
    printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" >>"$STEPS"
}

# The wheels gpu_wheels.sh put in .whl/ (the device image lacks them), unless asked not to.
if [[ -z ${GPU_CHECK_NO_INSTALL:-} && -d .whl ]]; then
    step install 120 any "$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl"
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
HAVE_CUDA=$($PY -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
R=$WORK/results
CLI="$PY -m fireredasr_fast.cli --no-progress --formats json,srt"
# A random AED-L: --max-tokens-per-second keeps its hypotheses to a speech-like length; batches of
# 20 s make enough of them (3 copies of samples/: 9 segments) for CPU and GPU workers to share.
AEDL="$CLI --model-dir $WORK/aed-l --max-tokens-per-second 6 --batch-seconds 20"
MEDIA=$WORK/media
mkdir -p "$MEDIA" && for i in 1 2 3; do cp samples/aishell_zh.mkv "$MEDIA/zh$i.mkv"; cp samples/two_cities.mp4 "$MEDIA/en$i.mp4"; done
# Two CPU workers beside the GPU worker: they cannot take every batch before it has loaded.
MIXED="--gpu auto --workers 2 --threads-per-worker 4"
TINY="$CLI --model-dir tests/fixtures/tiny_model"
SHOW="$PY tests/tools/gpu_steps.py"

step facts 60 any "(nvidia-smi || echo 'no nvidia-smi'); $SHOW facts $R/facts.json"
step pytest 240 cuda "$PY -m pytest -q -rs -p no:cacheprovider tests/test_gpu.py tests/test_runner_gpu.py \
    tests/test_engine_parity.py::test_cuda_precisions"
# The setup check's GPU line (its other lines may fail there: no faster-whisper, no ollama).
step doctor 60 cuda "$PY -m fireredasr_fast.cli doctor --model-dir tests/fixtures/tiny_model --gpu only \
    | tee $WORK/doctor.txt; grep -qE '^ok +gpu ' $WORK/doctor.txt"
# The trained fixture: GPU fp32 must write what CPU fp32 writes.
step tiny-cpu-fp32 120 cuda "$TINY --gpu off -o $WORK/tiny-cpu samples"
step tiny-gpu-fp32 120 cuda "$TINY --gpu only -o $WORK/tiny-gpu samples \
    && $SHOW compare $WORK/tiny-cpu $WORK/tiny-gpu $R/tiny-gpu-fp32.json"
step aed-l-checkpoint 240 cuda "$SHOW model $WORK/aed-l --preset aed-l"
for p in fp32 fp16 bf16; do
    step aed-l-gpu-$p 150 cuda "$AEDL --gpu only --precision $p -o $WORK/gpu-$p $MEDIA \
        && $SHOW workers $WORK/gpu-$p $R/gpu-$p-workers.json --gpu-batches some"
done
step aed-l-cpu-fp32 240 cuda "$AEDL --gpu off -o $WORK/cpu-fp32 $MEDIA && $SHOW workers $WORK/cpu-fp32 \
    $R/cpu-fp32-workers.json && $SHOW compare $WORK/cpu-fp32 $WORK/gpu-fp32 $R/aed-l-gpu-vs-cpu-fp32.json"
step aed-l-drift 30 cuda "for p in fp16 bf16; do $SHOW compare $WORK/gpu-fp32 $WORK/gpu-\$p $R/aed-l-\$p-vs-fp32.json \
    --allow-differences || exit 1; done"
# CPU and GPU workers together: the GPU worker takes batches, the outputs are CPU fp32's.
step aed-l-mixed 240 cuda "$AEDL $MIXED -o $WORK/mixed $MEDIA && $SHOW workers $WORK/mixed \
    $R/mixed-workers.json --gpu-batches some && $SHOW compare $WORK/cpu-fp32 $WORK/mixed $R/mixed-vs-cpu.json"
# No headroom over the loaded weights (runner/gpu.py HEADROOM_ENV): the GPU worker's first batch
# runs out of memory; a CPU worker finishes it, and the outputs are still CPU fp32's.
step aed-l-oom 240 cuda "FIREREDASR_FAST_GPU_HEADROOM_MIB=0 $AEDL $MIXED -o $WORK/oom $MEDIA 2>&1 \
    | tee $WORK/oom.log; grep -q 'stopped (out of memory)' $WORK/oom.log && $SHOW workers $WORK/oom \
    $R/oom-workers.json --gpu-batches none && $SHOW compare $WORK/cpu-fp32 $WORK/oom $R/oom-vs-cpu.json"
step engine 240 cuda "$SHOW engine $WORK/aed-l $R/engine.json"

# The summary: each step's status and seconds, and what the Python steps found.
$PY - "$STEPS" "$R" "$OUT/gpu_check.json" "$HAVE_CUDA" <<'EOF'
import json, sys
from pathlib import Path
steps, results, out, cuda = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "1"
rows = [{"step": s, "status": st, "seconds": int(sec)} for s, st, sec in (line.split("\t") for line in steps.read_text().splitlines())]
found = {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}
failed = [r["step"] for r in rows if r["status"] in ("failed", "timeout")]
out.write_text(json.dumps({"cuda": cuda, "failed": failed, "steps": rows, "results": found}, indent=1))
for r in rows:
    print(f"{r['step']:20s} {r['status']:20s} {r['seconds']:4d} s")
EOF
FAILED=$(grep -cP '\t(failed|timeout)\t' "$STEPS")
echo "gpu_check: $FAILED step(s) failed, $((SECONDS - T0)) s; $OUT/gpu_check.json"
exec >&- 2>&-
wait "$TEE"
exit "$FAILED"
