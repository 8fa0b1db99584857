"""User files, `users/<name>.json` in the run directory: what `rlphf personalize` inferred about a user,
and what `rlphf generate preference=@users/<name>.json` reads (the `mixture` weights)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from rlphf_cli.errors import UserError
from rlphf_cli.preferences import Preference, format_weight, parse_weighted_preferences
from rlphf_cli.runs import RunDir, atomic_write_json

NAME = re.compile(r"[A-Za-z0-9_.-]+")


def check_user_name(name) -> str:
    if not name or not NAME.fullmatch(str(name)) or str(name).startswith("."):
        raise UserError(f"personalize.user must be a name of letters, digits, _ . - (got {name!r})")
    return str(name)


def user_path(run_dir, name: str) -> Path:
    return RunDir(run_dir).root / "users" / f"{check_user_name(name)}.json"


def answers_path(run_dir, name: str) -> Path:
    """Where the interactive mode keeps a user's answers, one JSON line each (what `mode=fit` reads)."""
    return RunDir(run_dir).root / "users" / f"{check_user_name(name)}.answers.jsonl"


def write_user(run_dir, name: str, body: dict) -> Path:
    path = user_path(run_dir, name)
    atomic_write_json(path, {"user": name, **body})
    return path


def load_user_preference(spec: str, run_dir, poles) -> Preference:
    """A user file's mixture weights as a preference (named by its weights, labelled with the user).

    `spec` is a path: as given (absolute, or from the current folder), else inside the run directory."""
    path = Path(spec).expanduser()
    if not path.is_absolute() and not path.is_file():
        path = RunDir(run_dir).root / spec
    if not path.is_file():
        where = (
            ""
            if Path(spec).expanduser().is_absolute()
            else f" (looked in the current folder and in {RunDir(run_dir).root})"
        )
        raise UserError(f"user file not found: {spec}{where}")
    return read_user_preference(path, poles, label=str(path))


def read_user_preference(path: Path, poles, label: str) -> Preference:
    """The preference of the user file at `path`; messages name it `label` (a server names no path of its own)."""
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{label}: not a JSON user file ({str(exc).splitlines()[0]})") from None
    mix = body.get("mixture") if isinstance(body, dict) else None
    if not isinstance(mix, dict) or not mix:
        raise UserError(f'{label}: a user file needs a `mixture` object of pole weights, e.g. {{"P1A": 0.5}}')
    parts = []
    for pole, weight in mix.items():
        ok = isinstance(weight, (int, float)) and not isinstance(weight, bool) and math.isfinite(weight)
        if not ok:
            raise UserError(f"{label}: weight of {pole} is {weight!r}, not a finite number")
        parts.append(f"{pole}:{format_weight(float(weight))}")
    try:
        (pref,) = parse_weighted_preferences(",".join(parts), poles)
    except UserError as exc:
        raise UserError(f"{label}: {exc}") from None
    user = body.get("user") if isinstance(body.get("user"), str) else path.stem
    return Preference(pref.combination, pref.weights, user=user)
