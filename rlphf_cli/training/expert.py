"""`rlphf train-expert`: one LoRA expert per pole on the run's shared base (P-Soups's experts).

    dpo   TRL's DPOTrainer on the pole's pairs (reference: the base, i.e. the adapter disabled)
    ppo   PPO against the pole's reward model, as P-Soups trained its experts (rlphf_cli.training.ppo)
    grpo  TRL's GRPOTrainer with the pole's judge (or reward model) as the reward function
    arm   not an expert: GenARM's autoregressive reward model on the pole's pairs (rlphf_cli.training.arm),
          saved as `arms/<pole>/`; its check is the base guided by it against the base alone
    parm  not an expert: PARM, one preference-conditioned autoregressive reward model on every pole's pairs
          (rlphf_cli.training.parm_trainer), saved as `parm/`; checked per pole as the ARMs are

`experts/<pole>/` is a peft adapter folder (adapter_config.json, adapter_model.safetensors) with a manifest:
pole, algorithm, the base it was trained on (path and fingerprint) and an own-pole check against the base on
the benchmark's held-out prompts. Loaded together, the adapters are named after their poles.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from omegaconf import DictConfig

from rlphf_cli import launcher
from rlphf_cli.adapters import (
    adapted_modules,
    base_fingerprint,
    base_model_path,
    check_adapter_base,
    check_lora_targets,
    explain_load_failure,
    lora_config,
)
from rlphf_cli.benchmarks import get_benchmark
from rlphf_cli.config import to_dict
from rlphf_cli.errors import UserError
from rlphf_cli.modeling import format_prompt, load_causal_lm, load_tokenizer, resolve_device
from rlphf_cli.rewards import get_reward
from rlphf_cli.runs import (
    BENCHMARK_NOT_TRAINED,
    Artifact,
    RunDir,
    atomic_write_json,
    input_hash,
    made_from,
    stage_keys,
)
from rlphf_cli.training import arm
from rlphf_cli.training.common import common_args, fit, judge_against_base
from rlphf_cli.training.expert_config import setting
from rlphf_cli.training.pairs import (
    PAIRS_DIR,
    external_pairs_dir,
    pole_pairs,
    resolve_poles,
    sample_responses,
)
from rlphf_cli.training.ppo import train_ppo
from rlphf_cli.training.rm import train_rm

log = logging.getLogger(__name__)

PARM = "parm"  # the algorithm (and artifact) PARM; the decoding method of that name is methods/parm.py
ALGOS = ("dpo", "ppo", "grpo", "arm", PARM)
TARGET = "rlphf_cli.training.expert:train_expert"
_STRAY_FILES = (
    "training_args.bin",
    "README.md",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)


def _check_partial(cfg, art: Artifact, algo: str) -> None:
    """A partial run (checkpoints to resume) must be of the same algorithm on the same base."""
    stamp = art.work / "partial.json"
    current = {"algo": algo, "base": base_fingerprint(cfg)["fingerprint"]}
    if stamp.is_file():
        before = json.loads(stamp.read_text())
        if before.get("base") != current["base"]:
            raise UserError(
                f"{art.work} holds a partial run on another base; delete that folder to start over"
            )
        if before.get("algo") != algo:
            raise UserError(
                f"{art.work} holds a partial {before.get('algo')} run; use algo={before.get('algo')} to resume it "
                "or delete that folder"
            )
    elif launcher.is_main_process():
        art.start()
        atomic_write_json(stamp, current)


def expert_keys(cfg) -> tuple[str, ...]:
    """Every setting of the expert section (the current algorithm's own sub-section, not the others'), the
    model's and the benchmark's (less the poles other stages use and the evaluation prompt cap), and the seed."""
    others = [
        f"expert.{k}" for k in cfg.expert if isinstance(cfg.expert[k], DictConfig) and k != cfg.expert.algo
    ]
    return stage_keys(cfg, ("seed", "model", "benchmark", "expert"), ignore=(*others, *BENCHMARK_NOT_TRAINED))


def expert_made_from(cfg, pole: str) -> dict:
    """The settings of the expert's algorithm (its own section too) and its inputs: the base, and the
    pole's pairs (dpo) or the reward it was trained against (the pole's reward model, or the benchmark)."""

    root = RunDir(cfg.run_dir).root
    inputs = {"base": input_hash(root / "base")}
    if cfg.expert.algo in ("dpo", "arm"):  # ARMs learn from the pairs too
        inputs[f"pairs/{pole}"] = input_hash((external_pairs_dir(cfg) or root / PAIRS_DIR) / f"{pole}.json")
    elif cfg.expert.algo in ALGOS and reward_kind(cfg) == "reward_model":
        inputs[f"rm/{pole}"] = input_hash(root / "rm" / pole)
    return made_from(cfg, expert_keys(cfg), inputs)


def parm_made_from(cfg) -> dict:
    """PARM's settings and inputs: the base and every pole's pairs."""
    from rlphf_cli.training.pairs import PAIRS_DIR, external_pairs_dir

    root = RunDir(cfg.run_dir).root
    folder = external_pairs_dir(cfg) or root / PAIRS_DIR
    inputs = {"base": input_hash(root / "base")}
    inputs |= {f"pairs/{p}": input_hash(folder / f"{p}.json") for p in cfg.benchmark.poles}
    keys = [
        k for k in expert_keys(cfg) if not k.startswith("expert.lora_") or k == "expert.lora_target_modules"
    ]
    return made_from(cfg, tuple(dict.fromkeys((*keys, "benchmark.poles"))), inputs)


def train_parm_artifact(cfg) -> Path:
    """`train-expert algo=parm`: the one PARM of the run, `parm/` (skipped when complete)."""
    from rlphf_cli.config import to_dict
    from rlphf_cli.training.parm_trainer import check_parm_settings, parm_check, train_parm

    check_parm_settings(cfg.expert.parm)
    art = RunDir(cfg.run_dir).artifact("parm")
    made = parm_made_from(cfg)
    if art.reuse(made, "train-expert", cfg.force):
        check_adapter_base(cfg, art, "PARM")
        log.info("parm already complete; skipping")
        return art.path
    if cfg.launcher.num_processes > 1:
        log.info("PARM trains in one process (its loop is not distributed)")
    base_model_path(cfg)
    for pole in cfg.benchmark.poles:  # every pole's pairs exist before anything is written
        pole_pairs(cfg, pole)
    work = art.start(made)
    stats = train_parm(cfg, work)
    checks = parm_check(cfg, work)
    art.commit(
        "parm",
        to_dict(cfg),
        algo="parm",
        poles=list(cfg.benchmark.poles),
        base=base_fingerprint(cfg),
        metrics={**stats, "checks": checks},  # training figures, then each pole's own check
        made_from=made,
    )
    log.info("PARM (%d steps, %.0f s) -> %s", stats["steps"], stats["train_seconds"], art.path)
    for pole, check in checks.items():
        for c in (check, check.get("sampled")):
            if c and c.get("win_rate_vs_base") is not None:
                log.info(
                    "PARM at %s, %s: beats the base on %s in %.0f%% of non-tied held-out comparisons; "
                    "judge score %.3f -> %.3f",
                    pole,
                    c["decoding"],
                    pole,
                    100 * c["win_rate_vs_base"],
                    c["judge_score_base"],
                    c["judge_score_expert"],
                )
    return art.path


def artifact_name(algo: str, pole: str) -> str:
    """Where a pole's adapter lives: `arms/<pole>` for GenARM's reward models, `experts/<pole>` otherwise."""
    return f"arms/{pole}" if algo == "arm" else f"experts/{pole}"


# ----- the command -----
def train_expert(cfg) -> list[Path]:
    """Train the experts of `expert.pole` (a pole, a list, or all) with `expert.algo`; complete ones are skipped."""
    algo = cfg.expert.algo
    if algo not in ALGOS:
        raise UserError(f"unknown expert.algo {algo!r}; valid: {', '.join(ALGOS)}")
    if algo == PARM:  # one model for every pole: expert.pole does not apply
        return [train_parm_artifact(cfg)]
    poles = resolve_poles(cfg, cfg.expert.pole)
    run = RunDir(cfg.run_dir)
    todo = []
    for pole in poles:
        art = run.artifact(artifact_name(algo, pole))
        if art.reuse(expert_made_from(cfg, pole), "train-expert", cfg.force):
            check_adapter_base(cfg, art, "expert")
            log.info(
                "%s already complete (%s); skipping",
                art.path.relative_to(run.root),
                art.manifest().get("algo"),
            )
        else:
            todo.append(pole)
    if todo and launcher.should_prepare():
        _prepare(cfg, todo)
        if launcher.relaunch(cfg, TARGET):
            return [run.artifact(artifact_name(algo, p)).path for p in poles]
    for pole in todo:
        train_one_expert(cfg, pole)
    return [run.artifact(artifact_name(algo, p)).path for p in poles]


def reward_kind(cfg) -> str:
    kind = cfg.expert.reward
    if kind == "auto":
        return "reward_model" if cfg.expert.algo == "ppo" else "judge"
    if kind not in ("judge", "reward_model"):
        raise UserError(f"unknown expert.reward {kind!r}; valid: auto, judge, reward_model")
    return kind


def _prepare(cfg, poles: list[str]) -> None:
    """Check inputs and make shared data (pairs, reward models) before any training process starts."""
    base_model_path(cfg)
    check_lora_targets(cfg, ("expert",))
    run = RunDir(cfg.run_dir)
    if cfg.expert.algo == "ppo":
        launcher.refuse_sharded_parameters(cfg, "PPO")
    if cfg.expert.algo in ("dpo", "arm"):
        for pole in poles:
            pole_pairs(cfg, pole)
    elif reward_kind(cfg) == "reward_model":
        for pole in poles:
            rm = run.artifact(f"rm/{pole}")
            if rm.is_complete():
                check_adapter_base(cfg, rm, "reward model")
            else:
                log.info(
                    "expert %s: %s needs the pole's reward model; training it first", pole, cfg.expert.algo
                )
        missing = [p for p in poles if not run.artifact(f"rm/{p}").is_complete()]
        if missing:
            from omegaconf import OmegaConf

            train_rm(
                OmegaConf.merge(cfg, {"rm": {"pole": ",".join(missing)}, "launcher": {"num_processes": 1}})
            )
    else:
        get_reward(cfg, "judge")
    for pole in poles:  # last: a bad input above leaves nothing behind
        _check_partial(cfg, run.artifact(artifact_name(cfg.expert.algo, pole)), cfg.expert.algo)


def train_one_expert(cfg, pole: str) -> Path:

    algo = cfg.expert.algo
    art = RunDir(cfg.run_dir).artifact(artifact_name(algo, pole))
    _check_partial(cfg, art, algo)
    made = expert_made_from(cfg, pole)
    work = art.start(made)
    checkpoints = work / "checkpoints"
    train = {"dpo": _train_dpo, "grpo": _train_grpo, "ppo": _train_ppo, "arm": arm.train_arm}[algo]
    stats = train(cfg, pole, work, checkpoints)
    launcher.wait_for_everyone()
    if not launcher.is_main_process():
        return art.path
    check = (arm.guided_check if algo == "arm" else own_pole_check)(cfg, pole, work)
    shutil.rmtree(checkpoints, ignore_errors=True)
    for stray in (*_STRAY_FILES, "partial.json"):
        (work / stray).unlink(missing_ok=True)
    art.commit(
        "arm" if algo == "arm" else "expert",
        to_dict(cfg),
        pole=pole,
        algo=algo,
        base=base_fingerprint(cfg),
        lora_target_modules=adapted_modules(work),
        metrics={
            **stats,
            **check,
        },  # training figures, then the own-pole check (greedy; sampled under "sampled")
        made_from=made,
    )
    what = "ARM" if algo == "arm" else "expert"
    log.info("%s %s (%s) -> %s", what, pole, algo, art.path)
    for c in (check, check.get("sampled")):
        if c and c.get("win_rate_vs_base") is not None:
            log.info(
                "%s %s, %s: beats the base on %s in %.0f%% of non-tied held-out comparisons; judge score %.3f -> %.3f",
                what,
                pole,
                c["decoding"],
                pole,
                100 * c["win_rate_vs_base"],
                c["judge_score_base"],
                c["judge_score_expert"],
            )
    return art.path


def _train_dpo(cfg, pole: str, work: Path, checkpoints: Path) -> dict:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    ec = cfg.expert
    base = base_model_path(cfg)
    tokenizer = load_tokenizer(base, cfg.model.trust_remote_code)
    template = cfg.model.prompt_template
    rows = [
        {
            "prompt": format_prompt(template, r["user_input"], tokenizer),
            "chosen": r["completion_a"],
            "rejected": r["completion_b"],
        }
        for r in pole_pairs(cfg, pole)
    ]
    args = DPOConfig(
        **common_args(cfg, checkpoints, f"expert-{pole}-dpo"),
        beta=ec.dpo.beta,
        loss_type=[ec.dpo.loss_type, "sft"] if ec.dpo.sft_weight > 0 else [ec.dpo.loss_type],
        loss_weights=[1.0, ec.dpo.sft_weight] if ec.dpo.sft_weight > 0 else None,
        max_length=ec.max_length,
    )
    log.info("expert %s: DPO on %d pairs", pole, len(rows))
    trainer = DPOTrainer(
        model=base,  # a path: TRL makes the reference by disabling the adapter
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(cfg.expert, cfg=cfg),
    )
    return fit(trainer, checkpoints, work, pole)


def _train_grpo(cfg, pole: str, work: Path, checkpoints: Path) -> dict:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    ec = cfg.expert
    g = ec.grpo
    per_step = setting(cfg, "batch_size") * ec.gradient_accumulation_steps
    if g.num_generations < 2 or per_step % g.num_generations:
        raise UserError(
            f"the GRPO batch size x gradient_accumulation_steps ({per_step}) must be a multiple of "
            f"expert.grpo.num_generations ({g.num_generations}, at least 2)"
        )
    base = base_model_path(cfg)
    tokenizer = load_tokenizer(base, cfg.model.trust_remote_code)
    kind = reward_kind(cfg)
    reward = get_reward(cfg, kind)

    def pole_reward(prompts, completions, raw_prompt, **_):
        return reward.score(pole, list(raw_prompt), [c.strip() for c in completions])

    pole_reward.__name__ = f"{pole}_{kind}"
    prompts = get_benchmark(cfg.benchmark).train_prompts()
    rows = [
        {"prompt": format_prompt(cfg.model.prompt_template, p.text, tokenizer), "raw_prompt": p.text}
        for p in prompts
    ]
    args = GRPOConfig(
        **common_args(cfg, checkpoints, f"expert-{pole}-grpo"),
        num_generations=g.num_generations,
        max_completion_length=ec.max_new_tokens,
        temperature=ec.temperature,
        beta=g.beta,
        loss_type=g.loss_type,
    )
    log.info("expert %s: GRPO with the %s reward on %d prompts", pole, kind, len(rows))
    trainer = GRPOTrainer(
        model=base,
        reward_funcs=pole_reward,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(cfg.expert, cfg=cfg),
    )
    return fit(trainer, checkpoints, work, pole)


def _train_ppo(cfg, pole: str, work: Path, checkpoints: Path) -> dict:

    return train_ppo(cfg, pole, work, checkpoints, reward_kind(cfg))


# ----- the own-pole check -----
def own_pole_check(cfg, pole: str, adapter_dir: Path) -> dict:
    """Judge the saved expert against the base on its own pole, on the benchmark's held-out prompts.

    Two decodings, both of the expert and of the base: greedy (each model's most likely response, one per
    prompt: what the expert has learned to prefer) and pure sampling at the evaluation temperature
    (`generate.temperature`; `expert.eval_samples` responses per prompt, the same random stream for both models, so identical
    outputs tie). The greedy figures are the headline; the sampled ones are under `sampled`. Loading the
    adapter here also proves the saved folder loads. Empty when the benchmark has no programmatic judge.
    """
    import torch
    from peft import PeftModel

    bench = get_benchmark(cfg.benchmark)
    if not hasattr(bench, "compare"):
        return {}
    n = cfg.expert.eval_samples
    temperature = cfg.generate.temperature  # sampled at the evaluation's temperature
    base = base_model_path(cfg)
    device = resolve_device(cfg.device)
    tokenizer = load_tokenizer(base, cfg.model.trust_remote_code)
    model = load_causal_lm(base, cfg.model, device).eval()
    prompts = bench.eval_prompts()
    formatted = [format_prompt(cfg.model.prompt_template, p.text, tokenizer) for p in prompts]

    def decode(m) -> tuple[list, list]:
        common = dict(max_new_tokens=cfg.expert.max_new_tokens, seed=cfg.seed + 1)
        greedy = sample_responses(m, tokenizer, formatted, n=1, temperature=0.0, **common)
        sampled = (
            sample_responses(m, tokenizer, formatted, n=n, temperature=temperature, **common) if n > 0 else []
        )
        return greedy, sampled

    base_greedy, base_sampled = decode(model)
    with explain_load_failure(f"the adapter in {adapter_dir}", base):
        expert = PeftModel.from_pretrained(model, str(adapter_dir)).eval()
    expert_greedy, expert_sampled = decode(expert)
    del expert, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    out = {"decoding": "greedy", **judge_against_base(bench, pole, prompts, expert_greedy, base_greedy)}
    if n > 0:
        sampled = judge_against_base(bench, pole, prompts, expert_sampled, base_sampled)
        out["sampled"] = {"decoding": f"temperature {temperature:g}", "samples_per_prompt": n, **sampled}
    return out
