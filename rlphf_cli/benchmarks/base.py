"""What every benchmark provides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str


class Benchmark(Protocol):
    name: str
    poles: list[str]

    def train_prompts(self) -> list[Prompt]: ...

    def eval_prompts(self) -> list[Prompt]: ...
