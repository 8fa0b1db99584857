"""What every trainer shares: Trainer arguments, tracking, resuming, the base model of a run."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from rlphf_cli.errors import UserError
from rlphf_cli.runs import RunDir


def trainer_kwargs(cfg, output_dir: Path, run_name: str) -> dict:
    """Arguments common to every TRL/transformers trainer config built here."""
    on_cpu = cfg.device == "cpu" or not torch.cuda.is_available()
    report_to = "none"
    if cfg.tracking.backend == "wandb":
        report_to = "wandb"
        os.environ.setdefault("WANDB_PROJECT", cfg.tracking.project)
        os.environ["WANDB_MODE"] = cfg.tracking.mode
        os.environ.setdefault("WANDB_DIR", str(RunDir(cfg.run_dir).root))
        if cfg.tracking.entity:
            os.environ.setdefault("WANDB_ENTITY", cfg.tracking.entity)
    elif cfg.tracking.backend != "none":
        raise UserError(f"unknown tracking backend {cfg.tracking.backend!r}; valid: none, wandb")
    return {
        "output_dir": str(output_dir),
        "run_name": run_name,
        "seed": cfg.seed,
        "use_cpu": on_cpu,
        "bf16": (not on_cpu) and cfg.model.dtype == "bfloat16",
        "report_to": report_to,
        "save_total_limit": 1,
        "save_strategy": "steps",
        "disable_tqdm": False,
        "dataloader_num_workers": 0,
        "activation_checkpointing": False,  # TRL configs turn it on by default; it only costs time here
        "ddp_find_unused_parameters": False,
    }


def last_checkpoint(output_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None


def base_model_path(cfg) -> str:
    """Where the run's base model is loaded from: the trained tiny model or the recorded real one."""
    base = RunDir(cfg.run_dir).artifact("base")
    if not base.is_complete():
        raise UserError(f"no base model in {base.path}: run `rlphf train-sft run_dir={cfg.run_dir}` first")
    source = base.manifest().get("source")
    return source or str(base.path)
