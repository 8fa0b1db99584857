"""PARM: the preference-aware bilinear LoRA, its training loss, `train-expert algo=parm`, `generate method=parm`."""

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from conftest import add_random_parm, make_random_expert_run, make_random_parm
from rlphf_cli.config import compose
from rlphf_cli.decoding.engine import BASE, AdapterExperts, FixedWeights, Sampler, decode
from rlphf_cli.pblora import PBLoRA, add_parm_adapters, parm_blend
from rlphf_cli.runs import RunDir

TINY = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=2"]
POLES = ["P1A", "P1B", "P2A", "P2B", "P3A", "P3B"]
TARGETS = ["q_proj", "v_proj", "down_proj"]


def _tiny_base(seed=0):
    from rlphf_cli.benchmarks import get_benchmark
    from rlphf_cli.modeling import build_tiny_model, build_tokenizer

    cfg = compose(TINY)
    tokenizer = build_tokenizer(get_benchmark(cfg.benchmark).vocabulary_text())
    return build_tiny_model(cfg.model, tokenizer, seed).eval(), tokenizer


def _random_parm(folder, seed=0):
    return make_random_parm(folder, seed, TARGETS)


def _direct_logps(folder, ids: list[int], weights: dict) -> torch.Tensor:
    """Log-probs [T, V] of the PARM module itself at `weights` over a token sequence."""
    model, _ = _tiny_base()
    parm = PBLoRA.load(model, folder)
    parm.set_preference(torch.tensor([weights.get(p, 0.0) for p in POLES]))
    with torch.no_grad():
        return parm(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)


@pytest.fixture(scope="module")
def parm_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parm")
    _random_parm(folder)
    return folder


@pytest.fixture(scope="module")
def parm_experts(parm_dir):
    model, tokenizer = _tiny_base()
    model, config = add_parm_adapters(model, parm_dir)
    return AdapterExperts(model), tokenizer, config


PREFS = [
    {"P1A": 1 / 3, "P2B": 1 / 3, "P3A": 1 / 3},
    {"P1B": 0.7, "P2A": 0.2, "P3B": 0.1},
    {"P2A": 1.0},
    {"P1A": 0.25, "P1B": 0.25, "P2A": 0.5},
]


def _prompts(tokenizer):
    texts = ["tell me about rain", "why is the sky blue ?", "explain volcanoes to me", "what is a cat"]
    return [tokenizer(t).input_ids for t in texts]


@pytest.mark.slow
def test_the_conditioned_arm_in_the_engine_gives_the_modules_own_log_probs(parm_dir, parm_experts):
    """The PARM at w decoded as one blended row = PBLoRA evaluated directly at w, token by token."""
    experts, tokenizer, config = parm_experts
    prompts = _prompts(tokenizer)
    for weights, ids in zip(PREFS, prompts, strict=True):
        out = decode(
            experts,
            FixedWeights(torch.tensor([[0.0, 1.0]])),  # log mixing, all weight on the PARM row
            [ids],
            [BASE, parm_blend(config["poles"], weights)],
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            max_new_tokens=8,
            mixing="log",
            sampler=Sampler(greedy=True),
            record=True,
        )
        tokens = out.tokens[0]
        direct = _direct_logps(parm_dir, ids + tokens, weights)
        want = torch.stack([direct[len(ids) - 1 + t, tok] for t, tok in enumerate(tokens)])
        got = out.expert_logps[0][:, 1]
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        # greedy on the PARM row is the module's own greedy choice
        assert tokens == [int(direct[len(ids) - 1 + t].argmax()) for t in range(len(tokens))]
    # and the weights matter: another preference gives other log-probs
    a = _direct_logps(parm_dir, prompts[0], PREFS[0])
    b = _direct_logps(parm_dir, prompts[0], PREFS[1])
    assert (a - b).abs().max() > 1e-2


def test_parm_rows_with_their_own_weights_in_one_batch_decode_as_alone(parm_experts):
    """log p_base + beta log p_PARM(.|w): a mixed batch of four preferences = each row decoded alone."""
    experts, tokenizer, config = parm_experts
    prompts = _prompts(tokenizer)
    active = [[BASE, parm_blend(config["poles"], w)] for w in PREFS]
    betas = [3.0, 1.0, 2.0, 0.5]
    weights = torch.tensor([[1.0, b] for b in betas])
    common = dict(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=10,
        mixing="log",
        sampler=Sampler(greedy=True),
        record=True,
    )
    mixed = decode(experts, FixedWeights(weights), prompts, active, **common)
    for i in range(len(PREFS)):
        alone = decode(experts, FixedWeights(weights[i : i + 1]), [prompts[i]], [active[i]], **common)
        assert mixed.tokens[i] == alone.tokens[0]
        torch.testing.assert_close(mixed.expert_logps[i], alone.expert_logps[0], atol=1e-4, rtol=1e-4)
    assert len({tuple(t) for t in mixed.tokens}) > 1


def test_pblora_starts_at_zero_and_is_linear_in_the_weights():
    """PARM's init (B = 0) leaves the base unchanged; the update at (a + b) / 2 is the mean of the updates."""
    model, _ = _tiny_base()
    ids = torch.tensor([[5, 9, 11, 4]])
    with torch.no_grad():
        base = model(input_ids=ids).logits
    parm = PBLoRA(model, POLES, r1=2, r2=2, lora_alpha=4.0, target_modules=["q_proj"])
    parm.set_preference(torch.tensor([0.5, 0, 0.5, 0, 0, 0]))
    with torch.no_grad():
        torch.testing.assert_close(parm(input_ids=ids).logits, base)
    layer = next(iter(parm.layers.values()))
    torch.nn.init.normal_(layer.B)
    x = torch.randn(1, 3, layer.A.shape[1])
    a, b = torch.tensor([[1.0, 0, 0, 0, 0, 0]]), torch.tensor([[0, 0, 0.3, 0.7, 0, 0]])
    with torch.no_grad():
        torch.testing.assert_close(
            layer.delta(x, (a + b) / 2), (layer.delta(x, a) + layer.delta(x, b)) / 2, atol=1e-5, rtol=1e-5
        )
        # the slots: shared + sum_i alpha_i pole_i reproduces the bilinear update
        slots = layer.slots()
        by_slots = F.linear(F.linear(x, slots[0][0]), slots[0][1])
        for i, w in enumerate(b[0].tolist()):
            by_slots = by_slots + w * F.linear(F.linear(x, slots[1 + i][0]), slots[1 + i][1])
        torch.testing.assert_close(layer.delta(x, b), by_slots, atol=1e-5, rtol=1e-5)


def test_parm_loss_is_the_weighted_sum_of_per_pole_bt_losses(tmp_path):
    """PARM's loss at alpha: sum_i alpha_i mean_{pairs labelled on i} -logsigmoid(beta margin_i), by hand."""
    from rlphf_cli.training.parm_trainer import PARMTrainer, merge_pairs

    model, tokenizer = _tiny_base()
    parm = PBLoRA(model, POLES, r1=2, r2=2, lora_alpha=4.0, target_modules=TARGETS)
    for p in parm.layers.parameters():
        torch.nn.init.normal_(p, std=0.5)
    by_pole = {
        "P1A": [
            {"user_input": "tell me about rain", "completion_a": "rain is water .", "completion_b": "no ."},
            {"user_input": "what is a cat", "completion_a": "a cat is small .", "completion_b": "cats ."},
        ],
        "P2B": [
            {"user_input": "tell me about rain", "completion_a": "no .", "completion_b": "rain is water ."}
        ],
        "P3A": [
            {"user_input": "what is a cat", "completion_a": "cats .", "completion_b": "a cat is small ."}
        ],
    }
    items = merge_pairs(by_pole)
    assert len(items) == 2 and {len(it["labels"]) for it in items} == {2}
    beta = 0.4
    trainer = PARMTrainer(
        parm=parm, tokenizer=tokenizer, items=items, beta=beta, batch_size=2, steps=1, learning_rate=0.0
    )
    alpha = torch.tensor([0.5, 0.0, 0.0, 0.3, 0.2, 0.0])
    with torch.no_grad():
        loss, _ = trainer.loss(items, alpha)

    def seq_logp(prompt, response):
        p = tokenizer(prompt).input_ids
        ids = p + tokenizer(response, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        parm.set_preference(alpha)
        with torch.no_grad():
            logp = parm(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
        return sum(logp[t - 1, ids[t]].item() for t in range(len(p), len(ids)))

    by_hand = 0.0
    for i, pole in enumerate(POLES):
        terms = [
            -F.logsigmoid(
                torch.tensor(
                    beta
                    * (
                        seq_logp(r["user_input"], r["completion_a"])
                        - seq_logp(r["user_input"], r["completion_b"])
                    )
                )
            ).item()
            for r in by_pole.get(pole, [])
        ]
        if terms:
            by_hand += alpha[i].item() * sum(terms) / len(terms)
    assert loss.item() == pytest.approx(by_hand, rel=1e-4)


def test_preference_sampling(tmp_path):
    from rlphf_cli.training.parm_trainer import PARMTrainer

    model, tokenizer = _tiny_base()
    parm = PBLoRA(model, POLES, r1=2, r2=2, lora_alpha=4.0, target_modules=["q_proj"])
    common = dict(
        parm=parm, tokenizer=tokenizer, items=[], beta=0.1, batch_size=1, steps=1, learning_rate=0.0
    )
    for _ in range(20):
        a = PARMTrainer(**common, sampling="combinations").sample_preference()
        assert a.sum().item() == pytest.approx(1.0, abs=1e-5)
        # one pole per dimension: never both poles of one dimension
        assert all((a[2 * d] > 0) != (a[2 * d + 1] > 0) for d in range(3))
    trainer = PARMTrainer(**common, sampling="simplex")
    assert all((trainer.sample_preference() > 0).all() for _ in range(5))
    from rlphf_cli.errors import UserError

    with pytest.raises(UserError, match="expert.parm.sampling"):
        PARMTrainer(**common, sampling="grid")


@pytest.fixture(scope="module")
def random_parm_run(tmp_path_factory):
    """An untrained tiny base with a random PARM (parm/) beside its random experts."""
    path = tmp_path_factory.mktemp("parm_run")
    make_random_expert_run(path, poles=("P1A", "P2A", "P3A"))
    add_random_parm(path)
    return path


def _texts(run_dir, method, *overrides) -> dict:
    from rlphf_cli.decoding.generate import ensure_generations

    cfg = compose(
        [
            f"run_dir={run_dir}",
            *TINY,
            "benchmark.max_eval_prompts=4",
            "generate.max_new_tokens=12",
            "generate.greedy=true",
            "generate.preference=P1A:0.5,P2A:0.3,P3A:0.2;P1B,P2B,P3B",
            *overrides,
        ]
    )
    path = ensure_generations(cfg, method)
    return {(r["prompt_id"], r["combination"]): r for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.slow
def test_generate_parm_with_beta_zero_is_the_base_and_the_parm_acts_otherwise(random_parm_run, tmp_path):
    base = _texts(random_parm_run, "sft")
    guided = _texts(random_parm_run, "parm", "generate.parm_beta=0")
    assert len(base) == 8
    assert {k: r["text"] for k, r in guided.items()} == {k: r["text"] for k, r in base.items()}
    assert {r["parm_beta"] for r in guided.values()} == {0.0}
    other = tmp_path / "strong"
    shutil.copytree(random_parm_run, other, ignore=shutil.ignore_patterns("generations"))
    strong = _texts(other, "parm", "generate.parm_beta=4")
    assert {k: r["text"] for k, r in strong.items()} != {k: r["text"] for k, r in base.items()}
    settings = json.loads((other / "generations" / "parm.settings.json").read_text())
    assert settings["parm_beta"] == 4.0 and settings["mixing"] == "log" and "parm" in settings["inputs"]


def _write_pairs(folder):
    """Toy pairs per pole: the same sampled pairs, labelled pole by pole (as `data/pairs/` holds them)."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs = [
        ("tell me about rain", "rain is water that falls .", "no ."),
        ("what is a cat", "a cat is a small animal .", "cats ."),
        ("explain volcanoes", "volcanoes push out hot rock , friend !", "hot rock ."),
        ("why is the sky blue ?", "light scatters in the air .", "blue ."),
    ]
    for i, pole in enumerate(POLES):
        flip = i % 2  # opposite poles of a dimension prefer opposite responses
        records = [
            {"user_input": p, "completion_a": b if flip else a, "completion_b": a if flip else b}
            for p, a, b in pairs
        ]
        (folder / f"{pole}.json").write_text(json.dumps(records))
    return folder


@pytest.mark.slow
def test_train_expert_algo_parm_writes_one_artifact_with_a_check_per_pole(tmp_path):
    from rlphf_cli.training.expert import train_expert

    make_random_expert_run(tmp_path, poles=())
    overrides = [
        f"run_dir={tmp_path}",
        *TINY,
        "expert.algo=parm",
        f"pairs.data_dir={_write_pairs(tmp_path / 'pairs')}",
        "expert.parm.max_steps=3",
        "expert.parm.batch_size=2",
        "expert.eval_samples=1",
        "expert.max_new_tokens=6",
        "benchmark.max_eval_prompts=2",
    ]
    paths = train_expert(compose(overrides))
    art = RunDir(tmp_path).artifact("parm")
    assert paths == [art.path] and not RunDir(tmp_path).artifact("arms/P1A").path.exists()
    manifest = art.manifest()
    metrics = manifest["metrics"]
    assert manifest["kind"] == "parm" and manifest["poles"] == POLES
    assert (
        metrics["steps"] == 3
        and metrics["pairs"] == 3
        and metrics["pairs_per_pole"] == dict.fromkeys(POLES, 3)
    )
    assert metrics["heldout_pairs"] == 1 and set(metrics["heldout_accuracy"]) == set(POLES)
    assert set(metrics["checks"]) == set(POLES)
    check = metrics["checks"]["P2A"]
    assert check["decoding"].startswith("greedy, guiding the base") and check["judgments"] == 2
    assert check["sampled"]["samples_per_prompt"] == 1
    assert any(k.startswith("expert.parm.") for k in manifest["made_from"]["config"])
    assert "pairs/P3B" in manifest["made_from"]["inputs"]
    assert (art.path / "pblora.safetensors").is_file() and (art.path / "parm_config.json").is_file()
    stamp = art.manifest_path.stat().st_mtime
    train_expert(compose(overrides))  # complete: skipped
    assert art.manifest_path.stat().st_mtime == stamp
    # other settings: refused with one line naming them
    from rlphf_cli.errors import UserError

    with pytest.raises(UserError, match="expert.parm"):
        train_expert(compose([*overrides, "expert.parm.beta=0.7"]))


def test_a_pole_the_parm_does_not_know_is_refused_in_one_line():
    from rlphf_cli.errors import UserError
    from rlphf_cli.methods.parm import parm_active

    with pytest.raises(UserError, match="P3C"):
        parm_active(POLES, ("P1A", "P3C"), (0.5, 0.5))


@pytest.mark.slow
@pytest.mark.xfail(
    reason="known negative finding: at the synthetic recipe (0.9 epoch, lr 1e-3) PARM ranks held-out pairs at "
    "47-69% per pole (make demo, seed 0: mean 57%), below this test's 60%; it needs more training than one "
    "ARM's budget",
    strict=False,
)
def test_a_trained_parm_ranks_held_out_pairs_of_each_pole_at_its_one_hot_weights(base_run, tmp_path_factory):
    """At the synthetic recipe (~116 steps of 8 pairs), held-out pairwise accuracy well above chance.

    Measured on a 200-step SFT base: 0.69 mean (0.59-0.81 by pole). The own-pole check (the PARM guiding
    the base) is recorded but not asserted: on that base it lowered every pole's judge score (see README)."""
    from helpers import TEST_OVERRIDES, new_run

    from rlphf_cli.training.expert import train_expert

    run = new_run(base_run, tmp_path_factory.getbasetemp(), "parm_run")
    cfg = compose([f"run_dir={run}", *TEST_OVERRIDES, "expert.algo=parm", "expert.eval_samples=0"])
    train_expert(cfg)
    metrics = RunDir(run).artifact("parm").manifest()["metrics"]
    accuracy = metrics["heldout_accuracy"]
    assert metrics["steps"] > 100 and set(metrics["checks"]) == set(POLES)
    assert sum(accuracy.values()) / len(accuracy) >= 0.6, accuracy


@pytest.mark.parametrize(
    "override, message",
    [
        ("expert.parm.sampling=grid", "expert.parm.sampling"),
        ("expert.parm.concentration=0", "concentration"),
        ("expert.parm.lora_r2=0", "lora_r2"),
    ],
)
def test_bad_parm_settings_are_refused_before_anything_is_written(tmp_path, override, message):
    from rlphf_cli.errors import UserError
    from rlphf_cli.training.expert import train_expert

    make_random_expert_run(tmp_path, poles=())
    with pytest.raises(UserError, match=message):
        train_expert(compose([f"run_dir={tmp_path}", *TINY, "expert.algo=parm", override]))
    assert not (tmp_path / "parm").exists() and not list(tmp_path.glob("parm*"))


def test_parm_rows_share_one_batch_with_another_methods_rows(random_parm_run):
    """One engine batch of mod and parm rows (different weights, mixing spaces, expert lists) = each row alone."""
    from rlphf_cli.decoding.runtime import Runtime
    from rlphf_cli.methods import get_method
    from rlphf_cli.methods.batch import plan_rows
    from rlphf_cli.preferences import parse_weighted_preferences

    cfg = compose([f"run_dir={random_parm_run}", *TINY, "generate.greedy=true", "generate.parm_beta=2"])
    rt = Runtime(cfg)
    mod, parm = get_method("mod"), get_method("parm")
    prefs = parse_weighted_preferences("P1A:0.5,P2A:0.3,P3A:0.2;P1A:0.2,P2A:0.2,P3A:0.6", POLES)
    mod.load(rt, ["P1A", "P2A", "P3A"])
    parm.load(rt, POLES)
    rows = [(mod, prefs[0]), (parm, prefs[0]), (parm, prefs[1]), (mod, prefs[1])]
    prompts = _prompts(rt.tokenizer)

    def run(index):
        plan = plan_rows(rt, [rows[i] for i in index], width=4)
        out = rt.decode(
            plan.provider, [prompts[i] for i in index], plan.active, max_new_tokens=10, mixing=plan.mixing
        )
        return out.tokens

    together = run([0, 1, 2, 3])
    assert [run([i])[0] for i in range(4)] == together
    assert together[1] != together[2]  # the PARM rows' weights differ, and so do their tokens
