"""The FireRedASR-AED engine (v1 and FireRedASR2), one module per part:

- engine.py: `load_model`, `FireRedModel` (features -> encoder batches -> beam search -> token
  times) and `FireRedEngine`, the pipeline's adapter;
- options.py: `DecodingOptions` and `FireRedOptions`, the engine's options in one object;
- checkpoint.py: the official model directory (check, safe loading, writing);
- features.py, tokenizer.py: fbank + CMVN; token ids <-> text;
- model.py: the network (Conformer encoder, Transformer decoder with caches, CTC head);
- search.py: the batched beam search;
- alignment.py: token times (cross-attention for v1, CTC forced alignment for v2);
- onednn.py, kernels.py, onnx_encoder.py, onnx_decoder.py: CPU accelerations.

Upstream's implementation behind the same interface (the parity reference) and random-weight
model directories live in the checkout's testsupport/, not in the product.

Nothing is imported here, so that reading a checkpoint's files does not load the network.
"""
