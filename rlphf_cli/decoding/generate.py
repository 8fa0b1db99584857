"""`rlphf generate`: decode the evaluation prompts for preferences with one method.

The methods live in rlphf_cli/methods/, one module each, registered in `rlphf_cli.methods.TABLE` (sft,
prompted, soups, mod, uniform, genarm, pcm, ...): each says which experts a row mixes, with which weights,
in which space, and whether the preference texts go into the prompt. Every method samples at
`generate.temperature`, so that the table compares methods, not temperatures.

A preference's weights drive the methods that take weights (`takes_weights`: soups, mod, genarm, pcm);
uniform, sft and prompted read only which poles are chosen (said in a log line; records keep the
preference's name, so that eval pairs them with the weighted methods). `preference=@users/NAME.json` reads a
user's mixture weights from the file `rlphf personalize` wrote (a path relative to the run directory, or any
path).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rlphf_cli.benchmarks import get_benchmark
from rlphf_cli.benchmarks.base import Prompt
from rlphf_cli.config import to_dict
from rlphf_cli.decoding.prompts import load_prompts_file
from rlphf_cli.decoding.runtime import Runtime
from rlphf_cli.errors import UserError
from rlphf_cli.generations import GenerationsFile
from rlphf_cli.methods import NAMES, get_method
from rlphf_cli.methods.batch import plan_rows
from rlphf_cli.methods.genarm import genarm_weights as genarm_weights  # training/arm.py imports it here
from rlphf_cli.modeling import format_prompt
from rlphf_cli.preferences import Preference, parse_weighted_preferences, preference_text

log = logging.getLogger(__name__)


def generate(cfg) -> Path:
    return ensure_generations(cfg, cfg.generate.method)


def method_settings(cfg, method: str) -> dict:
    """What decides a method's outputs; resuming under other settings is refused."""
    g = cfg.generate
    m = get_method(method)
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
    settings |= m.settings(cfg)
    settings["prompt_template"] = cfg.model.prompt_template
    settings["preference_in_prompt"] = preference_in_prompt(cfg, method)
    settings["inputs"] = decoded_with(cfg, method)
    return settings


def preference_in_prompt(cfg, method: str) -> bool:
    """Whether `method` decodes with the preference texts after the instruction (prompted always does)."""
    return get_method(method).preference_in_prompt(cfg)


def decoded_with(cfg, method: str) -> dict:
    """The inputs a method decodes with (their hashes): the base, its adapters, the PCM."""
    return get_method(method).inputs(cfg)


def load_eval_prompts(cfg) -> list[Prompt]:
    if cfg.generate.prompts:
        return load_prompts_file(cfg.generate.prompts)
    return get_benchmark(cfg.benchmark).eval_prompts()


def check_generate_config(cfg, method: str) -> None:
    """One line for a bad method, mixing space or `generate.preference_in_prompt` entry."""
    m = get_method(method)
    m.settings(cfg)  # a method checks its own settings (e.g. soups's merge)
    if m.mixing_space(cfg) not in ("prob", "log"):
        raise UserError(f"unknown generate.mixing {cfg.generate.mixing!r}; valid: prob, log")
    unknown = [x for x in cfg.generate.preference_in_prompt if x not in NAMES and x != "all"]
    if unknown:
        raise UserError(
            f"unknown method(s) {', '.join(map(repr, unknown))} in generate.preference_in_prompt; "
            f"valid: all, {', '.join(NAMES)}"
        )


def ensure_generations(cfg, method: str) -> Path:
    """Generate whatever is missing of `generations/<method>.jsonl` for the configured prompts and preferences."""
    m = get_method(method)
    check_generate_config(cfg, method)
    bench = get_benchmark(cfg.benchmark)
    prefs = resolve_preferences(cfg, bench.poles)
    for line in m.notes(prefs):
        log.info(line)
    prompts = load_eval_prompts(cfg)
    out = GenerationsFile(cfg.run_dir, method)
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
        Generator(cfg, method, m.mixing_space(cfg), settings).run(todo, out)
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
    """The model's input for an instruction (also `rlphf serve`'s). Methods that read the preference
    (`prompted`, and those in `generate.preference_in_prompt`) append the texts of the poles with weight,
    heaviest first (equal weights: as written)."""
    if preference_in_prompt(cfg, method):
        order = sorted(range(len(pref.combination)), key=lambda i: -pref.weights[i])
        text = f"{text} {preference_text(tuple(pref.combination[i] for i in order if pref.weights[i] > 0))}"
    return format_prompt(cfg.model.prompt_template, text, tokenizer)


@dataclass
class Generator:
    """Decodes (prompt, preference) pairs with one method on a runtime (loaded here unless given)."""

    cfg: object
    method: str
    mixing: str
    settings: dict
    runtime: Runtime | None = None

    def run(self, todo: list[tuple[Prompt, Preference]], out: GenerationsFile) -> None:
        g = self.cfg.generate
        m = get_method(self.method)
        rt = self.runtime = self.runtime or Runtime(self.cfg)
        prefs = list(dict.fromkeys(pref for _, pref in todo))
        m.load(rt, sorted({p for pref in prefs for p in pref.combination}))
        m.prepare(rt, prefs)
        self.sampler = rt.sampler()
        # every (prompt, preference) pair in one stream, batched by prompt length: rows of one batch may
        # carry different preferences, each row running its own experts with its own weights
        ids = [rt.tokenizer(self._prompt_text(p, pref)).input_ids for p, pref in todo]
        order = sorted(range(len(todo)), key=lambda i: len(ids[i]))
        with tqdm(total=len(todo), desc=f"generate {self.method}", unit="resp") as bar:
            for start in range(0, len(order), g.batch_size):
                rows = order[start : start + g.batch_size]
                out.append(self._run_batch([todo[i] for i in rows], [ids[i] for i in rows]))
                bar.update(len(rows))

    def _prompt_text(self, prompt: Prompt, pref: Preference) -> str:
        return method_prompt(self.cfg, self.method, prompt.text, pref, self.runtime.tokenizer)

    def _run_batch(self, rows: list[tuple[Prompt, Preference]], ids: list[list[int]]) -> list[dict]:
        g, rt = self.cfg.generate, self.runtime
        m = get_method(self.method)
        first_prompt, first_pref = rows[0]
        seed = zlib.crc32(f"{g.seed}|{self.method}|{first_pref.name}|{first_prompt.id}".encode())
        generator = torch.Generator(rt.device).manual_seed(seed)
        plan = plan_rows(rt, [(m, pref) for _, pref in rows], mixing=self.mixing)
        result = rt.decode(
            plan.provider,
            ids,
            plan.active,
            max_new_tokens=g.max_new_tokens,
            mixing=plan.mixing,
            sampler=self.sampler,
            generator=generator,
        )
        extra = m.record(self.cfg)
        if "mixing" in extra:
            extra["mixing"] = self.mixing
        return [
            {
                "prompt_id": p.id,
                "prompt": p.text,
                "combination": pref.name,
                "weights": list(pref.weights),
                "method": self.method,
                "text": rt.text(tokens),
                "prompt_tokens": len(row_ids),
                "new_tokens": len(tokens),
                "seed": seed,
                **({"user": pref.user} if pref.user else {}),
                **extra,
            }
            for (p, pref), row_ids, tokens in zip(rows, ids, result.tokens, strict=True)
        ]
