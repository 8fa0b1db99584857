"""Prompt files: one JSON object per line with `id` and `prompt`."""

from __future__ import annotations

from pathlib import Path

from rlphf_cli.benchmarks.base import Prompt
from rlphf_cli.errors import UserError
from rlphf_cli.runs import read_jsonl


def load_prompts_file(path: str | Path) -> list[Prompt]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"prompts file not found: {path}")
    prompts, seen = [], set()
    for n, obj in enumerate(read_jsonl(path), 1):
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or "id" not in obj:
            raise UserError(f"{path}: record {n} needs an `id` and a string `prompt`")
        pid = str(obj["id"])
        if pid in seen:
            raise UserError(f"{path}: record {n} repeats id {pid!r}")
        seen.add(pid)
        prompts.append(Prompt(pid, obj["prompt"]))
    if not prompts:
        raise UserError(f"prompts file is empty: {path}")
    return prompts
