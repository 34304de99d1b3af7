"""The numba decoder kernels (kernels.py) against torch, and how the engine uses them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT
from torch import nn

from fireredasr_fast.engines.firered import kernels, onednn, stepkernel
from fireredasr_fast.engines.firered.engine import FireRedModel
from fireredasr_fast.engines.firered.model import sdpa_attention

pytestmark = pytest.mark.skipif(not kernels.available(), reason=f"{kernels.unavailable_reason()}")


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter on this checkout (this one may have imported or
    configured what the code checks), with `env` on top of this process's environment."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def _kernel_at_any_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "MIN_K_BYTES_ONE_QUERY", 0)
    monkeypatch.setattr(kernels, "MIN_K_BYTES_SHARED", 0)


def _few_rows_linear(in_features: int, out_features: int, bias: bool, seed: int) -> kernels.FewRowsLinear:
    torch.manual_seed(seed)
    return kernels.FewRowsLinear(nn.Linear(in_features, out_features, bias=bias))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 7, 15, 96, 97])
def test_few_rows_linear_matches_torch(rows: int, bias: bool) -> None:
    # 77 outputs: 19 blocks of 4 weight rows and one left over; 97 rows go to oneDNN.
    layer = _few_rows_linear(200, 77, bias, seed=rows)
    x = torch.randn(rows, 1, 200)  # the decoder's (rows, 1, d) shape
    with torch.inference_mode():
        got = layer(x)
        want = F.linear(x, layer.weight, layer.bias)
    assert got.shape == want.shape == (rows, 1, 77)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_rows_result_does_not_depend_on_the_rows_beside_it() -> None:
    """Calls are padded to 3 rows or a multiple of 3, and within each kernel (1-3 rows, 4 and
    more) every output is summed by the same instructions, so a row's result is bit for bit the
    same whatever came with it (a beam's logits must not depend on how many beams or utterances
    share the step)."""
    layer = _few_rows_linear(256, 67, True, seed=0)
    x = torch.randn(96, 256)
    with torch.inference_mode():
        alone = layer(x[:1])[0]
        assert torch.equal(layer(x[:2])[0], alone)
        assert torch.equal(layer(x[:3])[0], alone)
        assert torch.equal(layer(x[1:3])[1], layer(x[2:3])[0])
        in_company = layer(x[:4])
        for count in (5, 7, 51, 96):
            together = layer(x[:count])
            assert torch.equal(together[0], in_company[0])
            assert torch.equal(together[3], in_company[3])
        assert torch.equal(layer(x[50:56])[0], layer(x)[50])
        assert torch.equal(layer(x[92:96])[3], layer(x)[95])
        torch.testing.assert_close(in_company[0], alone, rtol=1e-5, atol=1e-6)


def test_few_rows_linear_sends_larger_calls_to_onednn(monkeypatch: pytest.MonkeyPatch) -> None:
    numba, linear3, linear_blocked, scores, weighted_values = kernels._compiled()
    rows_seen: list[tuple[str, int]] = []

    def counting(name, kernel):
        def run(x, *args):
            rows_seen.append((name, x.shape[0]))
            return kernel(x, *args)

        return run

    compiled = (numba, counting("3", linear3), counting("blocked", linear_blocked), scores, weighted_values)
    monkeypatch.setattr(kernels, "_compiled", lambda: compiled)
    layer = _few_rows_linear(64, 8, True, seed=2)
    with torch.inference_mode():
        for rows in (1, 3, 4, kernels.MAX_KERNEL_ROWS, kernels.MAX_KERNEL_ROWS + 1):
            layer(torch.randn(rows, 64))
    # Padded to 3 or a multiple of 3; the last call goes to oneDNN.
    assert rows_seen == [("3", 3), ("3", 3), ("blocked", 6), ("blocked", kernels.MAX_KERNEL_ROWS)]


def test_few_rows_linear_shares_the_weight_and_keeps_the_state_dict() -> None:
    plain = nn.Linear(32, 16)
    layer = kernels.FewRowsLinear(onednn.SharedLinear(plain))
    assert layer.weight.data_ptr() == plain.weight.data_ptr()
    assert layer._weight.ctypes.data == plain.weight.data_ptr()  # the kernel reads it, no copy
    assert set(layer.state_dict()) == {"weight", "bias"}


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("beams", [1, 3])
def test_attention_matches_sdpa(beams: int, padded: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    _kernel_at_any_size(monkeypatch)  # even for these small K/V
    gen = torch.Generator().manual_seed(beams)
    n, heads, frames, d_k = 3, 4, 150, 16
    q = torch.randn(n, beams, heads, d_k, generator=gen).transpose(1, 2)  # a view, as the decoder passes it
    k = torch.randn(n, heads, frames, d_k, generator=gen)
    v = torch.randn(n, heads, frames, d_k, generator=gen)
    bias = None
    if padded:
        valid = torch.ones(n, frames, dtype=torch.bool)
        valid[1, 90:] = False
        valid[2, 11:] = False
        bias = torch.zeros(n, 1, 1, frames).masked_fill_(~valid[:, None, None, :], float("-inf"))
    got = kernels.attention(q, k, v, bias)
    want = sdpa_attention(q, k, v, bias)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    if padded:  # a padded frame's value must not leak in
        v_changed = v.clone()
        v_changed[2, :, 11:] = 1e6
        torch.testing.assert_close(kernels.attention(q, k, v_changed, bias), got)


@pytest.mark.parametrize("length", [1, 2, 37])
def test_attention_reads_a_history_buffer_only_up_to_its_length(length: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Self-attention passes prefix views of the cache's (rows, heads, capacity, d_k) buffers;
    the kernel reads them in place, and never the slots past the length (NaN here)."""
    _kernel_at_any_size(monkeypatch)
    gen = torch.Generator().manual_seed(length)
    rows, heads, capacity, d_k = 3, 4, 64, 16
    k_buf = torch.full((rows, heads, capacity, d_k), float("nan"))
    v_buf = torch.full((rows, heads, capacity, d_k), float("nan"))
    k_buf[:, :, :length] = torch.randn(rows, heads, length, d_k, generator=gen)
    v_buf[:, :, :length] = torch.randn(rows, heads, length, d_k, generator=gen)
    q = torch.randn(rows, 1, heads, d_k, generator=gen).transpose(1, 2)
    valid = torch.rand(rows, length, generator=gen) > 0.3
    valid[:, 0] = True
    bias = torch.zeros(rows, 1, 1, length).masked_fill_(~valid[:, None, None, :], float("-inf"))
    k, v = k_buf[:, :, :length], v_buf[:, :, :length]
    assert kernels._heads_as_rows(k).ctypes.data == k_buf.data_ptr()  # no copy
    got = kernels.attention(q, k, v, bias)
    torch.testing.assert_close(got, sdpa_attention(q, k.contiguous(), v.contiguous(), bias), rtol=1e-5, atol=1e-5)


def test_kernels_follow_the_torch_thread_count() -> None:
    import numba

    layer = _few_rows_linear(64, 8, True, seed=1)
    before = torch.get_num_threads()
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                layer(torch.randn(3, 64))
            assert numba.get_num_threads() == min(threads, numba.config.NUMBA_NUM_THREADS)
    finally:
        torch.set_num_threads(before)


def test_the_engine_uses_the_kernels_only_where_they_apply(random_model_dir: Path) -> None:
    default = FireRedModel(random_model_dir)
    assert default.decoder_kernels
    decoder = default.model.decoder
    assert decoder.attention is kernels.attention
    assert isinstance(decoder.layer_stack[0].mlp.w_1, kernels.FewRowsLinear)
    assert isinstance(decoder.tgt_word_prj, kernels.FewRowsLinear)
    assert not any(isinstance(m, kernels.FewRowsLinear) for m in default.model.encoder.modules())
    assert isinstance(decoder.fused_step, stepkernel.FusedStep)

    off = FireRedModel(random_model_dir, decoder_kernels=False)
    assert not off.decoder_kernels
    assert off.model.decoder.attention is sdpa_attention
    assert off.model.decoder.fused_step is None
    assert set(off.model.state_dict()) == set(default.model.state_dict())

    packed = FireRedModel(random_model_dir, encoder_backend="onednn", decoder_backend="onednn")
    assert packed.model.decoder.attention is kernels.attention  # attention only
    assert not any(isinstance(m, kernels.FewRowsLinear) for m in packed.model.modules())
    assert packed.model.decoder.fused_step is None

    for other in (
        FireRedModel(random_model_dir, precision="int8"),
        FireRedModel(random_model_dir, decoder_backend="mkl"),
    ):
        assert not other.decoder_kernels
        assert other.model.decoder.attention is sdpa_attention
        assert other.model.decoder.fused_step is None


def test_without_a_real_thread_pool_the_kernels_say_why_and_stay_off() -> None:
    """numba's fallback pool made a decoder step 1.4x slower than oneDNN: refuse it, loudly."""
    code = (
        "import logging; logging.basicConfig()\n"
        "from fireredasr_fast.engines.firered import kernels\n"
        "print(kernels.available()); print(kernels.unavailable_reason())\n"
    )
    done = _python(code, NUMBA_THREADING_LAYER="workqueue")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "False"
    assert "workqueue" in lines[1]
    assert "decoder kernels off" in done.stderr


def test_starting_numbas_pool_leaves_torch_at_its_thread_count() -> None:
    """numba's OpenMP pool shares torch's libgomp, and starting it sets the OpenMP thread count
    to the pool's size: torch must keep the count it was given (a pool of 2, torch at 1)."""
    code = (
        "import torch\n"
        "torch.set_num_threads(1)\n"
        "from fireredasr_fast.engines.firered import kernels\n"
        "print(kernels.unavailable_reason())\n"
        "import numba\n"
        "print(numba.config.NUMBA_NUM_THREADS, torch.get_num_threads())\n"
    )
    done = _python(code, NUMBA_NUM_THREADS="2")
    assert done.returncode == 0, done.stderr
    reason, counts = done.stdout.splitlines()
    if reason != "None":
        pytest.skip(f"no numba pool here: {reason}")
    assert counts == "2 1"


def test_attention_takes_the_kernel_only_where_it_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Below MIN_K_BYTES_* of K the kernel's fixed cost loses to torch's attention: 1 MiB with
    one query per K/V (self-attention), 128 KiB when beams share it (cross-attention)."""
    numba, linear3, linear_blocked, scores, weighted_values = kernels._compiled()
    calls: list[tuple] = []

    def counting_scores(*args):
        calls.append((args[0].shape[1], args[1].shape[1]))  # (queries, frames)
        return scores(*args)

    compiled = (numba, linear3, linear_blocked, counting_scores, weighted_values)
    monkeypatch.setattr(kernels, "_compiled", lambda: compiled)
    gen = torch.Generator().manual_seed(0)
    heads, d_k = 4, 64  # 1 KiB of K per frame
    for queries, frames in ((1, 1000), (1, 1100), (3, 100), (3, 140)):
        q = torch.randn(1, heads, queries, d_k, generator=gen)
        k, v = torch.randn(2, 1, heads, frames, d_k, generator=gen)
        got = kernels.attention(q, k, v, None)
        torch.testing.assert_close(got, sdpa_attention(q, k, v, None), rtol=1e-5, atol=1e-5)
    assert calls == [(1, 1100), (3, 140)]


def test_numba_is_imported_without_numpys_fortran_wrapper_generator():
    """numpy.f2py stays a lazy module through numba's import (scipy.linalg's array-API shim
    touches it), and loads for real when used (kernels._numpy_f2py_lazy). A fresh interpreter:
    this one may have imported it already."""
    code = (
        "import sys\n"
        "from fireredasr_fast.engines.firered import kernels\n"
        "kernels.prepare_compiler()\n"
        "assert 'numba.np.arraymath' in sys.modules and 'scipy.linalg' in sys.modules\n"
        "assert 'numpy.f2py.crackfortran' not in sys.modules\n"
        "import numpy\n"
        "assert callable(numpy.f2py.run_main) and 'numpy.f2py.crackfortran' in sys.modules\n"
    )
    done = _python(code, OMP_NUM_THREADS="1")
    assert done.returncode == 0, done.stderr


# ----------------------------------------------------------------------------- the fused step

TINY_MODEL = ROOT / "tests" / "fixtures" / "tiny_model"


def _fused_decoder():
    """The trained fixture's decoder with the fused step (stepkernel), as the engine sets it up."""
    model = FireRedModel(TINY_MODEL)
    decoder = model.model.decoder
    assert decoder.fused_step is not None
    return decoder


def _encoder_output(utterances: int, frames: int, d_model: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(utterances)
    enc = torch.randn(utterances, frames, d_model, generator=gen)
    valid = torch.ones(utterances, frames, dtype=torch.bool)
    valid[1, frames // 2 :] = False  # padding: the additive cross-attention mask
    return enc, valid


def _steps(decoder, cache, tokens: list[torch.Tensor]) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [decoder.step(step_tokens, cache).clone() for step_tokens in tokens]


def _token_steps(rows: int, steps: int, sos: int, pad: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(rows)
    tokens = [torch.full((rows,), sos)] + [torch.randint(4, 700, (rows,), generator=gen) for _ in range(steps - 1)]
    tokens[3][1] = pad  # a masked position in row 1's self-attention history
    return tokens


def test_the_fused_step_matches_the_torch_step() -> None:
    """Logits and the self-attention caches it writes, against Decoder.step's torch path
    (kernels.FewRowsLinear and kernels.attention), over steps past the cache's first
    capacity (a reallocation) with padding in both attentions."""
    decoder = _fused_decoder()
    enc, valid = _encoder_output(3, 40, decoder.d_model)
    tokens = _token_steps(9, 36, decoder.sos_id, decoder.pad_id)
    with torch.inference_mode():
        fused_cache, torch_cache = decoder.init_cache(enc, valid, 3), decoder.init_cache(enc, valid, 3)
    fused = _steps(decoder, fused_cache, tokens)
    decoder.fused_step = None
    reference = _steps(decoder, torch_cache, tokens)
    for got, want in zip(fused, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert torch.equal(fused_cache.self_mask, torch_cache.self_mask)
    for got, want in zip(fused_cache.self_k + fused_cache.self_v, torch_cache.self_k + torch_cache.self_v, strict=True):
        torch.testing.assert_close(got[:, :, :36], want[:, :, :36], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("beam", [2, 3])
def test_the_fused_step_gives_a_row_the_same_bits_alone_in_a_batch_and_on_two_threads(beam: int) -> None:
    """An utterance's logits are the same bits whether it is alone (DecoderCache.keep of its
    rows: the same K/V bits) or among four (at beam 2, 2 rows padded to 3 and 8 to 9), and
    with one numba thread or two: every output is summed by one thread in one order."""
    decoder = _fused_decoder()
    numba = kernels._compiled()[0]
    enc, valid = _encoder_output(4, 30, decoder.d_model)
    tokens = _token_steps(4 * beam, 8, decoder.sos_id, decoder.pad_id)
    mine = slice(beam, 2 * beam)  # utterance 1, the padded one

    def run(threads: int, alone: bool) -> list[torch.Tensor]:
        with torch.inference_mode():
            cache = decoder.init_cache(enc, valid, beam)
            if alone:
                cache.keep(torch.tensor([1]))
        torch.set_num_threads(threads)
        try:
            return _steps(decoder, cache, [t[mine] if alone else t for t in tokens])
        finally:
            torch.set_num_threads(1)

    together = run(1, alone=False)
    alone = run(1, alone=True)
    assert all(torch.equal(a, b[mine]) for a, b in zip(alone, together, strict=True))
    if numba.config.NUMBA_NUM_THREADS >= 2:
        assert all(torch.equal(a, b) for a, b in zip(run(2, alone=False), together, strict=True))


def test_the_fused_steps_exp_is_within_two_ulps_and_zero_at_minus_infinity() -> None:
    """The softmax's exp (stepkernel._exp, vectorisable arithmetic instead of libm's expf)
    over the scores it sees, x <= 0: masked ones (-inf) must weigh exactly 0."""
    import numba
    import numpy as np

    stepkernel._compiled()
    exp = stepkernel._exp_jit

    @numba.njit
    def apply(x, out):  # pragma: no cover - compiled
        for i in range(x.shape[0]):
            out[i] = exp(x[i])

    x = np.concatenate([-np.linspace(0, 87, 200_001, dtype=np.float32), np.float32([-np.inf, -100.0, -0.0])])
    got = np.empty_like(x)
    apply(x, got)
    want = np.exp(x.astype(np.float64))
    assert (np.abs(got[:-3] - want[:-3]) <= 2 * np.spacing(want[:-3].astype(np.float32))).all()
    assert list(got[-3:]) == [0.0, 0.0, 1.0]


def test_a_fused_step_that_cannot_compile_leaves_the_torch_step_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def failing() -> None:
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(stepkernel, "_compiled", failing)
    model = FireRedModel(TINY_MODEL)
    assert model.model.decoder.fused_step is None
    assert "fused decoder step off" in caplog.text and "no compiler here" in caplog.text
    assert model.transcribe([torch.randn(16000).numpy() * 0.1], beam_size=3)[0].token_ids is not None
