"""`rlphf pareto` on a tiny run (random experts): files, fronts, one-hot weights equal to the expert alone,
and a Hugging Face reward model from a local folder as the scorer, with its own template."""

import csv
import json

import pytest
import torch

from conftest import make_random_expert_run
from rlphf_cli.config import compose
from rlphf_cli.decoding.generate import ensure_generations
from rlphf_cli.errors import UserError
from rlphf_cli.evaluation.pareto import check_pareto, pareto, seeds_section
from rlphf_cli.evaluation.pareto_scorers import HFRewardModel

pytestmark = pytest.mark.slow  # starts servers or decodes every method: over a second each on 2 cores

TINY = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=2"]
TEMPLATE = "question: {prompt} answer: {response}"


def make_reward_model(folder, run_dir):
    """A random one-output LLaMA sequence classifier with the run's tokenizer, saved as safetensors."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(run_dir / "base")
    torch.manual_seed(3)
    model = LlamaForSequenceClassification(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=4,
            num_labels=1,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pareto_run")
    make_random_expert_run(run_dir)
    rm = make_reward_model(tmp_path_factory.mktemp("rm"), run_dir)
    overrides = [
        f"run_dir={run_dir}",
        *TINY,
        "pareto.objective_sets=P1A,P2A;P1A,P2A,P3B",
        "pareto.methods=[mod,soups,soups:dare_linear_svd,sft,uniform]",
        "pareto.lattice=3",
        "pareto.prompts=3",
        "pareto.max_new_tokens=8",
        "pareto.bootstrap_samples=40",
        f"pareto.scorer=hf:{rm}",
        f"pareto.hf_template='{TEMPLATE}'",
        "pareto.batch_size=4",
    ]
    cfg = compose(overrides)
    root = pareto(cfg)
    return run_dir, rm, cfg, root


def read_csv(path):
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_sweep_writes_mod_layout_csvs_means_fronts_and_figures(swept):
    run_dir, _, _, root = swept
    two = root / "P1A-P2A"
    rows = read_csv(two / "mod" / "eval_data_pref0.5_0.5.csv")
    assert list(rows[0]) == ["prompt", "response", "obtained_score1", "obtained_score2"] and len(rows) == 3
    means = json.loads((two / "mod" / "means_pref0.5_0.5.json").read_text())
    assert means["means"][0] == pytest.approx(sum(float(r["obtained_score1"]) for r in rows) / 3, abs=1e-5)
    assert means["ci_low"][0] <= means["means"][0] <= means["ci_high"][0]
    assert (two / "sft" / "eval_data_reference.csv").is_file()
    three = json.loads((root / "P1A-P2A-P3B" / "results.json").read_text())
    assert len(three["weights"]) == 13 and len(three["methods"]["mod"]["points"]) == 13  # MOD's 13 points
    assert read_csv(root / "P1A-P2A-P3B" / "mod" / "eval_data_pref0.8_0.1_0.1.csv")[0]["obtained_score3"]
    result = json.loads((two / "results.json").read_text())
    ref = result["reference_point"]
    assert result["reference"] == "auto" and len(ref) == 2
    for label in ("mod", "soups", "soups-dare_linear_svd", "sft", "uniform"):
        x = result["methods"][label]
        assert x["pareto_set"] and x["hv"] >= 0 and x["hv_ci"][0] <= x["hv_ci"][1]
        assert x["mip_ci"][0] <= x["mip"] + 1e-9 or x["mip_ci"][0] <= x["mip_ci"][1]
    assert len(result["methods"]["sft"]["points"]) == 1 and not result["methods"]["sft"]["takes_weights"]
    for suffix in ("png", "svg"):
        assert (two / f"front.{suffix}").stat().st_size > 1000
        assert (root / "P1A-P2A-P3B" / f"front.{suffix}").stat().st_size > 1000
    table = (root / "table.md").read_text()
    assert "| mod | 3 |" in table and "sft (reference)" in table and "P1A vs P2A vs P3B" in table
    # every method's rows of both sets went through one generations file
    records = (root / "generations" / "mod.jsonl").read_text().splitlines()
    assert len(records) == 3 * (3 + 13)
    # over seeds: HV and MIP as mean ± sd
    lines = seeds_section([run_dir, run_dir])
    assert any(line.startswith("| P1A vs P2A | mod |") and "n=2" in line for line in lines)


def test_one_hot_weights_equal_the_expert_alone(swept):
    run_dir, rm, cfg, root = swept
    scorer = HFRewardModel(str(rm), TEMPLATE, 1024, torch.device("cpu"))
    for pole, tag, column in (("P1A", "1_0", "obtained_score1"), ("P2A", "0_1", "obtained_score2")):
        alone = compose(
            [
                f"run_dir={run_dir / 'alone'}",
                *TINY,
                "benchmark.max_eval_prompts=3",
                "generate.max_new_tokens=8",
                "generate.greedy=true",
                f"generate.preference={pole}",
            ]
        )
        import shutil

        if not (run_dir / "alone").exists():
            shutil.copytree(run_dir / "base", run_dir / "alone" / "base")
            shutil.copytree(run_dir / "experts", run_dir / "alone" / "experts")
        expert = [json.loads(x) for x in ensure_generations(alone, "mod").read_text().splitlines()]
        expert = {r["prompt"]: r["text"] for r in expert if r["combination"] == pole}
        expected = scorer.score(pole, list(expert), list(expert.values()))
        for label in ("mod", "soups", "soups-dare_linear_svd"):
            rows = read_csv(root / "P1A-P2A" / label / f"eval_data_pref{tag}.csv")
            assert {r["prompt"]: r["response"] for r in rows} == expert, (label, pole)
            got = [float(r[column]) for r in rows]
            assert got == pytest.approx([expected[list(expert).index(r["prompt"])] for r in rows], abs=1e-4)
    # and the two ends differ (the sweep moves something)
    a = read_csv(root / "P1A-P2A" / "mod" / "eval_data_pref1_0.csv")
    b = read_csv(root / "P1A-P2A" / "mod" / "eval_data_pref0_1.csv")
    assert [r["response"] for r in a] != [r["response"] for r in b]


def test_hf_scorer_reads_its_own_template(swept):
    _, rm, _, _ = swept
    scorer = HFRewardModel(str(rm), TEMPLATE, 1024, torch.device("cpu"))
    assert scorer.text("why", "because") == "question: why answer: because"
    hh = HFRewardModel(str(rm), "auto", 1024, torch.device("cpu"))
    assert hh.text("why", "because") == "\n\nHuman: why\n\nAssistant: because"
    one, two = scorer.score("P1A", ["why", "why"], ["because it is", "because it is"])
    assert one == pytest.approx(two)
    with pytest.raises(UserError, match="cannot load reward model|not found"):
        HFRewardModel(str(rm / "missing"), "auto", 1024, torch.device("cpu"))


def test_by_default_every_registered_method_is_swept():
    from rlphf_cli.evaluation.pareto import method_table, sweep_methods

    swept = sweep_methods(compose([]))
    labels = [m.label for m in swept]
    assert set(method_table()) <= set(labels) and {"soups-ties_svd", "soups-dare_linear_svd"} <= set(labels)
    assert {m.label for m in swept if not m.takes_weights} == {"sft", "prompted", "uniform"}
    first_reference = min(i for i, m in enumerate(swept) if not m.takes_weights)
    assert all(not m.takes_weights for m in swept[first_reference:])  # weighted methods first


@pytest.mark.parametrize(
    "override, message",
    [
        ("pareto.objective_sets=P1A", "two or three"),
        ("pareto.objective_sets=P1A,P9Z", "unknown pole"),
        ("pareto.methods=[mod,nope]", "unknown pareto method"),
        ("pareto.methods=[mod:ties_svd]", "only soups takes a merge"),
        ("pareto.scorer=oracle", "unknown scorer"),
        ("pareto.scorers=P3B:judge", "in no objective set"),
        ("pareto.reference=0,0,0", "has 3 numbers"),
        ("pareto.lattice=1", "at least 2"),
        ("pareto.simplex=dense", "unknown pareto.simplex"),
        ("pareto.hf_template=plain", "hf_template"),
    ],
)
def test_bad_pareto_settings_are_one_line_errors(override, message):
    cfg = compose(["pareto.objective_sets=P1A,P2A", override])
    with pytest.raises(UserError, match=message):
        check_pareto(cfg)
