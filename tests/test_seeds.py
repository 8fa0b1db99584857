"""Results across seeds: `<root>/seed<N>/` run folders gathered into one report of mean ± sd over seeds."""

import json

import pytest
from helpers import config, write_generations

from rlphf_cli.errors import UserError
from rlphf_cli.evaluation.evaluate import evaluate, evaluate_pair
from rlphf_cli.evaluation.report import report
from rlphf_cli.evaluation.seeds import aggregate_markdown, mean_sd, seed_runs, spread

SYNTHETIC = {"kind": "synthetic"}
LLM = {"kind": "llm", "model": "judge-7b", "base_url": "http://localhost:8000/v1"}
COMBINATION = "P1A,P2A,P3A"


def write_eval(run, method, baseline, counts, judge=SYNTHETIC, missing=None):
    """eval/<method>_vs_<baseline>/ as `rlphf eval` writes it, with (wins, ties, losses) of `method` per pole."""
    judgments = []
    for pole, (wins, ties, losses) in counts.items():
        winners = [method] * wins + ["tie"] * ties + [baseline] * losses
        for i, winner in enumerate(winners):
            first = method if i % 2 else baseline
            verdict = "TIE" if winner == "tie" else ("A" if winner == first else "B")
            judgments.append(
                {
                    "prompt_id": f"eval-{i}",
                    "combination": COMBINATION,
                    "pole": pole,
                    "first": first,
                    "verdict": verdict,
                    "winner": winner,
                }
            )
    results = {
        "method": method,
        "baseline": baseline,
        "judge": judge,
        "seed": 0,
        "bootstrap_samples": 50,
        "generations": {m: f"{run}/generations/{m}.jsonl" for m in (method, baseline)},
        "missing": missing or {method: [], baseline: []},
        "judgments": judgments,
    }
    folder = run / "eval" / f"{method}_vs_{baseline}"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results))
    manifest = {
        "kind": "eval",
        "method": method,
        "baseline": baseline,
        "judge": judge,
        "partial": bool(missing),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))


def write_manifest(run, relpath, **fields):
    folder = run / relpath
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(fields))


def rows_after(text, heading):
    """The rows of the first table after `heading`, by their first cell."""
    lines = text.splitlines()
    start = lines.index(heading)
    rows = {}
    for line in lines[start + 1 :]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture
def three_seeds(tmp_path):
    """pcm vs soups in every seed (different judgment counts per seed), soups vs prompted in seeds 0 and 2."""
    runs = [tmp_path / f"seed{n}" for n in range(3)]
    # overall 14/20 = 0.70; P1A 0.6, P2A 0.8
    write_eval(runs[0], "pcm", "soups", {"P1A": (6, 0, 4), "P2A": (8, 0, 2)})
    # overall 19/30 = 0.6333; P1A 0.7, P2A 0.5
    write_eval(runs[1], "pcm", "soups", {"P1A": (14, 0, 6), "P2A": (5, 0, 5)})
    # overall 17/20 = 0.85 (2 ties); P1A 0.9, P2A 0.8
    write_eval(runs[2], "pcm", "soups", {"P1A": (9, 0, 1), "P2A": (7, 2, 1)})
    write_eval(runs[0], "soups", "prompted", {"P1A": (3, 0, 1)})  # 0.75
    write_eval(runs[2], "soups", "prompted", {"P1A": (1, 0, 3)}, missing={"prompted": ["eval-7|P1A,P2A,P3A"]})
    for run, greedy, sampled, accuracy in zip(runs, (0.6, 0.8, None), (0.5, 0.7, 0.4), (0.9, 0.8, 0.7)):
        metrics = {"win_rate_vs_base": greedy, "wins": 3, "losses": 2, "ties": 0}
        if run.name != "seed1":
            metrics["sampled"] = {"decoding": "temperature 1.0", "win_rate_vs_base": sampled}
        write_manifest(run, "experts/P1A", kind="expert", pole="P1A", algo="dpo", metrics=metrics)
        write_manifest(run, "rm/P1A", kind="reward_model", pole="P1A", metrics={"heldout_accuracy": accuracy})
    write_manifest(runs[1], "rm/P2A", kind="reward_model", pole="P2A", metrics={})  # no accuracy recorded
    (runs[2] / "rm" / "P2A").mkdir(parents=True)
    (runs[2] / "rm" / "P2A" / "manifest.json").write_text("{not json")
    return tmp_path


def test_mean_sd_is_the_sample_standard_deviation():
    assert mean_sd([0.6, 0.7, 0.8]) == pytest.approx((0.7, 0.1, 0.6, 0.8))
    assert mean_sd([0.5]) == (0.5, None, 0.5, 0.5)
    assert spread([0.6, None, 0.8]) == "70.0 ± 14.1 (60.0–80.0) n=2"  # sd of 0.6, 0.8: 0.2 / sqrt(2)
    assert spread([0.5, None]) == "50.0 n=1"
    assert spread([None]) == "—"
    with pytest.raises(ValueError):
        mean_sd([])


def test_seed_runs_are_the_seed_folders_with_an_evaluation_in_numeric_order(three_seeds):
    root = three_seeds
    write_eval(root / "seed10", "pcm", "soups", {"P1A": (1, 0, 0)})
    (root / "seed3" / "eval" / "pcm_vs_soups.partial").mkdir(parents=True)  # unfinished: not a seed run
    (root / "seed4").write_text("")
    write_eval(root / "seedling", "pcm", "soups", {"P1A": (1, 0, 0)})
    assert seed_runs(root) == [root / "seed0", root / "seed1", root / "seed2", root / "seed10"]
    assert seed_runs(root / "seed0") == [] and seed_runs(root / "nowhere") == []


def test_every_cell_is_mean_sd_min_max_over_seeds(three_seeds):
    text = aggregate_markdown(seed_runs(three_seeds))
    assert "3 seeds, run folders: seed0, seed1, seed2." in text and f"under {three_seeds.name}\n" in text
    assert str(three_seeds.parent) not in text  # names, not where the runs are kept
    assert text.count("## Judge:") == 1

    main = rows_after(text, "## Judge: synthetic")
    assert main["method \\ baseline"] == ["prompted", "soups"]
    # overall per seed 0.70, 0.6333, 0.85: mean 0.7278, sd 0.1110 (the judgments pooled would give 50/70 = 71.4)
    assert main["pcm"] == ["—", "72.8 ± 11.1 (63.3–85.0) n=3"]
    # 0.75 and 0.25 in seeds 0 and 2, none in seed 1; partial in seed 2
    assert main["soups"] == ["50.0 ± 35.4 (25.0–75.0) n=2*", "—"]

    poles = rows_after(text, "### Per pole (judge: synthetic)")
    assert poles["method vs baseline"] == ["P1A", "P2A", "overall", "judgments (all seeds)"]
    assert poles["pcm vs soups"] == [
        "73.3 ± 15.3 (60.0–90.0) n=3",  # 0.6, 0.7, 0.9
        "70.0 ± 17.3 (50.0–80.0) n=3",  # 0.8, 0.5, 0.8
        "72.8 ± 11.1 (63.3–85.0) n=3",
        "70",
    ]
    assert poles["soups vs prompted*"] == [
        "50.0 ± 35.4 (25.0–75.0) n=2",
        "—",
        "50.0 ± 35.4 (25.0–75.0) n=2",
        "8",
    ]


def test_experts_and_reward_models_over_seeds_skip_what_is_missing(three_seeds):
    text = aggregate_markdown(seed_runs(three_seeds))
    experts = rows_after(text, "| pole | algo | greedy | sampled |")
    # greedy 0.6, 0.8 (seed 2 had no decided judgment); sampled 0.5, 0.4 (seed 1 has none)
    assert experts["P1A"] == ["dpo", "70.0 ± 14.1 (60.0–80.0) n=2", "45.0 ± 7.1 (40.0–50.0) n=2"]
    rms = rows_after(text, "| pole | accuracy |")
    assert rms["P1A"] == ["80.0 ± 10.0 (70.0–90.0) n=3"]
    assert rms["P2A"] == ["—"]  # no accuracy in seed 1, unreadable manifest in seed 2


def test_judges_are_never_averaged_together(tmp_path):
    write_eval(tmp_path / "seed0", "pcm", "soups", {"P1A": (8, 0, 2)})
    write_eval(tmp_path / "seed1", "pcm", "soups", {"P1A": (2, 0, 8)}, judge=LLM)
    text = aggregate_markdown(seed_runs(tmp_path))
    assert rows_after(text, "## Judge: synthetic")["pcm"] == ["80.0 n=1"]
    assert rows_after(text, "## Judge: llm (judge-7b at http://localhost:8000/v1)")["pcm"] == ["20.0 n=1"]


@pytest.mark.slow
def test_report_on_the_seeds_parent_writes_report_md(tmp_path):
    for n in (0, 1):
        run = tmp_path / f"seed{n}"
        write_generations(run, "pcm", seed=n)
        write_generations(run, "soups", seed=10 + n)
        write_generations(run, "prompted", seed=20 + n)
        evaluate(config(run))
        evaluate_pair(config(run), "soups", "prompted")
    rates = [
        [
            json.loads((tmp_path / f"seed{n}" / "eval" / pair / "manifest.json").read_text())["win_rate"]
            for n in (0, 1)
        ]
        for pair in ("pcm_vs_soups", "soups_vs_prompted")
    ]

    path = report(config(tmp_path))
    assert path == tmp_path / "report.md" and not (tmp_path / "eval").exists()
    main = rows_after(path.read_text(), "## Judge: synthetic")
    for (method, column), (a, b) in zip((("pcm", 1), ("soups", 0)), rates):
        mean, sd = (a + b) / 2, abs(a - b) / 2**0.5
        expected = f"{100 * mean:.1f} ± {100 * sd:.1f} ({100 * min(a, b):.1f}–{100 * max(a, b):.1f}) n=2"
        assert main[method][column] == expected


def test_report_on_one_seed_or_an_ordinary_run_is_the_ordinary_report(tmp_path):
    write_eval(tmp_path / "seed0", "pcm", "soups", {"P1A": (8, 0, 2)})
    path = report(config(tmp_path))
    assert path == tmp_path / "seed0" / "eval" / "report.md" and not (tmp_path / "report.md").exists()
    assert "# Evaluation report:" in path.read_text() and "n=1" not in path.read_text()

    write_eval(tmp_path / "seed1", "pcm", "soups", {"P1A": (6, 0, 4)})
    write_eval(tmp_path, "pcm", "soups", {"P1A": (5, 0, 5)})  # the folder is a run of its own: seeds ignored
    assert report(config(tmp_path)) == tmp_path / "eval" / "report.md"
    assert not (tmp_path / "report.md").exists()


def test_report_without_evaluations_or_seed_runs_is_a_user_error(tmp_path):
    (tmp_path / "seed0" / "eval").mkdir(parents=True)
    with pytest.raises(UserError, match="no evaluations in .*: run `rlphf eval` first"):
        report(config(tmp_path))
