"""Win rates from judgments: (wins + ties/2) / judgments, with 95% bootstrap confidence intervals.

Everything here works from the contents of results.json alone, so any evaluation can be re-scored.
The bootstrap resamples prompts (all of a prompt's judgments together), since judgments of one prompt
across poles and combinations are not independent; judgments by people (rows with a `rater`) resample
prompts and raters both, crossed, since one rater's judgments are not independent either.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlphf_cli.errors import UserError
from rlphf_cli.preferences import POLES, split_name

ALL = "all"  # the row of every combination
OVERALL = "overall"  # the column of every pole


@dataclass
class Cell:
    judgments: int = 0  # parsed judgments (unparseable ones excluded)
    wins: int = 0
    ties: int = 0
    losses: int = 0
    unparseable: int = 0
    win_rate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None


@dataclass
class Summary:
    method: str
    baseline: str
    judge: dict
    combinations: list[str]
    poles: list[str]
    cells: dict[tuple[str, str], Cell]
    missing: dict[str, list[str]] = field(default_factory=dict)
    bootstrap_samples: int = 0
    seed: int = 0
    users: dict[str, str] = field(default_factory=dict)  # preference name -> the user it was inferred for
    resampled: str = "prompts"  # what the bootstrap resamples: prompts, or prompts and raters

    @property
    def partial(self) -> bool:
        return any(self.missing.values())

    @property
    def overall(self) -> Cell:
        return self.cells[(ALL, OVERALL)]


def score(judgment: dict, method: str) -> float | None:
    """1 for a win of `method`, 0.5 for a tie, 0 for a loss, None when the verdict was unparseable."""
    winner = judgment.get("winner")
    if winner is None:
        return None
    return 0.5 if winner == "tie" else float(winner == method)


def bootstrap_ci(
    groups: list[str], scores: list[float], samples: int, seed: int
) -> tuple[float, float] | None:
    """Percentile 95% interval of the mean score, resampling groups (prompts) with replacement."""
    if samples <= 0 or not scores:
        return None
    names = sorted(set(groups))
    where = {g: i for i, g in enumerate(names)}
    sums, counts = np.zeros(len(names)), np.zeros(len(names))
    for g, s in zip(groups, scores, strict=True):
        sums[where[g]] += s
        counts[where[g]] += 1
    idx = np.random.default_rng(seed).integers(0, len(names), size=(samples, len(names)))
    rates = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    low, high = np.percentile(rates, [2.5, 97.5])
    return float(low), float(high)


def bootstrap_ci_crossed(
    prompts: list[str], raters: list[str], scores: list[float], samples: int, seed: int
) -> tuple[float, float] | None:
    """Percentile 95% interval of the mean score, resampling prompts and raters independently: each
    judgment counts (times its prompt was drawn) x (times its rater was drawn)."""
    if samples <= 0 or not scores:
        return None
    p_names, r_names = sorted(set(prompts)), sorted(set(raters))
    p_where, r_where = {p: i for i, p in enumerate(p_names)}, {r: i for i, r in enumerate(r_names)}
    p_idx = np.array([p_where[p] for p in prompts])
    r_idx = np.array([r_where[r] for r in raters])
    values = np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    p_counts = np.stack(
        [
            np.bincount(rng.integers(0, len(p_names), len(p_names)), minlength=len(p_names))
            for _ in range(samples)
        ]
    )
    r_counts = np.stack(
        [
            np.bincount(rng.integers(0, len(r_names), len(r_names)), minlength=len(r_names))
            for _ in range(samples)
        ]
    )
    weight = p_counts[:, p_idx] * r_counts[:, r_idx]  # [samples, judgments]
    total = weight.sum(axis=1)
    rates = (weight @ values)[total > 0] / total[total > 0]
    if len(rates) == 0:
        return None
    low, high = np.percentile(rates, [2.5, 97.5])
    return float(low), float(high)


def make_cell(judgments: list[dict], method: str, samples: int, seed: int) -> Cell:
    cell = Cell()
    groups, scores, raters = [], [], []
    for j in judgments:
        s = score(j, method)
        if s is None:
            cell.unparseable += 1
            continue
        groups.append(j["prompt_id"])
        raters.append(j.get("rater"))
        scores.append(s)
        cell.wins += s == 1.0
        cell.ties += s == 0.5
        cell.losses += s == 0.0
    cell.judgments = len(scores)
    if scores:
        cell.win_rate = float(np.mean(scores))
        if any(r is not None for r in raters):
            ci = bootstrap_ci_crossed(groups, [str(r) for r in raters], scores, samples, seed)
        else:
            ci = bootstrap_ci(groups, scores, samples, seed)
        if ci is not None:
            cell.ci_low, cell.ci_high = ci
    return cell


def _order(pole: str) -> int:
    return list(POLES).index(pole) if pole in POLES else len(POLES)


def summarize(results: dict, bootstrap_samples: int | None = None, seed: int | None = None) -> Summary:
    """Win rates per combination x pole, per combination, per pole and overall, from a results dict."""
    samples = results["bootstrap_samples"] if bootstrap_samples is None else bootstrap_samples
    seed = results["seed"] if seed is None else seed
    method, judgments = results["method"], results["judgments"]
    poles = sorted({j["pole"] for j in judgments}, key=_order)
    combinations = sorted(
        {j["combination"] for j in judgments}, key=lambda c: [_order(p) for p in split_name(c)[0]]
    )
    rows: dict[tuple[str, str], list[dict]] = {}
    for j in judgments:
        for key in (
            (j["combination"], j["pole"]),
            (j["combination"], OVERALL),
            (ALL, j["pole"]),
            (ALL, OVERALL),
        ):
            rows.setdefault(key, []).append(j)
    rows.setdefault((ALL, OVERALL), [])
    # each cell gets its own seed, so a cell's interval does not depend on which other cells exist
    cells = {
        key: make_cell(js, method, samples, seed + zlib.crc32("|".join(key).encode()))
        for key, js in rows.items()
    }
    return Summary(
        method=method,
        baseline=results["baseline"],
        judge=results.get("judge", {}),
        combinations=combinations,
        poles=poles,
        cells=cells,
        missing=results.get("missing", {}),
        bootstrap_samples=samples,
        seed=seed,
        users=results.get("users", {}),
        resampled="prompts and raters" if any("rater" in j for j in judgments) else "prompts",
    )


def load_results(path: str | Path) -> dict:
    """results.json of an evaluation (the file, or its folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise UserError(f"no results.json at {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg})") from None


def rescore(path: str | Path, bootstrap_samples: int | None = None, seed: int | None = None) -> Summary:
    """Recompute every win rate and interval from a saved results.json."""
    return summarize(load_results(path), bootstrap_samples, seed)
