"""`rlphf eval`: pairwise, criterion-wise judgments of a method against a baseline (the P-Soups protocol).

For every prompt and combination both methods answered, one judgment per requested pole, with the two
outputs shown in an order swapped at random (seeded) and ties allowed. Written to
`eval/<method>_vs_<baseline>/` as one artifact: results.json (every judgment), table.md, table.csv,
heatmap.png and the manifest, all or nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from rlphf_cli.config import to_dict
from rlphf_cli.errors import UserError
from rlphf_cli.evaluation import generations
from rlphf_cli.evaluation.generations import Pair
from rlphf_cli.evaluation.scoring import Summary, rescore, summarize
from rlphf_cli.evaluation.tables import print_summary, write_tables
from rlphf_cli.generations import check_method, known_methods
from rlphf_cli.judges import Comparison, Judge, get_judge
from rlphf_cli.runs import RunDir, atomic_write_json, content_hash

log = logging.getLogger(__name__)

PROTOCOL = 1  # bump when the judging protocol changes, so old evaluations are redone


def evaluate(cfg) -> list[Path]:
    """Evaluate `eval.method` against `eval.baseline` (a method, or all); returns the result folders."""
    method = check_method(cfg.run_dir, cfg.eval.method)
    judge = get_judge(cfg)  # before any generating, so that a bad judge config fails fast
    if getattr(judge, "reads_annotations", False):  # people: a study's answers, nothing to judge or generate
        from rlphf_cli.evaluation.human import evaluate_human

        return evaluate_human(cfg, judge)
    if cfg.eval.baseline == "all":
        generations.ensure(cfg, method)
        baselines = available_baselines(cfg, method)
    else:
        baselines = [check_method(cfg.run_dir, cfg.eval.baseline)]
        if baselines[0] == method:
            raise UserError(f"method and baseline are both {method!r}; choose another --baseline or --method")
    return [evaluate_pair(cfg, method, baseline, judge) for baseline in baselines]


def available_baselines(cfg, method: str) -> list[str]:
    """Every other method that has generations or can get them; the others are skipped with a warning."""
    out = []
    for baseline in known_methods(cfg.run_dir):
        if baseline == method:
            continue
        try:
            generations.ensure(cfg, baseline)
        except UserError as exc:
            log.warning("skipping baseline %s: %s", baseline, exc)
            continue
        out.append(baseline)
    if not out:
        raise UserError(f"no baseline for {method} has generations or can get them; see the warnings above")
    return out


def evaluate_pair(cfg, method: str, baseline: str, judge: Judge | None = None) -> Path:
    """Judge `method` against `baseline` and commit `eval/<method>_vs_<baseline>/`; returns its path."""
    from omegaconf import OmegaConf

    from rlphf_cli.runs import force_once

    judge = judge or get_judge(cfg)
    unforced = OmegaConf.merge(cfg, {"force": False})  # `eval --force` judges again; it does not regenerate
    paths = {m: generations.ensure(unforced, m) for m in (method, baseline)}
    artifact = RunDir(cfg.run_dir).artifact(f"eval/{method}_vs_{baseline}")
    stamp = fingerprint(cfg, paths, judge)
    forced = force_once(artifact.path, cfg.force)
    if not forced and artifact.is_complete() and artifact.manifest().get("fingerprint") == stamp:
        log.info("%s is up to date with its generations and judge", artifact.path)
        print_summary(rescore(artifact.path))
        return artifact.path

    rows = {m: generations.read(p) for m, p in paths.items()}
    pairs, missing = generations.pair(rows[method], rows[baseline], method, baseline)
    users = {r["combination"]: r["user"] for m in (method, baseline) for r in rows[m] if r.get("user")}
    report_missing(missing)
    if not pairs:
        raise UserError(f"{method} and {baseline} have no prompt and combination in common: nothing to judge")
    judgments = judge_pairs(judge, pairs, method, baseline, cfg.eval.seed)
    results = {
        "method": method,
        "baseline": baseline,
        "judge": judge.describe(),
        "seed": cfg.eval.seed,
        "bootstrap_samples": cfg.eval.bootstrap_samples,
        "generations": {m: str(p) for m, p in paths.items()},
        "missing": missing,
        "users": users,
        "judgments": judgments,
    }
    summary = summarize(results)
    commit(cfg, artifact, results, summary, stamp)
    print_summary(summary)
    return artifact.path


def fingerprint(cfg, paths: dict[str, Path], judge: Judge) -> str:
    """What the results depend on: both generation files, the judge, the seed and the bootstrap size."""
    parts = {
        "protocol": PROTOCOL,
        "generations": {m: content_hash(p) for m, p in paths.items()},
        "judge": judge.describe(),
        "seed": cfg.eval.seed,
        "bootstrap_samples": cfg.eval.bootstrap_samples,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def report_missing(missing: dict[str, list[str]]) -> None:
    for method, keys in missing.items():
        if keys:
            shown = ", ".join(keys[:10]) + (f", and {len(keys) - 10} more" if len(keys) > 10 else "")
            log.warning(
                "%s has no generation for %d prompt/combination(s), not judged: %s", method, len(keys), shown
            )


def swapped(seed: int, prompt_id: str, combination: str, pole: str) -> bool:
    """A fair coin per judgment, fixed by the seed and the judgment's identity (not by its position)."""
    digest = hashlib.sha256(f"{seed}|{prompt_id}|{combination}|{pole}".encode()).digest()
    return digest[0] & 1 == 1


def judge_pairs(judge: Judge, pairs: list[Pair], method: str, baseline: str, seed: int) -> list[dict]:
    """One judgment per pole of each pair's combination, as the rows of results.json."""
    rows, comparisons = [], []
    for p in pairs:
        for pole in p.poles:
            swap = swapped(seed, p.prompt_id, p.combination, pole)
            a, b = (p.baseline_text, p.method_text) if swap else (p.method_text, p.baseline_text)
            comparisons.append(Comparison(pole, p.prompt, a, b))
            rows.append(
                {
                    "prompt_id": p.prompt_id,
                    "combination": p.combination,
                    "pole": pole,
                    "first": baseline if swap else method,
                }
            )
    for row, verdict in zip(rows, judge.judge(comparisons), strict=True):
        second = method if row["first"] == baseline else baseline
        row["verdict"] = verdict.verdict
        row["winner"] = {"A": row["first"], "B": second, "TIE": "tie"}.get(verdict.verdict)
        if verdict.rationale is not None:
            row["rationale"] = verdict.rationale
        row.update(verdict.detail)
    return rows


def commit(cfg, artifact, results: dict, summary: Summary, stamp: str) -> None:
    """Write every file into a fresh working folder, then move it into place with its manifest."""
    if artifact.work.exists():
        shutil.rmtree(artifact.work)  # judgments are cheap to redo (the llm judge caches its answers)
    work = artifact.start()
    atomic_write_json(work / "results.json", results)
    write_tables(summary, work)
    overall = summary.overall
    artifact.commit(
        "eval",
        to_dict(cfg),
        method=summary.method,
        baseline=summary.baseline,
        judge=summary.judge,
        fingerprint=stamp,
        partial=summary.partial,
        judgments=overall.judgments,
        unparseable=overall.unparseable,
        win_rate=overall.win_rate,
        ci=[overall.ci_low, overall.ci_high],
    )
    log.info("wrote %s", artifact.path)
