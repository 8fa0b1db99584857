"""`generations/<method>.jsonl`: the decoding methods' outputs, one JSON line per prompt and combination.

Appended line by line, so an interrupted run resumes without duplicates. A file is complete when
`generations/<method>.manifest.json` exists. The decoding settings are kept in
`generations/<method>.settings.json`; resuming with other settings is refused rather than mixing them.
"""

from __future__ import annotations

import json
from pathlib import Path

from rlphf_cli.errors import UserError
from rlphf_cli.runs import RunDir, append_jsonl, atomic_write_json, make_manifest, read_jsonl

METHODS = ("sft", "prompted", "soups", "mod", "uniform", "genarm", "pcm")


class GenerationsFile:
    def __init__(self, run_dir: str | Path, method: str, folder: str = "generations"):
        folder = RunDir(run_dir).root / folder
        self.method = method
        self.path = folder / f"{method}.jsonl"
        self.manifest_path = folder / f"{method}.manifest.json"
        self.settings_path = folder / f"{method}.settings.json"

    def is_complete(self) -> bool:
        return self.path.is_file() and self.manifest_path.is_file()

    def read(self) -> list[dict]:
        """Every record; a last line cut short by an interruption is dropped from the file."""
        return read_jsonl(self.path, appended=True) if self.path.exists() else []

    def check_settings(self, settings: dict) -> None:
        if self.settings_path.exists():
            old = json.loads(self.settings_path.read_text())
            if old != settings:
                diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
                raise UserError(
                    f"{self.path} was made with other settings ({', '.join(diff)}); "
                    "remove it or use another run_dir"
                )
        else:
            atomic_write_json(self.settings_path, settings)

    def append(self, records: list[dict]) -> None:
        append_jsonl(self.path, records)

    def commit(self, config: dict, **extra) -> None:
        atomic_write_json(self.manifest_path, make_manifest("generations", config, self.path, **extra))


def known_methods(run_dir: str | Path) -> list[str]:
    """The built-in methods, then any other method whose generations are complete in the run."""
    folder = RunDir(run_dir).root / "generations"
    extra = sorted(
        p.stem
        for p in folder.glob("*.jsonl")
        if p.stem not in METHODS and GenerationsFile(run_dir, p.stem).is_complete()
    )
    return [*METHODS, *extra]


def check_method(run_dir: str | Path, method: str) -> str:
    methods = known_methods(run_dir)
    if method not in methods:
        raise UserError(f"unknown method {method!r}; valid choices: {', '.join(methods)}")
    return method
