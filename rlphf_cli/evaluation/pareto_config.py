"""Config of `rlphf pareto`: which objective sets, methods, weights, prompts and scorers make the fronts."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ParetoConfig:
    # Objective sets, each the poles whose weights are swept: two or three poles, `,` between them, `;`
    # between sets. Default: each dimension's two poles, two cross-dimension pairs and one three-pole set.
    objective_sets: str = "P1A,P1B;P2A,P2B;P3A,P3B;P2A,P3A;P1A,P2B;P1A,P2A,P3A"
    # Methods: weight-honouring ones are decoded at every lattice point, the others once per set as
    # reference markers. `soups:<merge>` is soups with another merge (generate.soups_merge's choices).
    # Empty: every registered method, and soups also as soups:ties_svd and soups:dare_linear_svd.
    methods: list[str] = field(default_factory=list)
    lattice: int = 11  # points per axis of the weight lattice: 11 is 0, 0.1, ..., 1 (two objectives)
    simplex: str = "mod"  # three objectives: mod (MOD's 13 weight vectors) | lattice (every lattice point)
    prompts: int = 0  # evaluation prompts decoded (the first N; 0: every evaluation prompt)
    max_new_tokens: int | None = None  # None: generate.max_new_tokens
    greedy: bool = True  # greedy decoding, as MOD's fronts; false samples at the generate settings
    # The scorer of every objective: auto (the benchmark judge when there is one, else the run's reward
    # models) | judge | reward_model | hf:<Hub id or local folder> (a sequence-classification reward model)
    scorer: str = "auto"
    # Per-objective scorers, overriding `scorer`: `P1A:hf:Ray2333/gpt2-large-helpful-reward_model;P1B:judge`
    scorers: str = ""
    # The hf scorers' input: auto (the reward model's chat template if it has one, else HH-RLHF's
    # "\n\nHuman: {prompt}\n\nAssistant: {response}") or a string holding {prompt} and {response} once each
    hf_template: str = "auto"
    hf_max_length: int = 1024  # hf scorers: longer inputs lose their beginning (the score reads the end)
    # The hypervolume's reference point, one number per objective (`,` between), or auto: the scorer's
    # floor where it declares one (the synthetic judge: 0), else the lowest mean any point reaches
    reference: str = "auto"
    bootstrap_samples: int = 1000
    batch_size: int = 32  # rows decoded together (rows of one batch carry different weights)
