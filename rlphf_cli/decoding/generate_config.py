"""Config of `rlphf generate`: the method, the preferences, the prompts and the sampler."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import II


@dataclass
class GenerateConfig:
    method: str = (
        "pcm"  # a registered method (rlphf_cli/methods/): sft | prompted | soups | mod | uniform | ...
    )
    # all, poles such as P1A,P2B,P3A, weights P1A:0.6,P2B:0.4 (`;` between several), or @users/NAME.json
    preference: str = "all"
    prompts: str | None = (
        None  # a .jsonl file with id and prompt per line; None: the benchmark's eval prompts
    )
    # psoups (mean of LoRA A and B, as the P-Soups code) | delta (mean of B@A) | ties_svd | dare_linear_svd
    # (peft's TIES / DARE over the full weight deltas, cut back to a LoRA by SVD)
    soups_merge: str = "psoups"
    soups_density: float = 0.5  # ties_svd, dare_linear_svd: the share of each delta's entries kept
    mixing: str | None = None  # prob | log; None: the method's own (mod, genarm, parm: log; others: prob)
    # genarm: ARM i guides the base with alpha_i = (preference weight i) x genarm_alpha. 3.0 gives each pole
    # of a three-pole combination alpha 1, the strength of GenARM's own examples.
    genarm_alpha: float = 3.0
    # parm: log p_base + parm_beta x log p_PARM(. | x, weights). 3.0: the total strength of genarm's default
    # (sum_i alpha_i = genarm_alpha for weights summing to 1).
    parm_beta: float = 3.0
    max_new_tokens: int = 96
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False
    batch_size: int = 16
    # methods that decode with the preference texts after the instruction (prompted always does; `all`: every
    # method). The synthetic default: prompted only. P-Soups's evaluation puts them in every method's prompt.
    preference_in_prompt: list[str] = field(default_factory=lambda: ["prompted"])
    seed: int = II("seed")  # the run's seed unless given: `rlphf generate seed=3` seeds the sampling
