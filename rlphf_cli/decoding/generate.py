"""`rlphf generate`: decode the evaluation prompts for preferences with one method.

Methods: sft (the base), prompted (the base with the preference texts in the prompt), soups (the chosen
experts merged into one adapter per combination), mod (fixed weights, log-space mixing), uniform (fixed
uniform weights, probability-space mixing), genarm (the base guided by the combination's autoregressive
reward models, GenARM: log p_base + sum_i alpha_i log p_ARM_i, renormalised, with alpha_i the preference's
weight i times `generate.genarm_alpha`), pcm (weights from the trained preference control model).

GenARM's released code samples that mixture at temperature 1; here every method samples at
`generate.temperature`, so that the table compares methods, not temperatures.
"""

from __future__ import annotations

import logging
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rlphf_cli.adapters import base_model_path, load_experts
from rlphf_cli.benchmarks import get_benchmark
from rlphf_cli.benchmarks.base import Prompt
from rlphf_cli.config import to_dict
from rlphf_cli.decoding.engine import BASE, AdapterExperts, FixedWeights, Sampler, decode
from rlphf_cli.decoding.prompts import load_prompts_file
from rlphf_cli.decoding.soups import MERGES, add_soup
from rlphf_cli.errors import UserError
from rlphf_cli.generations import METHODS, GenerationsFile
from rlphf_cli.modeling import format_prompt, load_causal_lm, load_tokenizer, resolve_device
from rlphf_cli.preferences import Preference, parse_weighted_preferences, preference_text

log = logging.getLogger(__name__)

DEFAULT_MIXING = {"mod": "log", "uniform": "prob", "pcm": "prob", "genarm": "log"}


def generate(cfg) -> Path:
    return ensure_generations(cfg, cfg.generate.method)


def genarm_weights(pref_weights, strength: float) -> list[float]:
    """GenARM's weights over [base, ARM_1, ...] in log space: the base at 1, ARM i at alpha_i = w_i x strength."""
    return [1.0, *(float(w) * strength for w in pref_weights)]


def method_settings(cfg, method: str) -> dict:
    """What decides a method's outputs; resuming under other settings is refused."""
    g = cfg.generate
    settings = {
        "method": method,
        "max_new_tokens": g.max_new_tokens,
        "temperature": g.temperature,
        "top_k": g.top_k,
        "top_p": g.top_p,
        "greedy": g.greedy,
        "seed": g.seed,
        "prompts": str(g.prompts) if g.prompts else f"{cfg.benchmark.name}:eval",
    }
    if method == "soups":
        settings["merge"] = g.soups_merge
    if method == "genarm":
        settings["genarm_alpha"] = g.genarm_alpha
    if method in DEFAULT_MIXING:
        settings["mixing"] = g.mixing or DEFAULT_MIXING[method]
    return settings


def load_eval_prompts(cfg) -> list[Prompt]:
    if cfg.generate.prompts:
        return load_prompts_file(cfg.generate.prompts)
    return get_benchmark(cfg.benchmark).eval_prompts()


def ensure_generations(cfg, method: str) -> Path:
    """Generate whatever is missing of `generations/<method>.jsonl` for the configured prompts and preferences."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if cfg.generate.soups_merge not in MERGES:
        raise UserError(
            f"unknown generate.soups_merge {cfg.generate.soups_merge!r}; valid: {', '.join(MERGES)}"
        )
    mixing = cfg.generate.mixing or DEFAULT_MIXING.get(method, "prob")
    if mixing not in ("prob", "log"):
        raise UserError(f"unknown generate.mixing {mixing!r}; valid: prob, log")
    bench = get_benchmark(cfg.benchmark)
    prefs = parse_weighted_preferences(cfg.generate.preference, bench.poles)
    prompts = load_eval_prompts(cfg)
    out = GenerationsFile(cfg.run_dir, method)
    settings = method_settings(cfg, method)
    out.check_settings(settings)
    done = {(r["prompt_id"], r["combination"]) for r in out.read()}
    todo = [(p, pref) for pref in prefs for p in prompts if (p.id, pref.name) not in done]
    if todo:
        log.info(
            "generate %s: %d of %d (prompt, preference) pairs to decode",
            method,
            len(todo),
            len(prompts) * len(prefs),
        )
        Generator(cfg, method, mixing, settings).run(todo, out)
    else:
        log.info("generate %s: all %d pairs already in %s", method, len(prompts) * len(prefs), out.path)
    n = len(out.read())
    out.commit(to_dict(cfg), method=method, records=n, settings=settings)
    log.info("generations written to %s (%d records)", out.path, n)
    return out.path


@dataclass
class Generator:
    cfg: object
    method: str
    mixing: str
    settings: dict
    _model: object = field(default=None, init=False)

    def run(self, todo: list[tuple[Prompt, Preference]], out: GenerationsFile) -> None:
        cfg, g = self.cfg, self.cfg.generate
        self.device = resolve_device(cfg.device)
        base_path = base_model_path(cfg)
        self.tokenizer = load_tokenizer(base_path, cfg.model.trust_remote_code)
        base = load_causal_lm(base_path, cfg.model, self.device).eval()
        poles = sorted({p for _, pref in todo for p in pref.combination})
        if self.method in ("sft", "prompted"):
            self.model = base
        else:  # genarm: the combination's autoregressive reward models, named by their poles
            self.model = load_experts(cfg, base, poles, "arms" if self.method == "genarm" else "experts")
        self.pcm = None
        if self.method == "pcm":
            from rlphf_cli.pcm.provider import load_pcm

            self.pcm = load_pcm(cfg, self.device, expert_poles=list(get_benchmark(cfg.benchmark).poles))
        self.experts = AdapterExperts(self.model)  # a plain base is one expert, named BASE
        self.sampler = Sampler(g.temperature, g.top_k, g.top_p, g.greedy)

        by_pref: dict[Preference, list[Prompt]] = defaultdict(list)
        for prompt, pref in todo:
            by_pref[pref].append(prompt)
        with tqdm(total=len(todo), desc=f"generate {self.method}", unit="resp") as bar:
            for pref, prompts in by_pref.items():
                self._run_preference(pref, prompts, out, bar)

    def _prompt_text(self, prompt: Prompt, pref: Preference) -> str:
        text = (
            f"{prompt.text} {preference_text(pref.combination)}" if self.method == "prompted" else prompt.text
        )
        return format_prompt(self.cfg.model.prompt_template, text)

    def _run_preference(self, pref: Preference, prompts: list[Prompt], out: GenerationsFile, bar) -> None:
        g = self.cfg.generate
        ids = {p.id: self.tokenizer(self._prompt_text(p, pref)).input_ids for p in prompts}
        ordered = sorted(prompts, key=lambda p: len(ids[p.id]))  # batching by length: less padding
        active, extra = self._active(pref)
        for start in range(0, len(ordered), g.batch_size):
            batch = ordered[start : start + g.batch_size]
            seed = zlib.crc32(f"{g.seed}|{self.method}|{pref.name}|{batch[0].id}".encode())
            generator = torch.Generator(self.device).manual_seed(seed)
            provider = self._provider(pref, len(batch), active)
            result = decode(
                self.experts,
                provider,
                [ids[p.id] for p in batch],
                active,
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
                max_new_tokens=g.max_new_tokens,
                mixing=self.mixing,
                sampler=self.sampler,
                generator=generator,
                device=self.device,
            )
            records = [
                {
                    "prompt_id": p.id,
                    "prompt": p.text,
                    "combination": pref.name,
                    "weights": list(pref.weights),
                    "method": self.method,
                    "text": self.tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                    "prompt_tokens": len(ids[p.id]),
                    "new_tokens": len(tokens),
                    "seed": seed,
                    **extra,
                }
                for p, tokens in zip(batch, result.tokens, strict=True)
            ]
            out.append(records)
            bar.update(len(batch))
        if self.method == "soups":
            self.model.delete_adapter(active[0])

    def _active(self, pref: Preference) -> tuple[list[str], dict]:
        if self.method in ("sft", "prompted"):
            return [BASE], {}
        if self.method == "soups":
            merge = self.cfg.generate.soups_merge
            return [add_soup(self.model, list(pref.combination), list(pref.weights), merge)], {"merge": merge}
        if self.method == "genarm":  # the base is one more row, with no adapter
            return [BASE, *pref.combination], {
                "mixing": self.mixing,
                "genarm_alpha": self.cfg.generate.genarm_alpha,
            }
        return list(pref.combination), {"mixing": self.mixing}

    def _provider(self, pref: Preference, batch: int, active: list[str]):
        if self.method == "pcm":
            return self.pcm.provider(pref, batch)
        if self.method == "uniform":
            weights = torch.full((batch, len(active)), 1.0 / len(active))
        elif self.method == "mod":
            weights = torch.tensor([list(pref.weights)] * batch)
        elif self.method == "genarm":
            weights = torch.tensor([genarm_weights(pref.weights, self.cfg.generate.genarm_alpha)] * batch)
        else:
            weights = torch.ones(batch, 1)
        return FixedWeights(weights.to(self.device))
