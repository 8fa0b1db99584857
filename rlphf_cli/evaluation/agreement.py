"""Agreement between judges: Krippendorff's alpha (nominal; any number of raters per unit, missing values
allowed) between people, and Cohen's kappa between two label sequences (people and an automatic judge)."""

from __future__ import annotations

from collections import Counter
from itertools import permutations


def krippendorff_alpha(units: dict[object, list[str]]) -> dict:
    """Nominal alpha over units (each a list of the values its raters gave): 1 - D_o / D_e from the
    coincidence matrix. Units with fewer than two values are not pairable and are left out.

    Returns alpha (None when there is no disagreement to expect: fewer than two pairable values, or one
    value only), the pairable units and values."""
    coincidence: Counter = Counter()
    pairable = 0
    for values in units.values():
        m = len(values)
        if m < 2:
            continue
        pairable += 1
        for c, k in permutations(values, 2):
            coincidence[(c, k)] += 1.0 / (m - 1)
    totals: Counter = Counter()
    for (c, _), v in coincidence.items():
        totals[c] += v
    n = sum(totals.values())
    observed = sum(v for (c, k), v in coincidence.items() if c != k)
    expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k)
    alpha = None if n < 2 or expected == 0 else 1.0 - (n - 1) * observed / expected
    return {"alpha": alpha, "units": pairable, "values": int(round(n))}


def cohen_kappa(first: list[str], second: list[str]) -> dict:
    """Cohen's kappa of two raters' labels on the same items, with the raw agreement and the count."""
    n = len(first)
    if n != len(second):
        raise ValueError("two label lists of one length are needed")
    if n == 0:
        return {"kappa": None, "agreement": None, "n": 0}
    po = sum(a == b for a, b in zip(first, second, strict=True)) / n
    ca, cb = Counter(first), Counter(second)
    pe = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / (n * n)
    kappa = None if pe == 1 else (po - pe) / (1 - pe)
    return {"kappa": kappa, "agreement": po, "n": n}
