"""Candidate responses to ask a user about, and their per-dimension features phi.

Candidates: for `personalize.candidate_prompts` training prompts (a seeded sample), every expert alone and
every combination's uniform mixture, decoded once with the generate settings and kept in
`personalize/candidates.jsonl` (resumed like any generations file). phi_d(y) = score(first pole) -
score(second pole) by the run's reward: the benchmark's judge, or the reward models on real data.
"""

from __future__ import annotations

import logging
import random

import numpy as np

from rlphf_cli.benchmarks import get_benchmark
from rlphf_cli.benchmarks.base import Prompt
from rlphf_cli.decoding.generate import Generator, method_settings
from rlphf_cli.generations import GenerationsFile
from rlphf_cli.preferences import Preference, all_combinations
from rlphf_cli.rewards import get_reward

log = logging.getLogger(__name__)


def reward_kind(cfg, bench) -> str:
    kind = cfg.personalize.reward
    if kind == "auto":
        return "judge" if hasattr(bench, "score") else "reward_model"
    return kind


class Features:
    """phi for responses, cached by (prompt, response); `valid` is False where the judge marks a response
    invalid (scores -1): such a response is never shown or asked about."""

    def __init__(self, cfg, dims: dict[str, tuple[str, str]]):
        bench = get_benchmark(cfg.benchmark)
        self.kind = reward_kind(cfg, bench)
        self.reward = get_reward(cfg, self.kind)
        self.dims = dims
        self._cache: dict[tuple[str, str], tuple[np.ndarray, bool]] = {}

    def __call__(self, prompts: list[str], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        todo = [
            (p, t) for p, t in dict.fromkeys(zip(prompts, texts, strict=True)) if (p, t) not in self._cache
        ]
        if todo:
            ps, ts = [p for p, _ in todo], [t for _, t in todo]
            poles = [p for pair in self.dims.values() for p in pair]
            scores = {pole: np.asarray(self.reward.score(pole, ps, ts), dtype=float) for pole in poles}
            phi = np.stack([scores[a] - scores[b] for a, b in self.dims.values()], axis=1)
            valid = np.ones(len(todo), bool)
            if self.kind == "judge":
                valid = np.all(np.stack([scores[p] for p in poles], 1) >= 0, axis=1)
            for key, f, v in zip(todo, phi, valid, strict=True):
                self._cache[key] = (f, bool(v))
        rows = [self._cache[(p, t)] for p, t in zip(prompts, texts, strict=True)]
        return np.stack([f for f, _ in rows]) if rows else np.zeros((0, len(self.dims))), np.array(
            [v for _, v in rows], bool
        )


def candidate_prompts(cfg) -> list[Prompt]:
    prompts = get_benchmark(cfg.benchmark).train_prompts()
    n = min(cfg.personalize.candidate_prompts, len(prompts))
    return random.Random(cfg.personalize.seed).sample(prompts, n)


def ensure_candidates(cfg) -> list[dict]:
    """Every candidate record (prompt_id, prompt, combination, text), decoding what is missing first."""

    bench = get_benchmark(cfg.benchmark)
    prefs = [Preference((p,), (1.0,)) for p in bench.poles]  # each expert alone
    prefs += [Preference(c, (1.0 / len(c),) * len(c)) for c in all_combinations(bench.poles)]
    prompts = candidate_prompts(cfg)
    out = GenerationsFile(cfg.run_dir, "candidates", folder="personalize")
    settings = {**method_settings(cfg, "uniform"), "prompts": f"train sample of {len(prompts)}"}
    out.check_settings(settings)
    done = {(r["prompt_id"], r["combination"]) for r in out.read()}
    todo = [(p, pref) for pref in prefs for p in prompts if (p.id, pref.name) not in done]
    if todo:
        log.info("personalize: decoding %d candidate responses into %s", len(todo), out.path)
        Generator(cfg, "uniform", "prob", settings).run(todo, out)
    return out.read()


def candidate_pairs(records: list[dict], features: Features):
    """Valid candidates grouped by prompt: (records, phi [n, D]) per prompt id."""
    phi, valid = features([r["prompt"] for r in records], [r["text"] for r in records])
    by_prompt: dict[str, tuple[list[dict], list[np.ndarray]]] = {}
    seen = set()
    for r, f, v in zip(records, phi, valid, strict=True):
        if not v or (r["prompt_id"], r["text"]) in seen:  # identical texts make no question
            continue
        seen.add((r["prompt_id"], r["text"]))
        recs, fs = by_prompt.setdefault(r["prompt_id"], ([], []))
        recs.append(r)
        fs.append(f)
    return {pid: (recs, np.stack(fs)) for pid, (recs, fs) in by_prompt.items()}


def pair_pool(groups, prompt_ids) -> tuple[list[tuple[dict, dict]], np.ndarray]:
    """Every within-prompt pair (A, B) of distinct candidates with a nonzero feature difference."""
    pairs, diffs = [], []
    dims = next(iter(groups.values()))[1].shape[1] if groups else 0
    for pid in prompt_ids:
        if pid not in groups:
            continue
        recs, phi = groups[pid]
        for i in range(len(recs)):
            for j in range(i + 1, len(recs)):
                d = phi[i] - phi[j]
                if np.abs(d).max() > 1e-9:
                    pairs.append((recs[i], recs[j]))
                    diffs.append(d)
    return pairs, np.asarray(diffs, dtype=float).reshape(len(diffs), dims)
