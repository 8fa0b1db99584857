"""Config of experts (`rlphf train-expert`): one LoRA adapter per pole, trained by DPO, PPO or GRPO, and of
GenARM's autoregressive reward models (`algo=arm`, saved as `arms/<pole>`).

Defaults are P-Soups's (LoRA r=16 alpha=32, lr 1.4e-5, batch 16, 8 PPO epochs, target KL 0.1) for a real
base; the synthetic benchmark's recipe (conf/benchmark/synthetic.yaml) overrides budgets and learning rates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlphf_cli.training.parm_config import PARMSettings


# Each algorithm may override the shared learning_rate, batch_size, max_steps and num_epochs (None: shared).
@dataclass
class DPOSettings:
    learning_rate: float | None = None
    batch_size: int | None = None
    max_steps: int | None = None
    num_epochs: float | None = None
    beta: float = 0.1
    loss_type: str = "sigmoid"  # TRL's DPO loss types: sigmoid | ipo | hinge | ...
    # >0 adds the chosen responses' NLL with this weight (RPO), against likelihood drift
    sft_weight: float = 0.0


@dataclass
class PPOSettings:
    learning_rate: float | None = None
    batch_size: int | None = None  # prompts per PPO step (P-Soups: 16)
    max_steps: int | None = None
    num_epochs: float | None = None
    epochs: int = 8  # PPO epochs per batch of rollouts (P-Soups: 8)
    mini_batch_size: int = 4
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    kl_coef: float = 0.2  # initial coefficient of the per-token KL penalty to the reference (the base)
    adaptive_kl: bool = True  # Ziegler et al.'s controller, as TRL's classic PPO that P-Soups ran
    kl_target: float = 6.0
    kl_horizon: int = 10000
    target_kl: float = 0.1  # stop a batch's PPO epochs early once approx. KL(new||old) exceeds 1.5 x this
    score_norm: bool = True  # normalise scores by running mean/std (P-Soups: use_score_scaling/norm)
    max_grad_norm: float = 1.0


@dataclass
class GRPOSettings:
    learning_rate: float | None = None
    batch_size: int | None = None  # completions per step (batch_size / num_generations prompts)
    max_steps: int | None = None
    num_epochs: float | None = None
    num_generations: int = 4  # completions per prompt; batch_size must be a multiple of it
    beta: float = 0.0  # KL coefficient to the reference (TRL's default 0)
    loss_type: str = "dapo"


@dataclass
class ARMSettings:
    """GenARM's autoregressive reward model (Xu et al., ICLR 2025): a LoRA causal LM on the pole's pairs."""

    learning_rate: float | None = None  # GenARM's LoRA ARMs: 5e-4
    batch_size: int | None = None
    max_steps: int | None = None
    num_epochs: float | None = None  # GenARM: 1 epoch
    # the reward is beta * sum_t log p_ARM(y_t | x, y_<t); GenARM: 0.05 (HH), 0.5 (helpfulness), 0.01 (harmlessness)
    beta: float = 0.1


@dataclass
class ExpertConfig:
    pole: str = "all"  # a pole name, several separated by commas, or all (skips complete experts)
    # dpo | ppo | grpo | arm (GenARM's autoregressive reward model, saved as arms/<pole>) | parm (one
    # preference-conditioned ARM for every pole, saved as parm/)
    algo: str = "dpo"
    lora_r: int = 16  # P-Soups: LoRA r=16, alpha=32, dropout 0.05
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    # None: every linear layer of the transformer blocks, any architecture (recorded in the manifest)
    lora_target_modules: list[str] | None = None
    learning_rate: float = 1.4e-5  # P-Soups's PPO value; the synthetic recipe raises it
    lr_scheduler: str = "linear"
    warmup_steps: float = 0  # linear warmup: steps, or a share of all steps when below 1
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    max_steps: int = -1  # >0 overrides num_epochs
    num_epochs: float = 1.0  # passes over the pairs (dpo) or the training prompts (ppo, grpo)
    max_length: int = 512  # dpo: prompt + response tokens
    max_new_tokens: int = 128  # ppo/grpo: response length
    temperature: float = 1.0  # ppo/grpo sampling temperature
    reward: str = "auto"  # ppo/grpo reward: judge | reward_model | auto (ppo: reward_model, grpo: judge)
    logging_steps: int = 10
    save_steps: int = 100  # checkpoint interval (kept in experts/<pole>.partial/ for resuming)
    eval_samples: int = (
        2  # sampled responses per held-out prompt in the own-pole check (besides greedy; 0: greedy only)
    )
    dpo: DPOSettings = field(default_factory=DPOSettings)
    ppo: PPOSettings = field(default_factory=PPOSettings)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)
    arm: ARMSettings = field(default_factory=ARMSettings)
    parm: PARMSettings = field(default_factory=PARMSettings)


@dataclass
class LauncherConfig:
    # >1 relaunches the training command under `accelerate launch` with this many processes
    # (GPUs, or gloo processes on a CPU-only machine).
    num_processes: int = 1
    # ddp | zero2 | zero3 | fsdp (conf/accelerate/<name>.yaml), or a path to an accelerate config file
    accelerate_config: str | None = None
    main_process_port: int | None = None  # None: accelerate's default (29500)


def setting(cfg, name: str):
    """A training setting of the current algorithm: its own override, else the shared expert value."""
    own = cfg.expert[cfg.expert.algo].get(name)
    return own if own is not None else cfg.expert[name]
