"""Experiment tracking (`tracking.backend=none|wandb`): one way for every trainer to start, log and finish a run.

transformers' Trainers report through `report_to` (set from `report_to(cfg)`); the loops written here (PPO,
the PCM) open a run with `start(cfg, name)`. Both read the same settings, and `finish()` closes whichever
run is open so that the next pole's trainer starts its own.
"""

from __future__ import annotations

import os
import sys

from rlphf_cli.errors import UserError

BACKENDS = ("none", "wandb")


def report_to(cfg) -> str:
    """transformers' `report_to` for this config; points W&B at the run directory first."""
    backend = cfg.tracking.backend
    if backend not in BACKENDS:
        raise UserError(f"unknown tracking.backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "none":
        return "none"
    from rlphf_cli.runs import RunDir

    os.environ.setdefault("WANDB_PROJECT", cfg.tracking.project)
    os.environ["WANDB_MODE"] = cfg.tracking.mode
    os.environ.setdefault("WANDB_DIR", str(RunDir(cfg.run_dir).root))
    if cfg.tracking.entity:
        os.environ.setdefault("WANDB_ENTITY", cfg.tracking.entity)
    return "wandb"


class Run:
    """An open tracking run, or none (`tracking.backend=none`): log() and finish() then do nothing."""

    def __init__(self, run=None):
        self.run = run

    def log(self, metrics: dict, step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def start(cfg, name: str) -> Run:
    """Open a run named `name` with the resolved config (secrets masked)."""
    if report_to(cfg) == "none":
        return Run()
    import wandb

    from rlphf_cli.config import to_dict
    from rlphf_cli.runs import redact

    return Run(
        wandb.init(
            project=cfg.tracking.project,
            entity=cfg.tracking.entity,
            name=name,
            dir=os.environ.get("WANDB_DIR"),
            mode=cfg.tracking.mode,
            config=redact(to_dict(cfg)),
            reinit="finish_previous",
        )
    )


def finish() -> None:
    """Close the open W&B run, if any (a Trainer leaves its run open)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
