"""Config of the Preference Control Model (`rlphf train-pcm`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PCMConfig:
    size: str = "tiny"
    algo: str = "rebel"  # rebel | rloo
