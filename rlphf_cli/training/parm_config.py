"""Config of PARM (Lin et al., ICML 2025): one autoregressive reward model for every pole, conditioned on the
preference weights by a preference-aware bilinear LoRA (`rlphf train-expert algo=parm`, saved as `parm/`).

Defaults are PARM's released recipe (code/training/run.sh) where it has one: r1 = r2 = 4, lora_alpha 8,
Dirichlet concentration 0.5, lr 5e-4; the synthetic benchmark's recipe sets the budget.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PARMSettings:
    learning_rate: float | None = None  # None: expert.learning_rate (PARM: 5e-4)
    batch_size: int | None = None  # response pairs per step (each labelled on every pole it was judged on)
    max_steps: int | None = None  # >0 overrides num_epochs
    num_epochs: float | None = None  # PARM: 2
    # the reward is beta * sum_t log p_PARM(y_t | x, y_<t, alpha), one beta for every pole (PARM: beta_obj)
    beta: float = 0.1
    lora_r1: int = 4  # rank of the preference-free part B1 W1 A1
    lora_r2: int = 4  # rank of the preference part B2 W2(alpha) A2, W2(alpha) = sum_i alpha_i M_i (r2 x r2)
    lora_alpha: float = 8.0  # scaling lora_alpha / r2, as PARM
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | None = None  # None: expert.lora_target_modules, else q/k/v (PARM's)
    # One weight vector per step (PARM), drawn from a Dirichlet with this concentration; the step's loss is
    # sum_i alpha_i x (pole i's Bradley-Terry loss over the pairs labelled on pole i).
    concentration: float = 0.5
    # Where the weights live: `combinations` (a random combination, one pole per dimension, Dirichlet weights
    # over its poles: the preferences `generate` decodes) or `simplex` (PARM's: Dirichlet over every pole,
    # opposite poles of a dimension included).
    sampling: str = "combinations"
