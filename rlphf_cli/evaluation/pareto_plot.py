"""The Pareto-front figure of one objective set (PNG and SVG, matplotlib's Agg backend).

Two objectives: each weight-honouring method's points with 95% intervals on both axes, each labelled by the
first objective's weight, its front (its non-dominated points) joined by a line, dominated points hollow; the
methods without weights as single markers; the hypervolume's reference point as a grey cross. Three
objectives: the same in the three pairwise projections, points on the method's (3-D) front filled, no lines.
"""

from __future__ import annotations

import itertools
from pathlib import Path

COLOURS = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
)
REFERENCE_MARKERS = {"sft": "*", "prompted": "D", "uniform": "X"}


def _axis_label(result: dict, j: int) -> str:
    o = result["objectives"][j]
    s = result["scorers"][o]
    what = s["scorer"] if s["scorer"] != "hf" else f"hf: {Path(s['model']).name}"
    return f"{o} score ({what})"


def _draw(ax, result: dict, i: int, j: int, lines: bool) -> None:
    colours = iter(COLOURS)
    for label, m in result["methods"].items():
        pts = m["points"]
        xs = [p["means"][i] for p in pts]
        ys = [p["means"][j] for p in pts]
        err = [
            [
                [
                    p["means"][k] - (p["ci_low"][k] if p["ci_low"][k] is not None else p["means"][k])
                    for p in pts
                ],
                [
                    (p["ci_high"][k] if p["ci_high"][k] is not None else p["means"][k]) - p["means"][k]
                    for p in pts
                ],
            ]
            for k in (i, j)
        ]
        if not m["takes_weights"]:
            marker = REFERENCE_MARKERS.get(m["method"], "s")
            ax.errorbar(
                xs,
                ys,
                xerr=err[0],
                yerr=err[1],
                fmt=marker,
                color="black",
                ms=9,
                mfc="white",
                capsize=2,
                lw=0.8,
                label=f"{label} (no weights)",
                zorder=4,
            )
            continue
        colour = next(colours, "tab:gray")
        ax.errorbar(xs, ys, xerr=err[0], yerr=err[1], fmt="none", ecolor=colour, alpha=0.35, lw=0.8)
        on = [p["pareto"] for p in pts]
        ax.scatter(
            [x for x, f in zip(xs, on, strict=True) if f],
            [y for y, f in zip(ys, on, strict=True) if f],
            color=colour,
            s=22,
            zorder=3,
            label=label,
        )
        ax.scatter(
            [x for x, f in zip(xs, on, strict=True) if not f],
            [y for y, f in zip(ys, on, strict=True) if not f],
            facecolors="white",
            edgecolors=colour,
            s=22,
            zorder=3,
        )
        if lines:
            front = sorted((x, y) for x, y, f in zip(xs, ys, on, strict=True) if f)
            ax.plot([x for x, _ in front], [y for _, y in front], color=colour, lw=1.2)
        for p, x, y in zip(pts, xs, ys, strict=True):
            ax.annotate(
                format(p["weights"][0], ".2g"),
                (x, y),
                textcoords="offset points",
                xytext=(3, 3),
                fontsize=6,
                color=colour,
            )
    ref = result["reference_point"]
    ax.scatter([ref[i]], [ref[j]], marker="+", color="gray", s=60, label="HV reference point")
    ax.set_xlabel(_axis_label(result, i))
    ax.set_ylabel(_axis_label(result, j))
    ax.grid(alpha=0.3)


def plot_front(result: dict, stem: Path) -> list[Path]:
    """Write `<stem>.png` and `<stem>.svg`; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(result["objectives"])
    pairs = [(0, 1)] if n == 2 else list(itertools.combinations(range(n), 2))
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.6 * len(pairs) + 2.2, 5.2), squeeze=False)
    for ax, (i, j) in zip(axes[0], pairs, strict=True):
        _draw(ax, result, i, j, lines=n == 2)
    title = " vs ".join(result["objectives"])
    note = f"point labels: weight on {result['objectives'][0]}; bars: 95% bootstrap CI over prompts"
    if n == 3:
        note += "\nprojections of a 3-objective front; filled: on the method's front, hollow: dominated"
    else:
        note += "\nline: the method's front; hollow: dominated points"
    fig.suptitle(f"Pareto fronts, {title} ({result['prompts']} prompts)\n{note}", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 0.82, 1))
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path in paths:
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return paths
