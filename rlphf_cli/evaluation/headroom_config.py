"""Config of the headroom measurement (`rlphf headroom`): what routing could gain over fixed mixtures."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class HeadroomConfig:
    max_prompts: int = 48  # held-out prompts the mixtures and the oracle are scored on (0: all)
    grid_steps: int = 3  # the fixed-weight grid holds weights in multiples of 1/grid_steps
    grid_prompts: int = 24  # training prompts the best grid point is chosen on
