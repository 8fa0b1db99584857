"""Pairwise judges behind one interface, chosen by `eval.judge.kind`.

Registry: name -> implementation, imported lazily, so that adding a judge is one file plus one line.
    judge = get_judge(cfg)                        # cfg: the root config
    verdicts = judge.judge([Comparison(pole, prompt, a, b), ...])   # Verdict.verdict: "A" | "B" | "TIE" | None
"""

from __future__ import annotations

import importlib

from rlphf_cli.errors import UserError
from rlphf_cli.judges.base import Comparison, Judge, Verdict

JUDGES = {
    "synthetic": "rlphf_cli.judges.synthetic:SyntheticJudge",
    "reward_model": "rlphf_cli.judges.reward_model:RewardModelJudge",
    "llm": "rlphf_cli.judges.llm:LLMJudge",
    "human": "rlphf_cli.judges.human:HumanJudge",
}

__all__ = ["JUDGES", "Comparison", "Judge", "Verdict", "get_judge"]


def get_judge(cfg) -> Judge:
    """Build the judge named by `cfg.eval.judge.kind` from the root config."""
    kind = cfg.eval.judge.kind
    if kind not in JUDGES:
        raise UserError(f"unknown judge {kind!r}; valid choices: {', '.join(JUDGES)}")
    module, attr = JUDGES[kind].split(":")
    return getattr(importlib.import_module(module), attr)(cfg)
