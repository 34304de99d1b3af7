#!/usr/bin/env bash
# Download into .whl/ the wheels that the device machine's image lacks (docs/gpu.md, "The one-call
# GPU check"). The image has Python 3.12, torch, numpy, onnxruntime, numba, sentencepiece, tqdm,
# psutil, filelock, nvidia-ml-py and pytest (KINDS.md, "Python packages already there") and no
# registry, so the rest of our runtime dependencies travel as wheels, without their own
# dependencies (--no-deps: every one that is missing there is named here). soundfile is declared
# but not imported by the package or the GPU tests, so it stays behind.
#
#     bash tests/tools/gpu_wheels.sh        # then: du -sh .whl
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS=(
    silero-vad==6.2.3         # the default VAD
    ffmpeg-python==0.2.0      # audio.py builds ffmpeg's command line with it
    future==1.0.0             # ffmpeg-python imports `past` and `builtins` from it
    imageio-ffmpeg==0.5.1     # an ffmpeg binary (the image may have none); 27 MB (0.6 on: 30 to 68 MB)
    pysubs2==1.8.1            # the subtitle writers
    kaldi-native-fbank==1.23.0  # the engine's features
    kaldiio==2.18.1           # cmvn.ark
    opencc==1.4.2             # --zh-script
    fireredasr==0.0.2         # the parity reference (testsupport/reference.py)
    fasr-asr-firered==0.5.8   # the FireRedASR2 reference (testsupport/reference2.py)
)
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
ls -1 .whl
# What travels to the device is the checkout's files plus .whl: 64 MiB at most.
tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
wheels=$(du -cb .whl | tail -1 | cut -f1)
echo "wheels $((wheels >> 20)) MiB + tracked files $((tracked >> 20)) MiB = $(((wheels + tracked) >> 20)) MiB (limit 64)"
