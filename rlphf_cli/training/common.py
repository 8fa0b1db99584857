"""What every trainer shares: Trainer arguments, resuming, and where a Trainer's log lines go."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from rlphf_cli import tracking
from rlphf_cli.adapters import (
    base_model_path as base_model_path,  # re-exported: training/pcm.py imports it here
)
from rlphf_cli.decoding.engine import FixedWeights, decode
from rlphf_cli.errors import UserError
from rlphf_cli.modeling import torch_dtype
from rlphf_cli.training.expert_config import setting

log = logging.getLogger(__name__)
TRAINER_LOG = "rlphf.trainer"  # a Trainer's logged figures: the run's log file, not the terminal


def trainer_kwargs(cfg, output_dir: Path, run_name: str, hf_trainer: bool = True) -> dict:
    """Arguments common to every TRL/transformers trainer config built here (`hf_trainer=False`: for a loop of
    our own, PPO's, that reads them but builds no Trainer)."""
    on_cpu = cfg.device == "cpu" or not torch.cuda.is_available()
    if hf_trainer:
        check_one_gpu_per_process(on_cpu)
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


def check_one_gpu_per_process(on_cpu: bool) -> None:
    """A process that `accelerate launch`/torchrun did not start must see one GPU: with several, transformers'
    Trainer wraps the model in nn.DataParallel, which TRL >= 1.15 refuses (its fused LM head) with a traceback."""
    gpus = 0 if on_cpu else torch.cuda.device_count()
    if gpus > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        raise UserError(
            f"{gpus} GPUs are visible to one training process: set launcher.num_processes={gpus} to train on all "
            "of them, or make one visible (CUDA_VISIBLE_DEVICES=0)"
        )


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


# ----- what the expert trainers (training/expert.py) and the ARMs (training/arm.py) share -----
def common_args(cfg, checkpoints: Path, run_name: str) -> dict:
    """A TRL config's arguments for an expert (or ARM) of the current algorithm."""
    ec = cfg.expert
    return {
        **trainer_kwargs(cfg, checkpoints, run_name),
        "per_device_train_batch_size": setting(cfg, "batch_size"),
        "gradient_accumulation_steps": ec.gradient_accumulation_steps,
        "learning_rate": setting(cfg, "learning_rate"),
        "lr_scheduler_type": ec.lr_scheduler,
        "warmup_steps": ec.warmup_steps,
        "num_train_epochs": setting(cfg, "num_epochs"),
        "max_steps": setting(cfg, "max_steps"),
        "logging_steps": ec.logging_steps,
        "save_steps": ec.save_steps,
        "model_init_kwargs": {"dtype": torch_dtype(cfg.model.dtype)},
        "trust_remote_code": cfg.model.trust_remote_code,
    }


def fit(trainer, checkpoints: Path, work: Path, pole: str) -> dict:
    """Train (resuming the last checkpoint), save the adapter into `work`, return the figures."""
    resume = last_checkpoint(checkpoints)
    if resume:
        log.info("expert %s: resuming from %s", pole, resume)
    result = log_to_file(trainer).train(resume_from_checkpoint=resume)
    trainer.save_model(str(work))  # the LoRA adapter; TRL/transformers write it from the main process only
    processes = trainer.accelerator.num_processes
    if trainer.args.should_save:
        log.info("expert %s: adapter saved by process %d of %d", pole, trainer.args.process_index, processes)
    tracking.finish()
    return {"train_loss": result.training_loss, "steps": result.global_step, "processes": processes}


def judge_against_base(bench, pole: str, prompts, expert_out, base_out) -> dict:
    """The judge's verdicts on the pole: each output of a model against the base's, prompt by prompt."""
    wins = losses = ties = 0
    score_e, score_b = [], []
    for p, outs_e, outs_b in zip(prompts, expert_out, base_out, strict=True):
        for e, b in zip(outs_e, outs_b, strict=True):
            verdict = bench.compare(pole, p.text, e, b)
            wins += verdict == "A"
            losses += verdict == "B"
            ties += verdict == "TIE"
            score_e.append(bench.score(pole, p.text, e))
            score_b.append(bench.score(pole, p.text, b))
    decided = wins + losses
    return {
        "win_rate_vs_base": wins / decided if decided else None,  # among non-tied judgments
        "judgments": decided + ties,
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "judge_score_expert": sum(score_e) / len(score_e),
        "judge_score_base": sum(score_b) / len(score_b),
        "invalid_expert": sum(s < 0 for s in score_e) / len(score_e),
        "invalid_base": sum(s < 0 for s in score_b) / len(score_b),
        "eval_prompts": len(prompts),
    }


def guided_texts(cfg, experts, tokenizer, ids, active, weights, n: int, sampler) -> list[list[str]]:
    """n log-space-guided outputs per prompt (`ids`) of one expert list and weights, in batches of 64, from
    the same random stream every time (so the base alone and the base guided see the same draws): the
    own-pole checks of the ARMs and of PARM."""
    flat = [i for i in ids for _ in range(n)]
    device = next(experts.model.parameters()).device
    generator = torch.Generator(device).manual_seed(cfg.seed + 1)
    texts = []
    for start in range(0, len(flat), 64):
        batch = flat[start : start + 64]
        out = decode(
            experts,
            FixedWeights(torch.tensor([weights] * len(batch), device=device)),
            batch,
            active,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            max_new_tokens=cfg.expert.max_new_tokens,
            mixing="log",
            sampler=sampler,
            generator=generator,
            device=device,
        )
        texts += [tokenizer.decode(t, skip_special_tokens=True).strip() for t in out.tokens]
    return [texts[j * n : (j + 1) * n] for j in range(len(ids))]
