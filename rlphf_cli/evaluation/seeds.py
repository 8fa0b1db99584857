"""Results across seeds: `<root>/seed<N>/` run folders (`rlphf pipeline seeds=...`) in one report.

Every cell of the report's tables becomes mean ± sample standard deviation (min–max) over the seeds that have
it, with that count n. Each run's evaluations are re-scored from results.json, as `rlphf report` does, and
grouped by judge the same way: win rates from different judges are never averaged together.
"""

from __future__ import annotations

import json
import logging
import re
import statistics
from pathlib import Path

from rlphf_cli.evaluation.collect import by_judge, evaluations, rank, run_name
from rlphf_cli.evaluation.scoring import ALL, OVERALL, Summary, rescore
from rlphf_cli.evaluation.tables import judge_name, pct
from rlphf_cli.preferences import POLES

log = logging.getLogger(__name__)

SEED_FOLDER = re.compile(r"seed(\d+)")

LEGEND = (
    "Each cell: mean ± sample standard deviation (min–max) over seeds, in %, and n, the seeds that have it. "
    "Per seed, the win rate (%) of the row method against the column baseline is (wins + ties/2) / judgments "
    "over every requested pole of every combination. "
    "`*` partial in some seed (some generations missing), `†` some judge answers unparseable in some seed "
    "(left out)."
)


def seed_runs(root: str | Path) -> list[Path]:
    """The `seed<N>` run folders under `root` with at least one complete evaluation, by N."""
    found = []
    for path in Path(root).iterdir() if Path(root).is_dir() else []:
        match = SEED_FOLDER.fullmatch(path.name)
        if match and path.is_dir() and evaluations(path):
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def mean_sd(values: list[float]) -> tuple[float, float | None, float, float]:
    """Mean, sample standard deviation (None for a single value), min and max."""
    if not values:
        raise ValueError("mean_sd of no values")
    sd = statistics.stdev(values) if len(values) > 1 else None
    return statistics.fmean(values), sd, min(values), max(values)


def spread(values: list[float | None], fmt=pct) -> str:
    """Rates (fractions) over seeds as `61.2 ± 2.1 (58.9–63.4) n=3`, in % (or as `fmt` writes a number);
    seeds without a value left out."""
    present = [v for v in values if v is not None]
    if not present:
        return "—"
    mean, sd, lo, hi = mean_sd(present)
    if sd is None:
        return f"{fmt(mean)} n=1"
    return f"{fmt(mean)} ± {fmt(sd)} ({fmt(lo)}–{fmt(hi)}) n={len(present)}"


def marks(summaries: list[Summary]) -> str:
    """report.py's marks, set when any seed has them."""
    partial = any(s.partial for s in summaries)
    return ("*" if partial else "") + ("†" if any(s.overall.unparseable for s in summaries) else "")


def _pairs(group: list[Summary]) -> dict[tuple[str, str], list[Summary]]:
    """One judge's summaries by (method, baseline): each pair's summaries over seeds."""
    out: dict[tuple[str, str], list[Summary]] = {}
    for s in group:
        out.setdefault((s.method, s.baseline), []).append(s)
    return out


def main_table(group: list[Summary]) -> list[str]:
    pairs = _pairs(group)
    methods = sorted({m for m, _ in pairs}, key=rank)
    baselines = sorted({b for _, b in pairs}, key=rank)
    lines = ["| method \\ baseline | " + " | ".join(baselines) + " |", "|" + "---|" * (len(baselines) + 1)]
    for m in methods:
        cells = []
        for b in baselines:
            seeds = pairs.get((m, b), [])
            cells.append(spread([s.overall.win_rate for s in seeds]) + marks(seeds) if seeds else "—")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def pole_table(group: list[Summary]) -> list[str]:
    poles = list(dict.fromkeys(p for s in group for p in s.poles))
    lines = [
        "| method vs baseline | " + " | ".join([*poles, OVERALL]) + " | judgments (all seeds) |",
        "|" + "---|" * (len(poles) + 3),
    ]
    for (m, b), seeds in sorted(_pairs(group).items(), key=lambda kv: (rank(kv[0][0]), rank(kv[0][1]))):
        cells = [spread([c.win_rate if (c := s.cells.get((ALL, p))) else None for s in seeds]) for p in poles]
        cells.append(spread([s.overall.win_rate for s in seeds]))
        judgments = sum(s.overall.judgments for s in seeds)
        lines.append(f"| {m} vs {b}{marks(seeds)} | " + " | ".join(cells) + f" | {judgments} |")
    return lines


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _metrics(runs: list[Path], folder: str) -> dict[str, list[dict]]:
    """Per pole, the `metrics` of `<run>/<folder>/<pole>/manifest.json` in each run that has a readable one."""
    out: dict[str, list[dict]] = {}
    for run in runs:
        for path in sorted((run / folder).glob("*/manifest.json")):
            try:
                manifest = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                log.warning("%s left out of the report across seeds: %s", path, exc)
                continue
            if isinstance(manifest, dict):
                metrics = manifest.get("metrics")
                out.setdefault(path.parent.name, []).append(
                    {**(metrics if isinstance(metrics, dict) else {}), "_algo": manifest.get("algo")}
                )
    return {pole: out[pole] for pole in sorted(out, key=_pole_order)}


def _parm_metrics(runs: list[Path]) -> dict[str, list[dict]]:
    """Per pole, PARM's own-pole check (`<run>/parm/manifest.json`, metrics.checks) in each run that has one."""
    out: dict[str, list[dict]] = {}
    for run in runs:
        path = run / "parm" / "manifest.json"
        try:
            manifest = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("%s left out of the report across seeds: %s", path, exc)
            continue
        checks = (manifest.get("metrics") or {}).get("checks") if isinstance(manifest, dict) else None
        for pole, check in (checks or {}).items():
            if isinstance(check, dict):
                out.setdefault(pole, []).append({**check, "_algo": "parm"})
    return {pole: out[pole] for pole in sorted(out, key=_pole_order)}


def _pole_order(pole: str) -> tuple[int, str]:
    return (list(POLES).index(pole), "") if pole in POLES else (len(POLES), pole)


def experts_table(runs: list[Path]) -> list[str]:
    experts = _metrics(runs, "experts")
    if not experts:
        return []
    lines = [
        "## Experts against the base on their own pole (non-tied win rate %, held-out prompts, benchmark judge)",
        "",
        "| pole | algo | greedy | sampled |",
        "|---|---|---|---|",
    ]
    rows = [
        *experts.items(),
        *_metrics(runs, "arms").items(),
        *_parm_metrics(runs).items(),
    ]  # arms: GenARM's reward models guiding the base; parm: the one PARM at the pole's one-hot weights
    for pole, seeds in rows:
        algos = "/".join(dict.fromkeys(str(x["_algo"]) for x in seeds if x["_algo"])) or "?"
        greedy = [_number(x.get("win_rate_vs_base")) for x in seeds]
        sampled = [
            _number(x["sampled"].get("win_rate_vs_base")) if isinstance(x.get("sampled"), dict) else None
            for x in seeds
        ]
        lines.append(f"| {pole} | {algos} | {spread(greedy)} | {spread(sampled)} |")
    return lines


def reward_models_table(runs: list[Path]) -> list[str]:
    rms = _metrics(runs, "rm")
    if not rms:
        return []
    lines = ["## Reward models: held-out pairwise accuracy %", "", "| pole | accuracy |", "|---|---|"]
    for pole, seeds in rms.items():
        lines.append(f"| {pole} | {spread([_number(x.get('heldout_accuracy')) for x in seeds])} |")
    return lines


def aggregate_markdown(runs: list[Path]) -> str:
    """The report over several run folders (one per seed): every table as mean ± sd over seeds."""
    runs = [Path(r) for r in runs]
    parents = {r.parent for r in runs}
    names = ", ".join(r.name for r in runs) if len(parents) == 1 else ", ".join(map(run_name, runs))
    where = f" under {run_name(runs[0].parent)}" if len(parents) == 1 else ""  # names, not absolute paths
    summaries = [rescore(folder) for run in runs for folder in evaluations(run)]
    lines = [
        f"# Evaluation report across seeds{where}",
        "",
        f"{len(runs)} seeds, run folders: {names}.",
        "",
        LEGEND,
    ]
    for group in by_judge(summaries).values():
        name = judge_name(group[0].judge)
        lines += ["", f"## Judge: {name}", "", *main_table(group), "", f"### Per pole (judge: {name})", ""]
        lines += pole_table(group)
    for table in (experts_table(runs), reward_models_table(runs)):
        if table:
            lines += ["", *table]
    return "\n".join(lines) + "\n"
