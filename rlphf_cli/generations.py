"""`generations/<method>.jsonl`: the decoding methods' outputs, one JSON line per prompt and combination.

Appended line by line, so an interrupted run resumes without duplicates. A file is complete when
`generations/<method>.manifest.json` exists. The decoding settings are kept in
`generations/<method>.settings.json`; resuming with other settings is refused rather than mixing them.
"""

from __future__ import annotations

import json
from pathlib import Path

from rlphf_cli.errors import UserError
from rlphf_cli.methods import NAMES as METHODS  # the registered methods, in the registry's order
from rlphf_cli.runs import (
    RunDir,
    append_jsonl,
    atomic_write_json,
    force_once,
    input_hash,
    made_from_changes,
    make_manifest,
    read_jsonl,
    stale_error,
)

SETTING_KEYS = {
    "merge": "generate.soups_merge",
    "density": "generate.soups_density",
    "prompt_template": "model.prompt_template",
}


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

    def check_settings(self, settings: dict, force: bool = False) -> None:
        """Resume or skip only under the same settings and inputs (`settings["inputs"]`: the base, experts and
        PCM decoded with); else one line naming what changed, unless `force` (then start the file over)."""
        if force_once(self.path, force):
            for path in (self.path, self.manifest_path, self.settings_path):
                path.unlink(missing_ok=True)
        if self.settings_path.exists():
            old = json.loads(self.settings_path.read_text())
            as_made = lambda x: {  # noqa: E731  (settings named as the config keys a user sets)
                "config": {SETTING_KEYS.get(k, f"generate.{k}"): v for k, v in x.items() if k != "inputs"},
                "inputs": x.get("inputs", {}),
            }
            changes = made_from_changes(as_made(old), as_made(settings))
            if changes:
                raise stale_error(self.path, changes, "generate")
        else:
            atomic_write_json(self.settings_path, settings)

    def changed_inputs(self) -> list[str]:
        """The recorded inputs (base, experts, PCM) whose artifacts have changed since these were decoded."""
        if not self.settings_path.is_file():
            return []
        root = self.path.parent.parent
        recorded = json.loads(self.settings_path.read_text()).get("inputs", {})
        now = {name: input_hash(root / name) for name in recorded}
        return made_from_changes({"inputs": recorded}, {"inputs": now})

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
