"""Invariants of the mixture decoding engine, on tiny random models with three random LoRA experts."""

import pytest
import torch
from helpers import EOS, NAMES, PAD, VOCAB, tiny_base, with_experts

from rlphf_cli.decoding.engine import (
    BASE,
    AdapterExperts,
    FixedWeights,
    Sampler,
    SeparateExperts,
    decode,
    mix,
)

PROMPTS = [[5, 9, 11, 3], [7, 8], [12, 13, 14, 15, 16, 17]]


@pytest.fixture(scope="module")
def peft_model():
    return with_experts(tiny_base())


def run(experts, weights, active, prompts=PROMPTS, **kw):
    w = torch.tensor(weights, dtype=torch.float).expand(len(prompts), -1)
    kw.setdefault("sampler", Sampler(greedy=True))
    return decode(
        experts, FixedWeights(w), prompts, active, eos_token_id=EOS, pad_token_id=PAD, max_new_tokens=12, **kw
    )


def own_greedy(model, adapter, prompt, n=12):
    """Reference: the adapter alone, one unpadded row, through generate()."""
    model.set_adapter(adapter)
    ids = torch.tensor([prompt])
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=n,
        do_sample=False,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("stacked", [True, False])
@pytest.mark.parametrize("index", range(3))
def test_one_hot_weights_reproduce_the_expert_adapter_path(peft_model, index, stacked):
    weights = [1.0 if i == index else 0.0 for i in range(3)]
    got = run(AdapterExperts(peft_model, stacked=stacked), weights, NAMES).tokens
    for prompt, tokens in zip(PROMPTS, got):
        expected = own_greedy(peft_model, NAMES[index], prompt)
        assert tokens == expected[: len(tokens)] and (tokens[-1] == EOS or len(tokens) == 12)


def test_one_hot_weights_reproduce_the_expert_separate_models():
    models = {name: tiny_base(seed=i) for i, name in enumerate(NAMES)}
    got = run(SeparateExperts(models), [0.0, 1.0, 0.0], NAMES).tokens
    for prompt, tokens in zip(PROMPTS, got):
        ids = torch.tensor([prompt])
        ref = (
            models["P2B"]
            .generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=12,
                do_sample=False,
                eos_token_id=EOS,
                pad_token_id=PAD,
            )[0, len(prompt) :]
            .tolist()
        )
        assert tokens == ref[: len(tokens)]


@pytest.mark.parametrize("mode", ["prob", "log"])
def test_cached_decoding_equals_uncached(peft_model, mode):
    cached = run(AdapterExperts(peft_model), [0.5, 0.3, 0.2], NAMES, mixing=mode, record=True)
    uncached = run(
        AdapterExperts(peft_model, use_cache=False), [0.5, 0.3, 0.2], NAMES, mixing=mode, record=True
    )
    assert cached.tokens == uncached.tokens
    for a, b in zip(cached.expert_logps, uncached.expert_logps):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_stacked_lora_matches_peft_per_row_adapters(peft_model):
    """The fast path (one batched matmul per layer) against peft's per-row adapter names."""
    fast = run(AdapterExperts(peft_model), [0.2, 0.5, 0.3], [NAMES[2], BASE, NAMES[0]], record=True)
    ref = run(
        AdapterExperts(peft_model, stacked=False), [0.2, 0.5, 0.3], [NAMES[2], BASE, NAMES[0]], record=True
    )
    assert fast.tokens == ref.tokens
    for a, b in zip(fast.expert_logps, ref.expert_logps):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_probability_mixture_of_identical_experts_equals_the_expert(peft_model):
    logp = torch.randn(2, 1, VOCAB).log_softmax(-1).expand(2, 3, VOCAB)
    for mode in ("prob", "log"):
        torch.testing.assert_close(mix(logp, torch.tensor([[0.2, 0.3, 0.5]] * 2), mode), logp[:, 0])
    same = run(AdapterExperts(peft_model), [0.3, 0.3, 0.4], ["P2B", "P2B", "P2B"], record=True)
    alone = run(AdapterExperts(peft_model), [1.0], ["P2B"])
    assert same.tokens == alone.tokens


def test_mixing_formulas():
    logp = torch.randn(1, 2, 5).log_softmax(-1)
    w = torch.tensor([[0.25, 0.75]])
    expected_prob = (0.25 * logp[0, 0].exp() + 0.75 * logp[0, 1].exp()).log()
    torch.testing.assert_close(mix(logp, w, "prob")[0], expected_prob)
    expected_log = (0.25 * logp[0, 0] + 0.75 * logp[0, 1]).log_softmax(-1)
    torch.testing.assert_close(mix(logp, w, "log")[0], expected_log)


def test_base_rows_and_unknown_adapter(peft_model):
    base_rows = run(AdapterExperts(peft_model), [1.0], [BASE]).tokens
    with peft_model.disable_adapter():
        ref = [own_greedy_base(peft_model, p) for p in PROMPTS]
    assert [t == r[: len(t)] for t, r in zip(base_rows, ref)] == [True] * 3
    with pytest.raises(KeyError, match="nope"):
        run(AdapterExperts(peft_model), [1.0], ["nope"])


def own_greedy_base(model, prompt):
    ids = torch.tensor([prompt])
    return model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=12,
        do_sample=False,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )[0, len(prompt) :].tolist()


def test_seeded_sampling_is_reproducible_and_filters_apply(peft_model):
    def sample(seed, **s):
        return run(
            AdapterExperts(peft_model),
            [0.3, 0.3, 0.4],
            NAMES,
            sampler=Sampler(**s),
            generator=torch.Generator().manual_seed(seed),
        ).tokens

    assert sample(3, temperature=1.0) == sample(3, temperature=1.0)
    assert (
        sample(3, top_k=1) == run(AdapterExperts(peft_model), [0.3, 0.3, 0.4], NAMES).tokens
    )  # top-1 = greedy
    logp = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    picks = {Sampler(top_p=0.7)(logp, torch.Generator().manual_seed(i)).item() for i in range(200)}
    assert picks == {0, 1}


def test_a_tiny_top_p_keeps_the_most_likely_token():
    logp = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.6, 0.1]]).log()
    for top_p in (1e-9, 0.0):
        picks = Sampler(top_p=top_p)(logp, torch.Generator().manual_seed(0))
        assert picks.tolist() == [0, 2]


@pytest.mark.parametrize("path", ["stacked", "peft", "separate"])
@pytest.mark.parametrize("mixing", ["prob", "log"])
def test_rows_with_their_own_experts_and_weights_decode_as_alone(peft_model, path, mixing):
    """A batch whose rows mix different experts with different weights (one padded with BASE at weight 0)
    gives every row the greedy tokens it gets decoded on its own."""
    rows = [["P1A", "P2B"], ["P3A", "P1A"], ["P2B", BASE], ["P2B", "P3A"]]
    weights = [[0.7, 0.3], [0.5, 0.5], [1.0, 0.0], [0.2, 0.8]]
    prompts = PROMPTS + [[20, 21, 22]]
    if path == "separate":
        experts = SeparateExperts({name: tiny_base(seed=i) for i, name in enumerate([*NAMES, BASE])})
    else:
        experts = AdapterExperts(peft_model, stacked=path == "stacked")
    w = torch.tensor(weights)
    kw = dict(
        eos_token_id=EOS, pad_token_id=PAD, max_new_tokens=12, mixing=mixing, sampler=Sampler(greedy=True)
    )
    together = decode(experts, FixedWeights(w), prompts, rows, **kw).tokens
    alone = [
        decode(experts, FixedWeights(w[i : i + 1]), [prompts[i]], rows[i], **kw).tokens[0]
        for i in range(len(rows))
    ]
    assert together == alone
    assert len({tuple(t) for t in together}) > 2  # the rows really decode differently


class _NoSelect:
    """The same experts without `select`: decode keeps finished rows in the batch (the reference)."""

    def __init__(self, experts):
        self.experts = experts

    def prefill(self, *a):
        return self.experts.prefill(*a)

    def step(self, *a):
        return self.experts.step(*a)

    def close(self):
        self.experts.close()


@pytest.mark.parametrize("path", ["stacked", "peft", "separate"])
def test_finished_rows_leave_the_batch_and_change_nothing(peft_model, path):
    """Rows that end early are dropped from the batch (their caches too); every row's tokens, weights and
    expert log-probs equal those of a decode that keeps every row to the end, and of the row alone."""
    rows = [["P1A", "P2B"], ["P3A", "P1A"], ["P2B", BASE], ["P2B", "P3A"], ["P1A", "P3A"]]
    w = torch.tensor([[0.7, 0.3], [0.5, 0.5], [1.0, 0.0], [0.2, 0.8], [0.4, 0.6]])
    prompts = PROMPTS + [[20, 21, 22], [30, 31, 32, 33, 34, 35, 36, 37]]
    if path == "separate":
        experts = SeparateExperts({name: tiny_base(seed=i) for i, name in enumerate([*NAMES, BASE])})
    else:
        experts = AdapterExperts(peft_model, stacked=path == "stacked")
    kw = dict(pad_token_id=PAD, max_new_tokens=16, sampler=Sampler(greedy=True), record=True)
    # an end token that some rows write early and others late or never
    endless = decode(experts, FixedWeights(w), prompts, rows, eos_token_id=-1, **kw).tokens
    eos = endless[0][3]
    sizes = []
    step = experts.step
    experts.step = lambda tokens, mask: sizes.append(len(tokens)) or step(tokens, mask)
    try:
        dropped = decode(experts, FixedWeights(w), prompts, rows, eos_token_id=eos, **kw)
    finally:
        del experts.step
    kept = decode(_NoSelect(experts), FixedWeights(w), prompts, rows, eos_token_id=eos, **kw)
    lengths = [len(t) for t in dropped.tokens]
    assert len(set(lengths)) > 1 and min(lengths) < 16  # rows really end at different steps
    assert sizes[-1] < len(prompts)  # the finished rows left the batch
    assert dropped.tokens == kept.tokens
    for a, b in zip(dropped.weights + dropped.expert_logps, kept.weights + kept.expert_logps, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    alone = [
        decode(experts, FixedWeights(w[i : i + 1]), [prompts[i]], rows[i], eos_token_id=eos, **kw).tokens[0]
        for i in range(len(rows))
    ]
    assert dropped.tokens == alone


def test_finished_rows_leave_the_pcm_provider_too(peft_model):
    """The PCM's cache, preferences and expert lists follow the rows that stay: the same tokens and weights
    as a decode that keeps every row."""
    from rlphf_cli.config import compose
    from rlphf_cli.pcm.model import build_pcm
    from rlphf_cli.pcm.provider import PCMWeights

    cfg = compose(["pcm.hidden_size=16", "pcm.intermediate_size=32", "pcm.num_hidden_layers=1"])
    pcm = build_pcm(cfg.pcm, VOCAB, PAD, NAMES, NAMES, 0).eval()
    torch.nn.init.normal_(pcm.head.weight, std=0.5)
    rows = [["P1A", "P2B"], ["P3A", "P1A"], ["P2B", BASE], ["P2B", "P3A"], ["P1A", "P3A"]]
    real = [[a for a in r if a != BASE] for r in rows]
    prefs = torch.stack([pcm.preference_vector(r, [0.6, 0.4] if len(r) == 2 else [1.0]) for r in real])
    prompts = PROMPTS + [[20, 21, 22], [30, 31, 32, 33, 34, 35, 36, 37]]
    experts = AdapterExperts(peft_model)
    kw = dict(pad_token_id=PAD, max_new_tokens=16, sampler=Sampler(greedy=True), record=True)
    eos = decode(experts, PCMWeights(pcm, prefs, rows), prompts, rows, eos_token_id=-1, **kw).tokens[0][3]
    dropped = decode(experts, PCMWeights(pcm, prefs, rows), prompts, rows, eos_token_id=eos, **kw)
    kept = decode(_NoSelect(experts), PCMWeights(pcm, prefs, rows), prompts, rows, eos_token_id=eos, **kw)
    assert len({len(t) for t in dropped.tokens}) > 1
    assert dropped.tokens == kept.tokens
    for a, b in zip(dropped.weights, kept.weights, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
