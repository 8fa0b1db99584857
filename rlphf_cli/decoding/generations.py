"""`generations/<method>.jsonl`: appended line by line, so an interrupted run resumes without duplicates.

A file is complete when `generations/<method>.manifest.json` exists. The decoding settings are kept in
`generations/<method>.settings.json`; resuming with other settings is refused rather than mixing them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rlphf_cli.errors import UserError
from rlphf_cli.runs import RunDir, atomic_write_json, make_manifest


class GenerationsFile:
    def __init__(self, run_dir: str | Path, method: str):
        folder = RunDir(run_dir).root / "generations"
        self.method = method
        self.path = folder / f"{method}.jsonl"
        self.manifest_path = folder / f"{method}.manifest.json"
        self.settings_path = folder / f"{method}.settings.json"

    def is_complete(self) -> bool:
        return self.manifest_path.is_file()

    def read(self) -> list[dict]:
        """Every whole line; a last line cut short by an interruption is dropped from the file."""
        if not self.path.exists():
            return []
        records, good_bytes = [], 0
        with open(self.path, "rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break
                try:
                    records.append(json.loads(raw))
                except json.JSONDecodeError:
                    break
                good_bytes += len(raw)
        if good_bytes < self.path.stat().st_size:
            with open(self.path, "r+b") as f:
                f.truncate(good_bytes)
        return records

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def commit(self, config: dict, **extra) -> None:
        atomic_write_json(self.manifest_path, make_manifest("generations", config, self.path, **extra))
