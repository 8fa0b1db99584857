"""One batch for every method at the engine level: PAD slots run nothing and change nothing, rows mix in
their own space, and a composite provider routes rows to their own weights."""

import pytest
import torch
from helpers import EOS, NAMES, PAD, tiny_base, with_experts
from test_engine import PROMPTS

from rlphf_cli.decoding.engine import (
    BASE,
    AdapterExperts,
    CompositeWeights,
    FixedWeights,
    Sampler,
    decode,
)
from rlphf_cli.decoding.engine import PAD as EMPTY


@pytest.fixture(scope="module")
def model():
    return with_experts(tiny_base())


def greedy(model, active, weights, mixing, prompts=PROMPTS, provider=None, stacked=True):
    return decode(
        AdapterExperts(model, stacked=stacked),
        provider or FixedWeights(torch.tensor(weights, dtype=torch.float)),
        prompts,
        active,
        eos_token_id=EOS,
        pad_token_id=PAD,
        max_new_tokens=10,
        mixing=mixing,
        sampler=Sampler(greedy=True),
    ).tokens


@pytest.mark.parametrize("stacked", [True, False])
def test_pad_slots_decode_as_base_padding_at_weight_zero(model, stacked):
    a, b, c = NAMES
    with_pad = [(a, b, EMPTY), (c, EMPTY, EMPTY), (BASE, a, b)]
    with_base = [tuple(BASE if x == EMPTY else x for x in row) for row in with_pad]
    w = [[0.4, 0.6, 0.0], [1.0, 0.0, 0.0], [1.0, 0.5, 0.5]]
    for mixing in ("prob", "log"):
        padded = greedy(model, with_pad, w, mixing, stacked=stacked)
        assert padded == greedy(model, with_base, w, mixing, stacked=stacked)
        alone = [greedy(model, [r], [wr], mixing, [p])[0] for r, wr, p in zip(with_pad, w, PROMPTS)]
        assert padded == alone


def test_rows_mix_in_their_own_space_and_composite_routes_their_weights(model):
    a, b, c = NAMES
    active = [(a, b, c), (a, b, EMPTY), (c, a, b)]
    w = [[0.2, 0.5, 0.3], [0.5, 0.5, 0.0], [0.3, 0.3, 0.4]]
    modes = ["log", "prob", "log"]
    parts = [
        (torch.tensor([0, 2]), FixedWeights(torch.tensor([w[0], w[2]]))),
        (torch.tensor([1]), FixedWeights(torch.tensor([w[1]]))),
    ]
    together = greedy(model, active, None, modes, provider=CompositeWeights(parts, 3))
    alone = [greedy(model, [r], [wr], m, [p])[0] for r, wr, m, p in zip(active, w, modes, PROMPTS)]
    assert together == alone
    assert together != greedy(model, active, w, "prob")  # the log rows do differ from prob mixing
