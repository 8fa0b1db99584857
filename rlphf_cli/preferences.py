"""Poles, dimensions, combinations and preference weight vectors.

A preference is held as a weight vector over poles; a binary combination such as (P1A, P2B, P3A) is the
special case of equal weight on each chosen pole.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from rlphf_cli.errors import UserError


@dataclass(frozen=True)
class Pole:
    name: str
    dimension: str
    text: str


POLES: dict[str, Pole] = {
    p.name: p
    for p in [
        Pole(
            "P1A", "P1", "Generate a response that can be easily understood by an elementary school student."
        ),
        Pole(
            "P1B",
            "P1",
            "Generate a response that only a PhD Student in that specific field could understand.",
        ),
        Pole("P2A", "P2", "Generate a response that is concise and to the point, without being verbose."),
        Pole(
            "P2B",
            "P2",
            "Generate a response that is very informative, without missing any background information.",
        ),
        Pole(
            "P3A",
            "P3",
            "Generate a response that is friendly, witty, funny, and humorous, like a close friend.",
        ),
        Pole("P3B", "P3", "Generate a response in an unfriendly manner."),
        Pole("P3C", "P3", "Generate a response in a sassy manner."),
        Pole("P3D", "P3", "Generate a response in a sarcastic manner."),
    ]
}

Combination = tuple[str, ...]


def check_poles(names: Sequence[str], allowed: Sequence[str] | None = None) -> list[str]:
    """Validate pole names (known, and among `allowed` when given); return them as a list."""
    allowed = list(allowed) if allowed is not None else list(POLES)
    out = []
    for name in names:
        name = name.strip()
        if name not in POLES or name not in allowed:
            raise UserError(f"unknown pole {name!r}; valid poles: {', '.join(allowed)}")
        out.append(name)
    return out


def dimensions(poles: Sequence[str]) -> dict[str, list[str]]:
    """Group poles by dimension, in order of first appearance."""
    dims: dict[str, list[str]] = {}
    for p in poles:
        dims.setdefault(POLES[p].dimension, []).append(p)
    return dims


def all_combinations(poles: Sequence[str]) -> list[Combination]:
    """Every combination that takes one pole from each dimension (2x2x2 = 8 for the six core poles)."""
    return [tuple(c) for c in itertools.product(*dimensions(poles).values())]


def parse_preference(spec: str | Sequence[str], poles: Sequence[str]) -> list[Combination]:
    """Parse `all`, `P1A,P2B,P3A`, or several combinations separated by `;`, into combinations.

    A combination names at most one pole per dimension.
    """
    if not isinstance(spec, str):
        spec = ",".join(spec)
    spec = spec.strip()
    if spec in ("", "all"):
        return all_combinations(poles)
    combos = []
    for part in spec.split(";"):
        names = check_poles([n for n in part.split(",") if n.strip()], poles)
        if not names:
            raise UserError(f"empty preference in {spec!r}")
        seen: dict[str, str] = {}
        for n in names:
            dim = POLES[n].dimension
            if dim in seen:
                raise UserError(
                    f"preference {part!r} names two poles of dimension {dim}: {seen[dim]} and {n}"
                )
            seen[dim] = n
        combos.append(tuple(names))
    return combos


def combination_name(combination: Combination) -> str:
    return ",".join(combination)


def preference_text(combination: Combination) -> str:
    """The preference prompt for a combination: the poles' texts, as P-Soups's preference prompting."""
    return " ".join(POLES[p].text for p in combination)


def _is_equal(weights: Sequence[float]) -> bool:
    return all(abs(w - weights[0]) <= 1e-9 for w in weights)


def format_weight(w: float) -> str:
    return f"{w:.4g}"


@dataclass(frozen=True)
class Preference:
    """A combination of poles and the weight of each (equal unless given as `P1A:0.7,P2B:0.3`).

    Its name is its identity in every file and table: `P1A,P2B,P3A` for equal weights (the binary
    combinations), `P1A=0.7,P2B=0.3` otherwise (weights to 4 significant digits).
    """

    combination: Combination
    weights: tuple[float, ...]
    user: str | None = None  # the user file it came from (`preference=@users/NAME.json`), if any

    @property
    def name(self) -> str:
        return preference_name(self.combination, self.weights)

    @property
    def weighted(self) -> bool:
        return not _is_equal(self.weights)


def preference_name(combination: Combination, weights: Sequence[float]) -> str:
    if _is_equal(weights):
        return combination_name(combination)
    return ",".join(f"{p}={format_weight(w)}" for p, w in zip(combination, weights, strict=True))


def split_name(name: str) -> tuple[list[str], list[float]]:
    """A preference name's poles and weights: `P1A,P2B` -> equal weights; `P1A=0.7,P2B=0.3` as written."""
    poles, weights = [], []
    for item in str(name).split(","):
        pole, _, weight = item.partition("=")
        poles.append(pole.strip())
        weights.append(float(weight) if weight else None)
    if all(w is None for w in weights):
        return poles, [1.0 / len(poles)] * len(poles)
    return poles, [w or 0.0 for w in weights]


def parse_weighted_preferences(spec: str, poles: Sequence[str]) -> list[Preference]:
    """Like `parse_preference`, but each pole may carry a weight: `P1A:0.5,P2B:0.3,P3A:0.2` (`=` also works,
    so a preference's own name parses back to it).

    Negative, non-finite or malformed weights, weights whose sum overflows, empty parts and a trailing `;`
    are refused; weights that do not sum to 1 are normalised, with a warning.
    """
    import logging
    import math

    spec = (spec or "all").strip()
    out = []
    for part in spec.split(";"):
        if not part.strip():
            raise UserError(f"empty preference in {spec!r} (a stray or trailing `;`?)")
        if part.strip() == "all":
            out += [Preference(c, (1.0 / len(c),) * len(c)) for c in all_combinations(poles)]
            continue
        names, weights = [], []
        for item in part.split(","):
            name, sep, weight = item.replace("=", ":").partition(":")
            if not name.strip():
                raise UserError(f"empty pole in preference {part!r} (a stray `,`?)")
            if sep and not weight.strip():
                raise UserError(f"empty weight for {name.strip()} in preference {part!r}")
            names.append(name)
            try:
                w = float(weight) if sep else None
            except ValueError:
                raise UserError(f"bad weight {weight!r} for {name.strip()} in preference {part!r}") from None
            if w is not None and not math.isfinite(w):
                raise UserError(
                    f"weight {weight.strip()!r} for {name.strip()} in preference {part!r} is not finite"
                )
            weights.append(w)
        (combination,) = parse_preference(",".join(names), poles)
        if all(w is None for w in weights):
            out.append(Preference(combination, (1.0 / len(combination),) * len(combination)))
            continue
        if any(w is None for w in weights):
            raise UserError(f"preference {part!r}: give a weight for every pole or for none")
        if any(w < 0 for w in weights):
            raise UserError(f"preference {part!r}: weights must not be negative")
        total = sum(weights)
        if total <= 0:
            raise UserError(f"preference {part!r}: weights sum to zero")
        if not math.isfinite(
            total
        ):  # each weight finite, their sum not (1e308 twice): it would normalise to 0
            raise UserError(
                f"preference {part!r}: weights too large (their sum overflows); use weights such as 0.7"
            )
        if abs(total - 1.0) > 1e-3:
            logging.getLogger(__name__).warning(
                "preference %s: weights sum to %g; normalised to 1", part, total
            )
        out.append(Preference(combination, tuple(w / total for w in weights)))
    return out
