"""The run directory: one folder per experiment, artifacts with manifests, atomic writes.

Layout (relative to `run_dir`):
    config/<command>.yaml          resolved config of the latest run of each command
    base/                          the base model (tiny, trained here) or a manifest that points at a real one
    data/                          prompts and preference pairs
    rm/<pole>/, experts/<pole>/    reward models and experts
    pcm/                           the preference control model
    generations/<method>.jsonl     decoded responses
    eval/<method>_vs_<baseline>/   judgments, tables, plots

An artifact folder is complete when its `manifest.json` exists: the manifest is written last, into a
`<name>.partial` working folder that is then renamed into place. The working folder also holds
checkpoints, so a re-run resumes it instead of starting over.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from rlphf_cli.errors import UserError
from rlphf_cli.process import in_launched_process

MANIFEST = "manifest.json"
_SECRET_KEY = re.compile(r"(api_?key|secret|password|(^|_)token$)", re.IGNORECASE)  # not max_new_tokens


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a file so that readers see the old content or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results should read like any other file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_jsonl(path: str | Path, appended: bool = False) -> list:
    """The records of a JSON-lines file, split on "\\n" only (U+2028, U+0085 and the like are text in a line).

    A file this tool appends to (`appended`) may end in a line cut short by an interruption: that last line,
    without its newline, is dropped and cut from the file so that the next append starts a clean line. Any
    other line that is not JSON is an error naming it; blank lines are skipped.
    """
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # empty when the file ends with a newline
    if not appended:
        lines.append(tail)
    elif tail:
        with open(path, "r+b") as f:
            f.truncate(len(data) - len(tail))
    records = []
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            records.append(json.loads(raw))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
            raise UserError(f"{path}:{n}: not a JSON line ({reason})") from None
    return records


def append_jsonl(path: str | Path, records: list) -> None:
    """Append one line per record and sync, so that an interruption cuts at most the last line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


def redact(obj: Any) -> Any:
    """Drop secret-looking values (api keys, tokens) from a config before it is printed or saved."""
    if isinstance(obj, dict):
        return {
            k: ("***" if _SECRET_KEY.search(str(k)) and v not in (None, "") else redact(v))
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("rlphf-cli", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def content_hash(path: str | Path) -> str:
    """sha256 over a file, or over a folder's files (relative names and contents), manifest excluded."""
    path = Path(path)
    h = hashlib.sha256()
    files = (
        [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST)
    )
    for p in files:
        if path.is_dir():
            h.update(str(p.relative_to(path)).encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def make_manifest(kind: str, config: dict | None, content: Path | None, **extra: Any) -> dict:
    return {
        "kind": kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": package_versions(),
        "content_hash": content_hash(content) if content is not None and content.exists() else None,
        **extra,
        "config": redact(config) if config is not None else None,
    }


# ----- what an artifact was made from: compared on every re-run, never reused silently -----
MADE_FROM_FILE = "made_from.json"  # in a working folder: what a partial run (its checkpoints) was made from
_forced: set[Path] = set()  # artifacts this process already redid under --force (each is redone once)


# Keys that change no artifact: how often to log and save checkpoints, which poles one command does (each
# artifact is one pole), and the checks made after training (metrics in the manifest, not the weights).
# Every other key of a stage's config sections is one of its made_from keys (`stage_keys`), so a key added
# to a section is recorded and compared without anyone remembering to list it.
NO_RESULT_KEYS = frozenset(
    {
        "sft.logging_steps",
        "sft.save_steps",
        "rm.pole",
        "rm.logging_steps",
        "rm.save_steps",
        "expert.pole",
        "expert.logging_steps",
        "expert.save_steps",
        "expert.eval_samples",
        "pcm.save_steps",
        "pcm.ablation",
        "pcm.eval_prompts",
    }
)


# benchmark keys no trained artifact depends on: the poles a later stage uses (each artifact is one pole's),
# and how many evaluation prompts are read
BENCHMARK_NOT_TRAINED = ("benchmark.poles", "benchmark.max_eval_prompts")


def stage_keys(cfg, sections, ignore=()) -> tuple[str, ...]:
    """A stage's made_from keys: every leaf key under the dotted `sections` (a section may be a single key),
    less NO_RESULT_KEYS and `ignore` (keys, or sub-sections such as another algorithm's settings)."""
    from omegaconf import DictConfig, OmegaConf

    skip = NO_RESULT_KEYS | set(ignore)
    out: list[str] = []

    def walk(key: str) -> None:
        if key in skip:
            return
        node = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        if isinstance(node, DictConfig):
            for child in node:
                walk(f"{key}.{child}")
        else:
            out.append(key)

    for section in sections:
        walk(section)
    return tuple(out)


def made_from(cfg, keys, inputs: dict[str, str | None] | None = None) -> dict:
    """The config values an artifact depends on (dotted `keys`) and its inputs' hashes (name -> hash)."""
    from omegaconf import OmegaConf

    config = {}
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None)
        config[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return {"config": redact(config), "inputs": dict(inputs or {})}


def input_hash(path: str | Path) -> str | None:
    """An input's identity: a complete artifact's recorded content hash (and source), a file's own hash."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        manifest = json.loads((path / MANIFEST).read_text())
        return "|".join(str(x) for x in (manifest.get("content_hash"), manifest.get("source")) if x)
    if path.is_file():
        return content_hash(path)
    return None


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def made_from_changes(old: dict | None, new: dict) -> list[str]:
    """What differs, key by key; a key or an input one side does not record is not a change."""
    if not old:
        return []
    out = []
    before, now = old.get("config", {}), new.get("config", {})
    for key in now:
        if key in before and before[key] != now[key]:
            out.append(f"{key} ({_short(before[key])} -> {_short(now[key])})")
    before, now = old.get("inputs", {}), new.get("inputs", {})
    for name in now:
        if before.get(name) and now[name] and before[name] != now[name]:
            out.append(f"input {name} changed")
    return out


def stale_error(what: str | Path, changes: list[str], command: str | None) -> UserError:
    """One line: what changed, and the way forward (a new run_dir, or --force on `command`, or deleting it)."""
    way = f"add --force to `rlphf {command}` to redo it" if command else f"delete {what} to make it again"
    return UserError(
        f"{what} was made from other settings ({', '.join(changes)}); use a new run_dir, or {way}"
    )


def force_once(path: Path, force: bool) -> bool:
    """True the first time `path` is to be redone under --force in the process the user started."""
    if not force or in_launched_process() or path in _forced:
        return False
    _forced.add(path)
    return True


class Artifact:
    """A folder in the run directory that is either complete (has a manifest) or absent/in progress."""

    def __init__(self, path: Path):
        self.path = path

    @property
    def work(self) -> Path:
        """Where the artifact is built (and checkpoints kept) until it is committed."""
        return self.path.with_name(self.path.name + ".partial")

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def is_complete(self) -> bool:
        return self.manifest_path.is_file()

    def manifest(self) -> dict:
        return json.loads(self.manifest_path.read_text())

    def start(self, made: dict | None = None) -> Path:
        """Make (or reuse, to resume) the working folder and return it; `made` records what it is made from."""
        self.work.mkdir(parents=True, exist_ok=True)
        if made is not None and not (self.work / MADE_FROM_FILE).is_file():
            atomic_write_json(self.work / MADE_FROM_FILE, made)
        return self.work

    def reuse(self, made: dict, command: str | None, force: bool = False) -> bool:
        """True: complete and made from `made`, skip it. False: to be made (a partial run made from the same
        resumes). Made from other settings: a one-line error naming what changed, unless `force` (then the
        artifact and its partial run are removed, to be redone)."""
        if force_once(self.path, force):
            shutil.rmtree(self.path, ignore_errors=True)
            shutil.rmtree(self.work, ignore_errors=True)
            return False
        if self.is_complete():
            changes = made_from_changes(self.manifest().get("made_from"), made)
            if changes:
                raise stale_error(self.path, changes, command)
            return True
        stamp = self.work / MADE_FROM_FILE
        if stamp.is_file():
            changes = made_from_changes(json.loads(stamp.read_text()), made)
            if changes:
                raise stale_error(f"the partial run in {self.work}", changes, command)
        return False

    def commit(self, kind: str, config: dict | None, **extra: Any) -> dict:
        """Write the manifest into the working folder and move it into place."""
        (self.work / MADE_FROM_FILE).unlink(missing_ok=True)  # the manifest records it (`made_from=`)
        manifest = make_manifest(kind, config, self.work, **extra)
        atomic_write_json(self.work / MANIFEST, manifest)
        if self.path.exists():  # an older, incomplete or replaced copy
            shutil.rmtree(self.path)
        os.replace(self.work, self.path)
        return manifest


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def artifact(self, relpath: str) -> Artifact:
        return Artifact(self.root / relpath)

    def save_config(self, command: str, config: dict) -> Path:
        import yaml

        path = self.root / "config" / f"{command}.yaml"
        atomic_write_text(path, yaml.safe_dump(redact(config), sort_keys=False))
        return path
