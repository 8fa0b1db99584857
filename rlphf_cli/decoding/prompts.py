"""Prompt sources: files of one JSON object per line with `id` and `prompt`, and datasets (`datasets`)."""

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


def load_prompt_dataset(source: str, split: str = "train") -> list[Prompt]:
    """Instructions from a Hugging Face dataset id or a local dataset folder (`Dataset.save_to_disk`, or a folder
    of parquet/json/csv files), through `datasets`. Columns: alpaca's `instruction` (+ `input` on the next
    line, when not empty; `output` is not used), or `prompt`. Ids: the column `id`, else `<name>-<row>`."""
    import datasets

    from rlphf_cli.errors import first_line

    path = Path(source).expanduser()
    try:
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            data = datasets.load_from_disk(str(path))
            if isinstance(data, datasets.DatasetDict):
                if split not in data:
                    raise UserError(f"{source} has no split {split!r}; it has {', '.join(data)}")
                data = data[split]
        else:
            if path.is_absolute() or source.startswith((".", "~")):
                if not path.is_dir():
                    raise UserError(f"prompt dataset folder not found: {path}")
            data = datasets.load_dataset(str(path) if path.is_dir() else source, split=split)
    except UserError:
        raise
    except Exception as exc:  # datasets raises many types for a missing id, split or file
        raise UserError(f"cannot load prompts from {source} (split {split}): {first_line(exc)}") from None
    columns = set(data.column_names)
    field = "instruction" if "instruction" in columns else "prompt" if "prompt" in columns else None
    if field is None:
        raise UserError(
            f"{source}: no `instruction` or `prompt` column (columns: {', '.join(sorted(columns))})"
        )
    name = path.name if path.exists() else source.rsplit("/", 1)[-1]
    prompts = []
    for i, row in enumerate(data):
        text = str(row[field] or "").strip()
        extra = str(row.get("input") or "").strip() if field == "instruction" else ""
        if not text:
            continue
        pid = str(row["id"]) if "id" in columns else f"{name}-{i}"
        prompts.append(Prompt(pid, text + (f"\n{extra}" if extra else "")))
    if not prompts:
        raise UserError(f"{source}: no instructions in split {split}")
    return prompts
