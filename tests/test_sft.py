"""Acceptance of the synthetic base at the default budget: well-formed, on-topic and diverse."""

import pytest
import torch

from rlphf_cli.benchmarks.synthetic import SyntheticWorld
from rlphf_cli.config import compose
from rlphf_cli.decoding.engine import BASE, AdapterExperts, FixedWeights, Sampler, decode
from rlphf_cli.modeling import format_prompt, load_causal_lm, load_tokenizer
from rlphf_cli.runs import RunDir


@pytest.mark.slow
def test_base_samples_are_valid_and_cover_both_poles_of_every_dimension(base_run):
    cfg = compose([f"run_dir={base_run}"])
    assert RunDir(base_run).artifact("base").manifest()["metrics"]["steps"] == cfg.sft.max_steps
    tok = load_tokenizer(str(base_run / "base"))
    model = load_causal_lm(str(base_run / "base"), cfg.model)
    world = SyntheticWorld()
    prompts = world.prompts("eval") * 2  # two samples per held-out prompt
    ids = [tok(format_prompt(cfg.model.prompt_template, p.text)).input_ids for p in prompts]
    out = decode(
        AdapterExperts(model),
        FixedWeights(torch.ones(len(ids), 1)),
        ids,
        [BASE],
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        max_new_tokens=96,
        sampler=Sampler(temperature=1.0),
        generator=torch.Generator().manual_seed(0),
    )
    texts = [tok.decode(t, skip_special_tokens=True) for t in out.tokens]
    parsed = [world.parse(p.text, t) for p, t in zip(prompts, texts)]
    valid = [p for p in parsed if p.valid]
    assert len(valid) / len(parsed) >= 0.8, [p.reason for p in parsed if not p.valid]
    # both poles of every dimension appear among the samples
    assert any(p.technical_share == 0 for p in valid) and any(p.technical_share == 1 for p in valid)
    assert any(p.amount == 1 for p in valid) and any(p.amount >= 3 for p in valid)
    assert any(p.friendly > p.unfriendly for p in valid) and any(p.unfriendly > p.friendly for p in valid)


@pytest.mark.slow
def test_real_base_is_recorded_not_trained(tmp_path, base_run):
    from rlphf_cli.training.sft import train_sft

    cfg = compose([f"run_dir={tmp_path}", f"model.name_or_path={base_run / 'base'}"])
    path = train_sft(cfg)
    manifest = RunDir(tmp_path).artifact("base").manifest()
    assert manifest["source"] == str(base_run / "base") and manifest["trained"] is False
    assert not (path / "model.safetensors").exists()
