"""The Preference Control Model: gradients, REBEL, routing on a toy, saving, and the CLI's errors."""

import math
import subprocess
import sys

import pytest
import torch

from conftest import make_random_expert_run
from rlphf_cli.config import compose
from rlphf_cli.decoding.engine import BASE, Sampler
from rlphf_cli.errors import UserError
from rlphf_cli.pcm.model import PreferenceControlModel, build_pcm
from rlphf_cli.training.pcm import (
    Batch,
    mixture_logps,
    rebel_loss,
    rloo_loss,
    sample_batch,
    train_pcm,
    update,
)

VOCAB, EOS, PAD = 8, 1, 0


def toy_pcm(poles=("P1A", "P1B"), experts=("P1A", "P1B"), seed=0, dtype=torch.float32):
    cfg = compose(
        [
            "pcm.hidden_size=16",
            "pcm.intermediate_size=32",
            "pcm.num_hidden_layers=1",
            "pcm.num_attention_heads=2",
        ]
    )
    pcm = build_pcm(cfg.pcm, VOCAB, PAD, list(poles), list(experts), seed)
    torch.nn.init.normal_(pcm.head.weight, std=0.5)  # a non-trivial starting point
    return pcm.to(dtype)


class ToyExperts:
    """Expert i puts probability 0.9 on token 2 + i and spreads the rest; EOS after a few tokens."""

    names = ["P1A", "P1B"]

    def _logp(self, rows):
        p = torch.full((rows, 2, VOCAB), 0.1 / (VOCAB - 1))
        p[:, 0, 2] = 0.9
        p[:, 1, 3] = 0.9
        return p.log()

    def prefill(self, input_ids, attention_mask, rows):
        self.index = torch.tensor([[self.names.index(a) for a in row] for row in rows])
        return self.step(input_ids[:, -1], attention_mask)

    def step(self, tokens, attention_mask):
        logp = self._logp(tokens.shape[0])
        return logp.gather(1, self.index[:, :, None].expand(-1, -1, VOCAB))

    def close(self):
        pass


def sample_toy(pcm, pref, rows: int, gen, length: int = 6):
    """`rows` responses to one toy prompt from the PCM-weighted mixture of the two toy experts."""
    return sample_batch(
        pcm,
        ToyExperts(),
        [[4, 5]] * rows,
        ["P1A", "P1B"],
        pref,
        generator=gen,
        device="cpu",
        eos_token_id=EOS,
        pad_token_id=PAD,
        max_new_tokens=length,
        sampler=Sampler(),
    )


def test_rebel_loss_by_hand():
    logps = torch.tensor([-3.0, -5.0, -2.0, -2.5])
    old = torch.tensor([-3.5, -4.0, -2.0, -3.0])
    rewards = torch.tensor([0.9, 0.2, 0.4, 0.6])
    # pair 1: ((0.5 - (-1.0)) / 2 - 0.7)^2 = (0.75 - 0.7)^2 = 0.0025 ; pair 2: ((0 - 0.5)/2 - (-0.2))^2 = 0.0025
    assert rebel_loss(logps, old, rewards, group=2, eta=2.0).item() == pytest.approx(0.0025)
    # RLOO with two responses: advantages are +-(r1 - r2)
    assert rloo_loss(logps, rewards, group=2).item() == pytest.approx(
        -(0.7 * -3 + -0.7 * -5 + -0.2 * -2 + 0.2 * -2.5) / 4
    )


def test_mixture_loglik_gradient_matches_finite_differences():
    torch.manual_seed(0)
    pcm = toy_pcm(dtype=torch.float64)
    expert_logps = [
        torch.randn(3, 2, dtype=torch.float64).log_softmax(-1) - 1.0,
        torch.randn(2, 2, dtype=torch.float64) - 2.0,
    ]
    batch = Batch(
        ["P1A", "P1B"],
        [[4, 5], [6]],
        [[2, 3, 1], [3, 1]],
        expert_logps,
        torch.tensor([0.5, 0.5], dtype=torch.float64),
    )
    with torch.no_grad():  # by hand: a zero head gives weights 1/2 each, so sum_t log((p1_t + p2_t) / 2)
        saved = pcm.head.weight.clone()
        pcm.head.weight.zero_()
        by_hand = [
            sum(math.log((lp[t].exp().sum() / 2).item()) for t in range(len(lp))) for lp in expert_logps
        ]
        assert mixture_logps(pcm, batch).tolist() == pytest.approx(by_hand, rel=1e-12)
        pcm.head.weight.copy_(saved)
    loss = mixture_logps(pcm, batch).sum()
    loss.backward()
    param = pcm.head.weight
    analytic = param.grad.clone()
    eps = 1e-6
    numeric = torch.zeros_like(param)
    with torch.no_grad():
        for idx in [(0, 0), (1, 3), (0, 7), (1, 15)]:
            param[idx] += eps
            up = mixture_logps(pcm, batch).sum()
            param[idx] -= 2 * eps
            down = mixture_logps(pcm, batch).sum()
            param[idx] += eps
            numeric[idx] = (up - down) / (2 * eps)
            assert analytic[idx].item() == pytest.approx(numeric[idx].item(), rel=1e-5, abs=1e-8)


def test_rows_with_different_combinations_match_their_own_batches():
    """One batch whose rows mix different experts (per-row lists, one padded with BASE) scores each row as
    its own batch would."""
    torch.manual_seed(0)
    experts = ["P1A", "P1B", "P2A", "P2B"]
    pcm = toy_pcm(poles=experts, experts=experts, dtype=torch.float64)
    logps = [torch.randn(n, 2, dtype=torch.float64).log_softmax(-1) for n in (3, 2, 2)]
    combos = [("P1A", "P2B"), ("P2A", "P1B"), ("P2B",)]
    prefs = torch.stack([pcm.preference_vector(c, [1 / len(c)] * len(c)) for c in combos]).double()
    rows = [list(c) + [BASE] * (2 - len(c)) for c in combos]
    mixed = Batch(rows, [[4, 5], [6], [7]], [[2, 3, 1], [3, 1], [2, 1]], logps, prefs)
    together = mixture_logps(pcm, mixed)
    for i, c in enumerate(combos):
        own = logps[i][:, : len(c)]
        alone = Batch(list(c), [mixed.prompt_ids[i]], [mixed.response_ids[i]], [own], prefs[i])
        assert together[i].item() == pytest.approx(mixture_logps(pcm, alone).item(), rel=1e-10)
    assert [b.response_ids for b in mixed.split(1)] == [[[2, 3, 1]], [[3, 1]], [[2, 1]]]
    assert mixed.split(2)[1].active == [("P2B", BASE)]


def test_one_hot_pcm_weights_make_the_mixture_that_expert():
    pcm = toy_pcm()
    with torch.no_grad():
        pcm.head.weight.zero_()
        pcm.head.bias.copy_(torch.tensor([30.0, -30.0]))
    b = Batch(
        ["P1A", "P1B"],
        [[4]],
        [[2, 2, 1]],
        [torch.tensor([[-0.1, -3.0], [-0.1, -3.0], [-2.0, -1.0]])],
        torch.tensor([1.0, 0.0]),
    )
    assert mixture_logps(pcm, b).item() == pytest.approx(-0.1 - 0.1 - 2.0, abs=1e-5)


@pytest.mark.slow
def test_pcm_learns_to_route_between_two_toy_experts():
    torch.manual_seed(0)
    pcm = toy_pcm()
    optimizer = torch.optim.AdamW(pcm.parameters(), lr=1e-2)
    prefs = {"A": torch.tensor([1.0, 0.0]), "B": torch.tensor([0.0, 1.0])}
    wanted = {"A": 2, "B": 3}  # preference A is served by expert 0 (token 2), B by expert 1 (token 3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(25):
        batches = []
        for name, pref in prefs.items():
            batch = sample_toy(pcm, pref, 16, gen)
            batch.rewards = torch.tensor(
                [sum(t == wanted[name] for t in r) / len(r) for r in batch.response_ids]
            )
            batches.append(batch)
        update(
            pcm,
            optimizer,
            batches,
            "rebel",
            epochs=2,
            group=2,
            eta=1.0,
            backward=lambda loss: loss.backward(),
        )
    for name, pref in prefs.items():
        batch = sample_toy(pcm, pref, 8, gen)
        right = 0 if name == "A" else 1
        mean_weight = torch.cat(batch.weights)[:, right].mean().item()
        assert mean_weight > 0.8, (name, mean_weight)


def test_update_clips_the_gradient_norm():
    """With `max_grad_norm` an update moves the PCM by at most lr * max_grad_norm (plain SGD), and reports
    the norm before clipping; without it the same update moves it by the full norm."""

    def one_update(clip):
        torch.manual_seed(0)
        pcm = toy_pcm()
        batch = sample_toy(pcm, torch.tensor([1.0, 0.0]), 8, torch.Generator().manual_seed(0))
        batch.rewards = torch.tensor([1.0, 0.0] * 4)
        before = torch.cat([p.detach().flatten().clone() for p in pcm.parameters()])
        sgd = torch.optim.SGD(pcm.parameters(), lr=1.0)
        norm = update(pcm, sgd, [batch], "rebel", 1, 2, 1.0, lambda loss: loss.backward(), max_grad_norm=clip)
        after = torch.cat([p.detach().flatten() for p in pcm.parameters()])
        return norm, (after - before).norm().item()

    norm, moved = one_update(0.0)
    assert moved == pytest.approx(norm, rel=1e-4) and norm > 0
    clipped_norm, clipped_moved = one_update(norm / 10)
    assert clipped_norm == pytest.approx(norm, rel=1e-4)  # the norm before clipping
    assert clipped_moved == pytest.approx(norm / 10, rel=1e-3)


@pytest.mark.slow
def test_pcm_learns_position_dependent_routing():
    """Expert P1A (token 2) is right for the first three response tokens, P1B (token 3) for the last three.

    A PCM that gives the same weights everywhere earns at most 0.5 (or 0.9 * 0.5 + 0.1 / 7 * ...);
    only one that switches experts inside the response passes.
    """
    torch.manual_seed(0)
    cfg = compose(
        [
            "pcm.hidden_size=32",
            "pcm.intermediate_size=64",
            "pcm.num_hidden_layers=2",
            "pcm.num_attention_heads=2",
        ]
    )
    pcm = build_pcm(cfg.pcm, VOCAB, PAD, ["P1A", "P1B"], ["P1A", "P1B"], 0)
    optimizer = torch.optim.AdamW(pcm.parameters(), lr=3e-3)
    pref, switch, length = torch.tensor([0.5, 0.5]), 3, 6
    gen = torch.Generator().manual_seed(0)

    for _ in range(70):
        batch = sample_toy(pcm, pref, 32, gen, length)
        batch.rewards = torch.tensor(
            [
                sum(t == (2 if i < switch else 3) for i, t in enumerate(r)) / length
                for r in batch.response_ids
            ],
            dtype=torch.float32,
        )
        update(
            pcm,
            optimizer,
            [batch],
            "rebel",
            epochs=2,
            group=2,
            eta=1.0,
            backward=lambda loss: loss.backward(),
        )
    weights = torch.stack(
        [w for w in sample_toy(pcm, pref, 64, gen, length).weights if len(w) == length]
    )  # [N, T, 2]
    on_first = weights[:, :switch, 0].mean(0)  # P1A's weight at each of the first three positions
    on_rest = weights[:, switch:, 1].mean(0)  # P1B's weight at each of the last three
    assert (on_first > 0.8).all() and (on_rest > 0.8).all(), (on_first, on_rest)


@pytest.mark.slow
def test_pcm_trained_on_weighted_preferences_follows_the_weights():
    """Rows carry preference weights w on P1A (token 2) and 1 - w on P1B (token 3), w anywhere in [0, 1],
    and earn w * (share of 2) + (1 - w) * (share of 3). Moving weight from P1B to P1A must move the
    PCM's output towards P1A's token monotonically; a PCM that ignores the weights stays flat."""
    torch.manual_seed(0)
    pcm = toy_pcm()
    optimizer = torch.optim.AdamW(pcm.parameters(), lr=3e-3)  # at 1e-2 it collapsed onto one expert
    gen = torch.Generator().manual_seed(0)
    rng = torch.Generator().manual_seed(1)

    def share(batch, token):
        return torch.tensor([sum(t == token for t in r) / len(r) for r in batch.response_ids])

    for _ in range(30):
        w = torch.rand(16, generator=rng).repeat_interleave(2)  # one weight per pair of responses
        batch = sample_toy(pcm, torch.stack([w, 1 - w], dim=1), 32, gen)
        batch.rewards = w * share(batch, 2) + (1 - w) * share(batch, 3)
        update(pcm, optimizer, [batch], "rebel", 2, 2, 1.0, lambda loss: loss.backward())
    shares = [
        share(sample_toy(pcm, torch.tensor([w, 1 - w]), 64, gen), 2).mean().item()
        for w in (0.0, 0.25, 0.5, 0.75, 1.0)
    ]
    assert all(b >= a - 0.05 for a, b in zip(shares, shares[1:])), shares  # monotone, within noise
    assert shares[0] < 0.2 and shares[-1] > 0.7, shares


def test_save_load_roundtrip_and_expert_set_check(tmp_path):
    pcm = toy_pcm(poles=["P1A", "P1B", "P2A"], experts=["P1A", "P1B", "P2A"])
    pcm.save(tmp_path / "pcm")
    again = PreferenceControlModel.load(tmp_path / "pcm", experts=["P1A", "P1B", "P2A"])
    ids, mask = torch.tensor([[3, 4, 5]]), torch.ones(1, 3, dtype=torch.long)
    pref = torch.tensor([[0.5, 0.0, 0.5]])
    torch.testing.assert_close(pcm(ids, mask, pref)[0], again(ids, mask, pref)[0])
    with pytest.raises(
        UserError, match=r"trained for experts \[P1A, P1B, P2A\] \(3\), not \[P1A, P1B\] \(2\)"
    ):
        PreferenceControlModel.load(tmp_path / "pcm", experts=["P1A", "P1B"])
    with pytest.raises(UserError, match="knows no pole 'P3A'"):
        pcm.preference_vector(("P3A",), (1.0,))


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("pcm_run")
    make_random_expert_run(path)
    return path


def small_pcm_cfg(run_dir, *more):
    return compose(
        [
            f"run_dir={run_dir}",
            "pcm.steps=2",
            "pcm.prompts_per_step=1",
            "pcm.max_new_tokens=6",
            "pcm.eval_prompts=2",
            "pcm.save_steps=1",
            "model.hidden_size=32",
            "model.intermediate_size=64",
            "model.num_hidden_layers=2",
            *more,
        ]
    )


@pytest.mark.slow
def test_train_pcm_saves_a_loadable_model_with_metrics(random_run):
    path = train_pcm(small_pcm_cfg(random_run))
    from rlphf_cli.runs import RunDir

    manifest = RunDir(random_run).artifact("pcm").manifest()
    assert manifest["experts"] == ["P1A", "P1B", "P2A", "P2B", "P3A", "P3B"]
    assert len(manifest["history"]) == 2 and "pcm_minus_uniform" in manifest["metrics"]
    assert {"reward", "weight_entropy", "reward/P1A"} <= set(manifest["history"][0])
    PreferenceControlModel.load(path, experts=manifest["experts"])
    # generate with the PCM
    from rlphf_cli.decoding.generate import ensure_generations

    cfg = compose(
        [
            f"run_dir={random_run}",
            "benchmark.max_eval_prompts=2",
            "generate.max_new_tokens=5",
            "generate.preference=P1A,P2B,P3A",
            "model.hidden_size=32",
            "model.intermediate_size=64",
            "model.num_hidden_layers=2",
        ]
    )
    lines = ensure_generations(cfg, "pcm").read_text().splitlines()
    assert len(lines) == 2


@pytest.mark.slow
def test_pcm_resumes_from_its_checkpoint(tmp_path):
    make_random_expert_run(tmp_path)
    cfg = small_pcm_cfg(tmp_path, "pcm.steps=3", "pcm.eval_prompts=0")
    from rlphf_cli.training import pcm as pcm_module

    calls = []
    real = pcm_module.PCMTrainer._checkpoint

    def crash_after_first(self, work, model, optimizer, step):
        real(self, work, model, optimizer, step)
        calls.append(step)
        if step == 1:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pcm_module.PCMTrainer, "_checkpoint", crash_after_first)
        with pytest.raises(KeyboardInterrupt):
            train_pcm(cfg)
    assert (tmp_path / "pcm.partial" / "checkpoint.pt").exists() and not (tmp_path / "pcm").exists()
    train_pcm(cfg)
    from rlphf_cli.runs import RunDir

    history = RunDir(tmp_path).artifact("pcm").manifest()["history"]
    assert [h["step"] for h in history] == [2, 3]  # steps 2 and 3 only: step 1 was not redone


@pytest.mark.slow
def test_cli_errors(random_run, tmp_path):
    def rlphf(*args):
        return subprocess.run(
            [sys.executable, "-m", "rlphf_cli", *args], capture_output=True, text=True, timeout=300
        )

    train_pcm(small_pcm_cfg(random_run))  # skipped when already trained
    out = rlphf("train-pcm", f"run_dir={tmp_path}/none")
    assert out.returncode == 2 and "no base model" in out.stderr
    out = rlphf("train-pcm", f"run_dir={random_run}", "pcm.algo=ppo")
    assert out.returncode == 2 and "unknown pcm.algo 'ppo'" in out.stderr
    out = rlphf(
        "generate",
        f"run_dir={random_run}",
        "method=pcm",
        "preference=P1A,P2B",
        "generate.max_new_tokens=5",
        "benchmark.poles=[P1A,P1B,P2A,P2B]",
    )
    assert out.returncode == 2 and "trained for experts" in out.stderr


def test_an_untrained_pcm_is_the_preferences_weighted_mixture(tmp_path):
    """The weight prior: with a zero head the PCM's weights are the preference's own weights (renormalised
    over the row's experts), at every position, and a saved PCM keeps its prior."""
    pcm = toy_pcm(poles=["P1A", "P1B", "P2A"], experts=["P1A", "P1B", "P2A"])
    with torch.no_grad():
        pcm.head.weight.zero_()
    ids, mask = torch.tensor([[3, 4, 5], [3, 4, 5]]), torch.ones(2, 3, dtype=torch.long)
    pref = torch.tensor([[0.7, 0.0, 0.3], [0.2, 0.0, 0.8]])
    logits, _ = pcm(ids, mask, pref)
    w = pcm.log_weights(logits, [["P1A", "P2A"], ["P2A", "P1A"]]).exp()
    torch.testing.assert_close(w, torch.tensor([[[0.7, 0.3]] * 3, [[0.8, 0.2]] * 3]))
    pcm.save(tmp_path / "pcm")
    again = PreferenceControlModel.load(tmp_path / "pcm")
    assert again.weight_prior
    torch.testing.assert_close(again(ids, mask, pref)[0], logits)
