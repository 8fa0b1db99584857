"""`rlphf generate`: decode the evaluation prompts for preferences with one method.

Methods: sft (the base), prompted (the base with the preference texts in the prompt), soups (the chosen
experts merged into one adapter per combination), mod (fixed weights, log-space mixing), uniform (fixed
uniform weights, probability-space mixing), genarm (the base guided by the combination's autoregressive
reward models, GenARM: log p_base + sum_i alpha_i log p_ARM_i, renormalised, with alpha_i the preference's
weight i times `generate.genarm_alpha`), pcm (weights from the trained preference control model).
GenARM's released code samples that mixture at temperature 1; here every method samples at
`generate.temperature`, so that the table compares methods, not temperatures.

A preference's weights drive soups (the merge weights), mod (the mixture weights) and pcm (its preference
vector). `uniform` is the unpersonalised mixture: equal weights over the preference's poles by definition, so
it ignores given weights (said in a log line; its records keep the preference's name, so that eval pairs them
with the weighted methods). `prompted` cannot state numbers to the model: it puts the text of every pole with
a weight above zero in the prompt, heaviest first. `preference=@users/NAME.json` reads a user's mixture
weights from the file `rlphf personalize` wrote (a path relative to the run directory, or any path).
"""

from __future__ import annotations

import logging
import zlib
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
from rlphf_cli.decoding.soups import MERGES, SVD_MERGES, add_soup
from rlphf_cli.errors import UserError
from rlphf_cli.generations import METHODS, GenerationsFile
from rlphf_cli.modeling import format_prompt, load_causal_lm, load_tokenizer, resolve_device
from rlphf_cli.preferences import Preference, parse_weighted_preferences, preference_text
from rlphf_cli.runs import RunDir, input_hash

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
        if g.soups_merge in SVD_MERGES:
            settings["density"] = g.soups_density
    if method == "genarm":
        settings["genarm_alpha"] = g.genarm_alpha
    if method in DEFAULT_MIXING:
        settings["mixing"] = g.mixing or DEFAULT_MIXING[method]
    settings["prompt_template"] = cfg.model.prompt_template
    settings["preference_in_prompt"] = preference_in_prompt(cfg, method)
    settings["inputs"] = decoded_with(cfg, method)
    return settings


def preference_in_prompt(cfg, method: str) -> bool:
    """Whether `method` decodes with the preference texts after the instruction (prompted always does)."""
    return method == "prompted" or method in cfg.generate.preference_in_prompt


def decoded_with(cfg, method: str) -> dict:
    """The inputs a method decodes with (their hashes): the base, the experts, the PCM."""
    root = RunDir(cfg.run_dir).root
    inputs = {"base": input_hash(root / "base")}
    if method not in ("sft", "prompted"):
        inputs |= {f"experts/{p}": input_hash(root / "experts" / p) for p in cfg.benchmark.poles}
    if method == "pcm":
        inputs["pcm"] = input_hash(root / "pcm")
    return inputs


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
    prefs = resolve_preferences(cfg, bench.poles)
    if method == "uniform" and any(p.weighted for p in prefs):
        log.info(
            "uniform ignores preference weights by definition: equal weights over each preference's poles"
        )
    if method == "prompted" and any(p.weighted for p in prefs):
        log.info("prompted states no weights: the texts of the poles with weight above zero, heaviest first")
    prompts = load_eval_prompts(cfg)
    out = GenerationsFile(cfg.run_dir, method)
    unknown = [m for m in cfg.generate.preference_in_prompt if m not in METHODS]
    if unknown:
        raise UserError(
            f"unknown method(s) {', '.join(map(repr, unknown))} in generate.preference_in_prompt; "
            f"valid: {', '.join(METHODS)}"
        )
    settings = method_settings(cfg, method)
    out.check_settings(settings, cfg.force)
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


def resolve_preferences(cfg, poles) -> list[Preference]:
    """`generate.preference`: a spec (`all`, `P1A,P2B,P3A`, `P1A:0.6,P2B:0.4`, `;` between several) or
    `@users/NAME.json`, a user's file from `rlphf personalize`."""
    spec = str(cfg.generate.preference).strip()
    if spec.startswith("@"):
        from rlphf_cli.personalize.users import load_user_preference

        return [load_user_preference(spec[1:], cfg.run_dir, poles)]
    return parse_weighted_preferences(spec, poles)


def method_prompt(cfg, method: str, text: str, pref: Preference, tokenizer=None) -> str:
    """The model's input for an instruction (also `rlphf serve`'s). Methods in
    `generate.preference_in_prompt` (always `prompted`) append the texts of the poles with weight, heaviest
    first (equal weights: as written)."""
    if preference_in_prompt(cfg, method):
        order = sorted(range(len(pref.combination)), key=lambda i: -pref.weights[i])
        text = f"{text} {preference_text(tuple(pref.combination[i] for i in order if pref.weights[i] > 0))}"
    return format_prompt(cfg.model.prompt_template, text, tokenizer)


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

        # every (prompt, preference) pair in one stream, batched by prompt length: rows of one batch may
        # carry different preferences, each row running its own experts with its own weights
        ids = [self.tokenizer(self._prompt_text(p, pref)).input_ids for p, pref in todo]
        order = sorted(range(len(todo)), key=lambda i: len(ids[i]))
        soups = self._add_soups({pref for _, pref in todo})
        with tqdm(total=len(todo), desc=f"generate {self.method}", unit="resp") as bar:
            for start in range(0, len(order), g.batch_size):
                rows = order[start : start + g.batch_size]
                out.append(self._run_batch([todo[i] for i in rows], [ids[i] for i in rows], soups))
                bar.update(len(rows))
        for name in set(soups.values()):
            self.model.delete_adapter(name)

    def _prompt_text(self, prompt: Prompt, pref: Preference) -> str:
        return method_prompt(self.cfg, self.method, prompt.text, pref, self.tokenizer)

    def _run_batch(
        self, rows: list[tuple[Prompt, Preference]], ids: list[list[int]], soups: dict
    ) -> list[dict]:
        g = self.cfg.generate
        first_prompt, first_pref = rows[0]
        seed = zlib.crc32(f"{g.seed}|{self.method}|{first_pref.name}|{first_prompt.id}".encode())
        generator = torch.Generator(self.device).manual_seed(seed)
        active = [self._active(pref, soups) for _, pref in rows]
        k = max(len(a) for a in active)
        active = [a + [BASE] * (k - len(a)) for a in active]  # every row mixes k experts: BASE at weight 0
        result = decode(
            self.experts,
            self._provider([pref for _, pref in rows], active),
            ids,
            active,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            max_new_tokens=g.max_new_tokens,
            mixing=self.mixing,
            sampler=self.sampler,
            generator=generator,
            device=self.device,
        )
        extra = {"merge": g.soups_merge} if self.method == "soups" else {}
        if self.method in DEFAULT_MIXING:
            extra = {"mixing": self.mixing}
        if self.method == "genarm":
            extra["genarm_alpha"] = g.genarm_alpha
        return [
            {
                "prompt_id": p.id,
                "prompt": p.text,
                "combination": pref.name,
                "weights": list(pref.weights),
                "method": self.method,
                "text": self.tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                "prompt_tokens": len(row_ids),
                "new_tokens": len(tokens),
                "seed": seed,
                **({"user": pref.user} if pref.user else {}),
                **extra,
            }
            for (p, pref), row_ids, tokens in zip(rows, ids, result.tokens, strict=True)
        ]

    def _add_soups(self, prefs: set[Preference]) -> dict[Preference, str]:
        """Soups: one merged adapter per preference, all added before decoding (rows of a batch share them)."""
        if self.method != "soups":
            return {}
        merge = self.cfg.generate.soups_merge
        return {
            pref: add_soup(
                self.model, list(pref.combination), list(pref.weights), merge, self.cfg.generate.soups_density
            )
            for pref in sorted(prefs, key=lambda p: p.name)
        }

    def _active(self, pref: Preference, soups: dict) -> list[str]:
        if self.method in ("sft", "prompted"):
            return [BASE]
        if self.method == "soups":
            return [soups[pref]]
        if self.method == "genarm":  # the base is one more row, with no adapter
            return [BASE, *pref.combination]
        return list(pref.combination)

    def _provider(self, prefs: list[Preference], active: list[list[str]]):
        if self.method == "pcm":
            return self.pcm.provider(prefs, active)
        weights = torch.zeros(len(prefs), len(active[0]))
        for i, pref in enumerate(prefs):
            if self.method == "genarm":
                row = genarm_weights(pref.weights, self.cfg.generate.genarm_alpha)
                weights[i, : len(row)] = torch.tensor(row)
                continue
            n = len(pref.combination) if self.method in ("uniform", "mod") else 1
            weights[i, :n] = torch.tensor(pref.weights) if self.method == "mod" else 1.0 / n
        return FixedWeights(weights.to(self.device))
