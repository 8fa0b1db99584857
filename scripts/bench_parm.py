#!/usr/bin/env python
"""PARM's decoding cost per token against GenARM's, measured side by side in one run (a ratio).

Both decode the same workload on the stacked LoRA engine: every combination of the six poles (one row per
(prompt, combination), rows of different combinations in one batch), greedy, a fixed number of new tokens.

  genarm  log p_base + sum_i alpha_i log p_ARM_i: each row runs the base and its combination's three ARMs
          (four forward rows per token), six LoRA ARMs loaded (rank `--arm-rank` on every linear layer,
          the synthetic recipe's);
  parm    log p_base + beta log p_PARM(. | w): each row runs the base and one PARM row (two forward rows per
          token) whose update blends the PARM's seven LoRA-shaped parts (r1 = r2 = 4, PARM's ranks).

Models are random-initialised (speed needs no trained weights); EOS is never picked (every row writes
`--new-tokens`). Times are the median seconds per decoding step for the whole batch, over `--repeats`
alternating runs; the ratio parm / genarm is the figure to report.

    python scripts/bench_parm.py                       # the tiny synthetic model, batch 32
    python scripts/bench_parm.py --hidden 512 --layers 8 --batch 16
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from rlphf_cli.decoding.engine import BASE, AdapterExperts, FixedWeights, Sampler, decode
from rlphf_cli.decoding.generate import genarm_weights
from rlphf_cli.methods.parm import parm_active, parm_weights
from rlphf_cli.pblora import PBLoRA, add_parm_adapters
from rlphf_cli.preferences import all_combinations

POLES = ["P1A", "P1B", "P2A", "P2B", "P3A", "P3B"]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def base_model(args) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=608,
        hidden_size=args.hidden,
        intermediate_size=3 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


def randomise(params, scale=0.05):
    for p in params:
        p.data.normal_(0, scale)


def time_steps(experts, active, weights, prompts, args) -> list[float]:
    steps: list[float] = []
    last = [0.0]

    def tick():
        now = time.perf_counter()
        steps.append(now - last[0])
        last[0] = now

    last[0] = time.perf_counter()
    decode(
        experts,
        FixedWeights(weights),
        prompts,
        active,
        eos_token_id=-1,  # never: every row writes new_tokens
        pad_token_id=0,
        max_new_tokens=args.new_tokens,
        mixing="log",
        sampler=Sampler(greedy=True),
        on_step=tick,
    )
    return steps[1:]  # the first step also timed the prefill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=128)  # conf/model/tiny.yaml
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--arm-rank", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    combos = all_combinations(POLES)
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(5, 600, (12,), generator=gen).tolist() for _ in range(args.batch)]
    prefs = [(combos[i % len(combos)], [1 / 3] * 3) for i in range(args.batch)]

    arms = get_peft_model(
        base_model(args),
        LoraConfig(r=args.arm_rank, lora_alpha=2 * args.arm_rank, target_modules=TARGETS),
        adapter_name=POLES[0],
    )
    for pole in POLES[1:]:
        arms.add_adapter(
            pole, LoraConfig(r=args.arm_rank, lora_alpha=2 * args.arm_rank, target_modules=TARGETS)
        )
    randomise(p for n, p in arms.named_parameters() if "lora_" in n)
    genarm = AdapterExperts(arms.eval())
    genarm_rows = [[BASE, *c] for c, _ in prefs]
    genarm_w = torch.tensor([genarm_weights(w, 3.0) for _, w in prefs])

    with tempfile.TemporaryDirectory() as folder:
        pb = PBLoRA(base_model(args), POLES, 4, 4, 8.0, TARGETS)
        randomise(pb.layers.parameters())
        pb.save(folder)
        model, config = add_parm_adapters(base_model(args), folder)
    parm = AdapterExperts(model)
    parm_rows = [parm_active(config["poles"], c, w) for c, w in prefs]
    parm_w = torch.tensor([parm_weights(3.0)] * args.batch)

    runs = {"genarm": (genarm, genarm_rows, genarm_w), "parm": (parm, parm_rows, parm_w)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for run in runs.values():  # warm-up
        time_steps(*run, prompts, args)
    for _ in range(args.repeats):
        for name, run in runs.items():
            times[name] += time_steps(*run, prompts, args)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"model hidden {args.hidden} x {args.layers} layers, batch {args.batch} (rows of all 8 combinations), "
        f"{args.new_tokens} new tokens, torch threads {torch.get_num_threads()}"
    )
    for name, (_, rows, _) in runs.items():
        print(
            f"  {name:7s} {len(rows[0])} forward rows per token: {1000 * med[name]:.2f} ms per step, "
            f"{args.batch / med[name]:.0f} tokens/s"
        )
    print(f"  ratio parm / genarm per token: {med['parm'] / med['genarm']:.2f}")


if __name__ == "__main__":
    main()
