"""Config of preference pairs (`data/pairs/<pole>.json`) and reward models (`rlphf train-rm`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PairsConfig:
    pairs_per_prompt: int = 4  # pairs sampled per training prompt (P-Soups: 1 pair of 2 responses)
    max_new_tokens: int = 96
    temperature: float = 1.0
    labeler: str = "judge"  # judge (the benchmark's programmatic judges) | reward_model | llm


@dataclass
class RewardModelConfig:
    pole: str = "all"  # a pole name, or all
    lora_r: int = 8  # P-Soups: LoRA r=8, alpha=32
    lora_alpha: int = 32
    learning_rate: float = 2e-5  # P-Soups's value; the synthetic profile raises it
    num_epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 16
    eval_fraction: float = 0.1  # held-out share of the pairs for accuracy
