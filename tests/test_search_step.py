"""The compiled half of a CPU search step (search._Beams._select_compiled) against the torch
ops it replaces (_select): the same parents, tokens, scores, histories and confidences on
random states with ended rows, at several steps, with and without confidences."""

from __future__ import annotations

import copy

import pytest
import torch

from fireredasr_fast.engines.firered import search


def _random_beams(generator: torch.Generator, n: int, beam: int, step: int) -> search._Beams:
    rows, capacity, eos = n * beam, step + 4, 5
    beams = search._Beams(
        beam=beam,
        eos=eos,
        scores=-10 * torch.rand(rows, 1, generator=generator),
        finished=torch.rand(rows, 1, generator=generator) < 0.3,
        last=torch.randint(0, 50, (rows,), generator=generator),
        ys=torch.randint(0, 50, (rows, capacity), generator=generator),
        confidences=torch.rand(rows, capacity, generator=generator),
        active_host=list(range(n)),
        limits=[capacity] * n,
        dead_row=torch.tensor([0.0] + [search._DEAD_SCORE] * (beam - 1)).view(1, beam),
    )
    return beams


@pytest.mark.parametrize("confidence", [True, False])
@pytest.mark.parametrize("beam", [1, 3, 5])
def test_compiled_selection_matches_torch(beam: int, confidence: bool) -> None:
    kernels = search._step_kernels()
    if kernels is None:
        pytest.skip("numba is not available")
    generator = torch.Generator().manual_seed(beam)
    checked_moves = 0
    for trial in range(40):
        n, step = 1 + trial % 7, trial % 9
        beams = _random_beams(generator, n, beam, step)
        t_scores = torch.log_softmax(3 * torch.randn(n * beam, 40, generator=generator), dim=-1)
        top_s, top_y = torch.topk(t_scores, k=beam, dim=1)
        if trial % 4 == 0:  # equal candidates: both sides must break the tie the same way
            top_s[:, 1:] = top_s[:, :1]
        twin = copy.deepcopy(beams)
        want = beams._select(top_s, top_y, None, step, confidence)
        got = twin._select_compiled(kernels, top_s.clone(), top_y.clone(), step, confidence)
        for a, b in zip(want, got, strict=True):
            assert torch.equal(a, b)
        assert torch.equal(beams.scores, twin.scores)
        assert torch.equal(beams.ys, twin.ys)
        assert torch.equal(beams.confidences, twin.confidences)
        checked_moves += int((want[0] != torch.arange(n * beam)).sum())
    assert beam == 1 or checked_moves > 0  # rows did take other rows' histories
