"""Config of `rlphf serve`: where it listens, how many rows it decodes together, what it keeps in memory."""

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
    # torch's CPU threads; null: half the cores this process may use (torch's default, every core, lets its
    # threads spin against the HTTP thread and other processes: 1021 ms a step against 7.9 ms with one)
    threads: int | None = None
    max_soups: int = (
        64  # soup adapters kept for `soups` (least recently used freed first; rows in flight keep theirs)
    )
    max_merged_soups: int = 4  # merged models kept for `soups-merged` (each a copy of the base)
