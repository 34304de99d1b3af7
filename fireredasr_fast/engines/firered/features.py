"""80-dim Kaldi fbank + CMVN, computed like upstream's front end but without Python loops
over samples: waveforms go to kaldi-native-fbank as numpy arrays and frames come back as
arrays stacked once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import kaldi_native_fbank as knf
import numpy as np

from fireredasr_fast.results import SAMPLE_RATE

from .checkpoint import read_cmvn

NUM_MEL_BINS = 80
# Upstream feeds int16 sample values; our waveforms are float32 in [-1, 1].
INT16_SCALE = 32768.0
# snip_edges=True: a waveform shorter than one 25 ms window yields no frame at all.
MIN_SAMPLES = 400


class FbankExtractor:
    """waveform (float32, 16 kHz, [-1, 1]) -> normalised features (frames, 80) float32."""

    def __init__(self, cmvn_file: str | os.PathLike | None = None) -> None:
        opts = knf.FbankOptions()
        opts.frame_opts.dither = 0.0
        opts.frame_opts.snip_edges = True
        opts.frame_opts.samp_freq = SAMPLE_RATE
        opts.mel_opts.num_bins = NUM_MEL_BINS
        opts.mel_opts.debug_mel = False
        self._opts = opts
        self.cmvn = read_cmvn(cmvn_file) if cmvn_file else None

    @staticmethod
    def num_frames(num_samples: int) -> int:
        return 0 if num_samples < MIN_SAMPLES else 1 + (num_samples - MIN_SAMPLES) // 160

    def fbank(self, waveform: np.ndarray) -> np.ndarray:
        """Raw log-mel fbank of one waveform, (frames, 80) float32."""
        samples = np.ascontiguousarray(waveform, dtype=np.float32).reshape(-1) * np.float32(INT16_SCALE)
        if samples.size < MIN_SAMPLES:
            return np.zeros((0, NUM_MEL_BINS), dtype=np.float32)
        online = knf.OnlineFbank(self._opts)
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
