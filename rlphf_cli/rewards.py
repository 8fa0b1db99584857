"""Per-pole scalar rewards: the benchmark's programmatic judge, or the run's reward models.

One interface for every consumer (GRPO/PPO experts, the PCM, the reward-model judge):
    reward = get_reward(cfg, kind)            # kind: judge | reward_model
    reward.score(pole, prompts, responses)    # -> list[float], higher is better
    reward.score_poles(poles, prompts, responses)   # -> {pole: list[float]}, one pass over all poles
"""

from __future__ import annotations

from typing import Protocol

import torch

from rlphf_cli.adapters import base_model_path, check_adapter_base, explain_load_failure
from rlphf_cli.errors import UserError
from rlphf_cli.runs import RunDir


class Reward(Protocol):
    def score(self, pole: str, prompts: list[str], responses: list[str]) -> list[float]: ...

    def score_poles(
        self, poles: list[str], prompts: list[str], responses: list[str]
    ) -> dict[str, list[float]]: ...


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

    def score_poles(
        self, poles: list[str], prompts: list[str], responses: list[str]
    ) -> dict[str, list[float]]:
        return {pole: self.score(pole, prompts, responses) for pole in poles}


class RewardModelReward:
    """The run's reward models, `rm/<pole>/`: LoRA adapters with their score heads on one base (reward_models.py).

    `model` is a base to share (train-pcm passes its experts' peft model); without one the run's base is loaded once.
    """

    def __init__(self, cfg, device: torch.device | None = None, batch_size: int = 32, model=None):
        from rlphf_cli.modeling import resolve_device

        self.cfg = cfg
        self.run = RunDir(cfg.run_dir)
        self.device = device or resolve_device(cfg.device)
        self.batch_size = batch_size
        self._shared = model
        self._adapters = None

    def _load(self, poles: list[str]):
        from rlphf_cli.modeling import load_tokenizer
        from rlphf_cli.reward_models import RewardAdapters

        arts = {}
        for pole in poles:
            art = self.run.artifact(f"rm/{pole}")
            if not art.is_complete():
                raise UserError(
                    f"no reward model for {pole} in {art.path}: run `rlphf train-rm pole={pole}` first"
                )
            check_adapter_base(self.cfg, art, "reward model")
            arts[pole] = art
        if self._adapters is None:
            if self._shared is None:  # the body without an LM head: what train-rm trained on
                model, tokenizer = load_scoring_base(self.cfg)
                model = model.to(self.device).eval()
            else:
                model = self._shared
                tokenizer = load_tokenizer(base_model_path(self.cfg), self.cfg.model.trust_remote_code)
            self._adapters = RewardAdapters(model, tokenizer, self.batch_size)
        for pole, art in arts.items():
            with explain_load_failure(f"reward model {art.path}", base_model_path(self.cfg)):
                self._adapters.add(pole, art.path)
        return self._adapters

    def score_poles(
        self, poles: list[str], prompts: list[str], responses: list[str]
    ) -> dict[str, list[float]]:
        """Every pole's scores of the same responses, in one forward per batch over all poles."""
        from rlphf_cli.modeling import format_prompt

        adapters = self._load(list(poles))
        template = self.cfg.model.prompt_template
        tokenizer = adapters.tokenizer
        texts = [format_prompt(template, p, tokenizer) + r for p, r in zip(prompts, responses, strict=True)]
        return adapters.score(list(poles), texts)

    def score(self, pole: str, prompts: list[str], responses: list[str]) -> list[float]:
        return self.score_poles([pole], prompts, responses)[pole]


@torch.no_grad()
def score_texts(model, tokenizer, texts: list[str], batch_size: int = 32) -> list[float]:
    """A reward model's scalar scores of full texts (prompt + response), with the EOS its trainer appended."""
    model.eval()
    device = next(model.parameters()).device
    out: list[float] = []
    for i in range(0, len(texts), batch_size):
        batch = [t + tokenizer.eos_token for t in texts[i : i + batch_size]]
        enc = tokenizer(batch, return_tensors="pt", padding=True).to(device)
        # positions count real tokens only: left padding must not shift absolute positions (GPT-2)
        pos = (enc.attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out += model(**enc, position_ids=pos).logits[:, 0].float().tolist()
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


def get_reward(cfg, kind: str, model=None) -> Reward:
    """`model`: a base already in memory for reward models to share (reward_model only)."""
    if kind == "judge":
        from rlphf_cli.benchmarks import get_benchmark

        return JudgeReward(get_benchmark(cfg.benchmark))
    if kind == "reward_model":
        return RewardModelReward(cfg, model=model)
    raise UserError(f"unknown reward {kind!r}; valid: judge, reward_model")
