"""Config of experts (`rlphf train-expert`): one LoRA adapter per pole, trained by DPO, PPO or GRPO."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ExpertConfig:
    pole: str = "all"  # a pole name, or all (skips complete experts)
    algo: str = "dpo"  # dpo | ppo | grpo
    lora_r: int = 16  # P-Soups: LoRA r=16, alpha=32
    lora_alpha: int = 32
    learning_rate: float = 1.4e-5  # P-Soups's PPO value; the synthetic profile raises it
    batch_size: int = 16
    max_steps: int = -1
    num_epochs: float = 1.0
    reward: str = "judge"  # ppo/grpo reward: judge (programmatic) | reward_model


@dataclass
class LauncherConfig:
    num_processes: int = 1  # >1 relaunches the training command under `accelerate launch`
    accelerate_config: str | None = None  # ddp | zero2 | zero3 | fsdp (files in conf/accelerate/)
