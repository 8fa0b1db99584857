"""`rlphf train-rm`: one reward model per pole, as P-Soups trained them.

A sequence-classification head (one output) on the run's base with LoRA (r=8, alpha=32 by default),
trained with TRL's RewardTrainer (pairwise -logsigmoid loss) on the pole's pairs; a share of the pairs is
held out and the pairwise accuracy on it is recorded in `rm/<pole>/manifest.json`. The folder is a peft
adapter with its score head (`modules_to_save`), loaded beside others on one base by `rlphf_cli.reward_models`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from rlphf_cli import launcher, tracking
from rlphf_cli.adapters import (
    adapted_modules,
    base_fingerprint,
    base_model_path,
    check_lora_targets,
    lora_config,
)
from rlphf_cli.rewards import load_scoring_base, score_texts
from rlphf_cli.runs import RunDir, input_hash, made_from, stage_keys
from rlphf_cli.training.pairs import PAIRS_DIR, external_pairs_dir, pole_pairs, resolve_poles, split_pairs

log = logging.getLogger(__name__)


def rm_keys(cfg) -> tuple[str, ...]:
    """Every setting of the rm section, the model's, and the seed (the pairs are an input, by hash)."""
    return stage_keys(cfg, ("seed", "model", "rm"))


def rm_made_from(cfg, pole: str) -> dict:
    root = RunDir(cfg.run_dir).root
    pairs = external_pairs_dir(cfg) or root / PAIRS_DIR
    inputs = {"base": input_hash(root / "base"), f"pairs/{pole}": input_hash(pairs / f"{pole}.json")}
    return made_from(cfg, rm_keys(cfg), inputs)


def train_rm(cfg) -> list[Path]:
    """Train the reward models of `rm.pole` (a pole, a list, or all); complete ones are skipped."""
    poles = resolve_poles(cfg, cfg.rm.pole)
    run = RunDir(cfg.run_dir)
    todo = [
        p for p in poles if not run.artifact(f"rm/{p}").reuse(rm_made_from(cfg, p), "train-rm", cfg.force)
    ]
    for pole in poles:
        if pole not in todo:
            log.info("reward model %s already complete; skipping", pole)
    if todo and launcher.should_prepare():
        _prepare(cfg, todo)
        if launcher.relaunch(cfg, "rlphf_cli.training.rm:train_rm"):
            return [run.artifact(f"rm/{p}").path for p in poles]
    for pole in todo:
        train_one_rm(cfg, pole)
    return [run.artifact(f"rm/{p}").path for p in poles]


def _prepare(cfg, poles: list[str]) -> None:
    """Check inputs and make the pairs once, before any training process starts."""
    base_model_path(cfg)
    check_lora_targets(cfg, ("rm",))
    for pole in poles:
        pole_pairs(cfg, pole)


def rm_rows(cfg, pairs: list[dict], tokenizer=None) -> list[dict]:
    from rlphf_cli.modeling import format_prompt

    template = cfg.model.prompt_template
    return [
        {
            "prompt": format_prompt(template, r["user_input"], tokenizer),
            "chosen": r["completion_a"],
            "rejected": r["completion_b"],
        }
        for r in pairs
    ]


def train_one_rm(cfg, pole: str) -> Path:
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from rlphf_cli.config import to_dict
    from rlphf_cli.training.common import last_checkpoint, log_to_file, trainer_kwargs

    rc = cfg.rm
    art = RunDir(cfg.run_dir).artifact(f"rm/{pole}")
    pairs = pole_pairs(cfg, pole)
    train, held = split_pairs(pairs, rc.eval_fraction, cfg.seed)
    made = rm_made_from(cfg, pole)
    model, tokenizer = load_scoring_base(cfg)
    work = art.start(made)  # every process: the folder may not exist yet in a launched one
    checkpoints = work / "checkpoints"
    args = RewardConfig(
        **trainer_kwargs(cfg, checkpoints, f"rm-{pole}"),
        per_device_train_batch_size=rc.batch_size,
        gradient_accumulation_steps=rc.gradient_accumulation_steps,
        learning_rate=rc.learning_rate,
        lr_scheduler_type=rc.lr_scheduler,
        warmup_steps=rc.warmup_steps,
        weight_decay=rc.weight_decay,
        num_train_epochs=rc.num_epochs,
        max_steps=rc.max_steps,
        max_length=rc.max_length,
        logging_steps=rc.logging_steps,
        save_steps=rc.save_steps,
    )
    log.info("reward model %s: %d training pairs, %d held out", pole, len(train), len(held))
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rm_rows(cfg, train, tokenizer)),
        processing_class=tokenizer,
        peft_config=lora_config(rc, "SEQ_CLS", model=model),
    )
    resume = last_checkpoint(checkpoints)
    if resume:
        log.info("reward model %s: resuming from %s", pole, resume)
    result = log_to_file(trainer).train(resume_from_checkpoint=resume)
    trainer.save_model(str(work))  # the adapter and its score head; written by the main process only
    processes = trainer.accelerator.num_processes
    tracking.finish()
    launcher.wait_for_everyone()
    if not launcher.is_main_process():
        return art.path
    accuracy = pairwise_accuracy(trainer.model, tokenizer, cfg, held)
    shutil.rmtree(checkpoints, ignore_errors=True)
    for stray in ("training_args.bin", "README.md"):
        (work / stray).unlink(missing_ok=True)
    art.commit(
        "reward_model",
        to_dict(cfg),
        pole=pole,
        base=base_fingerprint(cfg),
        lora_target_modules=adapted_modules(work),
        metrics={
            "heldout_accuracy": accuracy,  # pairwise, against the pairs' labels (the judge)
            "heldout_pairs": len(held),
            "train_pairs": len(train),
            "train_loss": result.training_loss,
            "steps": result.global_step,
            "processes": processes,
        },
        made_from=made,
    )
    log.info("reward model %s: held-out accuracy %.3f on %d pairs -> %s", pole, accuracy, len(held), art.path)
    return art.path


def pairwise_accuracy(model, tokenizer, cfg, pairs: list[dict]) -> float | None:
    """Share of pairs whose chosen response scores strictly higher than the rejected one."""
    if not pairs:
        return None
    rows = rm_rows(cfg, pairs, tokenizer)
    was_training = model.training
    chosen = score_texts(model, tokenizer, [r["prompt"] + r["chosen"] for r in rows])
    rejected = score_texts(model, tokenizer, [r["prompt"] + r["rejected"] for r in rows])
    model.train(was_training)
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(rows)
