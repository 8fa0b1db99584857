#!/usr/bin/env python
"""A demo-shaped random run for serving benchmarks: the demo's tiny base config (untrained), random r=16 LoRA
experts and ARMs on q/v, a random tiny PCM. Seconds to make; its texts are noise, its shapes the demo's.

    python scripts/make_random_run.py /tmp/random_run
    python scripts/bench_serve.py /tmp/random_run --mixed -- pcm=tiny
"""

import sys

import torch
from peft import LoraConfig, get_peft_model

from rlphf_cli.benchmarks import get_benchmark
from rlphf_cli.config import compose
from rlphf_cli.modeling import build_tiny_model, build_tokenizer, load_tokenizer
from rlphf_cli.pcm.model import build_pcm
from rlphf_cli.runs import RunDir

run_dir = sys.argv[1]
cfg = compose([f"run_dir={run_dir}", "pcm=tiny"])
run = RunDir(run_dir)
bench = get_benchmark(cfg.benchmark)
tokenizer = build_tokenizer(bench.vocabulary_text())
base = build_tiny_model(cfg.model, tokenizer, 0)
art = run.artifact("base")
base.save_pretrained(art.start())
tokenizer.save_pretrained(art.work)
art.commit("base", None, source=None)
gen = torch.Generator().manual_seed(0)
for folder in ("experts", "arms"):
    for pole in bench.poles:
        model = get_peft_model(
            build_tiny_model(cfg.model, tokenizer, 0),
            LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
        )
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.data.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        exp = run.artifact(f"{folder}/{pole}")
        model.save_pretrained(exp.start())
        exp.commit("expert", None, pole=pole)
poles = list(bench.poles)
tok = load_tokenizer(str(run.root / "base"))
pcm = build_pcm(cfg.pcm, len(tok), tok.pad_token_id, poles, poles, seed=0)
torch.nn.init.normal_(pcm.head.weight, std=2.0)
a = run.artifact("pcm")
pcm.save(a.start())
a.commit("pcm", None)
print("ok", cfg.model.hidden_size, cfg.model.num_hidden_layers)
