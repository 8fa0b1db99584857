"""Tests run offline: no Hub, no wandb, no telemetry, and no socket to a non-loopback address."""

import os
import socket

os.environ.update(
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    HF_HUB_DISABLE_TELEMETRY="1",
    WANDB_MODE="disabled",
    WANDB_SILENT="true",
    TOKENIZERS_PARALLELISM="false",
)

import pytest  # noqa: E402

_LOOPBACK = ("127.", "::1", "localhost")
_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if (
        isinstance(host, str)
        and not host.startswith(_LOOPBACK)
        and self.family in (socket.AF_INET, socket.AF_INET6)
    ):
        raise RuntimeError(f"test tried to open a network connection to {address!r}; tests must run offline")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


@pytest.fixture(scope="session")
def base_run(tmp_path_factory):
    """A run directory with the synthetic base model trained at the default budget (shared by many tests)."""
    from rlphf_cli.config import compose
    from rlphf_cli.training.sft import train_sft

    run_dir = tmp_path_factory.mktemp("base_run")
    cfg = compose([f"run_dir={run_dir}"])
    train_sft(cfg)
    return run_dir


def make_random_expert_run(run_dir, poles=("P1A", "P1B", "P2A", "P2B", "P3A", "P3B"), seed=0):
    """A run directory with an untrained tiny base and random LoRA experts: fast, for decoding plumbing."""
    import torch
    from peft import LoraConfig, get_peft_model

    from rlphf_cli.benchmarks import get_benchmark
    from rlphf_cli.config import compose
    from rlphf_cli.modeling import build_tiny_model, build_tokenizer
    from rlphf_cli.runs import RunDir

    cfg = compose(
        [
            f"run_dir={run_dir}",
            "model.hidden_size=32",
            "model.intermediate_size=64",
            "model.num_hidden_layers=2",
        ]
    )
    run = RunDir(run_dir)
    tokenizer = build_tokenizer(get_benchmark(cfg.benchmark).vocabulary_text())
    base = build_tiny_model(cfg.model, tokenizer, seed)
    art = run.artifact("base")
    base.save_pretrained(art.start())
    tokenizer.save_pretrained(art.work)
    art.commit("base", None, source=None)
    gen = torch.Generator().manual_seed(seed)
    for pole in poles:
        model = get_peft_model(
            build_tiny_model(cfg.model, tokenizer, seed),
            LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
        )
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.data.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        exp = run.artifact(f"experts/{pole}")
        model.save_pretrained(exp.start())
        exp.commit("expert", None, pole=pole, algo="random")
    return cfg


PARM_POLES = ["P1A", "P1B", "P2A", "P2B", "P3A", "P3B"]


def make_random_parm(folder, seed=0, target_modules=("q_proj", "v_proj", "down_proj")):
    """A saved PARM with every factor random (B too: PARM starts B at zero), on the untrained tiny base of
    `make_random_expert_run` (seed 0)."""
    import torch

    from rlphf_cli.benchmarks import get_benchmark
    from rlphf_cli.config import compose
    from rlphf_cli.modeling import build_tiny_model, build_tokenizer
    from rlphf_cli.pblora import PBLoRA

    cfg = compose(["model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=2"])
    tokenizer = build_tokenizer(get_benchmark(cfg.benchmark).vocabulary_text())
    model = build_tiny_model(cfg.model, tokenizer, 0).eval()
    parm = PBLoRA(model, PARM_POLES, r1=3, r2=2, lora_alpha=4.0, target_modules=list(target_modules))
    gen = torch.Generator().manual_seed(seed)
    for p in parm.layers.parameters():
        p.data.copy_(torch.randn(p.shape, generator=gen) * 0.6)
    parm.save(folder)
    return tokenizer


def add_random_parm(run_dir, seed=0):
    """A random PARM committed as the run's `parm/` artifact."""
    from rlphf_cli.runs import RunDir

    art = RunDir(run_dir).artifact("parm")
    make_random_parm(art.start(), seed)
    art.commit("parm", None, algo="random", poles=PARM_POLES)


@pytest.fixture
def api():
    """A fake OpenAI-compatible judge server on 127.0.0.1 (helpers.FakeJudgeAPI)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from helpers import FakeJudgeAPI

    fake = FakeJudgeAPI()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, payload = fake.handle(self.headers, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield fake
    server.shutdown()
    server.server_close()
