"""`rlphf pipeline benchmark=psoups` without the data release's pairs, end to end at toy budgets.

A small LLaMA saved as a Hugging Face folder with a real byte-level BPE tokenizer and a chat template; pairs
sampled from it and labelled per pole by the LLM judge (a fake OpenAI-compatible server on 127.0.0.1), then
reward models, PPO experts, the PCM on reward-model rewards, every method generated, evaluated by the judge.
"""

import json

import pytest
from helpers import FakeJudgeAPI, between

from rlphf_cli.config import compose
from rlphf_cli.judges.llm_prompts import CRITERIA

SENTENCES = [
    "Bees make honey in the summer.",
    "Rain falls from grey clouds over the hills.",
    "Volcanoes can erupt with hot lava and ash!",
    "The moon pulls the tides of the sea.",
    "Magnets attract iron, and that is useful.",
    "Snow is frozen water; children love it.",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def save_small_llama(folder):
    """A random LLaMA with a byte-level BPE tokenizer (trained on a few sentences) and a chat template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(SENTENCES * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_prompts(folder):
    """The release's prompt files only: no rm_training/, so the pairs are made here."""
    folder.mkdir(parents=True, exist_ok=True)
    topics = ["bees", "rain", "volcanoes", "the moon", "magnets", "snow"]
    alpaca = [{"instruction": f"Tell me about {t}.", "input": "", "output": "..."} for t in topics]
    (folder / "alpaca_gpt4_10k.json").write_text(json.dumps(alpaca))
    evals = [{"id": i, "prompt": f"Describe {t}."} for i, t in enumerate(topics[:2])]
    (folder / "koala_eval_50.json").write_text(json.dumps(evals))
    return folder


def length_judge(fake: FakeJudgeAPI):
    """A deterministic judge: A poles prefer the shorter response, B poles the longer, equal length ties."""

    def answer(body):
        user = body["messages"][-1]["content"]
        (pole,) = [p for p, text in CRITERIA.items() if text in user]
        a = between(user, "[Response A]", "[End of Response A]")
        b = between(user, "[Response B]", "[End of Response B]")
        if len(a) == len(b):
            return "Alike.\nVerdict: TIE"
        shorter = "A" if len(a) < len(b) else "B"
        return f"Reasons.\nVerdict: {shorter if pole.endswith('A') else 'BA'.replace(shorter, '')}"

    fake.answer = answer
    return fake


TOY = [
    "pairs.max_prompts=6",
    "pairs.pairs_per_prompt=2",
    "pairs.max_new_tokens=12",
    "rm.max_steps=1",
    "rm.batch_size=4",
    "expert.max_steps=2",
    "expert.batch_size=2",
    "expert.ppo.mini_batch_size=2",
    "expert.ppo.epochs=1",
    "expert.eval_samples=1",
    "expert.max_new_tokens=8",
    "pcm.hidden_size=32",
    "pcm.intermediate_size=64",
    "pcm.num_hidden_layers=1",
    "pcm.num_attention_heads=4",
    "pcm.steps=1",
    "pcm.prompts_per_step=1",
    "pcm.samples_per_prompt=2",
    "pcm.max_new_tokens=8",
    "pcm.eval_prompts=1",
    "pcm.ablation=false",
    "benchmark.max_eval_prompts=2",
    "generate.max_new_tokens=8",
    "generate.batch_size=8",
    "eval.bootstrap_samples=20",
    "headroom.max_prompts=1",
    "headroom.grid_prompts=1",
    "model.dtype=float32",
    "device=cpu",
]


@pytest.mark.slow
def test_psoups_pipeline_with_judge_labelled_pairs(tmp_path, api):  # noqa: F811
    from rlphf_cli.pipeline import pipeline

    base = save_small_llama(tmp_path / "small-llama")
    data = write_prompts(tmp_path / "psoups")
    length_judge(api)
    cfg = compose(
        [
            f"run_dir={tmp_path / 'run'}",
            "benchmark=psoups",
            f"benchmark.data_dir={data}",
            f"model.name_or_path={base}",
            f"eval.judge.base_url={api.base_url}",
            "eval.judge.model=judge-1",
            "eval.judge.backoff=0.01",
            *TOY,
        ]
    )
    summary = pipeline(cfg).read_text()
    run = tmp_path / "run"
    pairs = json.loads((run / "data" / "pairs" / "manifest.json").read_text())
    assert pairs["labeler"] == "llm" and set(pairs["counts"]) == set(CRITERIA) - {"P3C", "P3D"}
    for pole in (
        "P2A",
        "P2B",
    ):  # labelled by the judge, per pole: the length judge's choice is the chosen one
        records = json.loads((run / "data" / "pairs" / f"{pole}.json").read_text())
        shorter_chosen = [len(r["completion_a"]) < len(r["completion_b"]) for r in records]
        assert records and shorter_chosen == [pole == "P2A"] * len(records)
    asked = {
        p
        for r in api.requests
        for p, text in CRITERIA.items()
        if text in r["body"]["messages"][-1]["content"]
    }
    assert asked == {"P1A", "P1B", "P2A", "P2B", "P3A", "P3B"}
    for pole in ("P1A", "P1B", "P2A", "P2B", "P3A", "P3B"):
        assert (run / "rm" / pole / "manifest.json").is_file()
        assert json.loads((run / "experts" / pole / "manifest.json").read_text())["algo"] == "ppo"
    assert json.loads((run / "pcm" / "manifest.json").read_text())
    for method in ("sft", "prompted", "soups", "mod", "uniform", "pcm"):
        assert (run / "generations" / f"{method}.jsonl").is_file(), method
    assert (run / "eval" / "report.md").is_file() and "pcm" in summary
    assert "## Judge: llm (judge-1" in summary
