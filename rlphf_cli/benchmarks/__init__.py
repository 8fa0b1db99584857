"""Benchmark registry: name -> implementation, imported lazily."""

from __future__ import annotations

import importlib

from rlphf_cli.errors import UserError

BENCHMARKS = {
    "synthetic": "rlphf_cli.benchmarks.synthetic:SyntheticBenchmark",
    "psoups": "rlphf_cli.benchmarks.psoups:PSoupsBenchmark",
}


def get_benchmark(cfg):
    """Build the benchmark named by `cfg.name` (a BenchmarkConfig)."""
    if cfg.name not in BENCHMARKS:
        raise UserError(f"unknown benchmark {cfg.name!r}; valid choices: {', '.join(BENCHMARKS)}")
    module, attr = BENCHMARKS[cfg.name].split(":")
    return getattr(importlib.import_module(module), attr)(cfg)
