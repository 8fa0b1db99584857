"""Config of `rlphf personalize`: the mode, the user, the user model's prior and the simulation's budgets."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import II


@dataclass
class PersonalizeConfig:
    mode: str = "fit"  # fit | interactive | simulate
    user: str | None = None  # fit, interactive: the user's name; writes users/<user>.json in the run dir
    answers: str | None = None  # fit: a .jsonl of prompt, response_a, response_b, choice (A | B | TIE)
    reward: str = (
        "auto"  # per-pole scores phi: judge | reward_model | auto (judge where the benchmark has one)
    )
    l2: float = 1.0  # L2 penalty (Gaussian prior precision) on the signed strengths
    questions: int = 10  # interactive: how many questions to ask
    candidate_prompts: int = 24  # training prompts the candidate responses are generated for
    # simulate
    users: int = 50  # synthetic users with hidden signed strengths
    user_scale: float = 5.0  # norm of a hidden user's strengths: Bradley-Terry noise falls as it grows
    budgets: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 20, 40])
    heldout_pairs: int = 200  # held-out questions per user (from prompts never asked), for answer accuracy
    downstream_budget: int = 10  # the answer budget whose (active) inferred weights are decoded with
    downstream_users: int = 50  # users whose inferred weights are decoded with (the first N)
    downstream_prompts: int = 8  # evaluation prompts decoded per user
    bootstrap_samples: int = 1000
    seed: int = II("seed")
