"""Helpers that several test modules share (runs, generations, a fake judge server, a tiny model with
experts); fixtures live in conftest.py."""

import json
import random
import shutil
import threading
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from rlphf_cli.benchmarks.synthetic import SyntheticWorld
from rlphf_cli.config import compose
from rlphf_cli.judges.llm_prompts import CRITERIA
from rlphf_cli.preferences import all_combinations, combination_name
from rlphf_cli.training.pairs import make_pairs

# ----- from test_pairs.py -----
# Reduced budgets for tests, shared by the test modules of this issue (rm, expert, launcher, tracking).
TEST_OVERRIDES = [
    "pairs.pairs_per_prompt=4",
    "rm.max_steps=60",
    "expert.eval_samples=2",
    "expert.dpo.max_steps=120",
]


def shared_run(base_run: Path, root: Path) -> Path:
    """A run directory with the session's base model and the reduced-budget pairs (made once, then reused)."""
    run = root / "shared_pairs_run"
    if not (run / "data" / "pairs" / "manifest.json").is_file():
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(base_run / "base", run / "base")
        make_pairs(compose([f"run_dir={run}", *TEST_OVERRIDES]))
    return run


def new_run(base_run: Path, root: Path, name: str, with_pairs: bool = True) -> Path:
    """A new run directory under `root` with the base (and a copy of the shared pairs)."""
    run = root / name
    shutil.copytree(base_run / "base", run / "base")
    if with_pairs:
        shutil.copytree(shared_run(base_run, root) / "data", run / "data")
    return run


# ----- from test_eval.py -----
WORLD = SyntheticWorld()


CORE = ["P1A", "P1B", "P2A", "P2B", "P3A", "P3B"]


LEVEL_OF_POLE = {
    "P1A": ("register", 0.0),
    "P1B": ("register", 1.0),
    "P2A": ("amount", 0),
    "P2B": ("amount", 2),
    "P3A": ("tone", 1),
    "P3B": ("tone", -1),
}


def generation_rows(method, aligned, n_prompts=4, combos=None, seed=0):
    """One response per eval prompt and combination: following the combination (aligned) or neutral."""
    rng = random.Random(f"{method}-{seed}")
    rows = []
    for prompt in WORLD.prompts("eval")[:n_prompts]:
        topic = WORLD.topic_of(prompt.text)
        for combo in combos or all_combinations(CORE):
            levels = {"register": 0.5, "amount": 1, "tone": 0}
            if aligned:
                levels.update(LEVEL_OF_POLE[p] for p in combo)
            text = WORLD.render(topic, levels["amount"], levels["register"], levels["tone"], rng)
            rows.append(
                {
                    "prompt_id": prompt.id,
                    "prompt": prompt.text,
                    "combination": combination_name(combo),
                    "method": method,
                    "text": text,
                    "prompt_tokens": 6,
                    "new_tokens": 30,
                    "seed": seed,
                }
            )
    return rows


def write_generations(run_dir, method, rows=None, complete=True, **kw):
    """Write generations/<method>.jsonl (and its manifest, which marks it complete)."""
    rows = generation_rows(method, method != "soups", **kw) if rows is None else rows
    folder = run_dir / "generations"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{method}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if complete:
        (folder / f"{method}.manifest.json").write_text(
            json.dumps({"kind": "generations", "records": len(rows)})
        )
    return path


def config(run_dir, *overrides):
    return compose([f"run_dir={run_dir}", "eval.bootstrap_samples=200", *overrides])


# ----- from test_eval_llm_judge.py -----
def between(text, start, end):
    return text.split(start, 1)[1].split(end, 1)[0].strip()


class FakeJudgeAPI:
    """Answers chat completions like a judge that follows the synthetic world's scores."""

    def __init__(self):
        self.requests = []
        self.fail_first = 0  # answer this many requests with HTTP 500 first
        self.status = 200  # answer every request with this status when not 200
        self.unparseable_poles = set()
        self.empty = 0  # answer this many requests with no text first (-1: every one)
        self.lock = threading.Lock()

    def answer(self, body):
        with self.lock:
            if self.empty:
                self.empty -= self.empty > 0
                return ""
        user = body["messages"][-1]["content"]
        (pole,) = [p for p, text in CRITERIA.items() if text in user]
        if pole in self.unparseable_poles:
            return "Both responses have their merits and I cannot pick one."
        prompt = between(user, "[Instruction]", "[Response A]")
        a = between(user, "[Response A]", "[End of Response A]")
        b = between(user, "[Response B]", "[End of Response B]")
        verdict = WORLD.compare(pole, prompt, a, b)
        return f"On this criterion the {'two are alike' if verdict == 'TIE' else verdict + ' is better'}.\n**Verdict:** {verdict}"

    def handle(self, headers, body):
        with self.lock:
            self.requests.append({"auth": headers.get("Authorization"), "body": body})
            if self.fail_first > 0:
                self.fail_first -= 1
                return 500, {"error": {"message": "overloaded", "type": "server_error"}}
        if self.status != 200:
            return self.status, {"error": {"message": "no", "type": "invalid_request_error"}}
        message = {"role": "assistant", "content": self.answer(body)}
        return 200, {
            "id": "cmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        }


# ----- from test_engine.py -----
VOCAB, EOS, PAD = 64, 2, 0


NAMES = ["P1A", "P2B", "P3A"]


def tiny_base(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        pad_token_id=PAD,
        eos_token_id=EOS,
    )
    return LlamaForCausalLM(cfg).eval()


def with_experts(base):
    lora = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"], lora_dropout=0.0)
    model = get_peft_model(base, LoraConfig(**lora), adapter_name=NAMES[0])
    for name in NAMES[1:]:
        model.add_adapter(name, LoraConfig(**lora))
    gen = torch.Generator().manual_seed(1)
    for n, p in model.named_parameters():
        if "lora_" in n:
            p.data.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()
