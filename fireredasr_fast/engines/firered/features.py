"""80-dim Kaldi fbank + CMVN, the bits of upstream's front end (kaldi-native-fbank): computed
by fbank.py's numba kernel where a probe at the first use shows it gives knf's bits, else by
knf itself.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import kaldi_native_fbank as knf
import numpy as np

from fireredasr_fast.errors import ModelDirError
from fireredasr_fast.results import SAMPLE_RATE

from . import fbank as fast_fbank

NUM_MEL_BINS = 80
# Upstream feeds int16 sample values; our waveforms are float32 in [-1, 1].
INT16_SCALE = 32768.0
# snip_edges=True: a waveform shorter than one 25 ms window yields no frame at all.
MIN_SAMPLES = 400


# 10 ms frame shift at 16 kHz.
HOP_SAMPLES = 160
# The encoder's front: 6 frames of right context padded, then two stride-2, kernel-3
# convolutions (4x subsampling: one encoder frame per 40 ms).
ENCODER_RIGHT_CONTEXT = 6
ENCODER_FRAME_SECONDS = 4 * HOP_SAMPLES / SAMPLE_RATE


def fbank_frames(num_samples: int) -> int:
    """Kaldi fbank frames (25 ms windows, 10 ms hop, snip_edges) of `num_samples` samples."""
    return 0 if num_samples < MIN_SAMPLES else 1 + (num_samples - MIN_SAMPLES) // HOP_SAMPLES


def encoder_frames(seconds: float) -> int:
    """Encoder frames of a `seconds`-long segment. This is also the decoder's default step
    limit (decode_max_len=0), so it is the number of decoder positions such a segment can need."""
    frames = fbank_frames(round(seconds * SAMPLE_RATE)) + ENCODER_RIGHT_CONTEXT
    for _ in range(2):
        frames = (frames - 3) // 2 + 1
    return max(frames, 0)


def read_cmvn(cmvn_file: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Kaldi CMVN stats -> (means, inverse std) in float64, as upstream computes them.

    Upstream normalises in float64 and only then casts the features to float32; staying in
    float64 here keeps our features bit-identical to the reference's."""
    import kaldiio

    stats = np.asarray(kaldiio.load_mat(str(cmvn_file)), dtype=np.float64)
    if stats.ndim != 2 or stats.shape[0] != 2:
        raise ModelDirError(f"{cmvn_file}: expected a 2-row Kaldi CMVN stats matrix, got shape {stats.shape}")
    dim = stats.shape[1] - 1
    count = stats[0, dim]
    if count < 1:
        raise ModelDirError(f"{cmvn_file}: CMVN frame count is {count}")
    means = stats[0, :dim] / count
    variance = np.maximum(stats[1, :dim] / count - means * means, 1e-20)
    return means, 1.0 / np.sqrt(variance)


class FbankExtractor:
    """waveform (float32, 16 kHz, [-1, 1]) -> normalised features (frames, 80) float32."""

    def __init__(self, cmvn_file: str | os.PathLike | None = None) -> None:
        opts = knf.FbankOptions()
        opts.frame_opts.dither = 0.0
        opts.frame_opts.snip_edges = True
        opts.frame_opts.samp_freq = SAMPLE_RATE
        opts.mel_opts.num_bins = NUM_MEL_BINS
        opts.mel_opts.debug_mel = False
        self.opts = opts
        self.cmvn = read_cmvn(cmvn_file) if cmvn_file else None

    @staticmethod
    def num_frames(num_samples: int) -> int:
        return fbank_frames(num_samples)

    def fbank(self, waveform: np.ndarray) -> np.ndarray:
        """Raw log-mel fbank of one waveform, (frames, 80) float32: knf's bits, computed by
        fbank.py's kernel once a probe has shown it gives them here, else by knf itself."""
        samples = np.ascontiguousarray(waveform, dtype=np.float32).reshape(-1) * np.float32(INT16_SCALE)
        if samples.size < MIN_SAMPLES:
            return np.zeros((0, NUM_MEL_BINS), dtype=np.float32)
        fast = fast_fbank.checked(self.opts, self.knf_fbank)
        return fast(samples) if fast is not None else self.knf_fbank(samples)

    def knf_fbank(self, samples: np.ndarray) -> np.ndarray:
        """(frames, 80) float32 by kaldi-native-fbank, of float32 samples at int16 scale."""
        online = knf.OnlineFbank(self.opts)
        online.accept_waveform(SAMPLE_RATE, samples)
        count = online.num_frames_ready
        out = np.empty((count, NUM_MEL_BINS), dtype=np.float32)
        for i in range(count):  # per frame, not per sample: the binding has no bulk getter
            out[i] = online.get_frame(i)
        return out

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        feats = self.fbank(waveform)
        if self.cmvn is None or feats.shape[0] == 0:
            return feats
        means, istd = self.cmvn
        return ((feats - means) * istd).astype(np.float32)

    def batch(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [self(w) for w in waveforms]


def prepare_fast_fbank() -> None:
    """The fbank kernel loaded from numba's cache (compiled the first time) and checked
    against knf: once in the workers' fork server rather than in every worker (a non-parallel
    kernel starts no thread)."""
    extractor = FbankExtractor()
    fast_fbank.checked(extractor.opts, extractor.knf_fbank)
