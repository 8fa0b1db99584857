"""The run's per-pole reward models as a judge: the higher score wins, a tie within `tie_margin`."""

from __future__ import annotations

import json
from collections import defaultdict

from rlphf_cli.judges.base import Comparison, Verdict
from rlphf_cli.runs import RunDir


class RewardModelJudge:
    kind = "reward_model"

    def __init__(self, cfg):
        from rlphf_cli.rewards import get_reward

        self.reward = get_reward(cfg, "reward_model")
        self.tie_margin = float(cfg.eval.judge.tie_margin)
        self.rm_dir = RunDir(cfg.run_dir).root / "rm"

    def describe(self) -> dict:
        """Kind, margin and the reward models' content hashes, so that retrained models are a new judge."""
        models = {}
        for manifest in sorted(self.rm_dir.glob("*/manifest.json")):
            models[manifest.parent.name] = (json.loads(manifest.read_text()).get("content_hash") or "")[:12]
        return {"kind": self.kind, "tie_margin": self.tie_margin, "models": models}

    def judge(self, comparisons: list[Comparison]) -> list[Verdict]:
        by_pole: dict[str, list[int]] = defaultdict(list)
        for i, c in enumerate(comparisons):
            by_pole[c.pole].append(i)
        out: list[Verdict | None] = [None] * len(comparisons)
        for pole, idx in by_pole.items():  # one batch per pole: one reward model loaded at a time
            prompts = [comparisons[i].prompt for i in idx]
            score_a = self.reward.score(pole, prompts, [comparisons[i].a for i in idx])
            score_b = self.reward.score(pole, prompts, [comparisons[i].b for i in idx])
            for i, sa, sb in zip(idx, score_a, score_b, strict=True):
                out[i] = Verdict(self.verdict(sa, sb), detail={"score_a": sa, "score_b": sb})
        return out  # type: ignore[return-value]

    def verdict(self, score_a: float, score_b: float) -> str:
        if abs(score_a - score_b) <= self.tie_margin:
            return "TIE"
        return "A" if score_a > score_b else "B"
