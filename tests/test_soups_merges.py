"""peft's TIES and DARE merges over the experts' full weight deltas (`ties_svd`, `dare_linear_svd`)."""

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from conftest import make_random_expert_run
from rlphf_cli.decoding.soups import add_soup
from rlphf_cli.errors import UserError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("soups_run")
    make_random_expert_run(run_dir, poles=("P1A", "P2B"))
    base = AutoModelForCausalLM.from_pretrained(run_dir / "base")
    model = PeftModel.from_pretrained(base, str(run_dir / "experts/P1A"), adapter_name="P1A")
    model.load_adapter(str(run_dir / "experts/P2B"), adapter_name="P2B")
    return model


def delta(layer, name):
    return layer.scaling[name] * layer.lora_B[name].weight @ layer.lora_A[name].weight


def test_svd_merges_at_full_density_are_the_weighted_sum_of_deltas(model):
    layer = model.base_model.model.model.layers[0].self_attn.v_proj
    d1, d2 = delta(layer, "P1A"), delta(layer, "P2B")
    dare = add_soup(model, ["P1A", "P2B"], [0.3, 0.7], "dare_linear_svd", density=1.0)
    torch.testing.assert_close(delta(layer, dare), 0.3 * d1 + 0.7 * d2, atol=1e-5, rtol=1e-4)
    # one-hot: the expert itself (the weight-0 expert takes no part, not even in TIES's sign election)
    ties = add_soup(model, ["P1A", "P2B"], [1.0, 0.0], "ties_svd", density=1.0)
    torch.testing.assert_close(delta(layer, ties), d1, atol=1e-5, rtol=1e-4)
    # equal weights, full density: TIES's disjoint mean (entries of agreeing sign averaged, others kept alone)
    ties = add_soup(model, ["P1A", "P2B"], [0.5, 0.5], "ties_svd", density=1.0)
    sign = torch.sign(d1 + d2)
    keep1, keep2 = torch.sign(d1) == sign, torch.sign(d2) == sign
    expected = (d1 * keep1 + d2 * keep2) / (keep1.float() + keep2.float()).clamp(min=1)
    u, s, vh = torch.linalg.svd(expected)  # a full-rank matrix, cut back to the summed rank 4 + 4
    torch.testing.assert_close(
        delta(layer, ties), u[:, :8] @ torch.diag(s[:8]) @ vh[:8], atol=1e-4, rtol=1e-3
    )


def test_pruning_merges_prune_and_dare_is_the_same_soup_every_time(model):
    layer = model.base_model.model.model.layers[1].self_attn.q_proj
    d1, d2 = delta(layer, "P1A"), delta(layer, "P2B")
    # one-hot: a soup of one expert is that expert, whatever the density (peft copies a single adapter)
    one = add_soup(model, ["P1A", "P2B"], [1.0, 0.0], "ties_svd", density=0.5)
    torch.testing.assert_close(delta(layer, one), d1, atol=1e-5, rtol=1e-4)
    full = add_soup(model, ["P1A", "P2B"], [0.5, 0.5], "ties_svd", density=1.0)
    half = add_soup(model, ["P1A", "P2B"], [0.5, 0.5], "ties_svd", density=0.5)
    assert full != half
    assert (delta(layer, half) - delta(layer, full)).abs().max() > 0.05 * d1.abs().max()  # entries pruned
    a = add_soup(model, ["P1A", "P2B"], [0.4, 0.6], "dare_linear_svd", density=0.5)
    first = delta(layer, a).clone()
    assert (first - (0.4 * d1 + 0.6 * d2)).abs().max() > 0.05 * d1.abs().max()  # random drops, rescaled
    model.delete_adapter(a)
    b = add_soup(model, ["P1A", "P2B"], [0.4, 0.6], "dare_linear_svd", density=0.5)
    assert a == b and "d0p5" in a
    torch.testing.assert_close(delta(layer, b), first)
    with pytest.raises(UserError, match="soups_density"):
        add_soup(model, ["P1A", "P2B"], [0.4, 0.6], "dare_linear_svd", density=0.0)


def test_svd_merges_whose_summed_rank_exceeds_a_layer_cut_at_its_width():
    """Two r=24 experts on 32-wide layers: the summed rank 48 is more than the layers have (peft crashed)."""
    from peft import LoraConfig, get_peft_model

    from rlphf_cli.benchmarks import get_benchmark
    from rlphf_cli.config import compose
    from rlphf_cli.modeling import build_tiny_model, build_tokenizer

    cfg = compose(["model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=1"])
    tokenizer = build_tokenizer(get_benchmark(cfg.benchmark).vocabulary_text())
    lora = LoraConfig(r=24, lora_alpha=24, target_modules=["v_proj", "up_proj"], lora_dropout=0.0)
    model = get_peft_model(build_tiny_model(cfg.model, tokenizer, 0), lora, adapter_name="P1A")
    model.add_adapter("P2B", lora)
    gen = torch.Generator().manual_seed(0)
    for n, p in model.named_parameters():
        if "lora_" in n:
            p.data.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    layer = model.base_model.model.model.layers[0].mlp.up_proj
    d1, d2 = delta(layer, "P1A"), delta(layer, "P2B")
    dare = add_soup(model, ["P1A", "P2B"], [0.3, 0.7], "dare_linear_svd", density=1.0)
    torch.testing.assert_close(delta(layer, dare), 0.3 * d1 + 0.7 * d2, atol=1e-4, rtol=1e-3)
