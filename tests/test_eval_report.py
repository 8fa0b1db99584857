"""`rlphf report`: every evaluation of the run in one table of methods x baselines."""

import pytest
from helpers import config, generation_rows, write_generations

from rlphf_cli.errors import UserError
from rlphf_cli.evaluation.evaluate import evaluate, evaluate_pair
from rlphf_cli.evaluation.report import report


@pytest.mark.slow
def test_report_gathers_every_evaluation(tmp_path):
    write_generations(tmp_path, "pcm")
    write_generations(tmp_path, "soups")
    prompted = generation_rows("prompted", False, seed=5)
    del prompted[3]
    write_generations(tmp_path, "prompted", prompted)
    cfg = config(tmp_path)
    evaluate(cfg)
    evaluate_pair(cfg, "pcm", "prompted")
    evaluate_pair(cfg, "soups", "prompted")
    (tmp_path / "eval" / "mod_vs_soups.partial").mkdir()  # an unfinished evaluation is left out

    path = report(cfg)
    assert path == tmp_path / "eval" / "report.md"
    text = path.read_text()
    assert "## Judge: synthetic" in text
    assert "| method \\ baseline | prompted | soups |" in text
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    pcm, soups = rows["pcm"].split(" | "), rows["soups"].split(" | ")
    assert pcm[1].endswith("*")  # pcm vs prompted: one prompted generation missing, so partial
    assert "[" in pcm[2] and not pcm[2].endswith("*")
    assert soups[2].strip(" |") == "—"  # soups vs soups was not evaluated
    assert "| pcm vs soups |" in text and "P3B" in text  # the per-pole table
    assert "mod" not in text
    assert text.startswith(f"# Evaluation report: {tmp_path.name}\n")  # the run's name, not where it is
    assert str(tmp_path.parent) not in text


def test_report_heading_names_the_run():
    from pathlib import Path

    from rlphf_cli.evaluation.report import run_name

    assert run_name(Path("/home/someone/runs/demo")) == "demo"
    assert run_name(Path("/home/someone/runs/demo/seed2")) == "demo/seed2"


@pytest.mark.slow
def test_report_separates_judges(tmp_path, monkeypatch):
    import rlphf_cli.rewards

    class Flat:
        def score(self, pole, prompts, responses):
            return [0.0] * len(responses)

    monkeypatch.setattr(rlphf_cli.rewards, "get_reward", lambda cfg, kind: Flat())
    write_generations(tmp_path, "pcm")
    write_generations(tmp_path, "soups")
    write_generations(tmp_path, "uniform", generation_rows("uniform", False, seed=2))
    evaluate(config(tmp_path))
    evaluate(config(tmp_path, "eval.baseline=uniform", "eval.judge.kind=reward_model"))
    text = report(config(tmp_path)).read_text()
    assert "## Judge: synthetic" in text and "## Judge: reward_model" in text
    assert "| pcm | 50.0 [50.0, 50.0] |" in text  # a flat reward model ties everything


def test_report_without_evaluations_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no evaluations in .*: run `rlphf eval` first"):
        report(config(tmp_path))
