"""People as the judge: the answers of a study made with `rlphf annotate` (`eval.judge.study`).

It judges nothing new: `rlphf eval eval.judge.kind=human` reads the study's answers into the same win-rate
tables (evaluation/human.py), with intervals over prompts and raters and the agreement figures.
"""

from __future__ import annotations

from rlphf_cli.annotate.study import answers_path, check_study_name, load_study
from rlphf_cli.errors import UserError
from rlphf_cli.judges.base import Comparison, Verdict


class HumanJudge:
    kind = "human"
    reads_annotations = True

    def __init__(self, cfg):
        self.study = check_study_name(cfg.eval.judge.study)
        self.min_gold_pass = float(cfg.eval.judge.min_gold_pass)
        if not 0 <= self.min_gold_pass <= 1:
            raise UserError(f"eval.judge.min_gold_pass must be in [0, 1], got {self.min_gold_pass}")
        self.body = load_study(cfg.run_dir, self.study)
        self.answers_path = answers_path(cfg.run_dir, self.study)

    def describe(self) -> dict:
        return {"kind": self.kind, "study": self.study, "min_gold_pass": self.min_gold_pass}

    def judge(self, comparisons: list[Comparison]) -> list[Verdict]:
        raise UserError(
            "the human judge reads a study's answers and judges nothing new: run `rlphf annotate` for the pairs"
        )
