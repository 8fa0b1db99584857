"""What every judge provides: one verdict per comparison of two responses on one pole."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

VERDICTS = ("A", "B", "TIE")


@dataclass(frozen=True)
class Comparison:
    """Two responses to one prompt, judged on one pole; `a` is shown first."""

    pole: str
    prompt: str
    a: str
    b: str


@dataclass
class Verdict:
    verdict: str | None  # "A", "B", "TIE", or None when the judge's answer could not be parsed
    rationale: str | None = None  # the judge's reasoning (llm) or its raw answer when unparseable
    detail: dict = field(default_factory=dict)  # judge-specific facts: scores, cached, ...


class Judge(Protocol):
    kind: str

    def describe(self) -> dict:
        """What identifies this judge in results (no secrets)."""
        ...

    def judge(self, comparisons: list[Comparison]) -> list[Verdict]:
        """One verdict per comparison, in order."""
        ...
