"""A run's evaluations, found and ordered: shared by the report of one run (report.py) and the report across
seeds (seeds.py)."""

from __future__ import annotations

import json
from pathlib import Path

from rlphf_cli.evaluation.scoring import Summary
from rlphf_cli.generations import METHODS
from rlphf_cli.runs import RunDir


def evaluations(run_dir: str | Path) -> list[Path]:
    """The complete evaluation folders, `eval/<method>_vs_<baseline>/`."""
    folder = RunDir(run_dir).root / "eval"
    return sorted(
        p for p in folder.glob("*_vs_*") if (p / "manifest.json").is_file() and (p / "results.json").is_file()
    )


def rank(method: str) -> tuple[int, str]:
    return (METHODS.index(method), "") if method in METHODS else (len(METHODS), method)


def by_judge(summaries: list[Summary]) -> dict[str, list[Summary]]:
    """The summaries grouped by their judge's full description, in order of first appearance."""
    groups: dict[str, list[Summary]] = {}
    for s in summaries:
        groups.setdefault(json.dumps(s.judge, sort_keys=True), []).append(s)
    return groups


def run_name(run_dir: Path) -> str:
    """How a report names its run: the folder's name (a seed folder with its parent's, `demo/seed0`), never
    the absolute path, which says where one machine kept it and ends up in published results."""
    run_dir = Path(run_dir)
    if run_dir.name.startswith("seed") and run_dir.name[4:].isdigit() and run_dir.parent.name:
        return f"{run_dir.parent.name}/{run_dir.name}"
    return run_dir.resolve().name if run_dir.name in ("", ".", "..") else run_dir.name
