"""`rlphf train-sft`: the run's base model.

Synthetic benchmark: build a word-level tokenizer and a tiny LLaMA-style model from a config, then
supervised fine-tuning with TRL's SFTTrainer on the benchmark's corpus. A real base
(`model.name_or_path=...`) is not trained: it is checked and recorded in the run directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rlphf_cli import launcher
from rlphf_cli.benchmarks import get_benchmark
from rlphf_cli.config import to_dict
from rlphf_cli.errors import UserError
from rlphf_cli.modeling import build_tiny_model, build_tokenizer, format_prompt, load_tokenizer
from rlphf_cli.runs import BENCHMARK_NOT_TRAINED, RunDir, made_from, stage_keys
from rlphf_cli.training.common import last_checkpoint, log_to_file, trainer_kwargs

log = logging.getLogger(__name__)


# what a base depends on: a real base its model settings; the tiny one every setting that builds and trains it
TINY_ARCHITECTURE = (
    "model.hidden_size",
    "model.intermediate_size",
    "model.num_hidden_layers",
    "model.num_attention_heads",
    "model.max_position_embeddings",
)


def base_keys(cfg) -> tuple[str, ...]:
    if cfg.model.name_or_path:
        return stage_keys(cfg, ("model",), ignore=(*TINY_ARCHITECTURE, "model.prompt_template"))
    return stage_keys(cfg, ("seed", "benchmark", "model", "sft"), ignore=BENCHMARK_NOT_TRAINED)


def base_made_from(cfg) -> dict:
    return made_from(cfg, base_keys(cfg))


def train_sft(cfg) -> Path:
    run = RunDir(cfg.run_dir)
    base = run.artifact("base")
    made = base_made_from(cfg)
    if base.reuse(made, "train-sft", cfg.force):
        log.info("base model already complete in %s; skipping", base.path)
        return base.path
    if cfg.model.name_or_path:
        return _record_real_base(cfg, base)

    bench = get_benchmark(cfg.benchmark)
    if not hasattr(bench, "sft_corpus"):
        raise UserError(
            f"benchmark {bench.name!r} has no built-in corpus: set model.name_or_path to a real base"
        )
    if launcher.should_prepare() and launcher.relaunch(cfg, "rlphf_cli.training.sft:train_sft"):
        return base.path
    work = base.start(made)
    tokenizer = build_tokenizer(bench.vocabulary_text())
    corpus = bench.sft_corpus(cfg.benchmark.sft_examples, cfg.seed)
    model = build_tiny_model(cfg.model, tokenizer, cfg.seed)
    log.info("tiny base: %.2fM parameters, vocabulary %d", model.num_parameters() / 1e6, len(tokenizer))
    metrics = _fit(cfg, model, tokenizer, corpus, work / "checkpoints")
    launcher.wait_for_everyone()
    if not launcher.is_main_process():
        return base.path
    model.save_pretrained(work, safe_serialization=True)
    tokenizer.save_pretrained(work)
    _remove_checkpoints(work / "checkpoints")
    base.commit("base", to_dict(cfg), source=None, trained=True, metrics=metrics, made_from=made)
    log.info(
        "base model saved to %s by process %d of %d",
        base.path,
        launcher.process_index(),
        metrics["processes"],
    )
    return base.path


def _fit(cfg, model, tokenizer, corpus: list[dict], output_dir: Path) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    template = cfg.model.prompt_template
    dataset = Dataset.from_list(
        [
            {"prompt": format_prompt(template, ex["prompt"], tokenizer), "completion": ex["completion"]}
            for ex in corpus
        ]
    )
    args = SFTConfig(
        **trainer_kwargs(cfg, output_dir, "sft"),
        max_steps=cfg.sft.max_steps,
        per_device_train_batch_size=cfg.sft.batch_size,
        learning_rate=cfg.sft.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.sft.warmup_steps,
        logging_steps=cfg.sft.logging_steps,
        save_steps=cfg.sft.save_steps,
        max_length=cfg.model.max_position_embeddings,
        completion_only_loss=True,
        weight_decay=0.0,
    )
    trainer = log_to_file(
        SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    )
    result = trainer.train(resume_from_checkpoint=last_checkpoint(output_dir))
    return {
        "train_loss": result.training_loss,
        "steps": result.global_step,
        "processes": trainer.accelerator.num_processes,
    }


def _remove_checkpoints(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def _record_real_base(cfg, base) -> Path:
    """A real base is loaded as is: check its tokenizer and config load, then record where it lives."""
    from transformers import AutoConfig

    name = cfg.model.name_or_path
    load_tokenizer(name, cfg.model.trust_remote_code)
    try:
        AutoConfig.from_pretrained(name, trust_remote_code=cfg.model.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load model config from {name}: {str(exc).splitlines()[0]}") from None
    base.start()
    base.commit("base", to_dict(cfg), source=name, trained=False, made_from=base_made_from(cfg))
    log.info("recorded real base model %s", name)
    return base.path
