"""The P-Soups benchmark, from a folder laid out as the P-Soups data release.

    <data_dir>/alpaca_gpt4_10k.json      training instructions: a JSON list of {instruction, input, ...}
    <data_dir>/rm_training/P1A.json ...  judge-labelled pairs: {user_input, completion_a (chosen), completion_b}
    <data_dir>/koala_eval_50.json        evaluation prompts: {id, prompt} (a JSON list, or JSON lines)

It has no programmatic judge: rewards come from the run's reward models, evaluation from the LLM judge.
"""

from __future__ import annotations

import json
from pathlib import Path

from rlphf_cli.benchmarks.base import Prompt
from rlphf_cli.errors import UserError
from rlphf_cli.runs import read_jsonl

TRAIN_FILE = "alpaca_gpt4_10k.json"
EVAL_FILE = "koala_eval_50.json"


def _read_records(path: Path) -> list:
    if not path.is_file():
        raise UserError(f"P-Soups data file not found: {path}")
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise UserError(f"P-Soups data file is empty: {path}")
    if not text.startswith("["):
        records = read_jsonl(path)  # split on "\n" only: U+2028 and the like are text inside a line
    else:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON or JSON lines ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(records, list) or not records:
        raise UserError(f"{path}: expected a non-empty list of records")
    return records


def load_instructions(path: Path) -> list[Prompt]:
    """Alpaca-style records: the instruction, and its input (if any) on the next line."""
    prompts = []
    for i, rec in enumerate(_read_records(path)):
        if (
            not isinstance(rec, dict)
            or not isinstance(rec.get("instruction"), str)
            or not rec["instruction"].strip()
        ):
            raise UserError(f"{path}: record {i} lacks a text field 'instruction'")
        extra = rec.get("input") or ""
        text = rec["instruction"].strip() + (f"\n{extra.strip()}" if str(extra).strip() else "")
        prompts.append(Prompt(f"alpaca-{i}", text))
    return prompts


def load_eval_prompts(path: Path) -> list[Prompt]:
    prompts = []
    for i, rec in enumerate(_read_records(path)):
        if not isinstance(rec, dict) or "id" not in rec or not isinstance(rec.get("prompt"), str):
            raise UserError(f"{path}: record {i} needs an 'id' and a text 'prompt'")
        prompts.append(Prompt(str(rec["id"]), rec["prompt"]))
    return prompts


class PSoupsBenchmark:
    name = "psoups"

    def __init__(self, cfg) -> None:
        if not cfg.data_dir:
            raise UserError("benchmark=psoups needs benchmark.data_dir=<folder of the P-Soups data release>")
        self.cfg = cfg
        self.data_dir = Path(cfg.data_dir).expanduser()
        if not self.data_dir.is_dir():
            raise UserError(f"benchmark.data_dir is not a folder: {self.data_dir}")
        self.poles = list(cfg.poles)

    def train_prompts(self) -> list[Prompt]:
        if self.cfg.train_prompts:  # a dataset id or folder instead of the release's file
            from rlphf_cli.decoding.prompts import load_prompt_dataset

            return load_prompt_dataset(self.cfg.train_prompts, self.cfg.train_prompts_split)
        return load_instructions(self.data_dir / TRAIN_FILE)

    def eval_prompts(self) -> list[Prompt]:
        prompts = load_eval_prompts(self.data_dir / EVAL_FILE)
        cap = self.cfg.max_eval_prompts
        return prompts[:cap] if cap else prompts
