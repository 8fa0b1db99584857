"""Reward models as adapters on one shared base: the same scores as each merged model, every pole in one pass."""

import pytest
import torch

from conftest import make_random_expert_run
from rlphf_cli.adapters import base_fingerprint, load_experts
from rlphf_cli.benchmarks import get_benchmark
from rlphf_cli.runs import RunDir

POLES = ("P1A", "P1B", "P2A", "P2B", "P3A", "P3B")


def add_random_reward_models(cfg, poles=POLES, seed=1):
    """rm/<pole>: random LoRA (r=4) with a random score head on the run's base, saved as train-rm saves them."""
    from peft import LoraConfig, get_peft_model

    from rlphf_cli.rewards import load_scoring_base

    gen = torch.Generator().manual_seed(seed)
    run = RunDir(cfg.run_dir)
    for pole in poles:
        model, _ = load_scoring_base(cfg)
        model = get_peft_model(
            model, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
        )
        for name, p in model.named_parameters():
            if "lora_" in name or "score" in name:
                p.data.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        art = run.artifact(f"rm/{pole}")
        model.save_pretrained(art.start())
        art.commit("reward_model", None, pole=pole, base=base_fingerprint(cfg))


def merged_scores(cfg, pole, texts):
    """The former path: the base as a sequence classifier with this pole's LoRA merged in."""
    from peft import PeftModel

    from rlphf_cli.rewards import load_scoring_base, score_texts

    model, tokenizer = load_scoring_base(cfg)
    model = PeftModel.from_pretrained(model, str(RunDir(cfg.run_dir).artifact(f"rm/{pole}").path))
    return score_texts(model.merge_and_unload(), tokenizer, texts)


@pytest.fixture(scope="module")
def rm_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("rm_adapters")
    cfg = make_random_expert_run(path)
    add_random_reward_models(cfg)
    words = " ".join(get_benchmark(cfg.benchmark).vocabulary_text()).split()
    prompts = [" ".join(words[i : i + 3 + i % 4]) for i in range(0, 35, 5)]  # lengths differ: padding
    responses = [" ".join(words[40 + i : 42 + 2 * i]) for i in range(len(prompts))]
    return cfg, prompts, responses


@pytest.mark.slow
def test_one_base_scores_equal_the_merged_reward_models(rm_run):
    from rlphf_cli.modeling import format_prompt
    from rlphf_cli.rewards import get_reward

    cfg, prompts, responses = rm_run
    texts = [format_prompt(cfg.model.prompt_template, p) + r for p, r in zip(prompts, responses, strict=True)]
    reward = get_reward(cfg, "reward_model")
    reward.batch_size = 12  # 6 poles: 2 texts per forward, padded differently; one pole: 12 texts (padded)
    together = reward.score_poles(list(POLES), prompts, responses)
    for pole in POLES:
        expected = torch.tensor(merged_scores(cfg, pole, texts))
        assert torch.allclose(torch.tensor(together[pole]), expected, atol=1e-5), pole
        alone = torch.tensor(reward.score(pole, prompts, responses))
        assert torch.allclose(alone, expected, atol=1e-5), pole
    assert len({round(together[p][0], 4) for p in POLES}) == len(POLES)  # the heads really differ


@pytest.mark.slow
def test_reward_adapters_share_the_experts_base_without_changing_them(rm_run):
    from rlphf_cli.adapters import base_model_path
    from rlphf_cli.modeling import format_prompt, load_causal_lm
    from rlphf_cli.rewards import RewardModelReward

    cfg, prompts, responses = rm_run
    experts = load_experts(cfg, load_causal_lm(base_model_path(cfg), cfg.model).eval(), list(POLES))
    ids = torch.tensor([[5, 6, 7, 8]])
    before = experts(input_ids=ids).logits
    reward = RewardModelReward(cfg, model=experts)
    scores = reward.score_poles(["P2A", "P3B"], prompts, responses)
    assert reward._adapters.model is experts  # no second base
    assert experts.active_adapter == "P1A"
    assert torch.equal(experts(input_ids=ids).logits, before)
    texts = [format_prompt(cfg.model.prompt_template, p) + r for p, r in zip(prompts, responses, strict=True)]
    for pole in ("P2A", "P3B"):
        assert torch.allclose(
            torch.tensor(scores[pole]), torch.tensor(merged_scores(cfg, pole, texts)), atol=1e-5
        )
