import json
import random
import subprocess
import sys

import numpy as np
import pytest

from rlphf_cli.benchmarks import get_benchmark
from rlphf_cli.config import compose
from rlphf_cli.decoding.generate import method_settings
from rlphf_cli.errors import UserError
from rlphf_cli.personalize.candidates import candidate_prompts
from rlphf_cli.personalize.model import (
    Posterior,
    cosine,
    fit,
    mixture,
    most_uncertain,
    two_pole_dimensions,
    uncertainty,
)
from rlphf_cli.personalize.users import load_user_preference
from rlphf_cli.preferences import POLES, Preference, all_combinations
from rlphf_cli.runs import atomic_write_json

DIMS = {"P1": ("P1A", "P1B"), "P2": ("P2A", "P2B"), "P3": ("P3A", "P3B")}


def rlphf(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "rlphf_cli", *args], capture_output=True, text=True, input=stdin, timeout=300
    )


def test_mle_recovers_known_strengths_from_noiseless_answers():
    rng = np.random.default_rng(0)
    true = np.array([2.0, -1.0, 0.5])
    diffs = rng.uniform(-1, 1, size=(300, 3))
    choices = ["A" if d @ true > 0 else "B" for d in diffs]
    post = fit(diffs, choices, l2=0.01)
    assert cosine(post.mean, true) > 0.99
    assert np.all(np.linalg.eigvalsh(post.cov) > 0)
    mix = mixture(post.mean, DIMS)
    assert list(mix) == ["P1A", "P2B", "P3A"]  # the sign picks the pole
    assert mix["P1A"] == pytest.approx(2 / 3.5, abs=0.05) and sum(mix.values()) == pytest.approx(1)
    # ties count half each way: a tie-only answer set leaves the strengths at zero
    assert np.allclose(fit(diffs[:5], ["TIE"] * 5, l2=1.0).mean, 0)


def test_active_choice_picks_the_most_uncertain_pair():
    post = Posterior(np.array([3.0, 0.0, 0.0]), np.diag([0.01, 1.0, 0.01]), 4)
    pairs = np.array(
        [
            [1.0, 0.0, 0.0],  # along a dimension the posterior is sure about, and far from 50/50
            [0.0, 0.5, 0.0],  # along the uncertain dimension: the one to ask
            [0.0, 0.0, 1.0],  # 50/50 but a well-known dimension
            [0.0, 0.2, 0.0],
        ]
    )
    assert most_uncertain(post, pairs) == 1
    assert most_uncertain(post, pairs, exclude=[1]) == 3
    # with no answers (the prior) the largest difference is the most informative question
    assert most_uncertain(Posterior.prior(3, 1.0), pairs) == 0


def pref_max_norm_vector(candidates, V, M, u):
    """PReF's released `max_norm_vector` (idanshen/PReF_code utils/inference.py, use_derivitaive=True), restated:
    the candidate maximising sigma'(u . v)^2 * v^T M^-1 v, M = prior + sum_i sigma'(u . v_i) v_i v_i^T."""
    best, best_i = -np.inf, None
    m_inv = np.linalg.inv(M)
    for i in candidates:
        v = V[i]
        s = 1 / (1 + np.exp(-(u @ v)))
        value = (s * (1 - s)) ** 2 * (v @ m_inv @ v)
        if value > best:
            best, best_i = value, i
    return best_i


def test_active_choice_is_prefs_criterion_on_a_hand_made_posterior():
    # pair 0: the answer is 88% sure (mean . v = 2) but its logit is uncertain (variance 3); pair 1: a 50/50
    # pair with variance 1. sigma' not squared (0.105 * 3 > 0.25 * 1) asks pair 0; PReF's squared coefficient
    # (0.011 * 3 < 0.0625 * 1) asks pair 1.
    post = Posterior(np.array([2.0, 0.0]), np.diag([3.0, 1.0]), 3)
    pairs = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert most_uncertain(post, pairs) == 1
    s = 1 / (1 + np.exp(-2.0))
    assert uncertainty(post, pairs) == pytest.approx([(s * (1 - s)) ** 2 * 3.0, 0.25**2 * 1.0])
    assert s * (1 - s) * 3.0 > 0.25 * 1.0  # with the coefficient not squared, pair 0 would be asked


def test_active_choice_matches_prefs_code_on_fitted_posteriors():
    rng = np.random.default_rng(1)
    for trial in range(200):
        dims, l2 = 3, float(rng.choice([0.1, 1.0]))
        asked = rng.normal(scale=1.5, size=(int(rng.integers(1, 8)), dims))
        choices = [str(c) for c in rng.choice(["A", "B"], size=len(asked))]
        post = fit(asked, choices, l2)
        pool = rng.normal(scale=1.5, size=(30, dims))
        # PReF's M: its prior (here the L2 precision) plus sigma'(u . v) v v^T of every answered pair
        u = post.mean
        sig = 1 / (1 + np.exp(-(asked @ u)))
        m = l2 * np.eye(dims) + (asked * (sig * (1 - sig))[:, None]).T @ asked
        assert np.allclose(np.linalg.inv(post.cov), m, atol=1e-6)
        exclude = [int(i) for i in rng.choice(30, size=3, replace=False)]
        candidates = [i for i in range(30) if i not in exclude]
        assert most_uncertain(post, pool, exclude) == pref_max_norm_vector(candidates, pool, m, u), trial


def test_dimensions_of_more_than_two_poles_are_refused():
    with pytest.raises(UserError, match="exactly two poles"):
        two_pole_dimensions(["P1A", "P1B", "P3A", "P3B", "P3C"])


@pytest.fixture
def candidates_run(tmp_path):
    """A run dir whose candidate responses are valid synthetic texts written directly (no model needed)."""
    cfg = compose([f"run_dir={tmp_path}", "personalize.candidate_prompts=6"])
    bench = get_benchmark(cfg.benchmark)
    world = bench.world
    rng = random.Random(0)
    prefs = [Preference((p,), (1.0,)) for p in bench.poles]
    prefs += [Preference(c, (1 / 3,) * 3) for c in all_combinations(bench.poles)]
    prompts = candidate_prompts(cfg)
    rows = []
    for p in prompts:
        for pref in prefs:
            lv = world.random_levels(rng)
            text = world.render(world.topic_of(p.text), lv["P2"], lv["P1"], lv["P3"], rng)
            rows.append({"prompt_id": p.id, "prompt": p.text, "combination": pref.name, "text": text})
    folder = tmp_path / "personalize"
    folder.mkdir()
    (folder / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_json(
        folder / "candidates.settings.json",
        {**method_settings(cfg, "uniform"), "prompts": f"train sample of {len(prompts)}"},
    )
    return tmp_path, rows


CANDIDATES = "candidate_prompts=6"  # the fixture's candidates: other settings would decode new ones


@pytest.mark.slow
def test_interactive_answers_from_stdin_write_the_user_file_and_resume(candidates_run):
    run_dir, _ = candidates_run
    args = ["personalize", f"run_dir={run_dir}", "mode=interactive", "user=alice", "questions=5", CANDIDATES]
    first = rlphf(*args, stdin="A\nb\n")  # input ends after two answers: an interruption
    assert first.returncode == 130, first.stderr
    answers = run_dir / "users" / "alice.answers.jsonl"
    assert len(answers.read_text().splitlines()) == 2
    assert not (run_dir / "users" / "alice.json").exists()
    second = rlphf(*args, stdin="maybe\nT\nA\nB\n")  # a non-answer is asked again
    assert second.returncode == 0, second.stderr
    assert "resuming: 2 answer(s)" in second.stdout and "is not an answer" in second.stdout
    rows = [json.loads(x) for x in answers.read_text().splitlines()]
    assert [r["choice"] for r in rows] == ["A", "B", "TIE", "A", "B"]
    assert (
        len({(r["prompt"], frozenset((r["response_a"], r["response_b"]))) for r in rows}) == 5
    )  # no repeats
    user = json.loads((run_dir / "users" / "alice.json").read_text())
    assert user["n_answers"] == 5 and user["user"] == "alice"
    assert sum(user["mixture"].values()) == pytest.approx(1) and set(user["strengths"]) == {"P1", "P2", "P3"}
    assert "sign picks the pole" in user["rule"]
    # the answers file is what mode=fit reads: the same user again from it
    refit = rlphf(
        "personalize", f"run_dir={run_dir}", "mode=fit", "user=alice2", f"answers={answers}", CANDIDATES
    )
    assert refit.returncode == 0, refit.stderr
    again = json.loads((run_dir / "users" / "alice2.json").read_text())
    assert again["strengths"] == pytest.approx(user["strengths"])
    pref = load_user_preference("users/alice.json", run_dir, list(POLES)[:6])
    assert pref.user == "alice" and pref.weights == pytest.approx(list(user["mixture"].values()), abs=1e-3)


@pytest.mark.slow
def test_fit_recovers_a_judge_consistent_user(candidates_run, tmp_path):
    run_dir, rows = candidates_run
    bench = get_benchmark(compose([]).benchmark)
    true = np.array([1.0, -2.0, 0.0])

    def phi(r):
        s = {p: bench.score(p, r["prompt"], r["text"]) for p in POLES if p in bench.poles}
        return np.array([s[a] - s[b] for a, b in DIMS.values()])

    answers, by_prompt = [], {}
    for r in rows:
        by_prompt.setdefault(r["prompt_id"], []).append(r)
    for group in by_prompt.values():
        for a, b in zip(group[::2], group[1::2], strict=False):
            d = (phi(a) - phi(b)) @ true
            if abs(d) > 1e-9:
                answers.append(
                    {
                        "prompt": a["prompt"],
                        "response_a": a["text"],
                        "response_b": b["text"],
                        "choice": "A" if d > 0 else "B",
                    }
                )
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(a) + "\n" for a in answers))
    out = rlphf("personalize", f"run_dir={run_dir}", "mode=fit", "user=bob", f"answers={path}", "l2=0.1")
    assert out.returncode == 0, out.stderr
    user = json.loads((run_dir / "users" / "bob.json").read_text())
    s = np.array([user["strengths"][d] for d in DIMS])
    assert cosine(s, true) > 0.9 and list(user["mixture"])[:2] == ["P1A", "P2B"]


@pytest.mark.parametrize(
    "body,message",
    [
        ({"mixture": {"P9Z": 0.5, "P2B": 0.5}}, "unknown pole 'P9Z'"),
        ({"mixture": {"P1A": "abc", "P2B": 0.5}}, "not a finite number"),
        ({"mixture": {"P1A": 0.5, "P2B": 1e999}}, "not a finite number"),
        ({"strengths": {}}, "needs a `mixture`"),
    ],
)
@pytest.mark.slow
def test_bad_user_files_are_one_line_errors(tmp_path, body, message):
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "bad.json").write_text(json.dumps(body))
    out = rlphf("generate", f"run_dir={tmp_path}", "method=mod", "preference=@users/bad.json")
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_bad_answers_and_modes_are_one_line_errors(tmp_path):
    bad = tmp_path / "a.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "response_a": "x", "response_b": "y", "choice": "C"}) + "\n")
    out = rlphf("personalize", f"run_dir={tmp_path}", "mode=fit", "user=u", f"answers={bad}")
    assert out.returncode == 2 and "valid: A, B, TIE" in out.stderr and "Traceback" not in out.stderr
    out = rlphf("personalize", f"run_dir={tmp_path}", "mode=guess")
    assert out.returncode == 2 and "unknown personalize.mode" in out.stderr


@pytest.mark.slow
def test_simulate_curves_without_decoding(candidates_run):
    run_dir, _ = candidates_run
    out = rlphf(
        "personalize",
        f"run_dir={run_dir}",
        "mode=simulate",
        "users=6",
        "budgets=[1,5,10]",
        "downstream_users=0",
        CANDIDATES,
    )
    assert out.returncode == 0, out.stderr
    results = json.loads((run_dir / "personalize" / "simulate" / "results.json").read_text())
    assert [c["budget"] for c in results["curves"]] == [1, 5, 10]
    assert len(results["rows"]) == 6 * 2 * 3
    assert results["curves"][-1]["cosine_active"] > results["curves"][0]["cosine_active"]
    assert (run_dir / "personalize" / "simulate" / "curves.png").stat().st_size > 0
    assert "| 10 |" in out.stdout
