"""What every trainer shares: Trainer arguments, resuming, and where a Trainer's log lines go."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from rlphf_cli import tracking
from rlphf_cli.adapters import (
    base_model_path as base_model_path,  # re-exported: training/pcm.py imports it here
)

TRAINER_LOG = "rlphf.trainer"  # a Trainer's logged figures: the run's log file, not the terminal


def trainer_kwargs(cfg, output_dir: Path, run_name: str) -> dict:
    """Arguments common to every TRL/transformers trainer config built here."""
    on_cpu = cfg.device == "cpu" or not torch.cuda.is_available()
    return {
        "output_dir": str(output_dir),
        "run_name": run_name,
        "seed": cfg.seed,
        "use_cpu": on_cpu,
        "bf16": (not on_cpu) and cfg.model.dtype == "bfloat16",
        "report_to": tracking.report_to(cfg),
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


def log_to_file(trainer):
    """Keep the Trainer's progress bar in the terminal; send its `{'loss': ...}` lines to the run's log file."""
    from transformers.trainer_callback import ProgressCallback

    class LoggedProgress(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                figures = {k: v for k, v in logs.items() if k != "total_flos"}
                logging.getLogger(TRAINER_LOG).info("step %d: %s", state.global_step, figures)

    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(LoggedProgress)
    return trainer


def set_deepspeed_micro_batch(accelerator, size: int) -> None:
    """Under DeepSpeed, `prepare(model, optimizer)` without a dataloader needs the micro-batch size set as an
    int (the shipped ZeRO configs leave it to accelerate, which reads it from a dataloader)."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = int(size)
