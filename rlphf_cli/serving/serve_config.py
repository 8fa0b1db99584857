"""Config of `rlphf serve`: where it listens and how many rows it decodes together."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 32  # rows one method decodes together; later requests wait for a free row
    max_new_tokens: int = (
        512  # the most `max_tokens` a request may ask for (its default: generate.max_new_tokens)
    )
    soups_merged: bool = (
        False  # also serve `soups-merged`: one merged model per combination (memory: one base each)
    )
