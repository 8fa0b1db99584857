"""The judge registry, the synthetic judge and the reward-model judge (its reward models faked)."""

import json

import pytest
from helpers import WORLD, config, write_generations

from rlphf_cli.errors import UserError
from rlphf_cli.evaluation.evaluate import evaluate
from rlphf_cli.judges import JUDGES, Comparison, get_judge
from rlphf_cli.runs import RunDir

PROMPT = "tell me about bees."
SIMPLE = "bees make honey from flower juice."
TECHNICAL = "bees make honey from floral nectar."
FRIENDLY = "hey friend, great question! bees make honey from flower juice."


def test_registry_names_every_judge_and_refuses_unknown_ones(tmp_path):
    assert set(JUDGES) == {"synthetic", "reward_model", "llm", "human"}
    with pytest.raises(UserError, match="unknown judge 'gpt'"):
        get_judge(config(tmp_path, "eval.judge.kind=gpt"))


def test_synthetic_judge_follows_the_benchmark(tmp_path):
    judge = get_judge(config(tmp_path))
    verdicts = judge.judge(
        [
            Comparison("P1A", PROMPT, SIMPLE, TECHNICAL),
            Comparison("P1B", PROMPT, SIMPLE, TECHNICAL),
            Comparison("P3A", PROMPT, SIMPLE, FRIENDLY),
            Comparison("P2A", PROMPT, SIMPLE, SIMPLE.replace("flower juice", "floral nectar")),
            Comparison("P1A", "what is the capital of france?", SIMPLE, TECHNICAL),  # not in the world
        ]
    )
    assert [v.verdict for v in verdicts] == ["A", "B", "B", "TIE", "TIE"]
    assert judge.describe() == {"kind": "synthetic", "benchmark": "synthetic", "tie_margin": 0.05}


class FakeRewardModels:
    """Stands in for the run's reward models: the synthetic world's score, counted per call."""

    def __init__(self):
        self.calls = []

    def score(self, pole, prompts, responses):
        self.calls.append((pole, len(responses)))
        return [WORLD.score(pole, p, r) for p, r in zip(prompts, responses, strict=True)]


@pytest.fixture
def fake_rms(monkeypatch):
    import rlphf_cli.rewards

    rms = FakeRewardModels()
    asked = []

    def get_reward(cfg, kind):
        asked.append(kind)
        return rms

    monkeypatch.setattr(rlphf_cli.rewards, "get_reward", get_reward)
    rms.asked = asked
    return rms


def test_reward_model_judge_higher_score_wins_and_ties_within_the_margin(tmp_path, fake_rms):
    judge = get_judge(config(tmp_path, "eval.judge.kind=reward_model", "eval.judge.tie_margin=0.3"))
    assert fake_rms.asked == ["reward_model"]
    # half of the slots technical: P1A and P1B scores of 0.5
    half = "bees make honey from floral nectar. bees tell each other where food is by dancing."
    verdicts = judge.judge(
        [
            Comparison("P1A", PROMPT, SIMPLE, TECHNICAL),  # 1 vs 0
            Comparison("P1B", PROMPT, SIMPLE, TECHNICAL),  # 0 vs 1
            Comparison("P1A", PROMPT, SIMPLE, half),  # 1 vs 0.5: beyond the margin
            Comparison("P1A", PROMPT, half, TECHNICAL.replace("floral nectar", "flower juice")),  # 0.5 vs 1
            Comparison("P1B", PROMPT, half, TECHNICAL.replace("floral nectar", "flower juice")),  # 0.5 vs 0
            Comparison("P2A", PROMPT, SIMPLE, FRIENDLY),  # equal scores: a tie
        ]
    )
    assert [v.verdict for v in verdicts] == ["A", "B", "A", "B", "A", "TIE"]
    assert verdicts[0].detail == {"score_a": 1.0, "score_b": 0.0}
    assert judge.describe()["models"] == {}
    rm = RunDir(tmp_path).artifact("rm/P1A")  # a (re)trained reward model makes a new judge
    (rm.start() / "adapter_model.safetensors").write_bytes(b"weights")
    rm.commit("rm", None)
    assert list(judge.describe()["models"]) == ["P1A"]
    # one batch per pole for each side, not one call per comparison
    assert sorted(fake_rms.calls) == sorted(
        [("P1A", 3), ("P1A", 3), ("P1B", 2), ("P1B", 2), ("P2A", 1), ("P2A", 1)]
    )


def test_reward_model_judge_through_eval(tmp_path, fake_rms):
    write_generations(tmp_path, "pcm")
    write_generations(tmp_path, "soups")
    (out,) = evaluate(config(tmp_path, "eval.judge.kind=reward_model"))
    results = json.loads((out / "results.json").read_text())
    assert results["judge"] == {"kind": "reward_model", "tie_margin": 0.1, "models": {}}
    assert all({"score_a", "score_b"} <= set(j) for j in results["judgments"])
    assert json.loads((out / "manifest.json").read_text())["win_rate"] > 0.8
