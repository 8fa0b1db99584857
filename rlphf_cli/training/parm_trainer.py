"""PARM (Lin et al., ICML 2025; Baijiong-Lin/PARM): `rlphf train-expert algo=parm`, saved as `parm/`.

One autoregressive reward model for every pole: the run's base with a preference-aware bilinear LoRA
(`rlphf_cli.pblora`), conditioned on the preference weights alpha. Its reward for alpha is
beta * sum_t log p_PARM(y_t | x, y_<t, alpha). Trained as PARM's `PrefARMTrainer` trains it: every step draws
one weight vector alpha from a Dirichlet, runs the step's pairs under it, and minimises
sum_i alpha_i x mean over the pairs labelled on pole i of -logsigmoid(beta (log p(chosen_i) - log p(rejected_i))),
GenARM's loss per pole (prompt masked, EOS a response token, no length normalisation, no reference model).

PARM's data label every pair on every objective; the run's pairs are the same sampled pairs labelled pole by
pole (`data/pairs/<pole>.json`), so they are merged back: one (prompt, two responses) with a label per pole
that did not tie. Each step's forward then serves every pole's loss. Pairs from other sources (P-Soups's
files) are merged where they coincide; a pole a step has no labelled pair for adds nothing to that step.

At decoding (`generate method=parm`): log p_base + beta_decode x log p_PARM(. | x, w), renormalised, one ARM
whatever the number of poles. The own-pole check guides the base with the PARM at each pole's one-hot weights.

The trainer is a plain PyTorch loop (it trains in seconds here; an interrupted run starts over): TRL's
DPOTrainer carries one loss per batch and no per-step preference.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rlphf_cli.adapters import base_model_path
from rlphf_cli.errors import UserError
from rlphf_cli.modeling import format_prompt
from rlphf_cli.pblora import PBLoRA
from rlphf_cli.preferences import all_combinations
from rlphf_cli.training.common import TRAINER_LOG
from rlphf_cli.training.expert_config import setting
from rlphf_cli.training.pairs import pole_pairs

log = logging.getLogger(__name__)
SAMPLING = ("combinations", "simplex")
DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj"]  # PARM's


def check_parm_settings(pc) -> None:
    """One line for a bad `expert.parm` setting, before anything is written."""
    if pc.sampling not in SAMPLING:
        raise UserError(f"unknown expert.parm.sampling {pc.sampling!r}; valid: {', '.join(SAMPLING)}")
    if pc.concentration <= 0:
        raise UserError(f"expert.parm.concentration must be above 0, got {pc.concentration}")
    if pc.lora_r1 < 1 or pc.lora_r2 < 1:
        raise UserError(f"expert.parm.lora_r1 and lora_r2 must be at least 1, got {pc.lora_r1}, {pc.lora_r2}")


def merge_pairs(by_pole: dict[str, list[dict]]) -> list[dict]:
    """Per-pole P-Soups records -> [{prompt, responses: (y0, y1), labels: {pole: index of the chosen}}]."""
    items: dict[tuple, dict] = {}
    for pole, records in by_pole.items():
        for r in records:
            a, b = r["completion_a"], r["completion_b"]
            key = (r["user_input"], *sorted((a, b)))
            item = items.setdefault(key, {"prompt": r["user_input"], "responses": key[1:], "labels": {}})
            item["labels"][pole] = item["responses"].index(a)
    return list(items.values())


@dataclass
class PARMTrainer:
    """PARM's training loop over merged pairs: one Dirichlet weight vector per step, weighted BT losses."""

    parm: PBLoRA
    tokenizer: object
    items: list[dict]  # prompt already formatted
    beta: float
    batch_size: int
    steps: int
    learning_rate: float
    concentration: float = 0.5
    sampling: str = "combinations"
    warmup_steps: float = 0
    lr_scheduler: str = "linear"
    max_length: int = 512
    max_grad_norm: float = 1.0
    logging_steps: int = 10
    seed: int = 0
    history: list[dict] = field(default_factory=list)

    def __post_init__(self):
        if self.sampling not in SAMPLING:
            raise UserError(f"unknown expert.parm.sampling {self.sampling!r}; valid: {', '.join(SAMPLING)}")
        self.poles = self.parm.poles
        self.combinations = [[self.poles.index(p) for p in c] for c in all_combinations(self.poles)]
        self.rng = np.random.default_rng(self.seed)

    def sample_preference(self) -> torch.Tensor:
        """alpha over every pole: Dirichlet over all of them (PARM) or over a random combination's poles."""
        alpha = torch.zeros(len(self.poles))
        idx = (
            list(range(len(self.poles)))
            if self.sampling == "simplex"
            else self.combinations[self.rng.integers(len(self.combinations))]
        )
        alpha[idx] = torch.tensor(self.rng.dirichlet([self.concentration] * len(idx)), dtype=torch.float32)
        return alpha

    def _encode(self, prompt: str, response: str) -> tuple[list[int], int]:
        p = self.tokenizer(prompt).input_ids
        ids = p + self.tokenizer(response, add_special_tokens=False).input_ids + [self.tokenizer.eos_token_id]
        return ids[: self.max_length], len(p)

    def seq_logps(self, batch: list[dict], alpha: torch.Tensor) -> torch.Tensor:
        """Summed response log-probs [n, 2] of each item's two responses under the PARM at alpha."""
        seqs = [self._encode(it["prompt"], r) for it in batch for r in it["responses"]]
        width = max(len(s) for s, _ in seqs)
        device = next(self.parm.parameters()).device
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.zeros_like(ids, dtype=torch.bool)
        for i, (s, n_prompt) in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
            labels[i, n_prompt : len(s)] = True
        ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
        self.parm.set_preference(alpha)
        logits = self.parm(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        logp = logits.log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        return (logp * labels[:, 1:]).sum(-1).view(len(batch), 2)

    def loss(self, batch: list[dict], alpha: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """sum_i alpha_i x mean over the pairs labelled on pole i of -logsigmoid(beta x margin_i)."""
        logps = self.seq_logps(batch, alpha)
        total = logps.new_zeros(())
        figures = {}
        for i, pole in enumerate(self.poles):
            rows = [(j, it["labels"][pole]) for j, it in enumerate(batch) if pole in it["labels"]]
            if not rows:
                continue
            j = torch.tensor([r for r, _ in rows], device=logps.device)
            chosen = torch.tensor([c for _, c in rows], device=logps.device)
            margin = logps[j, chosen] - logps[j, 1 - chosen]
            pole_loss = -F.logsigmoid(self.beta * margin).mean()
            total = total + alpha[i].to(logps.device) * pole_loss
            figures[f"accuracy_{pole}"] = (margin > 0).float().mean().item()
        return total, figures

    @torch.no_grad()
    def heldout_accuracy(self, items: list[dict], batch_size: int = 16) -> dict[str, float | None]:
        """Per pole, the share of `items` labelled on it that the PARM at the pole's one-hot weights ranks
        right (log p(chosen) > log p(rejected)); None for a pole with no such item."""
        was_training = self.parm.training
        self.parm.eval()
        out: dict[str, float | None] = {}
        for i, pole in enumerate(self.poles):
            alpha = torch.zeros(len(self.poles))
            alpha[i] = 1.0
            rows = [it for it in items if pole in it["labels"]]
            right = 0
            for start in range(0, len(rows), batch_size):
                batch = rows[start : start + batch_size]
                logps = self.seq_logps(batch, alpha)
                chosen = torch.tensor([it["labels"][pole] for it in batch], device=logps.device)
                idx = torch.arange(len(batch), device=logps.device)
                right += int((logps[idx, chosen] > logps[idx, 1 - chosen]).sum())
            out[pole] = right / len(rows) if rows else None
        self.parm.train(was_training)
        return out

    def train(self) -> dict:
        from tqdm.auto import tqdm
        from transformers import get_scheduler

        params = [p for p in self.parm.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.learning_rate)
        warmup = self.warmup_steps if self.warmup_steps >= 1 else math.ceil(self.warmup_steps * self.steps)
        scheduler = get_scheduler(self.lr_scheduler, optimizer, int(warmup), self.steps)
        order: list[int] = []
        shuffle = random.Random(self.seed)
        trainer_log = logging.getLogger(TRAINER_LOG)
        self.parm.train()
        losses = []
        for step in tqdm(range(self.steps), desc="train PARM", unit="step"):
            if len(order) < self.batch_size:
                more = list(range(len(self.items)))
                shuffle.shuffle(more)
                order += more
            batch = [self.items[i] for i in order[: self.batch_size]]
            del order[: self.batch_size]
            alpha = self.sample_preference()
            loss, figures = self.loss(batch, alpha)
            optimizer.zero_grad()
            loss.backward()
            if self.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            if (step + 1) % self.logging_steps == 0 or step + 1 == self.steps:
                recent = losses[-self.logging_steps :]
                entry = {"step": step + 1, "loss": sum(recent) / len(recent), **figures}
                self.history.append(entry)
                trainer_log.info("PARM step %d: %s", step + 1, entry)
        self.parm.eval()
        return {"train_loss": sum(losses) / max(1, len(losses)), "steps": self.steps}


def target_modules(cfg) -> list[str]:
    own = cfg.expert.parm.lora_target_modules
    return list(own or cfg.expert.lora_target_modules or DEFAULT_TARGETS)


HELDOUT_FRACTION = 0.1  # of the merged pairs, held out for the per-pole accuracy (as the reward models: 10%)


def parm_trainer(cfg, items: list[dict] | None = None) -> PARMTrainer:
    """The PARM trainer: the base (frozen) with a new PBLoRA over the benchmark's poles, on every pole's pairs."""
    from rlphf_cli.modeling import load_causal_lm, load_tokenizer, resolve_device

    pc = cfg.expert.parm
    base = base_model_path(cfg)
    poles = list(cfg.benchmark.poles)
    tokenizer = load_tokenizer(base, cfg.model.trust_remote_code)
    if items is None:
        items = merge_pairs({p: pole_pairs(cfg, p) for p in poles})
    items = [
        {**it, "prompt": format_prompt(cfg.model.prompt_template, it["prompt"], tokenizer)} for it in items
    ]
    torch.manual_seed(cfg.seed)
    model = load_causal_lm(base, cfg.model, resolve_device(cfg.device))
    try:
        parm = PBLoRA(
            model, poles, pc.lora_r1, pc.lora_r2, pc.lora_alpha, target_modules(cfg), pc.lora_dropout
        )
    except ValueError as exc:
        raise UserError(f"expert.parm: {exc}") from None
    parm.to(next(model.parameters()).device)
    batch = setting(cfg, "batch_size")
    max_steps = setting(cfg, "max_steps")
    steps = (
        max_steps
        if max_steps and max_steps > 0
        else math.ceil(setting(cfg, "num_epochs") * len(items) / batch)
    )
    return PARMTrainer(
        parm=parm,
        tokenizer=tokenizer,
        items=items,
        beta=pc.beta,
        batch_size=batch,
        steps=max(1, steps),
        learning_rate=setting(cfg, "learning_rate"),
        concentration=pc.concentration,
        sampling=pc.sampling,
        warmup_steps=cfg.expert.warmup_steps,
        lr_scheduler=cfg.expert.lr_scheduler,
        max_length=cfg.expert.max_length,
        logging_steps=cfg.expert.logging_steps,
        seed=cfg.seed,
    )


def train_parm(cfg, work: Path) -> dict:
    """Train the PARM and save it in `work` (pblora.safetensors, parm_config.json)."""
    from rlphf_cli.training.pairs import split_pairs

    start = time.perf_counter()
    poles = list(cfg.benchmark.poles)
    items, held = split_pairs(merge_pairs({p: pole_pairs(cfg, p) for p in poles}), HELDOUT_FRACTION, cfg.seed)
    trainer = parm_trainer(cfg, items)
    labelled = {p: sum(p in it["labels"] for it in trainer.items) for p in trainer.poles}
    log.info(
        "PARM: %d pairs (labelled per pole: %s), %d steps of %d, beta %g, %s weights",
        len(trainer.items),
        ", ".join(f"{p} {n}" for p, n in labelled.items()),
        trainer.steps,
        trainer.batch_size,
        trainer.beta,
        trainer.sampling,
    )
    stats = trainer.train()
    seconds = round(time.perf_counter() - start, 1)
    prompt = lambda it: format_prompt(cfg.model.prompt_template, it["prompt"], trainer.tokenizer)  # noqa: E731
    accuracy = trainer.heldout_accuracy([{**it, "prompt": prompt(it)} for it in held])
    known = [a for a in accuracy.values() if a is not None]
    log.info(
        "PARM held-out accuracy at each pole's one-hot weights: %s (mean %.3f, %d pairs)",
        ", ".join(f"{p} {a:.3f}" for p, a in accuracy.items() if a is not None),
        sum(known) / max(1, len(known)),
        len(held),
    )
    trainer.parm.save(work)
    trainer.parm.remove()
    return {
        **stats,
        "pairs": len(trainer.items),
        "pairs_per_pole": labelled,
        "heldout_pairs": len(held),
        "heldout_accuracy": accuracy,  # per pole, at its one-hot weights
        "train_seconds": seconds,
        "history": trainer.history,
    }


# ----- the own-pole check: the PARM at each pole's one-hot weights guiding the base -----
@torch.no_grad()
def parm_check(cfg, work: Path) -> dict:
    """Per pole: the base guided by the PARM at that pole's one-hot weights (log p_base + generate.parm_beta x
    log p_PARM) against the base alone, judged on the pole, on held-out prompts; greedy, then
    `expert.eval_samples` samples per prompt at `generate.temperature` (the same random stream for both).
    The base alone is decoded once for every pole. {} when the benchmark has no programmatic judge."""
    from rlphf_cli.adapters import explain_load_failure
    from rlphf_cli.benchmarks import get_benchmark
    from rlphf_cli.decoding.engine import BASE, AdapterExperts, Sampler
    from rlphf_cli.modeling import load_causal_lm, load_tokenizer, resolve_device
    from rlphf_cli.pblora import add_parm_adapters, parm_blend
    from rlphf_cli.training.common import guided_texts, judge_against_base

    bench = get_benchmark(cfg.benchmark)
    if not hasattr(bench, "compare"):
        return {}
    base_path = base_model_path(cfg)
    device = resolve_device(cfg.device)
    tokenizer = load_tokenizer(base_path, cfg.model.trust_remote_code)
    with explain_load_failure(f"the PARM in {work}", base_path):
        model, config = add_parm_adapters(load_causal_lm(base_path, cfg.model, device), work)
    experts = AdapterExperts(model)
    poles = config["poles"]
    beta = cfg.generate.parm_beta
    prompts = bench.eval_prompts()
    ids = [tokenizer(format_prompt(cfg.model.prompt_template, p.text, tokenizer)).input_ids for p in prompts]

    def run(active: list, weights: list[float], n: int, sampler: Sampler) -> list[list[str]]:
        return guided_texts(cfg, experts, tokenizer, ids, active, weights, n, sampler)

    def judged(n: int, sampler: Sampler) -> dict[str, dict]:
        alone = run([BASE], [1.0], n, sampler)  # once for every pole
        return {
            p: judge_against_base(
                bench, p, prompts, run([BASE, parm_blend(poles, {p: 1.0})], [1.0, beta], n, sampler), alone
            )
            for p in poles
        }

    greedy = judged(1, Sampler(greedy=True))
    out = {
        p: {"decoding": f"greedy, guiding the base (beta {beta:g}, one-hot weights)", **greedy[p]}
        for p in poles
    }
    n = cfg.expert.eval_samples
    if n > 0:
        temperature = cfg.generate.temperature
        sampled = judged(n, Sampler(temperature=temperature))
        for p in poles:
            out[p]["sampled"] = {
                "decoding": f"temperature {temperature:g}, guiding the base (beta {beta:g}, one-hot weights)",
                "samples_per_prompt": n,
                **sampled[p],
            }
    return out
