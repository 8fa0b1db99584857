#!/usr/bin/env python
"""Decoding throughput, measured side by side in one run.

(a) the base alone; (b) K experts mixed on the batched adapter path (one forward per step, rows replicated
per expert, one KV cache, the LoRA updates as one stacked matmul per layer); (bp) the same rows through peft's
per-row `adapter_names`; (c) K experts mixed naively, one forward per
expert per step with a cache each, as MOD does; (d) soups: the experts merged into the weights, decoded as
one model. Models are random-initialised: speed needs no trained weights.

    python scripts/bench_decode.py                       # tiny and mid-size (~100M) models, K in 2,3,6, batch 1,8
    python scripts/bench_decode.py --sizes mid --ks 6 --batches 8 --new-tokens 64 --device cuda
"""

from __future__ import annotations

import argparse
import copy
import itertools
import resource
import statistics
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from rlphf_cli.decoding.engine import BASE, AdapterExperts, FixedWeights, Sampler, decode
from rlphf_cli.decoding.soups import add_soup

SIZES = {
    "tiny": dict(
        vocab_size=608, hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4
    ),
    "mid": dict(
        vocab_size=32000,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
    ),
}
POLES = ["P1A", "P1B", "P2A", "P2B", "P3A", "P3B"]


class NaiveExperts:
    """One forward per expert per step, each with its own cache (how MOD decodes)."""

    def __init__(self, model):
        self.model = model
        self.names = list(model.peft_config)

    def prefill(self, input_ids, attention_mask, active):
        self.parts = [AdapterExperts(self.model) for _ in active]
        self.active = active
        return torch.cat(
            [p.prefill(input_ids, attention_mask, [a]) for p, a in zip(self.parts, active, strict=True)],
            dim=1,
        )

    def step(self, tokens, attention_mask):
        return torch.cat([p.step(tokens, attention_mask) for p in self.parts], dim=1)

    def close(self):
        for p in self.parts:
            p.close()


def build(size: str, device, dtype):
    torch.manual_seed(0)
    cfg = LlamaConfig(
        **SIZES[size], num_key_value_heads=SIZES[size]["num_attention_heads"], max_position_embeddings=1024
    )
    base = LlamaForCausalLM(cfg).to(device=device, dtype=dtype).eval()
    plain = copy.deepcopy(base)
    lora = dict(
        r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], lora_dropout=0.0
    )
    model = get_peft_model(base, LoraConfig(**lora), adapter_name=POLES[0])
    for pole in POLES[1:]:
        model.add_adapter(pole, LoraConfig(**lora))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    return model.eval(), plain, sum(p.numel() for p in plain.parameters())


def time_decode(experts, active, batch, prompt_len, new_tokens, vocab, device, repeats) -> float:
    """Median seconds per decoding step (mix, sample, one expert step, weights) over `repeats` decodes.

    Each step is timed on its own, through the engine's `on_step` hook, so that a stray pause of the machine
    shifts no result (the median ignores it).
    """
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, vocab, (prompt_len,), generator=gen).tolist() for _ in range(batch)]
    provider = FixedWeights(torch.full((batch, len(active)), 1.0 / len(active), device=device))
    steps = []
    for r in range(repeats + 1):  # the first pass warms up
        stamps: list[float] = []
        decode(
            experts,
            provider,
            prompts,
            active,
            eos_token_id=-1,  # never stops early: every decode runs `new_tokens` steps
            pad_token_id=0,
            max_new_tokens=new_tokens + 1,
            sampler=Sampler(greedy=True),
            device=device,
            on_step=lambda stamps=stamps: stamps.append(_now(device)),
        )
        if r:
            steps += [b - a for a, b in itertools.pairwise(stamps)]
    return statistics.median(steps)


def _now(device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def peak_memory_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak so far (Linux: KiB)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "mid"], choices=list(SIZES))
    ap.add_argument("--ks", nargs="+", type=int, default=[2, 3, 6])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--dtype", default=None, help="float32 | bfloat16 (default: bfloat16 on cuda, float32 on cpu)"
    )
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    print(
        f"device={device} dtype={dtype} threads={torch.get_num_threads()} prompt={args.prompt_len} new_tokens={args.new_tokens}"
    )
    header = f"{'size':5} {'params':>7} {'K':>2} {'B':>2} | {'(a) base':>9} {'(b) batched':>11} {'(bp) peft':>10} {'(c) naive':>10} {'(d) soups':>10} | {'b/a':>5} {'c/a':>5} {'d/a':>5} {'b/c':>5} {'bp/c':>5} | {'peak MB':>8}"
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        model, plain, n_params = build(size, device, dtype)
        vocab = SIZES[size]["vocab_size"]
        for k in args.ks:
            active = POLES[:k]
            soup = add_soup(model, active, [1.0 / k] * k, "psoups")
            merged = copy.deepcopy(model)  # the soup folded into the weights: one plain model
            merged.set_adapter(soup)
            merged = merged.merge_and_unload().eval()
            for batch in args.batches:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                t = {}

                def run(experts, act, batch=batch, vocab=vocab):
                    return time_decode(
                        experts, act, batch, args.prompt_len, args.new_tokens, vocab, device, args.repeats
                    )

                t["a"] = run(AdapterExperts(plain), [BASE])
                t["b"] = run(AdapterExperts(model), active)
                t["bp"] = run(AdapterExperts(model, stacked=False), active)
                t["c"] = run(NaiveExperts(model), active)
                t["d"] = run(AdapterExperts(merged), [BASE])
                ms = {key: v * 1000 for key, v in t.items()}
                print(
                    f"{size:5} {n_params / 1e6:6.1f}M {k:>2} {batch:>2} | {ms['a']:7.2f}ms {ms['b']:9.2f}ms {ms['bp']:8.2f}ms {ms['c']:8.2f}ms {ms['d']:8.2f}ms"
                    f" | {t['b'] / t['a']:5.2f} {t['c'] / t['a']:5.2f} {t['d'] / t['a']:5.2f} {t['b'] / t['c']:5.2f} {t['bp'] / t['c']:5.2f} | {peak_memory_mb(device):8.0f}",
                    flush=True,
                )
            model.delete_adapter(soup)
            del merged
        del model, plain
    print("(ms per decoded token step for the whole batch; ratios against (a); b/c < 1 means batching wins)")


if __name__ == "__main__":
    main()
