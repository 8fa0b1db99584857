"""GenARM's autoregressive reward models (Xu et al., ICLR 2025): `rlphf train-expert algo=arm`, `arms/<pole>/`.

An ARM is a LoRA causal LM on the run's base whose sequence log-probability is the reward:
r(x, y) = beta * sum_t log p_ARM(y_t | x, y_<t). It is trained on the pole's pairs (the DPO experts' pairs)
with Bradley-Terry, -logsigmoid(beta * (sum_t log p_ARM(chosen_t) - sum_t log p_ARM(rejected_t))): prompt
tokens masked, no length normalisation, no reference model. At decoding time it guides the frozen base,
log p_base + alpha * log p_ARM (`rlphf generate method=genarm`).

Which TRL path, and why: TRL 1.12 has no reference-free DPO (its `_compute_loss` always subtracts the
reference log-probs). With `precompute_ref_log_probs=True` it reads them from the dataset's
`ref_chosen_logps` / `ref_rejected_logps` columns instead of running a reference model, and it loads no
reference model at all; `ARMTrainer` fills those columns with zeros. The sigmoid loss then is
-logsigmoid(beta * ((logp_c - 0) - (logp_r - 0))), exactly GenARM's, with DPO's token-summed log-probs over
the completion mask (prompt masked; the EOS TRL appends counts as a response token, as in GenARM's code).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from rlphf_cli.adapters import base_model_path, explain_load_failure, lora_config
from rlphf_cli.benchmarks import get_benchmark
from rlphf_cli.decoding.engine import BASE, AdapterExperts, Sampler
from rlphf_cli.decoding.generate import genarm_weights
from rlphf_cli.modeling import format_prompt, load_causal_lm, load_tokenizer, resolve_device
from rlphf_cli.training.common import common_args, fit, guided_texts, judge_against_base
from rlphf_cli.training.expert_config import setting
from rlphf_cli.training.pairs import pole_pairs
from rlphf_cli.training.rm import rm_rows

log = logging.getLogger(__name__)


def _arm_trainer_class():
    """DPOTrainer with zero reference log-probs: GenARM's loss (trl imported only when training)."""
    from trl import DPOTrainer

    class ARMTrainer(DPOTrainer):
        def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
            zeros = [0.0] * len(dataset)
            return dataset.add_column("ref_chosen_logps", zeros).add_column("ref_rejected_logps", zeros)

    return ARMTrainer


def arm_trainer(cfg, pole: str, checkpoints: Path, rows: list[dict] | None = None):
    """The ARM trainer for a pole: the base (a path) with a new LoRA, on the pole's pairs (or `rows`)."""
    from datasets import Dataset
    from trl import DPOConfig

    base = base_model_path(cfg)
    tokenizer = load_tokenizer(base, cfg.model.trust_remote_code)
    # the prompts in the model's format, as `generate method=genarm` decodes them (its chat template if any)
    rows = rows if rows is not None else rm_rows(cfg, pole_pairs(cfg, pole), tokenizer)
    args = DPOConfig(
        **common_args(cfg, checkpoints, f"arm-{pole}"),
        beta=setting(cfg, "beta"),
        loss_type=["sigmoid"],
        precompute_ref_log_probs=True,  # the reference log-probs come from the (zero) columns: no reference model
        max_length=cfg.expert.max_length,
    )
    return _arm_trainer_class()(
        model=base,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(cfg.expert),
    )


def train_arm(cfg, pole: str, work: Path, checkpoints: Path) -> dict:
    trainer = arm_trainer(cfg, pole, checkpoints)
    log.info(
        "ARM %s: GenARM's loss (beta %g) on %d pairs", pole, setting(cfg, "beta"), len(trainer.train_dataset)
    )
    return fit(trainer, checkpoints, work, pole)


# ----- the own-pole check: the ARM guiding the base -----
@torch.no_grad()
def guided_check(cfg, pole: str, adapter_dir: Path) -> dict:
    """Judge the base guided by the saved ARM against the base alone on the pole, on held-out prompts.

    The ARM is weighted as a one-pole preference is in `generate method=genarm` (alpha = generate.genarm_alpha).
    Greedy, then `expert.eval_samples` samples per prompt at `generate.temperature` (the same random stream for
    both). Empty when the benchmark has no programmatic judge.
    """
    from peft import PeftModel

    bench = get_benchmark(cfg.benchmark)
    if not hasattr(bench, "compare"):
        return {}
    base_path = base_model_path(cfg)
    device = resolve_device(cfg.device)
    tokenizer = load_tokenizer(base_path, cfg.model.trust_remote_code)
    with explain_load_failure(f"the ARM in {adapter_dir}", base_path):
        model = PeftModel.from_pretrained(load_causal_lm(base_path, cfg.model, device), str(adapter_dir))
    experts = AdapterExperts(model.eval())
    name = next(iter(model.peft_config))
    alpha = cfg.generate.genarm_alpha
    prompts = bench.eval_prompts()
    ids = [tokenizer(format_prompt(cfg.model.prompt_template, p.text, tokenizer)).input_ids for p in prompts]

    def run(active: list, weights: list[float], n: int, sampler: Sampler) -> list[list[str]]:
        return guided_texts(cfg, experts, tokenizer, ids, active, weights, n, sampler)

    def both(n: int, sampler: Sampler) -> dict:
        guided = run([BASE, name], genarm_weights([1.0], alpha), n, sampler)
        alone = run([BASE], [1.0], n, sampler)
        return judge_against_base(bench, pole, prompts, guided, alone)

    out = {"decoding": f"greedy, guiding the base (alpha {alpha:g})", **both(1, Sampler(greedy=True))}
    n = cfg.expert.eval_samples
    if n > 0:
        temperature = cfg.generate.temperature
        sampled = both(n, Sampler(temperature=temperature))
        out["sampled"] = {
            "decoding": f"temperature {temperature:g}, guiding the base (alpha {alpha:g})",
            "samples_per_prompt": n,
            **sampled,
        }
    return out
