"""The P-Soups data release layout: loaders on small files in the exact schema, and the recipe."""

import json

import pytest

from rlphf_cli.benchmarks import get_benchmark
from rlphf_cli.config import compose
from rlphf_cli.errors import UserError


def write_release(folder, n_train=6, n_eval=3):
    """A miniature P-Soups data release: alpaca_gpt4_10k.json, rm_training/<pole>.json, koala_eval_50.json."""
    folder.mkdir(parents=True, exist_ok=True)
    topics = ["bees", "rain", "volcanoes", "snow", "the moon", "magnets"]
    alpaca = [{"instruction": f"tell me about {t}.", "input": "", "output": "..."} for t in topics[:n_train]]
    alpaca[0]["input"] = "keep it short"
    (folder / "alpaca_gpt4_10k.json").write_text(json.dumps(alpaca))
    (folder / "koala_eval_50.json").write_text(
        json.dumps([{"id": i, "prompt": f"describe {t}."} for i, t in enumerate(topics[:n_eval])])
    )
    rm = folder / "rm_training"
    rm.mkdir(exist_ok=True)
    for pole in ["P1A", "P1B", "P2A", "P2B", "P3A", "P3B"]:
        pairs = [
            {
                "user_input": f"tell me about {t}.",
                "completion_a": f"{t} are simple. hey friend!",
                "completion_b": f"{t} are complex.",
            }
            for t in topics
        ]
        (rm / f"{pole}.json").write_text(json.dumps(pairs))
    return folder


def test_loaders_read_the_release(tmp_path):
    data = write_release(tmp_path / "psoups")
    cfg = compose(["benchmark=psoups", f"benchmark.data_dir={data}", "model.name_or_path=some/model"])
    bench = get_benchmark(cfg.benchmark)
    train, evals = bench.train_prompts(), bench.eval_prompts()
    assert [p.text for p in train][:2] == ["tell me about bees.\nkeep it short", "tell me about rain."]
    assert [p.id for p in evals] == ["0", "1", "2"]
    from rlphf_cli.training.pairs import external_pairs_dir, load_pairs

    pairs = load_pairs(external_pairs_dir(cfg) / "P2B.json")
    assert len(pairs) == 6 and set(pairs[0]) == {"user_input", "completion_a", "completion_b"}


def test_recipe_sets_the_papers_defaults(tmp_path):
    cfg = compose(["benchmark=psoups", f"benchmark.data_dir={tmp_path}"])
    assert cfg.expert.algo == "ppo" and cfg.expert.lora_r == 16 and cfg.expert.lora_alpha == 32
    assert cfg.expert.learning_rate == pytest.approx(1.4e-5) and cfg.rm.lora_r == 8
    assert cfg.eval.judge.kind == "llm" and cfg.pcm.hidden_size == 768 and cfg.model.dtype == "bfloat16"


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: (d / "koala_eval_50.json").write_text(""), "is empty"),
        (
            lambda d: (d / "alpaca_gpt4_10k.json").write_text('[{"input": "x"}]'),
            "lacks a text field 'instruction'",
        ),
        (lambda d: (d / "koala_eval_50.json").unlink(), "not found"),
    ],
)
@pytest.mark.slow
def test_bad_release_files(tmp_path, mutate, message):
    data = write_release(tmp_path / "psoups")
    mutate(data)
    bench = get_benchmark(compose(["benchmark=psoups", f"benchmark.data_dir={data}"]).benchmark)
    with pytest.raises(UserError, match=message):
        bench.train_prompts()
        bench.eval_prompts()


def test_missing_data_dir():
    with pytest.raises(UserError, match="needs benchmark.data_dir"):
        get_benchmark(compose(["benchmark=psoups"]).benchmark)
