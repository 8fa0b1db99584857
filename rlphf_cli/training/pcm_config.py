"""Config of the Preference Control Model (`rlphf train-pcm`)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import II


@dataclass
class PCMConfig:
    # The network: a LLaMA-style body. conf/pcm/ holds sizes (tiny for the synthetic benchmark, about
    # 160M parameters for real runs); `init_from` starts from a pretrained small model of the experts' vocabulary.
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    max_position_embeddings: int = 512
    init_from: str | None = None
    # Training: online RL over every combination, experts frozen.
    algo: str = "rebel"  # rebel | rloo
    steps: int = 60
    prompts_per_step: int = 4  # per combination; each prompt gets `samples_per_prompt` responses
    samples_per_prompt: int = 2
    # Besides the equal-weight combinations, each step samples this many weight vectors (a random
    # combination, Dirichlet weights over its poles), so that the PCM serves any weighting a user gives.
    weighted_per_step: int = 4
    weight_concentration: float = 1.0
    update_epochs: int = 2  # passes over each batch of samples (the expert log-probs are reused)
    learning_rate: float = 1e-3
    max_grad_norm: float = (
        1.0  # clip each update's gradient norm (0: off); unclipped, a demo PCM fell from 0.70 to 0.57 mid-run
    )
    rebel_eta: float = 1.0  # REBEL's 1/eta scales the log-ratio differences
    bt_scale: float = 1.0  # rewards are normalised as sigmoid(bt_scale * (r(y) - r(y_ref)))
    reward: str = "judge"  # judge (programmatic) | reward_model
    max_new_tokens: int = 96
    temperature: float = II("generate.temperature")  # sample as the evaluation decodes
    save_steps: int = 20
    ablation: bool = True  # pipeline: also train the PCM with the other algorithm (REBEL <-> RLOO) to compare
    eval_prompts: int = 48  # held-out prompts for the closing PCM-vs-uniform comparison (0: skip)
