"""Headroom: what mixing the experts could gain on a benchmark, measured before any PCM is trusted.

Beside the fixed mixtures, two references:
- the best fixed-weight mixture of a small grid over a combination's experts (probability space, as the
  PCM mixes), chosen per combination on training prompts and reported on the held-out ones;
- a sentence-level oracle: at every sentence boundary each of the combination's experts continues the
  response alone to its end, the combination's judges score every continuation, and the best one's next
  sentence is kept. It sees the judges, so no decoding-time method can be expected to reach it; the gap
  between it and the best fixed mixture is what routing within a response can gain.

Scores are the benchmark judge's, averaged over the combination's poles (an invalid response scores -1
on every pole), at the evaluation's decoding settings (`generate.temperature`, `generate.max_new_tokens`).
`headroom/results.json` holds every figure per combination.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rlphf_cli.config import to_dict
from rlphf_cli.decoding.engine import FixedWeights
from rlphf_cli.errors import UserError
from rlphf_cli.preferences import all_combinations, split_name
from rlphf_cli.runs import RunDir, atomic_write_json, input_hash, made_from, stage_keys

log = logging.getLogger(__name__)


class MixtureBench:
    """The run's experts on one base, the tokenizer, the judge and the evaluation's sampler."""

    def __init__(self, cfg):
        from rlphf_cli.benchmarks import get_benchmark
        from rlphf_cli.decoding.runtime import Runtime
        from rlphf_cli.modeling import sentence_end_ids
        from rlphf_cli.rewards import get_reward

        self.cfg = cfg
        self.bench = get_benchmark(cfg.benchmark)
        if not hasattr(self.bench, "score"):
            raise UserError(
                f"benchmark {self.bench.name!r} has no programmatic judge: no headroom to measure"
            )
        self.runtime = Runtime(cfg)
        self.runtime.load_adapters("experts", list(self.bench.poles))
        self.device, self.tokenizer, self.experts = (
            self.runtime.device,
            self.runtime.tokenizer,
            self.runtime.experts,
        )
        self.reward = get_reward(cfg, "judge")
        self.sampler = self.runtime.sampler()
        self.max_new_tokens = cfg.generate.max_new_tokens
        self.sentence_ends = sentence_end_ids(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.runtime.encode(text)

    def text(self, tokens: list[int]) -> str:
        return self.runtime.text(tokens)

    def score(self, combination, prompts: list[str], texts: list[str]) -> torch.Tensor:
        """The judge's score averaged over the combination's poles, per response."""
        total = torch.zeros(len(texts))
        for pole in combination:
            total += torch.tensor(self.reward.score(pole, prompts, texts)) / len(combination)
        return total

    def mixture(self, active, weights, prompt_ids, seed: int, max_new_tokens: int | None = None):
        """Tokens sampled from a fixed-weight mixture of experts: `active` the experts of every row or one
        list per row, `weights` one vector for every row or one per row (a list of vectors)."""
        rows = weights if isinstance(weights[0], list | tuple) else [list(weights)] * len(prompt_ids)
        return self.runtime.decode(
            FixedWeights(torch.tensor(rows, dtype=torch.float32)),
            prompt_ids,
            active,
            max_new_tokens=max_new_tokens or self.max_new_tokens,
            sampler=self.sampler,
            seed=seed,
        ).tokens


def simplex_grid(k: int, steps: int) -> list[tuple[float, ...]]:
    """Weight vectors over k experts in multiples of 1/steps."""
    return [
        tuple(x / steps for x in w) for w in itertools.product(range(steps + 1), repeat=k) if sum(w) == steps
    ]


def sentence_oracle(mb: MixtureBench, combination, prompts: list[str], seed: int) -> list[str]:
    """At every sentence boundary keep the next sentence of the expert whose own continuation scores best."""
    eos = mb.tokenizer.eos_token_id
    ids = [mb.encode(p) for p in prompts]
    prefix: list[list[int]] = [[] for _ in prompts]
    open_rows = list(range(len(prompts)))
    for boundary in range(mb.max_new_tokens):
        if not open_rows:
            break
        budget = mb.max_new_tokens - min(len(prefix[i]) for i in open_rows)
        # every expert continues every open row alone, all in one decode (each row runs its one expert)
        n, k = len(open_rows), len(combination)
        alone = [[pole] for pole in combination for _ in open_rows]
        tokens = mb.mixture(
            alone, [1.0], [ids[i] + prefix[i] for i in open_rows] * k, seed + boundary, budget
        )
        continuations = [tokens[e * n : (e + 1) * n] for e in range(k)]
        scores = torch.stack(
            [
                mb.score(
                    combination,
                    [prompts[i] for i in open_rows],
                    [mb.text(prefix[i] + c[j]) for j, i in enumerate(open_rows)],
                )
                for c in continuations
            ]
        )
        still_open = []
        for j, i in enumerate(open_rows):
            best = continuations[int(scores[:, j].argmax())][j]
            cut = next(
                (t + 1 for t, tok in enumerate(best) if tok in mb.sentence_ends or tok == eos), len(best)
            )
            if best[cut : cut + 1] == [eos]:  # a sentence that ends the response: keep its EOS too
                cut += 1
            prefix[i] += best[:cut]
            room = len(prefix[i]) < mb.max_new_tokens
            if room and cut < len(best) and (not prefix[i] or prefix[i][-1] != eos):
                still_open.append(i)
        open_rows = still_open
    return [mb.text(p) for p in prefix]


def measure_headroom(cfg) -> dict:
    """Uniform, each expert alone, the best grid mixture and the sentence oracle, per combination."""
    mb = MixtureBench(cfg)
    h = cfg.headroom
    seed = cfg.generate.seed
    held_out = mb.bench.eval_prompts()[: h.max_prompts or None]
    eval_prompts = [p.text for p in held_out]
    train_prompts = [p.text for p in mb.bench.train_prompts()][
        :: max(1, len(mb.bench.train_prompts()) // h.grid_prompts)
    ]
    train_prompts = train_prompts[: h.grid_prompts]
    eval_ids = [mb.encode(p) for p in eval_prompts]
    train_ids = [mb.encode(p) for p in train_prompts]
    combinations = all_combinations(mb.bench.poles)
    per_combination = []

    def judged(combination, weight_list, ids=eval_ids, prompts=eval_prompts) -> list[dict]:
        """Each weight vector's mixture on every prompt, all in one decode."""
        rows = [list(w) for w in weight_list for _ in ids]
        tokens = mb.mixture(list(combination), rows, ids * len(weight_list), seed)
        s = mb.score(combination, prompts * len(weight_list), [mb.text(t) for t in tokens])
        return [
            {"score": part.mean().item(), "valid": (part > -1).float().mean().item()}
            for part in s.split(len(ids))
        ]

    bar = tqdm(combinations, desc="headroom", unit="combination")
    for combination in bar:
        k = len(combination)
        alone = [tuple(float(i == j) for i in range(k)) for j in range(k)]
        uniform, *experts = judged(combination, [(1 / k,) * k, *alone])
        row = {"combination": ",".join(combination), "uniform": uniform}
        row |= {f"expert:{pole}": x for pole, x in zip(combination, experts, strict=True)}
        points = simplex_grid(k, h.grid_steps)
        grid = dict(
            zip(
                points,
                [x["score"] for x in judged(combination, points, train_ids, train_prompts)],
                strict=True,
            )
        )
        best = max(grid, key=grid.get)
        row["best_fixed"] = {
            **judged(combination, [best])[0],
            "weights": list(best),
            "train_score": grid[best],
        }
        oracle = sentence_oracle(mb, combination, eval_prompts, seed)
        s = mb.score(combination, eval_prompts, oracle)
        row["sentence_oracle"] = {"score": s.mean().item(), "valid": (s > -1).float().mean().item()}
        per_combination.append(row)
        bar.set_postfix(
            uniform=f"{row['uniform']['score']:.3f}", oracle=f"{row['sentence_oracle']['score']:.3f}"
        )
    return {
        "eval_prompts": len(eval_prompts),
        "prompt_ids": [p.id for p in held_out],
        "grid_prompts": len(train_prompts),
        "grid_steps": h.grid_steps,
        "decoding": {"temperature": cfg.generate.temperature, "max_new_tokens": mb.max_new_tokens},
        "mean": {
            key: sum(r[key]["score"] for r in per_combination) / len(per_combination)
            for key in ("uniform", "best_fixed", "sentence_oracle")
        },
        "combinations": per_combination,
    }


def method_scores(cfg, methods, prompt_ids=None) -> dict[str, dict]:
    """Mean judge score (over the combination's poles) and valid share of each method's generations
    (on `prompt_ids` only, when given)."""
    from rlphf_cli.benchmarks import get_benchmark
    from rlphf_cli.generations import GenerationsFile

    bench = get_benchmark(cfg.benchmark)
    if not hasattr(bench, "score"):
        return {}
    out = {}
    for method in methods:
        gen = GenerationsFile(cfg.run_dir, method)
        if not gen.is_complete():
            continue
        scores = []
        for r in gen.read():
            if prompt_ids is not None and r["prompt_id"] not in prompt_ids:
                continue
            poles, weights = split_name(r["combination"])  # weighted preferences: the weighted mean
            scores.append(
                sum(w * bench.score(p, r["prompt"], r["text"]) for p, w in zip(poles, weights, strict=True))
            )
        if scores:
            out[method] = {
                "score": sum(scores) / len(scores),
                "valid": sum(s > -1 for s in scores) / len(scores),
                "responses": len(scores),
            }
    return out


# the sampler's settings headroom decodes with (the rest of `generate` names what `rlphf generate` decodes)
GENERATE_SAMPLING = (
    "generate.seed",
    "generate.temperature",
    "generate.top_k",
    "generate.top_p",
    "generate.greedy",
    "generate.max_new_tokens",
)


def headroom_keys(cfg) -> tuple[str, ...]:
    """Every setting of the headroom section, the model's and the benchmark's, the sampler's, and the seed."""
    return stage_keys(cfg, ("seed", "model", "benchmark", "headroom", *GENERATE_SAMPLING))


def headroom(cfg) -> Path:
    run = RunDir(cfg.run_dir)
    art = run.artifact("headroom")
    inputs = {"base": input_hash(run.root / "base")}
    inputs |= {f"experts/{p}": input_hash(run.root / "experts" / p) for p in cfg.benchmark.poles}
    made = made_from(cfg, headroom_keys(cfg), inputs)
    if art.reuse(made, "headroom", cfg.force):
        log.info("headroom already measured in %s; skipping", art.path)
        return art.path
    work = art.start(made)
    results = measure_headroom(cfg)
    atomic_write_json(work / "results.json", results)
    art.commit("headroom", to_dict(cfg), mean=results["mean"], made_from=made)
    m = results["mean"]
    log.info(
        "headroom (mean judge score): uniform %.3f, best fixed mixture %.3f, sentence oracle %.3f",
        m["uniform"],
        m["best_fixed"],
        m["sentence_oracle"],
    )
    return art.path
