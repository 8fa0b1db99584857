"""Every architecture researchers point the tool at, as a small random Hugging Face folder (architectures.py):
the default LoRA targets, stacked LoRA = peft's own adapters, a one-hot mixture = the expert, a soup of one
adapter = the adapter, reward adapters on the experts' base = the merged reward models, a PCM initialised
from the experts' family; and the one-line refusals of what cannot be adapted."""

import re
from types import SimpleNamespace

import pytest
import torch
from architectures import ARCHITECTURES, save_small_model

from rlphf_cli.adapters import check_lora_targets, lora_config
from rlphf_cli.decoding.engine import BASE, AdapterExperts, FixedWeights, Sampler, decode
from rlphf_cli.errors import UserError

NAMES = ["P1A", "P2B", "P3A"]
PROMPTS = ["<|user|>\nBees make honey.<|end|>\n<|assistant|>\n", "Rain falls", "The moon pulls the tides of"]
# the layers a default LoRA adapts: every linear layer of the blocks, never the embeddings or the LM head
DEFAULT_TARGETS = {
    "llama": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
    "qwen2": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
    "qwen3": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
    "mistral": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
    "gemma2": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
    "phi3": ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"],
    "olmo2": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
    "gpt2": ["c_attn", "c_fc", "c_proj"],
    "gpt_neox": ["dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"],
}
LORA = SimpleNamespace(lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_target_modules=None)


def randomise(model, seed, scale=0.3, also=()):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name or any(a in name for a in also):
                p.copy_(torch.randn(p.shape, generator=gen) * scale)


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def arch(request, tmp_path_factory):
    """(name, folder, tokenizer, the base with three random LoRA experts on the default targets)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from rlphf_cli.modeling import load_tokenizer

    name = request.param
    folder = save_small_model(name, tmp_path_factory.mktemp(name) / "base")
    tokenizer = load_tokenizer(str(folder))
    base = AutoModelForCausalLM.from_pretrained(folder).eval()
    model = get_peft_model(base, lora_config(LORA, model=base), adapter_name=NAMES[0])
    for expert in NAMES[1:]:
        model.add_adapter(expert, lora_config(LORA, model=base))
    randomise(model, seed=1)
    return name, folder, tokenizer, model.eval()


def prompt_ids(tokenizer):
    return [tokenizer(p).input_ids for p in PROMPTS]


def run(tokenizer, experts, weights, active, **kw):
    w = torch.tensor(weights, dtype=torch.float).expand(len(PROMPTS), -1)
    return decode(
        experts,
        FixedWeights(w),
        prompt_ids(tokenizer),
        active,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=8,
        sampler=Sampler(greedy=True),
        **kw,
    )


def test_default_lora_targets_are_the_linear_layers_of_the_blocks(arch):
    name, _, _, model = arch
    adapted = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if hasattr(m, "lora_A") and m.lora_A}
    assert sorted(adapted) == DEFAULT_TARGETS[name]
    assert model.peft_config["P1A"].fan_in_fan_out == (name == "gpt2")  # Conv1D stores [in, out]


def test_stacked_lora_equals_peft_adapters(arch):
    """Logits of the fast path (concatenated adapters, one matmul per layer) = peft's per-row adapters, in
    one padded forward and token by token through the KV cache."""
    from rlphf_cli.decoding.stacked_lora import StackedLoRA

    _, _, tokenizer, model = arch
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    rows = [("P3A", BASE, "P1A")] * len(PROMPTS)
    ids, mask = (x.repeat_interleave(3, dim=0) for x in (enc.input_ids, enc.attention_mask))
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, adapter_names=[a for r in rows for a in r]).logits
        stacked = StackedLoRA(model)
        stacked.prepare(rows)
        with stacked.applied():
            fast = model(input_ids=ids, attention_mask=mask).logits
        plain = model(input_ids=ids, attention_mask=mask).logits  # hooks gone: the active adapter again
    keep = mask.bool()
    torch.testing.assert_close(fast[keep], ref[keep], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(ref[0::3][keep[0::3]], ref[1::3][keep[1::3]], atol=1e-3)  # adapters matter
    model.set_adapter("P1A")
    with torch.no_grad():
        torch.testing.assert_close(plain, model(input_ids=ids, attention_mask=mask).logits)

    a = run(tokenizer, AdapterExperts(model), [0.2, 0.5, 0.3], ["P3A", BASE, "P1A"], record=True)
    b = run(
        tokenizer, AdapterExperts(model, stacked=False), [0.2, 0.5, 0.3], ["P3A", BASE, "P1A"], record=True
    )
    assert a.tokens == b.tokens
    for x, y in zip(a.expert_logps, b.expert_logps, strict=True):
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("index", [0, 2])
def test_one_hot_mixture_is_the_expert(arch, index):
    _, _, tokenizer, model = arch
    weights = [1.0 if i == index else 0.0 for i in range(3)]
    got = run(tokenizer, AdapterExperts(model), weights, NAMES).tokens
    model.set_adapter(NAMES[index])
    for ids, tokens in zip(prompt_ids(tokenizer), got, strict=True):
        x = torch.tensor([ids])
        ref = model.generate(
            input_ids=x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=8,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )[0, len(ids) :].tolist()
        assert tokens == ref[: len(tokens)] and len(tokens) >= 1
    model.set_adapter("P1A")


@pytest.mark.parametrize("merge", ["psoups", "delta"])
def test_soup_of_one_adapter_is_the_adapter(arch, merge):
    from rlphf_cli.decoding.soups import add_soup

    _, _, tokenizer, model = arch
    soup = add_soup(model, ["P2B"], [1.0], merge)
    ids = torch.tensor([prompt_ids(tokenizer)[0]])
    with torch.no_grad():
        expert = model(input_ids=ids, adapter_names=["P2B"]).logits
        souped = model(input_ids=ids, adapter_names=[soup]).logits
    torch.testing.assert_close(souped, expert, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_reward_adapters_on_the_experts_base_equal_merged_reward_models(arch, tmp_path):
    """train-rm's shape of reward model (a LoRA on the default targets with a score head) scored as an
    adapter beside the experts (stacked LoRA on the causal LM's body) = the merged sequence classifier."""
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from rlphf_cli.reward_models import RewardAdapters
    from rlphf_cli.rewards import score_texts

    name, folder, tokenizer, model = arch

    def classifier():
        return AutoModelForSequenceClassification.from_pretrained(
            folder, num_labels=1, pad_token_id=tokenizer.pad_token_id
        )

    texts = [p + " It is sweet." * (i + 1) for i, p in enumerate(PROMPTS)]  # lengths differ: padding
    adapters = RewardAdapters(model, tokenizer, batch_size=4)
    for pole, seed in (("P1A", 2), ("P2B", 3)):
        seq = classifier()
        rm = get_peft_model(seq, lora_config(LORA, "SEQ_CLS", model=seq))
        randomise(rm, seed, scale=0.5, also=("score",))
        rm.save_pretrained(tmp_path / pole)
        adapters.add(pole, tmp_path / pole)
    together = adapters.score(["P1A", "P2B"], texts)
    for pole in ("P1A", "P2B"):
        merged = PeftModel.from_pretrained(classifier(), str(tmp_path / pole)).merge_and_unload()
        expected = torch.tensor(score_texts(merged, tokenizer, texts))
        torch.testing.assert_close(torch.tensor(together[pole]), expected, atol=1e-4, rtol=1e-4)
    assert together["P1A"] != together["P2B"]
    model.set_adapter("P1A")


def test_pcm_initialised_from_the_experts_family(arch, tmp_path):
    """`pcm.init_from` a folder of the experts' architecture: the PCM's body is that model's, it weights
    the experts while decoding, and it saves and loads."""
    from rlphf_cli.pcm.model import PreferenceControlModel, build_pcm
    from rlphf_cli.pcm.provider import PCMWeights

    name, folder, tokenizer, model = arch
    pcm = build_pcm(
        SimpleNamespace(init_from=str(folder)), len(tokenizer), tokenizer.pad_token_id, NAMES, NAMES, 0
    )
    assert type(pcm.body).__name__.lower().startswith(name.replace("_", "")[:4])
    torch.nn.init.normal_(pcm.head.weight, std=0.5)  # an untrained PCM is exactly uniform
    pref = pcm.preference_vector(NAMES, [1 / 3] * 3).expand(len(PROMPTS), -1)
    res = decode(
        AdapterExperts(model),
        PCMWeights(pcm.eval(), pref, NAMES),
        prompt_ids(tokenizer),
        NAMES,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=6,
        sampler=Sampler(greedy=True),
        record=True,
    )
    w = torch.cat(res.weights)
    assert torch.allclose(w.sum(-1), torch.ones(len(w))) and w.std() > 0.01
    pcm.save(tmp_path / "pcm")
    loaded = PreferenceControlModel.load(tmp_path / "pcm", NAMES).eval()
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        a, _ = pcm(enc.input_ids, enc.attention_mask, pref)
        b, _ = loaded(enc.input_ids, enc.attention_mask, pref)
    torch.testing.assert_close(a, b)


# ----- what cannot be adapted is refused in one line, before anything is written -----
def cfg_for(base, tmp_path, *overrides):
    from rlphf_cli.config import compose

    return compose(
        [f"run_dir={tmp_path / 'run'}", "benchmark=psoups", f"model.name_or_path={base}", *overrides]
    )


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    return save_small_model("gpt2", tmp_path_factory.mktemp("gpt2") / "base")


@pytest.mark.parametrize(
    "override,message",
    [
        ("rm.lora_target_modules=[wte]", "LoRA on transformer.wte (Embedding) of gpt2 is not supported"),
        ("expert.lora_target_modules=[lm_head]", "LoRA on lm_head (an output head) of gpt2 is not supported"),
        ("expert.lora_target_modules=[q_proj]", "LoRA target module 'q_proj' names no layer of gpt2"),
    ],
)
def test_targets_that_are_no_linear_layer_are_refused_before_anything_is_written(
    gpt2_folder, tmp_path, override, message
):
    from rlphf_cli import validate

    cfg = cfg_for(gpt2_folder, tmp_path, override)
    with pytest.raises(UserError, match=re.escape(message)) as err:
        validate.check(cfg, "pipeline")
    assert "\n" not in str(err.value) and "c_attn, c_fc, c_proj" in str(err.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_an_architecture_without_a_causal_lm_is_refused_by_name(tmp_path):
    from transformers import T5Config

    T5Config(vocab_size=64, d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8).save_pretrained(
        tmp_path / "t5"
    )
    with pytest.raises(UserError, match=r"architecture 't5' .* is not supported") as err:
        check_lora_targets(cfg_for(tmp_path / "t5", tmp_path))
    assert "\n" not in str(err.value)
