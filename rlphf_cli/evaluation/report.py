"""`rlphf report`: every evaluation in the run directory in one table of methods x baselines.

Each evaluation is re-scored from its results.json, so the report always agrees with the judgments.
Evaluations by different judges are not comparable, so each judge gets its own tables.
"""

from __future__ import annotations

from pathlib import Path

from rlphf_cli.errors import UserError
from rlphf_cli.evaluation.collect import by_judge, evaluations, rank, run_name
from rlphf_cli.evaluation.scoring import OVERALL, Summary, rescore
from rlphf_cli.evaluation.seeds import aggregate_markdown, seed_runs
from rlphf_cli.evaluation.tables import judge_name, pct, rate_with_ci
from rlphf_cli.runs import RunDir, atomic_write_text

LEGEND = (
    "Win rate (%) of the row method against the column baseline: (wins + ties/2) / judgments over every "
    "requested pole of every combination, with a 95% bootstrap interval over prompts. "
    "`*` partial (some generations missing), `†` some judge answers unparseable (left out)."
)


def mark(summary: Summary) -> str:
    return ("*" if summary.partial else "") + ("†" if summary.overall.unparseable else "")


def main_table(summaries: list[Summary]) -> list[str]:
    methods = sorted({s.method for s in summaries}, key=rank)
    baselines = sorted({s.baseline for s in summaries}, key=rank)
    by_pair = {(s.method, s.baseline): s for s in summaries}
    lines = ["| method \\ baseline | " + " | ".join(baselines) + " |", "|" + "---|" * (len(baselines) + 1)]
    for m in methods:
        cells = [
            rate_with_ci(by_pair[(m, b)].overall) + mark(by_pair[(m, b)]) if (m, b) in by_pair else "—"
            for b in baselines
        ]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def pole_table(summaries: list[Summary]) -> list[str]:
    poles = list(dict.fromkeys(p for s in summaries for p in s.poles))
    lines = [
        "| method vs baseline | " + " | ".join([*poles, OVERALL]) + " | judgments |",
        "|" + "---|" * (len(poles) + 3),
    ]
    for s in sorted(summaries, key=lambda s: (rank(s.method), rank(s.baseline))):
        cells = [pct(c.win_rate) if (c := s.cells.get(("all", p))) else "—" for p in poles]
        lines.append(
            f"| {s.method} vs {s.baseline}{mark(s)} | "
            + " | ".join([*cells, pct(s.overall.win_rate)])
            + f" | {s.overall.judgments} |"
        )
    return lines


def markdown(summaries: list[Summary], run_dir: Path) -> str:
    lines = [f"# Evaluation report: {run_name(run_dir)}", "", LEGEND]
    for group in by_judge(summaries).values():
        name = judge_name(group[0].judge)
        lines += ["", f"## Judge: {name}", "", *main_table(group), "", f"### Per pole (judge: {name})", ""]
        lines += pole_table(group)
    users = {name: user for s in summaries for name, user in s.users.items()}
    if users:
        named = "; ".join(f"{user}: `{name}`" for name, user in sorted(users.items(), key=lambda x: x[1]))
        lines += ["", f"Users' preferences (from users/NAME.json): {named}."]
    return "\n".join(lines) + "\n"


def report(cfg) -> Path:
    """Write the run's report, print it, return its path.

    An ordinary run directory gets `eval/report.md` from every evaluation in it. A folder with no evaluations
    of its own but `seed<N>` run folders under it (`rlphf pipeline seeds=...`) gets `report.md`: every table
    as mean ± sd over the seeds; with a single seed folder, that run's ordinary report.
    """
    root = RunDir(cfg.run_dir).root
    folders = evaluations(root)
    if not folders:
        runs = seed_runs(root)
        if len(runs) > 1:
            return publish(root / "report.md", aggregate_markdown(runs))
        if not runs:
            raise UserError(
                f"no evaluations in {root / 'eval'} (nor seed<N> run folders with any): run `rlphf eval` first"
            )
        root, folders = runs[0], evaluations(runs[0])
    return publish(root / "eval" / "report.md", markdown([rescore(f) for f in folders], root))


def publish(path: Path, text: str) -> Path:
    """Write a report and print it to the terminal."""
    atomic_write_text(path, text)
    from rich.console import Console
    from rich.markdown import Markdown

    Console().print(Markdown(text))
    return path
