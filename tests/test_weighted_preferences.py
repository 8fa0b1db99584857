import json

import pytest

from conftest import make_random_expert_run
from rlphf_cli.config import compose
from rlphf_cli.decoding.generate import ensure_generations
from rlphf_cli.decoding.soups import soup_name
from rlphf_cli.errors import UserError
from rlphf_cli.evaluation.generations import pair
from rlphf_cli.preferences import parse_weighted_preferences, split_name

CORE = ["P1A", "P1B", "P2A", "P2B", "P3A", "P3B"]
TWO = "P1A:0.9,P2B:0.1;P1A:0.1,P2B:0.9"


def test_a_preference_is_named_by_its_weights_and_the_name_parses_back():
    equal, weighted, spelled = parse_weighted_preferences("P1A,P2B,P3A;P1A:0.6,P2B:0.4;P1A=0.5,P2B=0.5", CORE)
    assert equal.name == "P1A,P2B,P3A" and not equal.weighted  # binary combinations keep their names
    assert weighted.name == "P1A=0.6,P2B=0.4" and weighted.weighted
    assert spelled.name == "P1A,P2B"  # equal weights written out are the binary combination
    (back,) = parse_weighted_preferences(weighted.name, CORE)
    assert back == weighted and split_name(weighted.name) == (["P1A", "P2B"], [0.6, 0.4])
    assert soup_name(["P1A", "P2B"], "psoups", [0.6, 0.4]) != soup_name(["P1A", "P2B"], "psoups", [0.4, 0.6])
    assert soup_name(["P1A", "P2B"], "psoups", [0.5, 0.5]) == "soup_psoups_P1A_P2B"


@pytest.mark.parametrize(
    "spec,message",
    [
        ("P1A:nan,P2B:0.5", "not finite"),
        ("P1A:inf,P2B:0.5", "not finite"),
        ("P1A:-inf,P2B:0.5", "not finite"),
        ("P1A:0.5,P2B:", "empty weight"),
        ("P1A,,P2B", "empty pole"),
        ("P1A,P2B;", "trailing `;`"),
        (";P1A", "stray or trailing"),
        ("P1A:0.5x,P2B:0.5", "bad weight '0.5x'"),
        ("P1A:1e,P2B:0.5", "bad weight"),
        ("P1A:0.5,P2B", "every pole or for none"),
        ("P1A:0,P2B:0", "sum to zero"),
        ("P1A:1e308,P2B:1e308", "sum overflows"),  # each finite; their sum would normalise them to 0
    ],
)
def test_bad_weights_are_user_errors(spec, message):
    with pytest.raises(UserError, match=message):
        parse_weighted_preferences(spec, CORE)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("weighted_run")
    make_random_expert_run(path)
    return path


def small(run_dir, *more):
    return compose(
        [
            f"run_dir={run_dir}",
            "benchmark.max_eval_prompts=3",
            "generate.max_new_tokens=10",
            "generate.greedy=true",
            "model.hidden_size=32",
            "model.intermediate_size=64",
            "model.num_hidden_layers=2",
            *more,
        ]
    )


def texts(path) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for r in map(json.loads, path.read_text().splitlines()):
        out.setdefault(r["combination"], {})[r["prompt_id"]] = r["text"]
    return out


@pytest.mark.parametrize("merge", ["psoups", "delta"])
def test_two_weightings_of_the_same_poles_decode_differently_with_soups(run_dir, merge):
    cfg = small(run_dir, f"generate.preference='{TWO}'", f"generate.soups_merge={merge}")
    out = texts(ensure_generations(cfg, "soups"))
    a, b = out["P1A=0.9,P2B=0.1"], out["P1A=0.1,P2B=0.9"]  # resume keys on the weighted names: both are there
    assert len(a) == len(b) == 3 and a != b
    (run_dir / "generations" / "soups.jsonl").unlink()  # the next merge must not resume these
    (run_dir / "generations" / "soups.settings.json").unlink()
    (run_dir / "generations" / "soups.manifest.json").unlink()


@pytest.mark.slow
def test_mod_keys_on_weights_and_uniform_ignores_them(run_dir):
    first = ensure_generations(small(run_dir, "generate.preference='P1A:0.9,P2B:0.1'"), "mod")
    both = texts(ensure_generations(small(run_dir, f"generate.preference='{TWO}'"), "mod"))
    assert len(first.read_text().splitlines()) == 6  # the first weighting resumed, the second added
    assert both["P1A=0.9,P2B=0.1"] != both["P1A=0.1,P2B=0.9"]
    uniform = texts(ensure_generations(small(run_dir, f"generate.preference='{TWO};P1A,P2B'"), "uniform"))
    # uniform: equal weights by definition, the same greedy text under each weighted name
    assert uniform["P1A=0.9,P2B=0.1"] == uniform["P1A=0.1,P2B=0.9"] == uniform["P1A,P2B"]


def test_eval_pairs_each_weighting_separately():
    row = lambda c, t: {"prompt_id": "q1", "prompt": "p", "combination": c, "text": t}  # noqa: E731
    ours = [row("P1A=0.9,P2B=0.1", "x"), row("P1A=0.1,P2B=0.9", "y")]
    theirs = [row("P1A=0.9,P2B=0.1", "u"), row("P1A=0.1,P2B=0.9", "v")]
    pairs, missing = pair(ours, theirs, "mod", "uniform")
    assert {(p.combination, p.method_text, p.baseline_text) for p in pairs} == {
        ("P1A=0.9,P2B=0.1", "x", "u"),
        ("P1A=0.1,P2B=0.9", "y", "v"),
    }
    assert pairs[0].poles == ["P1A", "P2B"] and not any(missing.values())


def test_generate_and_eval_with_a_user_file(run_dir):
    from rlphf_cli.evaluation.evaluate import evaluate_pair

    (run_dir / "users").mkdir(exist_ok=True)
    body = {"user": "carol", "mixture": {"P1B": 0.2, "P2A": 0.5, "P3A": 0.3}}
    (run_dir / "users" / "carol.json").write_text(json.dumps(body))
    cfg = small(run_dir, "generate.preference=@users/carol.json")
    for method in ("mod", "soups"):
        rows = [json.loads(x) for x in ensure_generations(cfg, method).read_text().splitlines()]
        mine = [r for r in rows if r.get("user") == "carol"]
        assert len(mine) == 3 and {r["combination"] for r in mine} == {"P1B=0.2,P2A=0.5,P3A=0.3"}
        assert mine[0]["weights"] == pytest.approx([0.2, 0.5, 0.3])
    folder = evaluate_pair(cfg, "mod", "soups")
    assert json.loads((folder / "results.json").read_text())["users"] == {"P1B=0.2,P2A=0.5,P3A=0.3": "carol"}
    assert "carol: `P1B=0.2,P2A=0.5,P3A=0.3`" in (folder / "table.md").read_text()
