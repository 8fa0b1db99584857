"""`rlphf eval` on hand-written generations from the synthetic world, judged by the synthetic judge."""

import json
import subprocess
import sys
import types

import pytest
from helpers import config, generation_rows, write_generations

from rlphf_cli.errors import UserError
from rlphf_cli.evaluation.evaluate import evaluate, evaluate_pair, swapped
from rlphf_cli.evaluation.scoring import ALL, OVERALL, rescore, summarize
from rlphf_cli.evaluation.tables import csv_text, markdown
from rlphf_cli.judges import Verdict


@pytest.fixture
def run_dir(tmp_path):
    write_generations(tmp_path, "pcm")
    write_generations(tmp_path, "soups")
    return tmp_path


def test_pcm_vs_soups_with_the_synthetic_judge(run_dir):
    (out,) = evaluate(config(run_dir, "eval.baseline=soups"))
    assert out == run_dir / "eval" / "pcm_vs_soups"
    assert {p.name for p in out.iterdir()} == {
        "results.json",
        "table.md",
        "table.csv",
        "heatmap.png",
        "manifest.json",
    }
    assert not (run_dir / "eval" / "pcm_vs_soups.partial").exists()
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    results = json.loads((out / "results.json").read_text())
    judgments = results["judgments"]
    assert len(judgments) == 4 * 8 * 3  # prompts x combinations x requested poles
    for j in judgments:
        assert j["pole"] in j["combination"].split(",")
        assert j["first"] in ("pcm", "soups") and j["verdict"] in ("A", "B", "TIE")
        second = "soups" if j["first"] == "pcm" else "pcm"
        assert j["winner"] == {"A": j["first"], "B": second, "TIE": "tie"}[j["verdict"]]
    shown_first = sum(j["first"] == "soups" for j in judgments) / len(judgments)
    assert 0.35 < shown_first < 0.65  # the order is swapped at random

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "eval" and manifest["partial"] is False
    assert manifest["win_rate"] > 0.8  # outputs that follow the combination beat neutral ones
    assert manifest["ci"][0] <= manifest["win_rate"] <= manifest["ci"][1]
    table = (out / "table.md").read_text()
    assert "# pcm vs soups" in table and "partial" not in table.lower()
    assert "| P1A,P2A,P3A |" in table and "| all |" in table


def test_tables_can_be_recomputed_from_results_json(run_dir):
    (out,) = evaluate(config(run_dir))
    summary = rescore(out)
    assert csv_text(summary) == (out / "table.csv").read_text()
    assert markdown(summary) == (out / "table.md").read_text()
    overall = summary.cells[(ALL, OVERALL)]
    assert overall.judgments + overall.unparseable == 96
    # the win rate is the judgments' own; the interval is the bootstrap's and follows its size
    fewer = rescore(out, bootstrap_samples=50).overall
    assert fewer.win_rate == overall.win_rate and (fewer.ci_low, fewer.ci_high) != (
        overall.ci_low,
        overall.ci_high,
    )
    assert rescore(out, bootstrap_samples=0).overall.ci_low is None


def test_swaps_are_seeded():
    coins = [swapped(0, f"p{i}", "P1A,P2A,P3A", "P1A") for i in range(200)]
    assert coins == [swapped(0, f"p{i}", "P1A,P2A,P3A", "P1A") for i in range(200)]
    assert coins != [swapped(1, f"p{i}", "P1A,P2A,P3A", "P1A") for i in range(200)]
    assert 70 < sum(coins) < 130


def test_win_rate_counts_ties_as_half_and_leaves_out_unparseable():
    def j(pid, pole, winner):
        return {"prompt_id": pid, "combination": "P1A,P2A,P3A", "pole": pole, "winner": winner}

    judgments = [
        j("a", "P1A", "m"),
        j("a", "P2A", "tie"),
        j("b", "P1A", "b"),
        j("b", "P2A", None),
        j("c", "P1A", "m"),
        j("c", "P3A", None),
    ]
    results = {"method": "m", "baseline": "b", "seed": 0, "bootstrap_samples": 500, "judgments": judgments}
    summary = summarize(results)
    overall = summary.overall
    counts = (overall.judgments, overall.wins, overall.ties, overall.losses, overall.unparseable)
    assert counts == (4, 2, 1, 1, 2)
    assert overall.win_rate == pytest.approx((2 + 0.5) / 4)
    assert 0 <= overall.ci_low <= overall.win_rate <= overall.ci_high <= 1
    assert summary.cells[(ALL, "P3A")].win_rate is None  # only an unparseable answer: no rate, not a tie
    assert summary.cells[(ALL, "P1A")].win_rate == pytest.approx(2 / 3)
    assert summarize(results).overall.ci_low == overall.ci_low  # the bootstrap is seeded


def test_missing_generations_are_named_and_the_rest_judged(tmp_path):
    pcm = generation_rows("pcm", True)
    dropped = pcm.pop(0)
    soups = generation_rows("soups", False)
    soups[5]["text"] = None  # a failed generation counts as missing
    write_generations(tmp_path, "pcm", pcm)
    write_generations(tmp_path, "soups", soups)
    (out,) = evaluate(config(tmp_path))
    results = json.loads((out / "results.json").read_text())
    assert results["missing"]["pcm"] == [f"{dropped['prompt_id']} ({dropped['combination']})"]
    assert results["missing"]["soups"] == [f"{soups[5]['prompt_id']} ({soups[5]['combination']})"]
    assert len(results["judgments"]) == (32 - 2) * 3
    table = (out / "table.md").read_text()
    assert "(partial)" in table and dropped["prompt_id"] in table
    assert json.loads((out / "manifest.json").read_text())["partial"] is True


@pytest.mark.slow
def test_missing_generations_are_generated_first(tmp_path, monkeypatch):
    write_generations(tmp_path, "soups")
    calls = []

    def ensure_generations(cfg, method):
        calls.append(method)
        return write_generations(tmp_path, method)

    fake = types.ModuleType("rlphf_cli.decoding.generate")
    fake.ensure_generations = ensure_generations
    monkeypatch.setitem(sys.modules, "rlphf_cli.decoding.generate", fake)
    write_generations(tmp_path, "pcm", complete=False)  # a file without its manifest is not complete
    (out,) = evaluate(config(tmp_path))
    assert calls == ["pcm"] and (out / "manifest.json").is_file()


@pytest.mark.slow
def test_baseline_all_uses_every_method_that_has_or_can_get_generations(run_dir, monkeypatch):
    write_generations(run_dir, "prompted", generation_rows("prompted", False, seed=3))

    def ensure_generations(cfg, method):
        if method == "mod":
            return write_generations(run_dir, "mod", generation_rows("mod", False, seed=4))
        raise UserError(f"no experts for {method}")

    fake = types.ModuleType("rlphf_cli.decoding.generate")
    fake.ensure_generations = ensure_generations
    monkeypatch.setitem(sys.modules, "rlphf_cli.decoding.generate", fake)
    outs = evaluate(config(run_dir, "eval.baseline=all"))
    assert [p.name for p in outs] == ["pcm_vs_prompted", "pcm_vs_soups", "pcm_vs_mod"]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["eval.method=soups", "eval.baseline=soups"], "method and baseline are both 'soups'"),
        (["eval.baseline=nope"], "unknown method 'nope'; valid choices: sft, prompted, soups"),
        (["eval.judge.kind=nope"], "unknown judge 'nope'; valid choices: synthetic, reward_model, llm"),
    ],
)
def test_bad_choices_are_user_errors(run_dir, overrides, message):
    with pytest.raises(UserError, match=message):
        evaluate(config(run_dir, *overrides))


class RecordingJudge:
    kind = "synthetic"

    def __init__(self, fail=False):
        self.calls, self.fail = 0, fail

    def describe(self):
        return {"kind": "synthetic", "benchmark": "synthetic", "tie_margin": 0.05}

    def judge(self, comparisons):
        self.calls += 1
        if self.fail:
            raise UserError("judge API at http://127.0.0.1:9 failed after 3 attempts")
        return [Verdict("TIE") for _ in comparisons]


@pytest.mark.slow
def test_an_up_to_date_evaluation_is_not_judged_again(run_dir):
    cfg = config(run_dir)
    evaluate(cfg)
    judge = RecordingJudge()
    evaluate_pair(cfg, "pcm", "soups", judge)
    assert judge.calls == 0  # same generations, judge and seed
    write_generations(run_dir, "soups", generation_rows("soups", False, seed=9))
    evaluate_pair(cfg, "pcm", "soups", judge)
    assert judge.calls == 1


def test_a_failed_evaluation_leaves_the_previous_one_untouched(run_dir):
    cfg = config(run_dir)
    (out,) = evaluate(cfg)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    write_generations(run_dir, "soups", generation_rows("soups", False, seed=9))
    with pytest.raises(UserError):
        evaluate_pair(cfg, "pcm", "soups", RecordingJudge(fail=True))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not (run_dir / "eval" / "pcm_vs_soups.partial").exists()


@pytest.mark.slow
def test_cli_eval_baseline_soups_then_report(run_dir):
    def rlphf(*args):
        return subprocess.run(
            [sys.executable, "-m", "rlphf_cli", *args], capture_output=True, text=True, timeout=120
        )

    out = rlphf("eval", "--baseline", "soups", f"run_dir={run_dir}", "bootstrap_samples=100")
    assert out.returncode == 0, out.stderr
    assert "pcm vs soups" in out.stdout and "overall" in out.stdout
    assert (run_dir / "eval" / "pcm_vs_soups" / "manifest.json").is_file()
    out = rlphf("report", f"run_dir={run_dir}")
    assert out.returncode == 0, out.stderr
    assert "| pcm |" in (run_dir / "eval" / "report.md").read_text()
