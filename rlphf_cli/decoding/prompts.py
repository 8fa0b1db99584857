"""Prompt files: one JSON object per line with `id` and `prompt`."""

from __future__ import annotations

import json
from pathlib import Path

from rlphf_cli.benchmarks.base import Prompt
from rlphf_cli.errors import UserError


def load_prompts_file(path: str | Path) -> list[Prompt]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"prompts file not found: {path}")
    prompts, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or "id" not in obj:
                raise UserError(f"{path}:{lineno}: each line needs an `id` and a string `prompt`")
            pid = str(obj["id"])
            if pid in seen:
                raise UserError(f"{path}:{lineno}: duplicate id {pid!r}")
            seen.add(pid)
            prompts.append(Prompt(pid, obj["prompt"]))
    if not prompts:
        raise UserError(f"prompts file is empty: {path}")
    return prompts
