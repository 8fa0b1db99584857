"""Preference pairs, the P-Soups protocol: `data/pairs/<pole>.json`.

The base model samples two responses per training prompt (`pairs.pairs_per_prompt` such pairs per prompt);
for each pole a labeler (the benchmark's judge, or the run's reward models) says which of the two better
satisfies that pole alone. Ties are dropped and counted. Each pole's file uses the P-Soups reward-model
schema, a JSON list of `{"user_input", "completion_a" (chosen), "completion_b" (rejected)}`, so the same
loader reads P-Soups's released `rm_training/P1A.json` ... when `pairs.data_dir` points at them.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import torch

from rlphf_cli.errors import UserError
from rlphf_cli.runs import (
    BENCHMARK_NOT_TRAINED,
    RunDir,
    atomic_write_json,
    atomic_write_text,
    input_hash,
    made_from,
    read_jsonl,
    stage_keys,
)

log = logging.getLogger(__name__)

PAIR_FIELDS = ("user_input", "completion_a", "completion_b")
PAIRS_DIR = "data/pairs"


# ----- reading -----
def load_pairs(path: str | Path) -> list[dict]:
    """Read one pole's pairs (a JSON list, or JSON lines); every record needs non-empty PAIR_FIELDS."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"pairs file not found: {path}")
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise UserError(f"pairs file {path} is empty")
    if not text.startswith("["):
        records = read_jsonl(path)
    else:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"pairs file {path} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(records, list) or not records:
        raise UserError(
            f"pairs file {path} holds no pairs (expected a list of {', '.join(PAIR_FIELDS)} records)"
        )
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise UserError(f"pairs file {path}: record {i} is not an object with {', '.join(PAIR_FIELDS)}")
        for key in PAIR_FIELDS:
            value = rec.get(key)
            if not isinstance(value, str) or not value.strip():
                problem = "lacks field" if key not in rec else "has an empty or non-text field"
                raise UserError(
                    f"pairs file {path}: record {i} {problem} {key!r} (needs {', '.join(PAIR_FIELDS)})"
                )
        out.append({key: rec[key] for key in PAIR_FIELDS})
    return out


def external_pairs_dir(cfg) -> Path | None:
    """A user-supplied folder of `<pole>.json` files: `pairs.data_dir`, else `<benchmark.data_dir>/rm_training`."""
    if cfg.pairs.data_dir:
        folder = Path(cfg.pairs.data_dir).expanduser()
        if not folder.is_dir():
            raise UserError(f"pairs.data_dir is not a folder: {folder}")
        return folder
    if cfg.benchmark.data_dir:
        folder = Path(cfg.benchmark.data_dir).expanduser() / "rm_training"
        if folder.is_dir():
            return folder
    return None


def pairs_file(cfg, pole: str) -> Path:
    """The pairs file of a pole, from the user's folder or the run (made first if missing)."""
    folder = external_pairs_dir(cfg)
    if folder is None:
        from omegaconf import OmegaConf

        folder = make_pairs(OmegaConf.merge(cfg, {"force": False}))  # `train-rm --force` keeps the pairs
    path = folder / f"{pole}.json"
    if not path.is_file():
        raise UserError(f"no pairs for pole {pole} in {folder} (expected {path.name})")
    return path


def pole_pairs(cfg, pole: str) -> list[dict]:
    return load_pairs(pairs_file(cfg, pole))


def resolve_poles(cfg, spec: str) -> list[str]:
    """`all` -> the benchmark's poles; else a comma-separated list of known poles."""
    from rlphf_cli.preferences import check_poles

    poles = list(cfg.benchmark.poles)
    if str(spec).strip() in ("", "all"):
        return poles
    return check_poles([p for p in str(spec).split(",") if p.strip()], poles)


def split_pairs(pairs: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Shuffle, then hold out a share for evaluation (as P-Soups: 10%)."""
    if len(pairs) < 2:
        raise UserError(f"too few pairs to train on ({len(pairs)}); need at least 2")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(pairs) - 1, max(1, round(len(pairs) * eval_fraction))) if eval_fraction > 0 else 0
    held = [pairs[i] for i in order[:n_eval]]
    train = [pairs[i] for i in order[n_eval:]]
    return train, held


# ----- sampling -----
@torch.no_grad()
def sample_responses(
    model,
    tokenizer,
    prompts: list[str],
    n: int = 1,
    max_new_tokens: int = 96,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
) -> list[list[str]]:
    """`n` sampled responses per (already formatted) prompt; pure ancestral sampling, stop at EOS."""
    flat = [p for p in prompts for _ in range(n)]
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    texts: list[str] = []
    greedy = temperature <= 0
    for i in range(0, len(flat), batch_size):
        enc = tokenizer(flat[i : i + batch_size], return_tensors="pt", padding=True).to(device)
        out = model.generate(
            **enc,
            do_sample=not greedy,
            temperature=None if greedy else temperature,
            top_k=None if greedy else 0,
            top_p=None if greedy else 1.0,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        texts += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    texts = [t.strip() for t in texts]
    return [texts[j * n : (j + 1) * n] for j in range(len(prompts))]


# ----- labelling -----
def _labeler(cfg, bench):
    """A function (pole, [(prompt, a, b), ...]) -> ["A" | "B" | "TIE" | None, ...]."""
    kind = cfg.pairs.labeler
    if kind == "judge":
        if not hasattr(bench, "compare"):
            raise UserError(
                f"benchmark {bench.name!r} has no programmatic judge; set pairs.labeler=reward_model or llm"
            )
        return lambda pole, items: [bench.compare(pole, p, a, b) for p, a, b in items]
    if kind in ("reward_model", "llm"):
        from omegaconf import OmegaConf

        from rlphf_cli.judges import Comparison, get_judge

        judge_cfg = OmegaConf.merge(cfg, {"eval": {"judge": {"kind": kind}}})
        judge = get_judge(judge_cfg)
        return lambda pole, items: [
            v.verdict for v in judge.judge([Comparison(pole, p, a, b) for p, a, b in items])
        ]
    raise UserError(f"unknown pairs.labeler {kind!r}; valid: judge, reward_model, llm")


def label_pairs(label, pole: str, samples: list[dict]) -> tuple[list[dict], int]:
    """P-Soups records for one pole from sampled pairs; returns (records, ties dropped).

    Identical responses and unparseable verdicts count as ties; a pair with an empty response is dropped.
    """
    items = [(s["prompt"], a, b) for s in samples for a, b in s["pairs"]]
    todo = [i for i, (_, a, b) in enumerate(items) if a != b]
    verdicts: list[str | None] = ["TIE"] * len(items)
    for i, v in zip(todo, label(pole, [items[i] for i in todo]), strict=True):
        verdicts[i] = v
    records, ties = [], 0
    for (prompt, a, b), verdict in zip(items, verdicts, strict=True):
        if verdict not in ("A", "B"):
            ties += 1
            continue
        if not a or not b:  # an empty response: the schema needs text on both sides
            continue
        chosen, rejected = (a, b) if verdict == "A" else (b, a)
        records.append({"user_input": prompt, "completion_a": chosen, "completion_b": rejected})
    return records, ties


# ----- making -----
def pairs_keys(cfg) -> tuple[str, ...]:
    """Every setting of the pairs section, the model's and the benchmark's (less the poles: the pairs are made
    for each pole of the benchmark, and a missing pole's file is made on its own), and the seed."""
    return stage_keys(cfg, ("seed", "model", "benchmark", "pairs"), ignore=BENCHMARK_NOT_TRAINED)


def make_pairs(cfg) -> Path:
    """Sample and label the run's pairs once for every pole of the benchmark; returns the folder."""
    from rlphf_cli.adapters import base_fingerprint, base_model_path
    from rlphf_cli.benchmarks import get_benchmark
    from rlphf_cli.config import to_dict
    from rlphf_cli.modeling import format_prompt, load_causal_lm, load_tokenizer, resolve_device

    run = RunDir(cfg.run_dir)
    art = run.artifact(PAIRS_DIR)
    poles = list(cfg.benchmark.poles)
    made = made_from(cfg, pairs_keys(cfg), {"base": input_hash(run.root / "base")})
    # no command of its own: the pipeline's --force remakes the pairs, a trainer's --force does not
    if art.reuse(made, None, cfg.force):
        missing = [p for p in poles if not (art.path / f"{p}.json").is_file()]
        if missing:
            raise UserError(
                f"pairs in {art.path} lack poles {', '.join(missing)}; delete that folder to remake them"
            )
        return art.path

    bench = get_benchmark(cfg.benchmark)
    label = _labeler(cfg, bench)
    pc = cfg.pairs
    if pc.pairs_per_prompt < 1:
        raise UserError(f"pairs.pairs_per_prompt must be at least 1, got {pc.pairs_per_prompt}")
    base = base_model_path(cfg)
    prompts = bench.train_prompts()
    if pc.max_prompts:
        prompts = prompts[: pc.max_prompts]
    if not prompts:
        raise UserError(f"benchmark {bench.name!r} has no training prompts")
    device = resolve_device(cfg.device)
    tokenizer = load_tokenizer(base, cfg.model.trust_remote_code)
    model = load_causal_lm(base, cfg.model, device).eval()
    log.info(
        "pairs: sampling %d x 2 responses for %d prompts from the base", pc.pairs_per_prompt, len(prompts)
    )
    formatted = [format_prompt(cfg.model.prompt_template, p.text, tokenizer) for p in prompts]
    responses = sample_responses(
        model,
        tokenizer,
        formatted,
        2 * pc.pairs_per_prompt,
        pc.max_new_tokens,
        pc.temperature,
        pc.batch_size,
        cfg.seed,
    )
    del model
    samples = [
        {
            "id": p.id,
            "prompt": p.text,
            "pairs": [(r[2 * k], r[2 * k + 1]) for k in range(pc.pairs_per_prompt)],
        }
        for p, r in zip(prompts, responses, strict=True)
    ]
    work = art.start(made)
    counts = {}
    for pole in poles:
        records, ties = label_pairs(label, pole, samples)
        if not records:
            raise UserError(f"every sampled pair is a tie for pole {pole}: no pairs to train on")
        atomic_write_json(work / f"{pole}.json", records)
        empty = len(samples) * pc.pairs_per_prompt - ties - len(records)
        counts[pole] = {"pairs": len(records), "ties_dropped": ties, "empty_dropped": empty}
        log.info(
            "pairs %s: %d kept, %d ties dropped, %d with an empty response dropped",
            pole,
            len(records),
            ties,
            empty,
        )
    atomic_write_text(work / "samples.jsonl", "".join(json.dumps(s) + "\n" for s in samples))
    art.commit(
        "pairs",
        to_dict(cfg),
        poles=poles,
        labeler=pc.labeler,
        prompts=len(prompts),
        sampled_pairs=len(prompts) * pc.pairs_per_prompt,
        counts=counts,
        base=base_fingerprint(cfg),
        made_from=made,
    )
    return art.path
