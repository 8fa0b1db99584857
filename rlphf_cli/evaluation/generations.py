"""The methods' generations as evaluation reads them: made when missing, checked, paired method with baseline."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from rlphf_cli.errors import UserError
from rlphf_cli.generations import METHODS as METHODS  # re-exported: evaluation/report.py imports it here
from rlphf_cli.generations import GenerationsFile
from rlphf_cli.preferences import check_poles, preference_name, split_name
from rlphf_cli.runs import read_jsonl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pair:
    """One prompt and combination with both methods' responses."""

    prompt_id: str
    combination: str  # the preference's name: "P1A,P2B,P3A", or "P1A=0.6,P2B=0.4" when weighted
    prompt: str
    method_text: str
    baseline_text: str

    @property
    def poles(self) -> list[str]:
        return split_name(self.combination)[0]


def ensure(cfg, method: str) -> Path:
    """The path of `method`'s complete generations, generating them first when they are missing."""
    out = GenerationsFile(cfg.run_dir, method)
    if out.is_complete():
        return out.path
    try:
        from rlphf_cli.decoding.generate import ensure_generations
    except ImportError as exc:
        if exc.name not in (None, "rlphf_cli.decoding.generate"):
            raise
        raise UserError(
            f"no complete generations for {method} in {out.path.parent}: "
            f"run `rlphf generate method={method}` first"
        ) from None
    log.info("generations for %s are missing: generating them first", method)
    return Path(ensure_generations(cfg, method))


def read(path: Path) -> list[dict]:
    rows = read_jsonl(path)
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not row.get("prompt_id") or not row.get("combination"):
            raise UserError(f"{path}: record {n}: a generation needs prompt_id and combination")
    return rows


def _index(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """Rows by (prompt_id, preference name); the first row wins; a row without text counts as missing.

    The name carries the weights when they are not equal, so two weightings of one combination are two keys.
    """
    out: dict[tuple[str, str], dict] = {}
    for row in rows:
        try:
            poles, weights = split_name(str(row["combination"]))
        except ValueError:
            raise UserError(f"bad preference name {row['combination']!r} in a generation record") from None
        combination = preference_name(tuple(check_poles(poles)), weights)
        out.setdefault((str(row["prompt_id"]), combination), row)
    return out


def pair(method_rows: list[dict], baseline_rows: list[dict], method: str, baseline: str):
    """Pairs for the prompts and combinations both methods answered, and what each one lacks.

    Returns (pairs, missing) where missing = {method: ["prompt_id (combination)", ...], baseline: [...]}.
    """
    ours, theirs = _index(method_rows), _index(baseline_rows)
    has_text = {k for k, r in ours.items() if isinstance(r.get("text"), str)}
    has_text_b = {k for k, r in theirs.items() if isinstance(r.get("text"), str)}
    keys = list(dict.fromkeys([*ours, *theirs]))
    missing: dict[str, list[str]] = {method: [], baseline: []}
    pairs = []
    for key in keys:
        lacking = [m for m, have in ((method, has_text), (baseline, has_text_b)) if key not in have]
        for m in lacking:
            missing[m].append(f"{key[0]} ({key[1]})")
        if lacking:
            continue
        a, b = ours[key], theirs[key]
        pairs.append(Pair(key[0], key[1], _prompt(a, b), a["text"], b["text"]))
    return pairs, missing


def _prompt(a: dict, b: dict) -> str:
    """The instruction to show the judge: the shorter one when they differ (one may carry preference text)."""
    texts = [t for t in (a.get("prompt"), b.get("prompt")) if isinstance(t, str) and t]
    if not texts:
        raise UserError(f"generation for {a['prompt_id']} has no prompt text")
    return min(texts, key=len)
