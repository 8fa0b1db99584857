"""Config of `rlphf eval` and of the judges."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class JudgeConfig:
    kind: str = "synthetic"  # synthetic | reward_model | llm


@dataclass
class EvalConfig:
    method: str = "pcm"
    baseline: str = "soups"  # a method, or all
    seed: int = 0
    bootstrap_samples: int = 1000
    judge: JudgeConfig = field(default_factory=JudgeConfig)
