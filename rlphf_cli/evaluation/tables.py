"""An evaluation's tables: Markdown, CSV, the terminal (rich) and a combination x pole heatmap."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

from rlphf_cli.evaluation.scoring import ALL, OVERALL, Cell, Summary
from rlphf_cli.runs import atomic_write_text

MAX_LISTED = 20  # missing generations listed in table.md; results.json has them all


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def rate_with_ci(cell: Cell | None) -> str:
    if cell is None or cell.win_rate is None:
        return "—"
    if cell.ci_low is None:
        return pct(cell.win_rate)
    return f"{pct(cell.win_rate)} [{pct(cell.ci_low)}, {pct(cell.ci_high)}]"


def judge_name(judge: dict) -> str:
    kind = judge.get("kind", "?")
    if kind == "llm":
        return f"llm ({judge.get('model')} at {judge.get('base_url')})"
    if kind == "human":
        return f"human (study {judge.get('study')})"
    return kind


def title(summary: Summary) -> str:
    return f"{summary.method} vs {summary.baseline}" + (" (partial)" if summary.partial else "")


def counts_line(cell: Cell) -> str:
    return f"{cell.judgments} judgments: {cell.wins} wins, {cell.ties} ties, {cell.losses} losses"


def notes(summary: Summary) -> list[str]:
    """Unparseable answers and missing generations, as Markdown paragraphs."""
    out = []
    if summary.users:
        named = "; ".join(
            f"{user}: `{name}`" for name, user in sorted(summary.users.items(), key=lambda x: x[1])
        )
        out.append(f"Users (preference=@users/NAME.json): {named}.")
    bad = summary.overall.unparseable
    if bad:
        out.append(f"**Unparseable judge answers: {bad}**, left out of every win rate (see results.json).")
    if summary.partial:
        n = sum(len(v) for v in summary.missing.values())
        lines = [f"**Partial**: {n} prompt/combination outputs missing; those prompts were not judged."]
        for method, keys in summary.missing.items():
            if keys:
                more = f", and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
                lines.append(f"- {method} lacks: {', '.join(keys[:MAX_LISTED])}{more}")
        out.append("\n".join(lines))
    return out


def grid(summary: Summary) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the combination x pole table (with `all` row and `overall` column)."""
    header = ["combination", *summary.poles, OVERALL]
    rows = []
    for combination in [*summary.combinations, ALL]:
        cols = [*summary.poles, OVERALL]
        rows.append([combination, *(rate_with_ci(summary.cells.get((combination, c))) for c in cols)])
    return header, rows


def markdown(summary: Summary) -> str:
    header, rows = grid(summary)
    lines = [
        f"# {title(summary)}",
        "",
        f"Judge: {judge_name(summary.judge)}. Win rate of **{summary.method}** against **{summary.baseline}** in %: "
        f"(wins + ties/2) / judgments, one judgment per requested pole, with a 95% bootstrap interval over {summary.resampled} "
        f"({summary.bootstrap_samples} samples, seed {summary.seed}).",
        "",
        f"**Overall: {rate_with_ci(summary.overall)}** ({counts_line(summary.overall)}).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
    for note in notes(summary):
        lines += ["", note]
    return "\n".join(lines) + "\n"


CSV_FIELDS = [
    "combination",
    "pole",
    "judgments",
    "wins",
    "ties",
    "losses",
    "unparseable",
    "win_rate",
    "ci_low",
    "ci_high",
]


def csv_text(summary: Summary) -> str:
    """One row per cell, rates as fractions; combination `all` and pole `overall` are the margins."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for combination in [*summary.combinations, ALL]:
        for pole in [*summary.poles, OVERALL]:
            cell = summary.cells.get((combination, pole))
            if cell is None:
                continue
            values = [cell.judgments, cell.wins, cell.ties, cell.losses, cell.unparseable]
            rates = ["" if x is None else f"{x:.6f}" for x in (cell.win_rate, cell.ci_low, cell.ci_high)]
            writer.writerow([combination, pole, *values, *rates])
    return buf.getvalue()


def rich_table(summary: Summary):
    """The grid without intervals, to fit a terminal; the overall interval goes in the caption."""
    from rich.table import Table

    cols = [*summary.poles, OVERALL]
    caption = f"overall {rate_with_ci(summary.overall)}; {counts_line(summary.overall)}"
    table = Table(title=f"{title(summary)} — judge: {judge_name(summary.judge)}", caption=caption)
    table.add_column("combination", no_wrap=True)
    for name in cols:
        table.add_column(name, justify="right")
    for combination in [*summary.combinations, ALL]:
        cells = [summary.cells.get((combination, c)) for c in cols]
        row = [combination, *("—" if c is None else pct(c.win_rate) for c in cells)]
        table.add_row(*row, style="bold" if combination == ALL else None)
    return table


def print_summary(summary: Summary) -> None:
    from rich.console import Console
    from rich.markdown import Markdown

    console = Console()
    console.print(rich_table(summary))
    for note in notes(summary):
        console.print(Markdown(note))


def heatmap(summary: Summary, path: Path) -> None:
    """Win rate per combination (rows) and pole (columns); empty cells (pole not requested) left blank."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # no pyplot: no global backend, Agg through Figure.savefig

    data = np.full((len(summary.combinations), len(summary.poles)), np.nan)
    for i, combination in enumerate(summary.combinations):
        for j, pole in enumerate(summary.poles):
            cell = summary.cells.get((combination, pole))
            if cell is not None and cell.win_rate is not None:
                data[i, j] = 100 * cell.win_rate
    fig = Figure(figsize=(1.0 * len(summary.poles) + 3.0, 0.45 * len(summary.combinations) + 1.8))
    ax = fig.add_subplot()
    cmap = colormaps["RdBu"].with_extremes(bad="#d9d9d9")  # grey: pole not in the combination
    image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    for (i, j), value in np.ndenumerate(data):
        if not np.isnan(value):
            color = "white" if abs(value - 50) > 30 else "black"
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(len(summary.poles)), summary.poles)
    ax.set_yticks(range(len(summary.combinations)), summary.combinations, fontsize=8)
    ax.set_xlabel("judged pole")
    ax.set_ylabel("combination")
    ax.set_title(f"{title(summary)}: overall {rate_with_ci(summary.overall)}", fontsize=9)
    fig.colorbar(image, ax=ax, label=f"win rate of {summary.method} (%)")
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, format="png")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_tables(summary: Summary, folder: Path) -> None:
    atomic_write_text(folder / "table.md", markdown(summary))
    atomic_write_text(folder / "table.csv", csv_text(summary))
    heatmap(summary, folder / "heatmap.png")
