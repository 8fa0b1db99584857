#!/usr/bin/env python
"""Peak memory of scoring one batch with reward models: merged copies of the base against adapters on one base.

A random-initialised ~110M LLaMA (hidden 768, 12 layers, vocab 32000, fp32) and six random reward models
(LoRA r=8 on q/v with a score head, saved as train-rm saves them) are written to a temporary folder. Each
measurement then runs in a fresh Python process, so that nothing allocated by another one is counted:

    merged-1    the former path: the base as a sequence classifier with one pole's LoRA merged in
    merged-6    the former path holding all six poles (six merged copies), each scoring the batch
    adapters-1  reward_models.RewardAdapters with one pole
    adapters-6  reward_models.RewardAdapters with six poles, every pole scored in one pass

Memory is the process's peak resident set (getrusage ru_maxrss) minus its resident set after the imports
(torch, transformers, peft), i.e. what loading the models and scoring the batch added at their peak. Weights
are read with safetensors (memory-mapped pages count once they are touched, as they are when copied in).

    python scripts/measure_reward_memory.py                  # 16 texts of ~100 tokens, batch_size 16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

POLES = ["P1A", "P1B", "P2A", "P2B", "P3A", "P3B"]
MID = dict(
    vocab_size=32000,
    hidden_size=768,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_key_value_heads=12,
)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def make_models(folder: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        LlamaForSequenceClassification,
        PreTrainedTokenizerFast,
    )

    torch.manual_seed(0)
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2} | {f"w{i}": i + 3 for i in range(997)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    config = LlamaConfig(**MID, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    LlamaForCausalLM(config).save_pretrained(folder / "base")
    tokenizer.save_pretrained(folder / "base")
    for pole in POLES:
        model = LlamaForSequenceClassification.from_pretrained(folder / "base", num_labels=1)
        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=32))
        for name, p in model.named_parameters():
            if "lora_B" in name or "score" in name:
                p.data.normal_(0, 0.02)
        model.save_pretrained(folder / "rm" / pole)


def measure(folder: Path, mode: str, n_texts: int, batch_size: int) -> dict:
    import torch  # noqa: F401  (imports first: they are the baseline)
    from peft import PeftModel
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    from rlphf_cli.reward_models import RewardAdapters
    from rlphf_cli.rewards import score_texts

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(folder / "base")
    tokenizer.padding_side = "left"
    texts = [" ".join(f"w{(i * 7 + j) % 997}" for j in range(80 + i % 40)) for i in range(n_texts)]
    start = rss_mb()
    poles = POLES if mode.endswith("6") else POLES[:1]

    def base():
        return LlamaForSequenceClassification.from_pretrained(folder / "base", num_labels=1).eval()

    if mode.startswith("merged"):
        held = []
        for pole in poles:
            held.append(PeftModel.from_pretrained(base(), str(folder / "rm" / pole)).merge_and_unload())
            score_texts(held[-1], tokenizer, texts, batch_size)
    else:
        adapters = RewardAdapters(base(), tokenizer, batch_size)
        for pole in poles:
            adapters.add(pole, folder / "rm" / pole)
        adapters.score(poles, texts)
    return {"mode": mode, "baseline_mb": round(start, 1), "added_peak_mb": round(peak_mb() - start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--texts", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--_measure", nargs=2, metavar=("FOLDER", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._measure:
        print(json.dumps(measure(Path(args._measure[0]), args._measure[1], args.texts, args.batch_size)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_models(folder)
        rows = []
        for mode in ("merged-1", "merged-6", "adapters-1", "adapters-6"):
            cmd = [sys.executable, __file__, "--texts", str(args.texts), "--batch-size", str(args.batch_size)]
            out = subprocess.run(
                cmd + ["--_measure", str(folder), mode], capture_output=True, text=True, check=True
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(
                f"{mode:<11} added peak {rows[-1]['added_peak_mb']:8.1f} MB  (resident after imports {rows[-1]['baseline_mb']} MB)"
            )
        by = {r["mode"]: r["added_peak_mb"] for r in rows}
        print(f"adapters-6 / merged-1 = {by['adapters-6'] / by['merged-1']:.2f}")
        print(f"adapters-6 / adapters-1 = {by['adapters-6'] / by['adapters-1']:.2f}")
        print(f"merged-6 / merged-1 = {by['merged-6'] / by['merged-1']:.2f}")


if __name__ == "__main__":
    main()
