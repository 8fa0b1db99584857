"""`rlphf eval eval.judge.kind=human`: a study's answers (`rlphf annotate`) as win-rate tables.

The regular items' per-criterion answers are the judgments (one per rater, item and pole), scored as any
judge's, with 95% bootstrap intervals over prompts and raters (crossed). Gold and repeated items are checks,
not judgments: their pass rates per rater are reported, and `eval.judge.min_gold_pass` leaves out raters
below it. Agreement: Krippendorff's alpha (nominal) between raters on the items several answered, and Cohen's
kappa between each human judgment and the run's automatic judge on the same pair and pole (the judgments of
`eval/<method>_vs_<baseline>/` when that evaluation exists, else the benchmark's programmatic judge).
Written to `eval/<method>_vs_<baseline>.human-<study>/` (results.json, table.md, table.csv, heatmap.png,
agreement.json), so `rlphf report` shows it beside the automatic judges, under its own judge.
"""

from __future__ import annotations

import logging
import shutil
import statistics
from pathlib import Path

from rlphf_cli.annotate.study import read_answers
from rlphf_cli.config import to_dict
from rlphf_cli.errors import UserError
from rlphf_cli.evaluation.agreement import cohen_kappa, krippendorff_alpha
from rlphf_cli.evaluation.scoring import summarize
from rlphf_cli.evaluation.tables import markdown, print_summary, write_tables
from rlphf_cli.runs import RunDir, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


def rater_stats(answers: list[dict]) -> dict[str, dict]:
    """Per rater: answers, gold items passed, repeated items answered the same way, median seconds an item."""
    first = {(a["rater"], a["item_id"]): a for a in answers}
    out: dict[str, dict] = {}
    for a in answers:
        s = out.setdefault(
            a["rater"],
            {"answers": 0, "gold": 0, "gold_passed": 0, "repeats": 0, "repeats_same": 0, "_secs": []},
        )
        s["answers"] += 1
        if a.get("kind") == "gold":
            s["gold"] += 1
            s["gold_passed"] += bool(a.get("gold_passed"))
        if a.get("kind") == "repeat":
            original = first.get((a["rater"], a.get("repeat_of")))
            if original is not None:
                s["repeats"] += 1
                s["repeats_same"] += original.get("winners") == a.get("winners")
        if isinstance(a.get("shown_ms"), int) and isinstance(a.get("answered_ms"), int):
            s["_secs"].append((a["answered_ms"] - a["shown_ms"]) / 1000)
    for s in out.values():
        secs = s.pop("_secs")
        s["gold_pass_rate"] = s["gold_passed"] / s["gold"] if s["gold"] else None
        s["repeat_consistency"] = s["repeats_same"] / s["repeats"] if s["repeats"] else None
        s["median_seconds"] = statistics.median(secs) if secs else None
    return out


def automatic_labels(cfg, items: list[dict], method: str, baseline: str) -> tuple[dict, str | None]:
    """The run's automatic judge on the study's pairs, by (prompt_id, combination, pole) -> winner."""
    import json

    path = RunDir(cfg.run_dir).root / "eval" / f"{method}_vs_{baseline}" / "results.json"
    if path.is_file():
        results = json.loads(path.read_text())
        if results.get("judge", {}).get("kind") != "human":
            labels = {
                (j["prompt_id"], j["combination"], j["pole"]): j.get("winner") for j in results["judgments"]
            }
            return {
                k: v for k, v in labels.items() if v is not None
            }, f"eval/{method}_vs_{baseline} ({results['judge'].get('kind')})"
    from rlphf_cli.benchmarks import get_benchmark

    bench = get_benchmark(cfg.benchmark)
    if not hasattr(bench, "compare"):
        return {}, None
    labels = {}
    for item in items:
        m_text, b_text = (item["b"], item["a"]) if item["swap"] else (item["a"], item["b"])
        for pole in item["poles"]:
            verdict = bench.compare(pole, item["prompt"], m_text, b_text)
            labels[(item["prompt_id"], item["combination"], pole)] = {"A": method, "B": baseline}.get(
                verdict, "tie"
            )
    return labels, f"the {bench.name} benchmark's judge"


def evaluate_human(cfg, judge) -> list[Path]:
    pairs = [tuple(p) for p in judge.body["settings"]["pairs"]]
    method, baseline = cfg.eval.method, cfg.eval.baseline
    chosen = [p for p in pairs if p[0] == method and (baseline == "all" or p[1] == baseline)]
    if not chosen:
        valid = "; ".join(f"--method {m} --baseline {b}" for m, b in pairs)
        raise UserError(f"study {judge.study!r} has no {method} vs {baseline} items; it has: {valid}")
    answers = read_answers(cfg.run_dir, judge.study)
    if not answers:
        raise UserError(f"no answers yet in {judge.answers_path}: raters answer on the `rlphf annotate` page")
    stats = rater_stats(answers)
    excluded = sorted(
        r
        for r, s in stats.items()
        if s["gold_pass_rate"] is not None and s["gold_pass_rate"] < judge.min_gold_pass
    )
    if excluded:
        log.warning(
            "left out %d rater(s) below eval.judge.min_gold_pass: %s", len(excluded), ", ".join(excluded)
        )
    kept = [a for a in answers if a["rater"] not in excluded]
    return [evaluate_human_pair(cfg, judge, m, b, kept, stats, excluded) for m, b in chosen]


def evaluate_human_pair(cfg, judge, method, baseline, answers, stats, excluded) -> Path:
    items = [i for i in judge.body["items"] if (i["method"], i["baseline"]) == (method, baseline)]
    regular = [
        a
        for a in answers
        if a.get("kind") == "regular" and (a["method"], a["baseline"]) == (method, baseline)
    ]
    judgments = []
    for a in regular:
        for pole, verdict in a["criteria"].items():
            judgments.append(
                {
                    "prompt_id": a["prompt_id"],
                    "combination": a["combination"],
                    "pole": pole,
                    "rater": a["rater"],
                    "item_id": a["item_id"],
                    "first": baseline if a["swap"] else method,
                    "verdict": verdict,
                    "winner": a["winners"][pole],
                }
            )
    if not judgments:
        raise UserError(f"study {judge.study!r} has no answers to regular {method} vs {baseline} items yet")
    units: dict[tuple, list[str]] = {}
    for j in judgments:
        units.setdefault((j["item_id"], j["pole"]), []).append(j["winner"])
    between = {**krippendorff_alpha(units), "raters": len({j["rater"] for j in judgments})}
    labels, source = automatic_labels(cfg, [i for i in items if i["kind"] == "regular"], method, baseline)
    matched = [
        (j["winner"], labels[k])
        for j in judgments
        if (k := (j["prompt_id"], j["combination"], j["pole"])) in labels
    ]
    with_judge = {**cohen_kappa([h for h, _ in matched], [m for _, m in matched]), "judge": source}
    overall = {"method": 0, "baseline": 0, "tie": 0, "none": 0, "both_bad": 0, "answers": len(regular)}
    for a in regular:
        w = a.get("overall_winner")
        overall[
            "none" if w is None else "tie" if w == "tie" else "method" if w == method else "baseline"
        ] += 1
        overall["both_bad"] += bool(a.get("both_bad"))
    results = {
        "method": method,
        "baseline": baseline,
        "judge": judge.describe(),
        "seed": cfg.eval.seed,
        "bootstrap_samples": cfg.eval.bootstrap_samples,
        "study": judge.study,
        "generations": {},
        "missing": {},
        "users": {},
        "judgments": judgments,
        "agreement": {"between_raters": between, "with_judge": with_judge},
        "overall_choice": overall,
        "raters": stats,
        "excluded_raters": excluded,
    }
    summary = summarize(results)
    artifact = RunDir(cfg.run_dir).artifact(f"eval/{method}_vs_{baseline}.human-{judge.study}")
    if artifact.work.exists():
        shutil.rmtree(artifact.work)
    work = artifact.start()
    atomic_write_json(work / "results.json", results)
    write_tables(summary, work)
    extra = human_markdown(results)
    atomic_write_text(work / "table.md", markdown(summary) + "\n" + extra)
    atomic_write_json(work / "agreement.json", results["agreement"])
    o = summary.overall
    artifact.commit(
        "eval",
        to_dict(cfg),
        method=method,
        baseline=baseline,
        judge=summary.judge,
        partial=False,
        judgments=o.judgments,
        unparseable=o.unparseable,
        win_rate=o.win_rate,
        ci=[o.ci_low, o.ci_high],
        agreement=results["agreement"],
    )
    print_summary(summary)
    from rich.console import Console
    from rich.markdown import Markdown

    Console().print(Markdown(extra))
    log.info("wrote %s", artifact.path)
    return artifact.path


def _f(x, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _share(k: int, n: int) -> str:
    return "—" if not n else f"{k}/{n} ({100 * k / n:.0f}%)"


def human_markdown(results: dict) -> str:
    """Agreement, the optional overall choice and each rater's checks, as Markdown."""
    b, j, o = (
        results["agreement"]["between_raters"],
        results["agreement"]["with_judge"],
        results["overall_choice"],
    )
    m, bl = results["method"], results["baseline"]
    lines = [
        "## Agreement",
        "",
        "| between | statistic | value | counts |",
        "|---|---|---|---|",
        f"| raters | Krippendorff's alpha (nominal) | {_f(b['alpha'])} | {b['units']} items x poles answered by "
        f"two or more raters, {b['values']} pairable answers, {b['raters']} raters |",
        f"| people and the automatic judge ({j['judge'] or 'none available'}) | Cohen's kappa | {_f(j['kappa'])} | "
        f"{j['n']} judgments, raw agreement {_f(j['agreement'])} |",
        "",
        f"Overall choice (optional question, regular items): {m} {o['method']}, {bl} {o['baseline']}, "
        f"tie {o['tie']}, not given {o['none']}; both bad {o['both_bad']} of {o['answers']} answers.",
        "",
        "## Raters",
        "",
        "| rater | answers | gold passed | repeats answered the same | median seconds an item |",
        "|---|---|---|---|---|",
    ]
    for rater, s in sorted(results["raters"].items()):
        left = " (left out)" if rater in results["excluded_raters"] else ""
        lines.append(
            f"| {rater}{left} | {s['answers']} | {_share(s['gold_passed'], s['gold'])} | "
            f"{_share(s['repeats_same'], s['repeats'])} | {_f(s['median_seconds'], 1)} |"
        )
    return "\n".join(lines) + "\n"
