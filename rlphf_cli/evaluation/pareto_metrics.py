"""Pareto sets, hypervolume and MIP of points in objective space (every objective: higher is better).

- `pareto_mask`: the points no other point dominates (at least as good everywhere, better somewhere);
  duplicates do not dominate each other, so both copies stay.
- `hypervolume`: the measure of the region a set of points dominates above a reference point, exact in
  2-D (a sweep) and 3-D (slabs along the third axis, each a 2-D sweep). A point not strictly better than
  the reference in every objective adds nothing.
- `mip`: the mean, over a method's weight vectors, of the inner product of the weight vector with the
  normalised reward vector it obtained, ((score - reference) / scale per objective).
- `bootstrap_fronts`: percentile 95% intervals of both, resampling prompts (the same draw for every weight
  and every method: all are decoded on the same prompts, so the intervals are paired).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pareto_mask(points) -> np.ndarray:
    """True for each point that no other point dominates."""
    p = np.asarray(points, dtype=float)
    if p.size == 0:
        return np.zeros(0, dtype=bool)
    geq = (p[:, None, :] >= p[None, :, :]).all(axis=2)  # geq[i, j]: i at least as good as j everywhere
    gt = (p[:, None, :] > p[None, :, :]).any(axis=2)
    dominated = (geq & gt).any(axis=0)  # some i dominates j
    return ~dominated


def _hv2(points: np.ndarray, ref: np.ndarray) -> float:
    """2-D hypervolume of points already strictly above `ref`: sweep by the first objective, descending."""
    if len(points) == 0:
        return 0.0
    order = np.lexsort((-points[:, 1], -points[:, 0]))
    area, best_y = 0.0, ref[1]
    for x, y in points[order]:
        if y > best_y:
            area += (x - ref[0]) * (y - best_y)
            best_y = y
    return float(area)


def hypervolume(points, ref: Sequence[float]) -> float:
    """Exact hypervolume dominated by `points` above `ref`, for 1 to 3 objectives."""
    p = np.asarray(points, dtype=float).reshape(-1, len(ref))
    r = np.asarray(ref, dtype=float)
    p = p[(p > r).all(axis=1)]  # points not strictly above the reference in every objective add nothing
    if len(p) == 0:
        return 0.0
    if len(r) == 1:
        return float(p[:, 0].max() - r[0])
    if len(r) == 2:
        return _hv2(p, r)
    if len(r) == 3:
        levels = np.unique(p[:, 2])[::-1]  # distinct third coordinates, highest first
        volume = 0.0
        for k, z in enumerate(levels):
            below = levels[k + 1] if k + 1 < len(levels) else r[2]
            volume += _hv2(p[p[:, 2] >= z][:, :2], r[:2]) * (z - below)
        return float(volume)
    raise ValueError(f"exact hypervolume is implemented for 1 to 3 objectives, not {len(r)}")


def normalise(points, ref: Sequence[float], scale: Sequence[float]) -> np.ndarray:
    return (np.asarray(points, dtype=float) - np.asarray(ref, dtype=float)) / np.asarray(scale, dtype=float)


def mip(weights, points, ref: Sequence[float], scale: Sequence[float]) -> float:
    """Mean over rows of <weight vector, (point - ref) / scale>."""
    w = np.asarray(weights, dtype=float)
    return float((w * normalise(points, ref, scale)).sum(axis=-1).mean())


def bootstrap_fronts(
    scores: dict[str, np.ndarray],
    weights: dict[str, np.ndarray],
    ref: Sequence[float],
    scale: Sequence[float],
    samples: int,
    seed: int,
) -> dict[str, dict[str, tuple[float, float] | None]]:
    """Percentile 95% intervals of each method's hypervolume and MIP.

    `scores[m]`: [weights, prompts, objectives], every method on the same prompts in the same order;
    `weights[m]`: [weights, objectives]. The reference point and the scale stay fixed (declared, not
    re-estimated per draw)."""
    if samples <= 0 or not scores:
        return {m: {"hv": None, "mip": None} for m in scores}
    n = next(iter(scores.values())).shape[1]
    idx = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    out = {}
    for m, s in scores.items():
        means = s[:, idx, :].mean(axis=2)  # [weights, samples, objectives]
        hv = [hypervolume(means[:, b, :], ref) for b in range(samples)]
        ip = [mip(weights[m], means[:, b, :], ref, scale) for b in range(samples)]
        out[m] = {
            "hv": tuple(float(x) for x in np.percentile(hv, [2.5, 97.5])),
            "mip": tuple(float(x) for x in np.percentile(ip, [2.5, 97.5])),
        }
    return out


def simplex_lattice(objectives: int, points: int) -> list[tuple[float, ...]]:
    """Weight vectors with entries in multiples of 1/(points-1) that sum to 1 (2 objectives: `points` of them)."""
    if points < 2:
        raise ValueError("a lattice needs at least 2 points per axis")
    steps = points - 1

    def parts(k: int, left: int):
        if k == 1:
            yield (left,)
            return
        for i in range(left, -1, -1):
            for rest in parts(k - 1, left - i):
                yield (i, *rest)

    return [tuple(round(i / steps, 10) for i in c) for c in parts(objectives, steps)]


# MOD's 13 three-objective weight vectors (Shi et al. 2024, srzer/MOD), first objective's weight descending.
MOD_SIMPLEX_3 = [
    (1.0, 0.0, 0.0),
    (0.8, 0.1, 0.1),
    (0.6, 0.2, 0.2),
    (0.4, 0.4, 0.2),
    (0.4, 0.2, 0.4),
    (1 / 3, 1 / 3, 1 / 3),
    (0.2, 0.6, 0.2),
    (0.2, 0.4, 0.4),
    (0.2, 0.2, 0.6),
    (0.1, 0.8, 0.1),
    (0.1, 0.1, 0.8),
    (0.0, 1.0, 0.0),
    (0.0, 0.0, 1.0),
]
