"""Real inputs: the tokenizer's chat template, named prompt formats, training prompts from a dataset
(`datasets`, alpaca columns) and the preference texts in the prompt per method."""

import json

import pytest

from conftest import make_random_expert_run
from rlphf_cli.config import compose
from rlphf_cli.errors import UserError
from rlphf_cli.modeling import TEMPLATES, build_tokenizer, format_prompt
from rlphf_cli.validate import check_prompt_template

CHAT = (
    "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)


def test_chat_template_is_used_when_asked_and_by_default_when_the_tokenizer_has_one():
    tok = build_tokenizer(["write a poem about the sea"])
    assert not tok.chat_template
    assert format_prompt("auto", "hi", tok) == TEMPLATES["tulu"].replace("{prompt}", "hi")
    with pytest.raises(UserError, match="no chat template"):
        format_prompt("chat", "hi", tok)
    tok.chat_template = CHAT
    assert (
        format_prompt("chat", "hi", tok) == "<s>[user] hi\n[assistant] "
    )  # this tokenizer adds no BOS itself
    assert format_prompt("auto", "hi", tok) == format_prompt("chat", "hi", tok)
    assert format_prompt("tulu", "hi", tok) == "<|user|>\nhi\n<|assistant|>\n"
    assert format_prompt("alpaca", "hi", tok).endswith("### Instruction:\nhi\n\n### Response:\n")
    assert format_prompt("Q: {prompt}\nA:", "hi", tok) == "Q: hi\nA:"
    for name in ("auto", "chat", "tulu", "alpaca", "Q: {prompt}"):
        check_prompt_template(name)
    with pytest.raises(UserError, match="must be one of auto, chat, tulu, alpaca"):
        check_prompt_template("no placeholder")


def test_chat_template_drops_the_bos_the_tokenizer_adds_itself():
    from tokenizers import processors

    tok = build_tokenizer(["hi there"])
    tok.chat_template = CHAT
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)]
    )
    text = format_prompt("chat", "hi", tok)
    assert text == "[user] hi\n[assistant] "
    assert tok(text).input_ids.count(tok.bos_token_id) == 1


ROWS = {
    "instruction": ["Name a colour.", "Translate the word.", "   "],
    "input": ["", "chat", ""],
    "output": ["Blue.", "Gato.", "x"],
}


@pytest.mark.parametrize("layout", ["save_to_disk", "parquet", "json"])
def test_training_prompts_from_a_local_dataset_folder(tmp_path, layout):
    from datasets import Dataset

    from rlphf_cli.benchmarks import get_benchmark

    folder = tmp_path / "alpaca"
    data = Dataset.from_dict(ROWS)
    if layout == "save_to_disk":
        data.save_to_disk(str(folder))
    else:
        folder.mkdir()
        getattr(data, f"to_{layout}")(str(folder / f"train.{layout}"))
    (tmp_path / "release").mkdir()
    cfg = compose(
        [
            "benchmark=psoups",
            f"benchmark.data_dir={tmp_path / 'release'}",
            f"benchmark.train_prompts={folder}",
        ]
    )
    prompts = get_benchmark(cfg.benchmark).train_prompts()
    assert [p.text for p in prompts] == ["Name a colour.", "Translate the word.\nchat"]  # blank rows dropped
    assert [p.id for p in prompts] == ["alpaca-0", "alpaca-1"]


def test_bad_prompt_datasets_are_one_line_errors(tmp_path):
    from datasets import Dataset

    from rlphf_cli.decoding.prompts import load_prompt_dataset

    with pytest.raises(UserError, match="prompt dataset folder not found"):
        load_prompt_dataset(str(tmp_path / "missing"))
    Dataset.from_dict({"text": ["a"]}).save_to_disk(str(tmp_path / "plain"))
    with pytest.raises(UserError, match="no `instruction` or `prompt` column"):
        load_prompt_dataset(str(tmp_path / "plain"))


@pytest.mark.slow
def test_preference_in_prompt_per_method(tmp_path):
    from rlphf_cli.decoding.generate import ensure_generations, preference_in_prompt
    from rlphf_cli.methods import NAMES

    make_random_expert_run(tmp_path)
    common = [
        "benchmark.max_eval_prompts=2",
        "generate.max_new_tokens=3",
        "generate.preference=P1A,P2B,P3A",
        "model.hidden_size=32",
        "model.intermediate_size=64",
        "model.num_hidden_layers=2",
    ]

    def prompt_tokens(run, method, *more):
        path = ensure_generations(compose([f"run_dir={run}", *common, *more]), method)
        return [json.loads(line)["prompt_tokens"] for line in path.read_text().splitlines()]

    plain = prompt_tokens(tmp_path, "mod")
    prompted = prompt_tokens(tmp_path, "prompted")
    other = tmp_path / "with_preferences"
    other.mkdir()
    for part in ("base", "experts"):
        import shutil

        shutil.copytree(tmp_path / part, other / part)
    with_pref = prompt_tokens(other, "mod", "generate.preference_in_prompt=[prompted,mod]")
    assert with_pref == prompted and all(a > b for a, b in zip(with_pref, plain, strict=True))
    with pytest.raises(UserError, match="unknown method\\(s\\) 'nope' in generate.preference_in_prompt"):
        prompt_tokens(other, "mod", "generate.preference_in_prompt=[nope]")
    psoups = compose(["benchmark=psoups", f"run_dir={other}"])
    assert all(preference_in_prompt(psoups, m) for m in NAMES)  # genarm too: `all` cannot drift
