#!/usr/bin/env python
"""`make gpu-check`: the real-scale claims measured on one CUDA device, bf16, in one short run (8 minutes).

No network: every model is random-initialised from a config (speed needs no trained weights), the tokenizer
is built locally from the synthetic benchmark's vocabulary (padded with filler words to a LLaMA-sized
vocabulary). Sections, each in its own process (clean peak memory, one CUDA context, killed at its timeout),
in this order:

  decode     K=6 experts at ~1.2B (LLaMA-shaped) and ~134M, batch 8 and 32: the base alone, the experts
             stacked (AdapterExperts over LoRA adapters), the naive loop (SeparateExperts over K merged
             copies, one cache each), soups (the K experts merged into one model). Greedy tokens of the
             stacked and naive paths are compared (in float32, where merged and unmerged weights round
             alike) for every size and batch before any time is taken or printed: exit 1 on a mismatch.
             Then the PCM's overhead: a ~140M PCM (conf/pcm/base160m.yaml) weighting three ~1.2B experts,
             per token, against the uniform mixture of the same experts.
  run        a run directory of such models for the sections below: a ~1.2B base, six random LoRA experts
             (r=16 on q,v, the expert defaults), a random ~140M PCM.
  serve      `rlphf serve` over that run: 32 concurrent requests, 4 for each of the 8 combinations, per
             method (pcm, uniform, soups batched as LoRA rows, soups merged per combination): req/s, p50/p95.
  dpo, ppo, train-pcm
             one training step each at ~1.2B with the project's code paths: TRL's DPOTrainer as
             `rlphf train-expert algo=dpo` configures it (LoRA), the project's PPO step (training/ppo.py),
             and one `rlphf train-pcm` step (sample every preference's responses from the PCM mixture of the
             1.2B experts, score, REBEL update of the PCM): seconds per step and peak memory.

Writes a JSON and a markdown file (tables, device name, the three targets with met / not met). A section
over its timeout is killed and what it had written is kept; sections that would start past the global
budget are skipped and named.

    make gpu-check                                          # = python scripts/gpu_check.py
    python scripts/gpu_check.py --device cuda:1 --json out.json --markdown out.md
    python scripts/gpu_check.py --device cpu --tiny         # the smoke run: every section, tiny sizes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
SECTIONS = ("decode", "run", "serve", "dpo", "ppo", "train-pcm")  # run in this order: the targets first
# seconds per section on a GPU; the global budget cuts the later ones short when earlier ones ran long
TIMEOUTS = {"decode": 180, "run": 60, "serve": 120, "dpo": 90, "ppo": 90, "train-pcm": 90}
MIN_START_S = 20  # a section is not started with less than this left of the budget
EXIT_MISMATCH = 1  # stacked and naive greedy tokens differ
EXIT_NO_CUDA = 2
EXIT_INCOMPLETE = 3  # a section failed, ran past its timeout or was skipped (the report names it)
K = 6
BATCHES = (8, 32)
COMBINATION = ("P1A", "P2A", "P3A")  # the PCM weights one expert per dimension, as it serves a preference
TARGETS = {
    "stacked": "stacked K=6 within 1.3x of the base per token at batch 8 on ~1B",
    "pcm": "the PCM adds at most 15% per token over the uniform mixture",
    "serve": "pcm serving (32 concurrent, 8 preferences) at least the throughput of soups merged per combination",
}
# A random model's logits (std about 0.9 over 32000 tokens) leave the top two a few hundredths apart often
# enough that float32 rounding between two correct paths could flip a greedy pick in a thousand tokens; a
# 10x sharper LM head makes a mismatch mean a bug, not a tie (speed does not depend on the scale)
LOGIT_SCALE = 10.0
LLAMA_VOCAB = (
    29900  # the tokenizer's size with filler words (the tokenizers WordLevel trainer keeps <= 30000)
)


# ----------------------------------------------------------------------------------------------- shared
def sizes(tiny: bool) -> dict:
    """Decoding sizes (bench_decode.MODELS keys), the large one last: it stands for ~1B in the targets."""
    return {"small": "tiny", "large": "tiny"} if tiny else {"small": "100m", "large": "1b"}


def run_overrides(args, run_dir: Path) -> list[str]:
    """The config of the run directory's models (`rlphf` key=value words), the same for every section."""
    if args.tiny:
        model = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=2"]
        model += ["model.num_attention_heads=4", "model.max_position_embeddings=256", "pcm=tiny"]
    else:  # the 1b decoding shape, tied embeddings (build_tiny_model), bf16 weights
        model = ["model.hidden_size=2048", "model.intermediate_size=5632", "model.num_hidden_layers=22"]
        model += ["model.num_attention_heads=32", "model.max_position_embeddings=2048", "pcm=base160m"]
        # experts and training as P-Soups at real scale (the synthetic recipe's are for its tiny model):
        # LoRA r=16 alpha=32 dropout 0.05 on peft's default modules (LLaMA: q, v), batch 16, 128 new tokens
        model += ["expert.lora_target_modules=null", "expert.lora_dropout=0.05", "expert.max_length=512"]
        model += ["expert.max_new_tokens=128", "expert.dpo.batch_size=16", "expert.ppo.batch_size=16"]
    return [f"run_dir={run_dir}", f"device={args.device}", f"model.dtype={args.dtype}", *model]


def now(device) -> float:
    """A time stamp after the device's queued work is done (CUDA kernels run asynchronously)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device) -> float:
    """CUDA: the peak allocated since the last reset; CPU: the process's peak resident size."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def allocated_mb(device) -> float:
    import torch

    return torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from bench_decode import cpu_name

    return cpu_name()


def save(out: Path, record: dict) -> None:
    """Write a section's figures so far (atomically): a section killed at its timeout keeps them."""
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(out)


def median(xs: list[float]) -> float:
    import statistics

    return statistics.median(xs)


def left_s(args) -> float:
    return args.deadline - time.time()


# ----------------------------------------------------------------------------------------------- decode
def section_decode(args, device, dtype, out: Path) -> int:
    import torch
    from bench_decode import Built, prompts_for, stacked_and_naive, time_path, token_mismatch

    torch.backends.cuda.matmul.allow_tf32 = False  # the token check compares float32 paths exactly
    torch.backends.cudnn.allow_tf32 = False
    timing = SimpleNamespace(prompt_len=32, new_tokens=4 if args.tiny else 32, repeats=1 if args.tiny else 2)
    check_tokens = 4 if args.tiny else 16
    rec = {"device_name": device_name(device), "dtype": str(dtype).removeprefix("torch."), "K": K}
    rec["logit_scale"] = LOGIT_SCALE
    rec |= {"timing": vars(timing), "check_tokens": check_tokens, "decode": [], "pcm": [], "skipped": []}
    built = {}
    # 1. every size and batch: stacked and naive pick the same greedy tokens (float32), before any timing
    for role, name in sizes(args.tiny).items():
        if name in {b.name for b in built.values()}:
            built[role] = next(b for b in built.values() if b.name == name)
            continue
        t0 = time.perf_counter()
        built[role] = Built(name, device, torch.float32, logit_scale=LOGIT_SCALE)
        rec.setdefault("build_s", {})[name] = time.perf_counter() - t0
        for batch in BATCHES:
            got = stacked_and_naive(built[role], K, batch, timing.prompt_len, check_tokens, device)
            failure = token_mismatch(built[role], K, batch, got)
            if failure:
                print(failure, flush=True)
                rec["mismatch"] = failure
                save(out, rec)
                return EXIT_MISMATCH
    rec["tokens_identical_float32"] = True
    for b in {id(b): b for b in built.values()}.values():
        b.cast(dtype)
    # in bf16 a merged expert rounds differently from its unmerged update: how often the picks still agree
    agree = []
    for b in {id(b): b for b in built.values()}.values():
        got = stacked_and_naive(b, K, BATCHES[0], timing.prompt_len, check_tokens, device)
        pairs = [
            (x, y)
            for r1, r2 in zip(got["stacked"], got["naive"], strict=True)
            for x, y in zip(r1, r2, strict=True)
        ]
        agree.append({"model": b.name, "share_identical": sum(x == y for x, y in pairs) / len(pairs)})
    rec["tokens_agree_in_dtype"] = agree
    save(out, rec)

    # 2. timing, the large size first (the target), then the PCM, then the small size
    def time_size(b) -> None:
        for batch in BATCHES:
            if left_s(args) < 15:
                rec["skipped"].append(f"decode {b.name} B={batch}: section time left")
                continue
            prompts = prompts_for(batch, timing.prompt_len, b.vocab)
            ms, mem, weights, peak = {}, {}, {}, {}
            for path in ("base", "stacked", "naive", "soups"):
                experts, active = b.path(path, K)
                weights[path] = weights_mb(experts)
                reset_peak(device)
                before = allocated_mb(device)
                ms[path] = time_path(experts, active, prompts, timing, device) * 1000
                # the path's own memory: its weights plus what decoding allocated above the resident models
                peak[path] = peak_mb(device) if device.type == "cuda" else None
                mem[path] = weights[path] + max(0.0, peak[path] - before) if peak[path] is not None else None
                del experts
            rec["decode"].append(
                {
                    "model": b.name,
                    "params": b.params,
                    "B": batch,
                    "ms_per_step": ms,
                    "tokens_per_s": {p: batch / (v / 1000) for p, v in ms.items()},
                    "weights_mb": weights,
                    "memory_mb": mem,
                    "peak_allocated_mb": peak,  # every model resident in the process included
                    "ratios": {
                        "stacked/base": ms["stacked"] / ms["base"],
                        "naive/base": ms["naive"] / ms["base"],
                        "soups/base": ms["soups"] / ms["base"],
                        "stacked/naive": ms["stacked"] / ms["naive"],
                    },
                }
            )
            save(out, rec)

    time_size(built["large"])
    if left_s(args) > 20:
        pcm_overhead(args, built["large"], device, dtype, timing, rec, out)
    else:
        rec["skipped"].append("pcm overhead: section time left")
    if built["small"] is not built["large"]:
        time_size(built["small"])
    save(out, rec)
    return 0


def weights_mb(experts) -> float:
    """The parameters a path holds: its one model, or its separate models (the engine's attributes)."""
    models = [f.model for f in experts.fwds.values()] if hasattr(experts, "fwds") else [experts.model]
    return sum(p.numel() * p.element_size() for m in models for p in m.parameters()) / 2**20


def pcm_overhead(args, b, device, dtype, timing, rec, out) -> None:
    """Per-token time of the PCM-weighted mixture of a combination's experts against the uniform mixture."""
    import copy

    import torch
    from bench_decode import POLES, prompts_for, time_path

    from rlphf_cli.config import compose
    from rlphf_cli.decoding.engine import AdapterExperts
    from rlphf_cli.pcm.model import build_pcm
    from rlphf_cli.pcm.provider import PCMWeights

    b.merged.clear()  # the naive path's copies are not needed any more
    pcm_cfg = compose(["pcm=tiny" if args.tiny else "pcm=base160m"]).pcm
    with torch.device(device):
        pcm = build_pcm(pcm_cfg, b.vocab, 0, list(POLES), list(POLES), seed=0).eval()
    # train-pcm trains and saves the PCM in float32 and `rlphf serve` loads it so: that is the shipped path;
    # the whole PCM in the experts' dtype (its preference vector too) is the cheaper variant
    variants = {"pcm": (pcm, torch.float32)}
    if dtype != torch.float32:
        variants[f"pcm_{str(dtype).removeprefix('torch.')}"] = (copy.deepcopy(pcm).to(dtype), dtype)
    rec["pcm_params"] = sum(p.numel() for p in pcm.parameters())
    rec["pcm_experts"] = list(COMBINATION)
    experts = AdapterExperts(b.model)
    active = list(COMBINATION)
    for batch in BATCHES:
        if left_s(args) < 15:
            rec["skipped"].append(f"pcm overhead B={batch}: section time left")
            continue
        prompts = prompts_for(batch, timing.prompt_len, b.vocab)
        ms = {"uniform": time_path(experts, active, prompts, timing, device) * 1000}
        for name, (model, pdtype) in variants.items():
            vec = model.preference_vector(COMBINATION, [1 / 3] * 3).to(device=device, dtype=pdtype)

            def provider(model=model, vec=vec, batch=batch):
                return PCMWeights(model, vec.expand(batch, -1), active)

            ms[name] = time_path(experts, active, prompts, timing, device, provider) * 1000
        rec["pcm"].append(
            {
                "model": b.name,
                "B": batch,
                "ms_per_step": ms,
                "overhead": {n: ms[n] / ms["uniform"] - 1 for n in variants},
            }
        )
        save(out, rec)


# ----------------------------------------------------------------------------------------------- run
def section_run(args, device, dtype, out: Path) -> int:
    import torch
    from peft import get_peft_model

    from rlphf_cli.adapters import lora_config
    from rlphf_cli.benchmarks import get_benchmark
    from rlphf_cli.config import compose
    from rlphf_cli.modeling import build_tiny_model, build_tokenizer
    from rlphf_cli.pcm.model import build_pcm
    from rlphf_cli.runs import RunDir

    run_dir = args.work / "run"
    cfg = compose(run_overrides(args, run_dir))
    bench = get_benchmark(cfg.benchmark)
    texts = bench.vocabulary_text()
    tokenizer = build_tokenizer(texts)
    if not args.tiny:  # filler words: a LLaMA-sized vocabulary, so that the LM head costs what it would
        tokenizer = build_tokenizer(texts + [" ".join(f"w{i}" for i in range(LLAMA_VOCAB - len(tokenizer)))])
    run = RunDir(run_dir)
    t0 = time.perf_counter()
    with torch.device(device):
        base = build_tiny_model(cfg.model, tokenizer, seed=0)
    base.to(dtype=dtype)
    params = sum(p.numel() for p in base.parameters())
    art = run.artifact("base")
    base.save_pretrained(art.start())
    tokenizer.save_pretrained(art.work)
    art.commit("base", None, source=None)
    model = get_peft_model(base, lora_config(cfg.expert))
    gen = torch.Generator().manual_seed(0)
    poles = list(bench.poles)
    for pole in poles:  # one adapter, re-drawn and saved once per pole: six different experts
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.data.copy_((torch.randn(p.shape, generator=gen) * 0.02).to(p))
        exp = run.artifact(f"experts/{pole}")
        model.save_pretrained(exp.start())
        exp.commit("expert", None, pole=pole, algo="random (gpu_check)")
    pcm = build_pcm(cfg.pcm, len(tokenizer), tokenizer.pad_token_id, poles, poles, seed=0)
    pcm_art = run.artifact("pcm")
    pcm.save(pcm_art.start())
    pcm_art.commit("pcm", None, experts=poles, poles=poles)
    save(
        out,
        {
            "run_dir": str(run_dir),
            "overrides": run_overrides(args, run_dir),
            "vocab": len(tokenizer),
            "base_params": params,
            "pcm_params": sum(p.numel() for p in pcm.parameters()),
            "build_s": time.perf_counter() - t0,
        },
    )
    return 0


def run_config(args):
    from rlphf_cli.config import compose

    info = json.loads((args.work / "run.json").read_text())
    return info, compose(info["overrides"])


# ----------------------------------------------------------------------------------------------- serve
def section_serve(args, device, dtype, out: Path) -> int:
    import openai
    from bench_serve import free_port, run_jobs, start_server, stop_server, wait_ready, warm_up

    from rlphf_cli.benchmarks import get_benchmark
    from rlphf_cli.preferences import all_combinations, combination_name

    info, cfg = run_config(args)
    bench = get_benchmark(cfg.benchmark)
    prompts = [p.text for p in bench.eval_prompts()]
    combos = [combination_name(c) for c in all_combinations(bench.poles)]
    concurrency, max_tokens = 32, 4 if args.tiny else 64
    jobs = [(prompts[i % len(prompts)], combos[i % len(combos)]) for i in range(concurrency)]
    port = free_port()
    log_path = args.work / "serve_server.log"
    settings = SimpleNamespace(max_batch=concurrency, max_tokens=max_tokens, device=args.device)
    rec = {
        "concurrency": concurrency,
        "preferences": len(set(combos)),
        "max_tokens": max_tokens,
        "results": [],
    }
    rec["skipped"] = []
    with open(log_path, "w") as log:
        overrides = [o for o in info["overrides"] if not o.startswith(("run_dir=", "device="))]
        proc = start_server(info["run_dir"], port, settings, overrides, log)
        try:
            client = openai.OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600
            )
            t0 = time.perf_counter()
            served = wait_ready(client, proc, str(log_path), timeout=max(left_s(args) - 10, 10))
            rec["server_start_s"] = time.perf_counter() - t0
            for method in ("pcm", "uniform", "soups", "soups-merged"):
                if method not in served:
                    rec["skipped"].append(f"{method}: not served by the run")
                    continue
                if left_s(args) < 10:
                    rec["skipped"].append(f"{method}: section time left")
                    continue
                warm_up(client, method, prompts[0], combos)
                rec["results"].append(run_jobs(client, method, jobs, concurrency, max_tokens))
                save(out, rec)
        finally:
            stop_server(proc)
    save(out, rec)
    return 0


# ----------------------------------------------------------------------------------------------- training
def section_dpo(args, device, dtype, out: Path) -> int:
    import random

    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from rlphf_cli.adapters import base_model_path, lora_config
    from rlphf_cli.benchmarks import get_benchmark
    from rlphf_cli.config import compose
    from rlphf_cli.modeling import format_prompt, load_tokenizer
    from rlphf_cli.training.common import common_args
    from rlphf_cli.training.expert_config import setting

    info, _ = run_config(args)
    steps = 3
    extra = ["expert.dpo.batch_size=2"] if args.tiny else []
    cfg = compose(
        info["overrides"]
        + extra
        + ["expert.algo=dpo", f"expert.max_steps={steps}", "expert.dpo.max_steps=null"]
        + ["expert.logging_steps=1", "expert.save_steps=100000"]
    )
    batch = setting(cfg, "batch_size")
    base = base_model_path(cfg)
    tokenizer = load_tokenizer(base)
    bench = get_benchmark(cfg.benchmark)
    words = sorted({w for t in bench.vocabulary_text() for w in t.lower().split()})
    rng = random.Random(0)
    length = 8 if args.tiny else 96  # words per response, about as many tokens

    def response() -> str:
        return " ".join(rng.choice(words) for _ in range(length))

    prompts = bench.train_prompts()
    rows = [
        {
            "prompt": format_prompt(cfg.model.prompt_template, prompts[i % len(prompts)].text, tokenizer),
            "chosen": response(),
            "rejected": response(),
        }
        for i in range(batch * steps)
    ]
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t0 = now(device)

        def on_step_end(self, a, state, control, **kw):
            times.append(now(device) - self.t0)

    reset_peak(device)
    trainer = DPOTrainer(
        model=base,
        args=DPOConfig(
            **common_args(cfg, args.work / "dpo_checkpoints", "gpu-check-dpo"),
            beta=cfg.expert.dpo.beta,
            loss_type=[cfg.expert.dpo.loss_type],
            max_length=cfg.expert.max_length,
        ),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(cfg.expert),
        callbacks=[StepTimer()],
    )
    trainer.train()
    save(
        out,
        {
            "what": f"one DPO optimizer step (TRL DPOTrainer, LoRA r={cfg.expert.lora_r}, the reference "
            f"by disabling the adapter), {batch} pairs of ~{length}-word responses",
            "step_s": times,
            "s_per_step": median(times[1:] or times),
            "peak_mb": peak_mb(device),
        },
    )
    return 0


def section_ppo(args, device, dtype, out: Path) -> int:
    import torch
    from accelerate import Accelerator
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from rlphf_cli.adapters import base_model_path, lora_config
    from rlphf_cli.benchmarks import get_benchmark
    from rlphf_cli.config import compose
    from rlphf_cli.modeling import load_tokenizer, torch_dtype
    from rlphf_cli.rewards import get_reward
    from rlphf_cli.training.common import trainer_kwargs
    from rlphf_cli.training.expert_config import setting
    from rlphf_cli.training.ppo import AdaptiveKLController, PolicyWithValueHead, RunningMoments, _ppo_step

    info, _ = run_config(args)
    extra = ["expert.algo=ppo"]
    if args.tiny:
        extra += ["expert.ppo.batch_size=2", "expert.max_new_tokens=4", "expert.ppo.mini_batch_size=1"]
        extra += ["expert.ppo.epochs=2"]
    cfg = compose(info["overrides"] + extra)
    ec, pc = cfg.expert, cfg.expert.ppo
    batch_size = setting(cfg, "batch_size")
    reset_peak(device)
    # as train_ppo sets it up (training/ppo.py), without its checkpoints and trackers
    tk = trainer_kwargs(cfg, args.work / "ppo_checkpoints", "gpu-check-ppo")
    accelerator = Accelerator(cpu=tk["use_cpu"], mixed_precision="bf16" if tk["bf16"] else "no")
    base = base_model_path(cfg)
    tokenizer = load_tokenizer(base)
    lm = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype(cfg.model.dtype))
    lm.config.use_cache = True
    policy = get_peft_model(lm, lora_config(cfg.expert))
    model = PolicyWithValueHead(policy, lm.config.hidden_size)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=setting(cfg, "learning_rate"), weight_decay=0.0)
    kl_ctl = AdaptiveKLController(pc.kl_coef, pc.kl_target if pc.adaptive_kl else None, pc.kl_horizon)
    moments = RunningMoments()
    torch.manual_seed(cfg.seed)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    run_device = accelerator.device
    prompts = get_benchmark(cfg.benchmark).train_prompts()
    reward = get_reward(cfg, "judge")
    times, stats = [], []
    for step in range(2):
        batch = [prompts[(step * batch_size + i) % len(prompts)].text for i in range(batch_size)]
        t0 = now(run_device)
        stats.append(
            _ppo_step(
                cfg,
                model,
                unwrapped,
                optimizer,
                accelerator,
                tokenizer,
                reward,
                "P1A",
                batch,
                cfg.model.prompt_template,
                kl_ctl,
                moments,
                run_device,
            )
        )
        times.append(now(run_device) - t0)
    save(
        out,
        {
            "what": f"one PPO step of training/ppo.py: {batch_size} prompts, sampled responses of up to "
            f"{ec.max_new_tokens} tokens, reference and value passes, {pc.epochs} PPO epochs of minibatches "
            f"of {pc.mini_batch_size} (early stop at the target KL), LoRA r={ec.lora_r}, the synthetic judge "
            "as reward",
            "step_s": times,
            "s_per_step": times[-1],
            "updates_per_step": [s["updates"] for s in stats],
            "response_tokens": [s["response_tokens"] for s in stats],
            "peak_mb": peak_mb(run_device),
        },
    )
    return 0


def section_train_pcm(args, device, dtype, out: Path) -> int:
    import random

    import torch

    from rlphf_cli.config import compose
    from rlphf_cli.pcm.model import build_pcm
    from rlphf_cli.training.pcm import PCMTrainer, update

    info, _ = run_config(args)
    extra = ["pcm.prompts_per_step=1", "pcm.max_new_tokens=4", "pcm.weighted_per_step=1"] if args.tiny else []
    cfg = compose(info["overrides"] + extra)
    reset_peak(device)
    trainer = PCMTrainer(cfg)  # the run's base and six experts (bf16), the synthetic judge as reward
    p = trainer.p
    pcm = build_pcm(
        p, len(trainer.tokenizer), trainer.tokenizer.pad_token_id, trainer.poles, trainer.poles, 0
    )
    optimizer = torch.optim.AdamW(pcm.parameters(), lr=p.learning_rate)
    pcm, optimizer = trainer.accelerator.prepare(pcm.to(trainer.device), optimizer)
    plain = trainer.accelerator.unwrap_model(pcm)
    train_prompts = trainer.bench.train_prompts()
    times, rows = [], 0
    for step in range(2):
        # the same prompts both steps: the references (the base's greedy answers) are made in the first only
        rng = random.Random(cfg.seed)
        generator = torch.Generator(trainer.device).manual_seed(step)
        t0 = now(trainer.device)
        plain.eval()  # as PCMTrainer.train's loop body
        chosen = [(pref, rng.sample(train_prompts, p.prompts_per_step)) for pref in trainer.preferences(rng)]
        sampled = trainer.sample(plain, chosen, generator)
        batches = sampled.split(p.prompts_per_step * p.samples_per_prompt)
        update(
            pcm,
            optimizer,
            batches,
            p.algo,
            p.update_epochs,
            p.samples_per_prompt,
            p.rebel_eta,
            trainer.accelerator.backward,
            p.max_grad_norm,
        )
        times.append(now(trainer.device) - t0)
        rows = len(sampled.prompt_ids)
    save(
        out,
        {
            "what": f"one train-pcm step: {rows} responses of up to {p.max_new_tokens} tokens sampled from the "
            f"PCM mixture of each preference's 3 experts ({len(chosen)} preferences), scored, "
            f"{p.update_epochs} REBEL epochs over the PCM ({sum(x.numel() for x in plain.parameters()) / 1e6:.1f}M, "
            "float32 as train-pcm builds it); the second step (the first also decodes the references)",
            "step_s": times,
            "s_per_step": times[-1],
            "peak_mb": peak_mb(trainer.device),
        },
    )
    return 0


SECTION_FUNCS = {
    "decode": section_decode,
    "run": section_run,
    "serve": section_serve,
    "dpo": section_dpo,
    "ppo": section_ppo,
    "train-pcm": section_train_pcm,
}


def run_section(args) -> int:
    import warnings

    import torch

    warnings.filterwarnings("ignore", category=FutureWarning)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    return SECTION_FUNCS[args.section](args, device, dtype, args.work / f"{args.section}.json")


# ----------------------------------------------------------------------------------------------- orchestration
def child_env(device: str) -> tuple[dict, str]:
    """The environment of the sections: offline, and one GPU visible (a Trainer would take every visible
    GPU); the device name the sections then use."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "WANDB_MODE": "disabled",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(p for p in [str(HERE.parent), os.environ.get("PYTHONPATH", "")] if p),
    }
    if not device.startswith("cuda"):
        return env, device
    index = int(device.partition(":")[2] or 0)
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    env["CUDA_VISIBLE_DEVICES"] = visible[index] if index < len(visible) else str(index)
    return env, "cuda"


def run_child(args, name: str, timeout: float, env: dict, device: str) -> tuple[str, str]:
    """Run one section in its own process group (the server it starts dies with it); (status, detail)."""
    log = args.work / f"{name}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--section", name, "--work", str(args.work)]
    cmd += ["--device", device, "--dtype", args.dtype, "--deadline", str(time.time() + timeout)]
    cmd += ["--tiny"] if args.tiny else []
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return "timeout", f"killed after {timeout:.0f}s (its figures so far are kept)"
    if rc == 0:
        return "ok", ""
    lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    if rc == EXIT_MISMATCH and lines and lines[-1].startswith("FAILED"):
        return "mismatch", lines[-1]
    return "failed", f"exit {rc}: {lines[-1] if lines else '(no output)'} (log: {log})"


def orchestrate(args) -> int:
    start = time.time()
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(
                "gpu-check: no CUDA device (torch.cuda.is_available() is False); run it on a GPU machine, "
                "or `--device cpu --tiny` for the smoke run",
                file=sys.stderr,
            )
            return EXIT_NO_CUDA
        index = args.device.partition(":")[2]
        if not (index or "0").isdigit() or int(index or 0) >= torch.cuda.device_count():
            print(
                f"gpu-check: no device {args.device} ({torch.cuda.device_count()} visible)", file=sys.stderr
            )
            return EXIT_NO_CUDA
    elif args.device != "cpu":
        print(f"gpu-check: unknown device {args.device!r}; valid: cuda, cuda:N, cpu", file=sys.stderr)
        return EXIT_NO_CUDA
    args.work = Path(args.work or tempfile.mkdtemp(prefix="gpu_check_")).resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    env, device = child_env(args.device)
    status: dict[str, tuple[str, str]] = {}
    seconds: dict[str, float] = {}
    print(f"gpu-check: sections {', '.join(SECTIONS)}; budget {args.budget:.0f}s; work folder {args.work}")
    for name in SECTIONS:
        left = args.budget - (time.time() - start) - 5  # 5 s to write the results
        if name != "decode" and name != "run" and status.get("run", ("",))[0] != "ok":
            status[name] = ("skipped", "no run directory (the run section did not complete)")
        elif left < MIN_START_S:
            status[name] = ("skipped", f"over the global budget of {args.budget:.0f}s")
        else:
            t0 = time.time()
            status[name] = run_child(args, name, min(TIMEOUTS[name] * args.timeout_scale, left), env, device)
            seconds[name] = time.time() - t0
            print(f"  {name:9} {status[name][0]:8} {time.time() - t0:6.1f}s {status[name][1]}", flush=True)
        if status[name][0] == "mismatch":
            print(status[name][1])
            return EXIT_MISMATCH  # no time is printed for paths that decode differently
    results = {}
    for name in SECTIONS:
        path = args.work / f"{name}.json"
        if path.is_file():
            results[name] = json.loads(path.read_text())
    report = {
        "machine": {
            "device": args.device,
            "device_name": results.get("decode", {}).get("device_name") or _name(args.device),
            "dtype": args.dtype,
            "tiny": args.tiny,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "versions": _versions(),
            "wall_s": time.time() - start,
            "budget_s": args.budget,
        },
        "sections": {
            n: {"status": s, "detail": d, "seconds": seconds.get(n)} for n, (s, d) in status.items()
        },
        "results": results,
    }
    report["targets"] = targets(results, args.tiny)
    markdown = render(report)
    Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    Path(args.markdown).write_text(markdown)
    print(markdown)
    print(f"written to {args.json} and {args.markdown}")
    skipped = [n for n, (s, _) in status.items() if s == "skipped"]
    if skipped:
        print(f"skipped: {', '.join(f'{n} ({status[n][1]})' for n in skipped)}")
    return 0 if all(s == "ok" for s, _ in status.values()) else EXIT_INCOMPLETE


def _name(device: str) -> str:
    if device.startswith("cuda"):
        return device
    from bench_serve import _cpu_name  # bench_decode's twin, without torch's import time

    return _cpu_name()


def _versions() -> dict:
    from rlphf_cli.runs import package_versions

    return package_versions()


def targets(results: dict, tiny: bool) -> list[dict]:
    """The three targets: measured value, met / not met, or not measured (its section did not run)."""
    out = []
    large = sizes(tiny)["large"]
    row = next(
        (r for r in results.get("decode", {}).get("decode", []) if r["model"] == large and r["B"] == 8), None
    )
    value = row["ratios"]["stacked/base"] if row else None
    out.append(
        _target(TARGETS["stacked"], value, value is not None and value <= 1.3, f"{value:.2f}x" if row else "")
    )
    rows = results.get("decode", {}).get("pcm", [])
    worst = max((r["overhead"]["pcm"] for r in rows), default=None)
    shown = ", ".join(f"B={r['B']}: {r['overhead']['pcm']:+.0%}" for r in rows)
    out.append(_target(TARGETS["pcm"], worst, worst is not None and worst <= 0.15, shown))
    serve = {r["method"]: r for r in results.get("serve", {}).get("results", [])}
    if "pcm" in serve and "soups-merged" in serve:
        pcm, merged = serve["pcm"]["requests_per_s"], serve["soups-merged"]["requests_per_s"]
        out.append(_target(TARGETS["serve"], pcm / merged, pcm >= merged, f"{pcm:.2f} vs {merged:.2f} req/s"))
    else:
        out.append(_target(TARGETS["serve"], None, False, ""))
    return out


def _target(text: str, value, met: bool, shown: str) -> dict:
    return {
        "target": text,
        "value": value,
        "shown": shown,
        "status": "not measured" if value is None else ("met" if met else "not met"),
    }


def render(report: dict) -> str:
    m, res = report["machine"], report["results"]
    lines = [f"## gpu-check on {m['device_name']} ({m['device']}, {m['dtype']})", ""]
    if m["tiny"]:
        lines += ["Smoke run at tiny sizes: these figures test the script, they are no evidence.", ""]
    v = m["versions"]
    lines += [
        f"torch {v.get('torch')}, transformers {v.get('transformers')}, peft {v.get('peft')}, trl {v.get('trl')}; "
        f"{m['wall_s']:.0f}s of a {m['budget_s']:.0f}s budget.",
        "",
        "| target | measured | status |",
        "|---|---|---|",
    ]
    lines += [f"| {t['target']} | {t['shown'] or '-'} | {t['status']} |" for t in report["targets"]]
    dec = res.get("decode", {})
    if dec.get("decode"):
        agree = ", ".join(
            f"{a['model']} {a['share_identical']:.0%}" for a in dec.get("tokens_agree_in_dtype", [])
        )
        lines += [
            "",
            f"Decoding, K={dec['K']} experts, uniform weights, greedy; stacked and naive greedy tokens identical in "
            f"float32 at every size and batch ({dec['check_tokens']} tokens per row) before timing; in "
            f"{dec['dtype']} identical picks: {agree}. Random-initialised models, LM head scaled "
            f"{dec.get('logit_scale', 1):g}x (fewer near ties). ms: median time of one decoding step (one token for "
            f"each of the B rows); memory: the path's weights plus its decoding peak above the resident models.",
            "",
            "| model | params | B | base ms | stacked ms | naive ms | soups ms | stacked/base | naive/base "
            "| soups/base | stacked/naive | tokens/s (base/stacked/naive/soups) | memory MB (base/stacked/naive/soups) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in dec["decode"]:
            ms, t, ra, mem = r["ms_per_step"], r["tokens_per_s"], r["ratios"], r["memory_mb"]
            paths = ("base", "stacked", "naive", "soups")
            lines.append(
                f"| {r['model']} | {r['params'] / 1e6:.0f}M | {r['B']} | "
                + " | ".join(f"{ms[p]:.2f}" for p in paths)
                + " | "
                + " | ".join(f"{x:.2f}" for x in ra.values())
                + " | "
                + "/".join(f"{t[p]:.0f}" for p in paths)
                + " | "
                + "/".join("-" if mem[p] is None else f"{mem[p]:.0f}" for p in paths)
                + " |"
            )
    if dec.get("pcm"):
        names = [n for n in dec["pcm"][0]["ms_per_step"] if n != "uniform"]
        lines += [
            "",
            f"PCM overhead: a {dec['pcm_params'] / 1e6:.1f}M PCM weighting {', '.join(dec['pcm_experts'])} "
            "(stacked LoRA experts) against their uniform mixture; `pcm` runs in float32 as train-pcm saves it "
            "and `rlphf serve` loads it.",
            "",
            "| model | B | uniform ms | "
            + " | ".join(f"{n} ms" for n in names)
            + " | "
            + " | ".join(f"{n} overhead" for n in names)
            + " |",
            "|---|---|---|" + "---|" * (2 * len(names)),
        ]
        for r in dec["pcm"]:
            lines.append(
                f"| {r['model']} | {r['B']} | {r['ms_per_step']['uniform']:.2f} | "
                + " | ".join(f"{r['ms_per_step'][n]:.2f}" for n in names)
                + " | "
                + " | ".join(f"{r['overhead'][n]:+.0%}" for n in names)
                + " |"
            )
    train = [(n, res[n]) for n in ("dpo", "ppo", "train-pcm") if n in res]
    if train:
        run = res.get("run", {})
        lines += [
            "",
            f"Training steps on the run's base ({run.get('vocab', '?')}-token vocabulary); peak: the section's "
            "process (CUDA allocated, or CPU resident).",
            "",
            "| step | s/step | peak MB | what it measures |",
            "|---|---|---|---|",
        ]
        lines += [f"| {n} | {r['s_per_step']:.2f} | {r['peak_mb']:.0f} | {r['what']} |" for n, r in train]
    srv = res.get("serve", {})
    if srv.get("results"):
        lines += [
            "",
            f"Serving (`rlphf serve`, serve.max_batch={srv['concurrency']}): {srv['concurrency']} concurrent "
            f"requests, {srv['preferences']} preferences (4 requests each), greedy, max_tokens={srv['max_tokens']}.",
            "",
            "| method | requests | req/s | tokens/s | p50 latency (s) | p95 latency (s) |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['method']} | {r['requests']} | {r['requests_per_s']:.2f} | {r['tokens_per_s']:.1f} | "
            f"{r['latency_median_s']:.2f} | {r['latency_p95_s']:.2f} |"
            for r in srv["results"]
        ]
    skipped = [s for r in res.values() if isinstance(r, dict) for s in r.get("skipped", [])]
    lines += ["", "| section | status | seconds | detail |", "|---|---|---|---|"]
    for n, sec in report["sections"].items():
        took = "-" if sec["seconds"] is None else f"{sec['seconds']:.0f}"
        lines.append(f"| {n} | {sec['status']} | {took} | {sec['detail'] or '-'} |")
    if skipped:
        lines += ["", "Skipped within sections: " + "; ".join(skipped) + "."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (with --tiny: the smoke run)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--tiny", action="store_true", help="every section at tiny sizes, in seconds")
    ap.add_argument("--budget", type=float, default=480, help="global time budget in seconds (default 8 min)")
    ap.add_argument("--timeout-scale", type=float, default=1.0, help="multiplies every section's timeout")
    ap.add_argument("--json", default="gpu_check.json")
    ap.add_argument("--markdown", default="gpu_check.md")
    ap.add_argument(
        "--work", default=None, help="folder for the run directory and section logs (default: a temp dir)"
    )
    ap.add_argument("--section", choices=SECTIONS, help=argparse.SUPPRESS)  # internal: run one section
    ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.section:
        args.work = Path(args.work)
        args.deadline = args.deadline or time.time() + TIMEOUTS[args.section]
        return run_section(args)
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
