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
    if isinstance(host, str) and not host.startswith(_LOOPBACK) and self.family in (socket.AF_INET, socket.AF_INET6):
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
