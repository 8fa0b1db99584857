"""GenARM: autoregressive reward models (`train-expert algo=arm`) and `generate method=genarm`."""

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from helpers import TEST_OVERRIDES, new_run

from conftest import make_random_expert_run
from rlphf_cli.config import compose
from rlphf_cli.decoding.generate import ensure_generations
from rlphf_cli.runs import RunDir

TINY = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=2"]


@pytest.fixture(scope="module")
def random_arm_run(tmp_path_factory):
    """An untrained tiny base whose random LoRA adapters stand in for ARMs (arms/<pole>)."""
    path = tmp_path_factory.mktemp("genarm_run")
    make_random_expert_run(path, poles=("P1A", "P2A", "P3A"))
    shutil.copytree(path / "experts", path / "arms")
    return path


def _texts(run_dir, method, *overrides) -> dict:
    cfg = compose(
        [
            f"run_dir={run_dir}",
            *TINY,
            "benchmark.max_eval_prompts=4",
            "generate.max_new_tokens=12",
            "generate.greedy=true",
            "generate.preference=P1A:0.5,P2A:0.3,P3A:0.2",
            *overrides,
        ]
    )
    path = ensure_generations(cfg, method)
    return {r["prompt_id"]: r for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.slow
def test_genarm_with_alpha_zero_is_the_base_token_for_token(random_arm_run, tmp_path):
    base = _texts(random_arm_run, "sft")
    guided = _texts(random_arm_run, "genarm", "generate.genarm_alpha=0")
    assert len(base) == 4
    assert {k: r["text"] for k, r in guided.items()} == {k: r["text"] for k, r in base.items()}
    assert {r["genarm_alpha"] for r in guided.values()} == {0.0}
    # the ARMs do act once alpha > 0 (the comparison above could not pass by ignoring them)
    other = tmp_path / "strong"
    shutil.copytree(random_arm_run, other, ignore=shutil.ignore_patterns("generations"))
    strong = _texts(other, "genarm", "generate.genarm_alpha=6")
    assert {k: r["text"] for k, r in strong.items()} != {k: r["text"] for k, r in base.items()}


@pytest.mark.slow
def test_arm_loss_is_genarms_loss_by_hand(tmp_path):
    """TRL's loss under ARMTrainer = mean of -logsigmoid(beta (sum logp(chosen) - sum logp(rejected))), by hand."""
    from rlphf_cli.modeling import format_prompt
    from rlphf_cli.training.arm import arm_trainer

    make_random_expert_run(tmp_path, poles=())
    beta = 0.3
    cfg = compose(
        [f"run_dir={tmp_path}", *TINY, "expert.algo=arm", f"expert.arm.beta={beta}", "expert.lora_dropout=0"]
    )
    template = cfg.model.prompt_template
    rows = [
        {
            "prompt": format_prompt(template, "what can you tell me about rain?"),
            "chosen": "rain falls from clouds.",
            "rejected": "ugh, fine. rain is water. rain is water.",
        },
        {
            "prompt": format_prompt(template, "explain volcanoes"),
            "chosen": "volcanoes push out hot rock from deep in the ground, friend!",
            "rejected": "no.",
        },
    ]
    trainer = arm_trainer(cfg, "P1A", tmp_path / "ckpt", rows=rows)
    model = trainer.model.eval()
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_" in name:  # a trained-looking adapter: a reference (the base) would now differ from it
            p.data.normal_(0, 0.3)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch).item()

    tok = trainer.processing_class

    def seq_logp(prompt: str, response: str) -> float:
        prompt_ids = tok(prompt).input_ids
        full = tok(prompt + response).input_ids
        assert full[: len(prompt_ids)] == prompt_ids
        ids = full + [tok.eos_token_id]  # TRL appends EOS to the response; it is a response token
        with torch.no_grad():
            logp = model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
        return sum(logp[t - 1, ids[t]].item() for t in range(len(prompt_ids), len(ids)))

    margins = torch.tensor(
        [seq_logp(r["prompt"], r["chosen"]) - seq_logp(r["prompt"], r["rejected"]) for r in rows]
    )
    by_hand = (-F.logsigmoid(beta * margins)).mean().item()
    assert abs(margins).min() > 1.0  # the example is not degenerate
    assert loss == pytest.approx(by_hand, rel=1e-4, abs=1e-5)
    assert trainer.ref_model is None  # no reference model was even loaded


@pytest.mark.slow
def test_a_trained_arm_raises_its_poles_judge_score_when_guiding_the_base(base_run, tmp_path_factory):
    from rlphf_cli.training.expert import train_expert

    run = new_run(base_run, tmp_path_factory.getbasetemp(), "arm_run")
    cfg = compose(
        [
            f"run_dir={run}",
            *TEST_OVERRIDES,
            "expert.algo=arm",
            "expert.pole=P2A",
            "expert.arm.max_steps=60",
            "expert.eval_samples=0",
        ]
    )
    train_expert(cfg)
    art = RunDir(run).artifact("arms/P2A")
    assert not RunDir(run).artifact("experts/P2A").path.exists()
    manifest = art.manifest()
    assert manifest["kind"] == "arm" and manifest["algo"] == "arm" and manifest["metrics"]["steps"] == 60
    check = manifest["metrics"]
    assert check["judgments"] == 48 and check["decoding"].startswith("greedy, guiding the base")
    # P2A (concise): greedy outputs of the base guided by the ARM against the base alone, 48 held-out prompts
    assert check["judge_score_expert"] >= check["judge_score_base"] + 0.2, check


CHAT = (
    "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)


@pytest.fixture
def chat_arm_run(tmp_path):
    """A random run whose base tokenizer has a chat template, with a random adapter as the P1A ARM."""
    from rlphf_cli.modeling import load_tokenizer

    make_random_expert_run(tmp_path, poles=("P1A",))
    tokenizer = load_tokenizer(str(tmp_path / "base"), False)
    tokenizer.chat_template = CHAT
    tokenizer.save_pretrained(tmp_path / "base")
    shutil.copytree(tmp_path / "experts", tmp_path / "arms")
    return tmp_path


@pytest.mark.parametrize("template", ["auto", "chat"])
@pytest.mark.slow
def test_arms_train_and_are_checked_on_prompts_in_the_chat_template(chat_arm_run, monkeypatch, template):
    """ARMs see the prompts `generate method=genarm` decodes: the tokenizer's chat template (auto or chat)."""
    from rlphf_cli.modeling import format_prompt, load_tokenizer
    from rlphf_cli.training import arm

    cfg = compose([f"run_dir={chat_arm_run}", *TINY, f"model.prompt_template={template}"])
    tokenizer = load_tokenizer(str(chat_arm_run / "base"), False)
    pair = {"user_input": "tell me about the sea", "completion_a": "a", "completion_b": "b"}
    monkeypatch.setattr(arm, "pole_pairs", lambda cfg, pole: [pair])
    seen = {}

    class Capture:
        def __init__(self, **kwargs):
            seen.update(kwargs)

    monkeypatch.setattr(arm, "_arm_trainer_class", lambda: Capture)
    arm.arm_trainer(cfg, "P1A", chat_arm_run / "checkpoints")
    (prompt,) = seen["train_dataset"]["prompt"]
    assert prompt == format_prompt("chat", pair["user_input"], tokenizer) and "[assistant]" in prompt

    encoded = []
    real = tokenizer.__class__.__call__

    def spy(self, text, *args, **kwargs):
        encoded.append(text)
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(tokenizer.__class__, "__call__", spy)
    check = compose(
        [
            f"run_dir={chat_arm_run}",
            *TINY,
            f"model.prompt_template={template}",
            "benchmark.max_eval_prompts=2",
        ]
        + ["expert.max_new_tokens=3", "expert.eval_samples=0"]
    )
    result = arm.guided_check(check, "P1A", chat_arm_run / "arms" / "P1A")
    assert result  # judged: the guided base against the base
    prompts = [t for t in encoded if isinstance(t, str) and t.startswith("<s>[user] ")]
    assert len(prompts) == 2 and all(t.endswith("\n[assistant] ") for t in prompts)
