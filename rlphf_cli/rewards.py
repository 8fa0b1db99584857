"""Per-pole scalar rewards: the benchmark's programmatic judge, or the run's reward models.

One interface for every consumer (GRPO/PPO experts, the PCM, the reward-model judge):
    reward = get_reward(cfg, kind)            # kind: judge | reward_model
    reward.score(pole, prompts, responses)    # -> list[float], higher is better
"""

from __future__ import annotations

from typing import Protocol

import torch

from rlphf_cli.adapters import base_model_path, check_adapter_base, explain_load_failure
from rlphf_cli.errors import UserError
from rlphf_cli.runs import RunDir


class Reward(Protocol):
    def score(self, pole: str, prompts: list[str], responses: list[str]) -> list[float]: ...


class JudgeReward:
    """The benchmark's programmatic judge: scores in [0, 1] for valid responses, -1 for invalid ones."""

    def __init__(self, benchmark):
        if not hasattr(benchmark, "score"):
            raise UserError(
                f"benchmark {benchmark.name!r} has no programmatic judge; use reward=reward_model"
            )
        self.benchmark = benchmark

    def score(self, pole: str, prompts: list[str], responses: list[str]) -> list[float]:
        return [self.benchmark.score(pole, p, r) for p, r in zip(prompts, responses, strict=True)]


class RewardModelReward:
    """The run's reward models, `rm/<pole>/` (a LoRA adapter with its score head on the base)."""

    def __init__(self, cfg, device: torch.device | None = None, batch_size: int = 32):
        from rlphf_cli.modeling import resolve_device

        self.cfg = cfg
        self.run = RunDir(cfg.run_dir)
        self.device = device or resolve_device(cfg.device)
        self.batch_size = batch_size
        self._models: dict[str, tuple] = {}

    def _load(self, pole: str):
        if pole not in self._models:
            self._models[pole] = load_reward_model(self.cfg, pole, self.device)
        return self._models[pole]

    def score(self, pole: str, prompts: list[str], responses: list[str]) -> list[float]:
        from rlphf_cli.modeling import format_prompt

        model, tokenizer = self._load(pole)
        template = self.cfg.model.prompt_template
        texts = [format_prompt(template, p, tokenizer) + r for p, r in zip(prompts, responses, strict=True)]
        return score_texts(model, tokenizer, texts, self.batch_size)


@torch.no_grad()
def score_texts(model, tokenizer, texts: list[str], batch_size: int = 32) -> list[float]:
    """A reward model's scalar scores of full texts (prompt + response), with the EOS its trainer appended."""
    model.eval()
    device = next(model.parameters()).device
    out: list[float] = []
    for i in range(0, len(texts), batch_size):
        batch = [t + tokenizer.eos_token for t in texts[i : i + batch_size]]
        enc = tokenizer(batch, return_tensors="pt", padding=True).to(device)
        out += model(**enc).logits[:, 0].float().tolist()
    return out


def load_scoring_base(cfg):
    """The run's base with a one-output classification head, and its tokenizer: what a reward model trains on."""
    from transformers import AutoModelForSequenceClassification

    from rlphf_cli.modeling import load_tokenizer, torch_dtype

    base = base_model_path(cfg)
    tokenizer = load_tokenizer(base, cfg.model.trust_remote_code)
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        dtype=torch_dtype(cfg.model.dtype),
        trust_remote_code=cfg.model.trust_remote_code,
    )
    return model, tokenizer


def load_reward_model(cfg, pole: str, device: torch.device):
    """Load `rm/<pole>` onto the base as a merged sequence classifier; returns (model, tokenizer)."""
    from peft import PeftModel

    art = RunDir(cfg.run_dir).artifact(f"rm/{pole}")
    if not art.is_complete():
        raise UserError(f"no reward model for {pole} in {art.path}: run `rlphf train-rm pole={pole}` first")
    check_adapter_base(cfg, art, "reward model")
    model, tokenizer = load_scoring_base(cfg)
    with explain_load_failure(f"reward model {art.path}", base_model_path(cfg)):
        model = PeftModel.from_pretrained(model, str(art.path)).merge_and_unload()
    return model.to(device).eval(), tokenizer


def get_reward(cfg, kind: str) -> Reward:
    if kind == "judge":
        from rlphf_cli.benchmarks import get_benchmark

        return JudgeReward(get_benchmark(cfg.benchmark))
    if kind == "reward_model":
        return RewardModelReward(cfg)
    raise UserError(f"unknown reward {kind!r}; valid: judge, reward_model")
