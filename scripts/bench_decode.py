#!/usr/bin/env python
"""Decoding throughput, measured side by side in one run, after checking that the mixed paths agree.

Paths, per model size, number of experts K and batch size B:
  base     the base model alone (one forward per step);
  stacked  K LoRA experts mixed on the batched adapter path: one forward per step over B x K rows, one KV
           cache, every LoRA update as one stacked matmul per layer (AdapterExperts, stacked=True);
  naive    the same mixture decoded the way MOD decodes: K merged copies of the model (each expert folded
           into its own weights), one forward and one KV cache per expert per step (SeparateExperts);
  soups    the K experts merged into one adapter (P-Soups's merge), folded into the weights: one model.

Before any time is printed, every (size, K, B) decodes its prompts greedily on the stacked and on the naive
path with the same uniform weights, and the script stops with exit code 1 unless both give the same tokens.
Models are random-initialised (speed needs no trained weights). Times are the median seconds per decoding
step (mix, pick, one expert step) for the whole batch; tokens/s = B / that time.

    python scripts/bench_decode.py                                  # the full table: tiny and ~100M, K 2,3,6, B 1,8,32
    python scripts/bench_decode.py --models tiny --ks 6 --batches 8 # a subset
    python scripts/bench_decode.py --json bench_decode.json         # also write every figure as JSON
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import platform
import resource
import statistics
import sys
import time
import warnings

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from rlphf_cli.decoding.engine import BASE, AdapterExperts, FixedWeights, Sampler, SeparateExperts, decode
from rlphf_cli.decoding.soups import add_soup

MODELS = {
    "tiny": dict(
        vocab_size=608, hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4
    ),
    "100m": dict(
        vocab_size=32000,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
    ),  # about 134M parameters (untied embeddings)
    # LLaMA-shaped, about 1.2B parameters (TinyLlama's widths and depth, full multi-head attention)
    "1b": dict(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
    ),
}
POLES = ["P1A", "P1B", "P2A", "P2B", "P3A", "P3B"]
PATHS = ("base", "stacked", "naive", "soups")


class Built:
    """One model size: the base, the base with six LoRA experts, and each expert merged into its own copy."""

    def __init__(self, name: str, device, dtype, merged: bool = True, logit_scale: float = 1.0):
        torch.manual_seed(0)
        spec = MODELS[name]
        config = LlamaConfig(
            **spec, num_key_value_heads=spec["num_attention_heads"], max_position_embeddings=1024
        )
        with torch.device(device):  # initialised where it runs: a 1B model's init on a CPU takes long
            base = LlamaForCausalLM(config).to(dtype=dtype).eval()
        if logit_scale != 1.0:  # sharper next-token distributions: fewer near ties for rounding to decide
            base.lm_head.weight.data.mul_(logit_scale)
        self.name, self.vocab = name, spec["vocab_size"]
        self.params = sum(p.numel() for p in base.parameters())
        self.plain = copy.deepcopy(base)
        lora = dict(
            r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], lora_dropout=0.0
        )
        model = get_peft_model(base, LoraConfig(**lora), adapter_name=POLES[0])
        for pole in POLES[1:]:
            model.add_adapter(pole, LoraConfig(**lora))
        gen = torch.Generator().manual_seed(1)
        for n, p in model.named_parameters():
            if "lora_B" in n:  # peft starts B at zero: an expert must differ from the base
                p.data.copy_((torch.randn(p.shape, generator=gen) * 0.02).to(p))
        self.model = model.eval()
        # what MOD holds: one full model per expert
        self.merged = {pole: self.fold(pole) for pole in POLES} if merged else {}

    def cast(self, dtype) -> None:
        """Every model held, in place, to `dtype` (gpu_check checks tokens in float32, then times bf16)."""
        for m in [self.plain, self.model, *self.merged.values()]:
            m.to(dtype=dtype)

    def fold(self, adapter: str):
        """A plain model with `adapter` merged into its weights."""
        copied = copy.deepcopy(self.model)
        copied.set_adapter(adapter)
        return copied.merge_and_unload().eval()

    def soup(self, k: int):
        """The first k experts merged as P-Soups does, folded into the weights of one plain model."""
        name = add_soup(self.model, POLES[:k], [1.0 / k] * k, "psoups")
        merged = self.fold(name)
        self.model.delete_adapter(name)
        return merged

    def path(self, path: str, k: int) -> tuple[object, list[str]]:
        """A path's experts and active names for a mixture of the first k experts."""
        active = POLES[:k]
        if path == "base":
            return AdapterExperts(self.plain), [BASE]
        if path == "stacked":
            return AdapterExperts(self.model, stacked=True), active
        if path == "naive":
            return SeparateExperts({p: self.merged[p] for p in active}), active
        return AdapterExperts(self.soup(k)), [BASE]


def prompts_for(batch: int, prompt_len: int, vocab: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(batch)
    return [torch.randint(5, vocab, (prompt_len,), generator=gen).tolist() for _ in range(batch)]


def run_decode(experts, active, prompts, new_tokens, device, on_step=None, provider=None):
    """Greedy tokens of a decode with uniform weights, or with `provider` (e.g. a PCM's weights)."""
    if provider is None:
        provider = FixedWeights(torch.full((len(prompts), len(active)), 1.0 / len(active), device=device))
    return decode(
        experts,
        provider,
        prompts,
        active,
        eos_token_id=-1,  # never stops early: every decode runs `new_tokens` steps
        pad_token_id=0,
        max_new_tokens=new_tokens,
        sampler=Sampler(greedy=True),
        device=device,
        on_step=on_step,
    ).tokens


def stacked_and_naive(built: Built, k: int, batch: int, prompt_len: int, new_tokens: int, device) -> dict:
    """Greedy tokens of the stacked and the naive mixture of the first k experts, uniform weights."""
    prompts = prompts_for(batch, prompt_len, built.vocab)
    return {p: run_decode(*built.path(p, k), prompts, new_tokens, device) for p in ("stacked", "naive")}


def token_mismatch(built: Built, k: int, batch: int, got: dict) -> str | None:
    """None when both paths picked the same tokens, else one line saying where they first differ."""
    if got["stacked"] == got["naive"]:
        return None
    row = next(i for i, (a, b) in enumerate(zip(got["stacked"], got["naive"], strict=True)) if a != b)
    a, b = got["stacked"][row], got["naive"][row]
    step = next(t for t, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
    return (
        f"FAILED: {built.name} K={k} B={batch}: stacked and naive greedy tokens differ (row {row}, step "
        f"{step}: {a[step]} vs {b[step]}); no timing is reported for paths that decode differently"
    )


def check_same_tokens(built: Built, k: int, batch: int, args, device) -> None:
    """Stacked and naive mixtures of the same experts with the same weights must pick the same tokens."""
    got = stacked_and_naive(built, k, batch, args.prompt_len, args.new_tokens, device)
    failure = token_mismatch(built, k, batch, got)
    if failure:
        sys.exit(failure)


def time_path(experts, active, prompts, args, device, provider=None) -> float:
    """Median seconds per decoding step over `repeats` decodes (after one warm-up decode).

    Each step is timed on its own through the engine's `on_step` hook, so that a stray pause of the machine
    shifts no result (the median ignores it). `provider`: a function making a fresh weight provider per
    decode (default: uniform weights).
    """
    steps: list[float] = []
    for r in range(args.repeats + 1):
        stamps: list[float] = []
        run_decode(
            experts,
            active,
            prompts,
            args.new_tokens + 1,
            device,
            lambda s=stamps: s.append(_now(device)),
            provider() if provider else None,
        )
        if r:
            steps += [b - a for a, b in itertools.pairwise(stamps)]
    return statistics.median(steps)


def _now(device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def peak_memory_mb(device) -> float:
    """CUDA: the peak allocated since the last reset (per path); CPU: the process's peak resident size so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def main() -> None:
    warnings.filterwarnings(
        "ignore", category=FutureWarning
    )  # transformers' deprecation notes, once per path
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny", "100m"], choices=list(MODELS))
    ap.add_argument("--ks", nargs="+", type=int, default=[2, 3, 6])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2, help="timed decodes per path (after one warm-up)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="float32 (default) | bfloat16 | float16: in half precision an expert merged into the weights rounds "
        "differently from its unmerged update, so the identical-token check can fail there",
    )
    ap.add_argument("--json", default=None, metavar="PATH", help="also write every figure to PATH as JSON")
    args = ap.parse_args()
    if any(k < 1 or k > len(POLES) for k in args.ks):
        ap.error(f"--ks: each K must be 1 to {len(POLES)}")
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)

    built = {name: Built(name, device, dtype) for name in args.models}
    for b, k, batch in itertools.product(built.values(), args.ks, args.batches):
        check_same_tokens(b, k, batch, args, device)
    print(
        f"stacked and naive mixtures: identical greedy tokens in all {len(built) * len(args.ks) * len(args.batches)} "
        f"settings ({args.new_tokens} tokens per row)"
    )
    machine = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
    }
    print(" ".join(f"{k}={v}" for k, v in machine.items()))
    header = (
        f"| model | params | K | B | {' | '.join(f'{p} ms' for p in PATHS)} | stacked/base | naive/base "
        f"| soups/base | stacked/naive | {' | '.join(f'{p} tok/s' for p in PATHS)} | peak MB ({'/'.join(PATHS)}) |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    records = []
    for b, k in itertools.product(built.values(), args.ks):
        paths = {p: b.path(p, k) for p in PATHS}
        for batch in args.batches:
            prompts = prompts_for(batch, args.prompt_len, b.vocab)
            seconds, memory = {}, {}
            for path, (experts, active) in paths.items():
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                seconds[path] = time_path(experts, active, prompts, args, device)
                memory[path] = peak_memory_mb(device)
            rec = {
                "model": b.name,
                "params": b.params,
                "K": k,
                "B": batch,
                "ms_per_step": {p: seconds[p] * 1000 for p in PATHS},
                "tokens_per_s": {p: batch / seconds[p] for p in PATHS},
                "peak_mb": memory,
                "ratios": {
                    "stacked/base": seconds["stacked"] / seconds["base"],
                    "naive/base": seconds["naive"] / seconds["base"],
                    "soups/base": seconds["soups"] / seconds["base"],
                    "stacked/naive": seconds["stacked"] / seconds["naive"],
                },
            }
            records.append(rec)
            ms, tps, r = rec["ms_per_step"], rec["tokens_per_s"], rec["ratios"]
            print(
                f"| {b.name} | {b.params / 1e6:.1f}M | {k} | {batch} | "
                + " | ".join(f"{ms[p]:.2f}" for p in PATHS)
                + " | "
                + " | ".join(f"{v:.2f}" for v in r.values())
                + " | "
                + " | ".join(f"{tps[p]:.0f}" for p in PATHS)
                + " | "
                + "/".join(f"{memory[p]:.0f}" for p in PATHS)
                + " |",
                flush=True,
            )
    print(
        "ms: median time of one decoding step for the whole batch; ratios of those times (stacked/naive < 1: "
        "the stacked path wins); peak MB: "
        + ("per path, CUDA allocated" if device.type == "cuda" else "the process's peak resident size so far")
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "results": records}, f, indent=2)
        print(f"written to {args.json}")


if __name__ == "__main__":
    main()
