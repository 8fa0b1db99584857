"""`rlphf train-sft`: the run's base model.

Synthetic benchmark: build a word-level tokenizer and a tiny LLaMA-style model from a config, then
supervised fine-tuning with TRL's SFTTrainer on the benchmark's corpus. A real base
(`model.name_or_path=...`) is not trained: it is checked and recorded in the run directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rlphf_cli.benchmarks import get_benchmark
from rlphf_cli.config import to_dict
from rlphf_cli.errors import UserError
from rlphf_cli.modeling import build_tiny_model, build_tokenizer, format_prompt, load_tokenizer
from rlphf_cli.runs import RunDir
from rlphf_cli.training.common import last_checkpoint, log_to_file, trainer_kwargs

log = logging.getLogger(__name__)


def train_sft(cfg) -> Path:
    run = RunDir(cfg.run_dir)
    base = run.artifact("base")
    if base.is_complete():
        log.info("base model already complete in %s; skipping", base.path)
        return base.path
    if cfg.model.name_or_path:
        return _record_real_base(cfg, base)

    bench = get_benchmark(cfg.benchmark)
    if not hasattr(bench, "sft_corpus"):
        raise UserError(
            f"benchmark {bench.name!r} has no built-in corpus: set model.name_or_path to a real base"
        )
    work = base.start()
    tokenizer = build_tokenizer(bench.vocabulary_text())
    corpus = bench.sft_corpus(cfg.benchmark.sft_examples, cfg.seed)
    model = build_tiny_model(cfg.model, tokenizer, cfg.seed)
    log.info("tiny base: %.2fM parameters, vocabulary %d", model.num_parameters() / 1e6, len(tokenizer))
    metrics = _fit(cfg, model, tokenizer, corpus, work / "checkpoints")
    model.save_pretrained(work, safe_serialization=True)
    tokenizer.save_pretrained(work)
    _remove_checkpoints(work / "checkpoints")
    base.commit("base", to_dict(cfg), source=None, trained=True, metrics=metrics)
    log.info("base model saved to %s", base.path)
    return base.path


def _fit(cfg, model, tokenizer, corpus: list[dict], output_dir: Path) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    template = cfg.model.prompt_template
    dataset = Dataset.from_list(
        [{"prompt": format_prompt(template, ex["prompt"]), "completion": ex["completion"]} for ex in corpus]
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
        # batches of similar lengths: the prompted examples (preference texts) are long, and padding every
        # batch to them made SFT 1.5x slower
        train_sampling_strategy="group_by_length",
    )
    trainer = log_to_file(
        SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    )
    result = trainer.train(resume_from_checkpoint=last_checkpoint(output_dir))
    return {"train_loss": result.training_loss, "steps": result.global_step}


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
    base.commit("base", to_dict(cfg), source=name, trained=False)
    log.info("recorded real base model %s", name)
    return base.path
