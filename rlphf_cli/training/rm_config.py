"""Config of preference pairs (`data/pairs/<pole>.json`) and reward models (`rlphf train-rm`).

Defaults are P-Soups's (a real 7B base); the synthetic benchmark's recipe (conf/benchmark/synthetic.yaml)
overrides budgets and learning rates for its tiny model.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PairsConfig:
    pairs_per_prompt: int = 1  # pairs (of 2 sampled responses) per training prompt; P-Soups: 1
    max_prompts: int | None = None  # use only the first N training prompts (None: all)
    max_new_tokens: int = 128  # P-Soups rollouts: up to 128 new tokens
    temperature: float = 1.0
    batch_size: int = 64  # prompts per generate() call while sampling
    labeler: str = "judge"  # judge (the benchmark's programmatic judges) | reward_model | llm
    # a folder of P-Soups <pole>.json files (e.g. the release's rm_training/); None: sample them in the run
    data_dir: str | None = None


@dataclass
class RewardModelConfig:
    pole: str = "all"  # a pole name, several separated by commas, or all (skips complete reward models)
    lora_r: int = 8  # P-Soups: LoRA r=8, alpha=32, dropout 0.1
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    # None: every linear layer of the transformer blocks, any architecture (recorded in the manifest)
    lora_target_modules: list[str] | None = None
    learning_rate: float = 2e-5  # P-Soups's value; the synthetic recipe raises it
    lr_scheduler: str = "linear"
    warmup_steps: float = 0  # linear warmup: steps, or a share of all steps when below 1
    weight_decay: float = 0.001
    num_epochs: float = 1.0
    max_steps: int = -1  # >0 overrides num_epochs
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    max_length: int = 512  # longer pairs are dropped, as P-Soups did
    eval_fraction: float = 0.1  # held-out share of the pairs for accuracy (P-Soups: 10%)
    logging_steps: int = 10
    save_steps: int = 200  # checkpoint interval (kept in rm/<pole>.partial/ for resuming)
