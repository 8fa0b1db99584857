"""The benchmark's programmatic pairwise judges (the synthetic world's per-pole scores)."""

from __future__ import annotations

from rlphf_cli.errors import UserError
from rlphf_cli.judges.base import Comparison, Verdict


class SyntheticJudge:
    kind = "synthetic"

    def __init__(self, cfg):
        from rlphf_cli.benchmarks import get_benchmark

        self.benchmark = get_benchmark(cfg.benchmark)
        if not hasattr(self.benchmark, "compare"):
            raise UserError(
                f"benchmark {self.benchmark.name!r} has no programmatic judge; "
                "use eval.judge.kind=llm or eval.judge.kind=reward_model"
            )

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "benchmark": self.benchmark.name,
            "tie_margin": self.benchmark.cfg.tie_margin,
        }

    def judge(self, comparisons: list[Comparison]) -> list[Verdict]:
        return [Verdict(self.benchmark.compare(c.pole, c.prompt, c.a, c.b)) for c in comparisons]
