"""What `/metrics` reports, in Prometheus's text format: requests and tokens counted by the HTTP handlers,
and the scheduler's and the models' state read when scraped (rows decoding, rows waiting, adapters loaded)."""

from __future__ import annotations

import threading
import time
from collections import Counter

OUTCOMES = ("ok", "bad_request", "error", "cancelled")


class Metrics:
    def __init__(self):
        self.started = time.time()
        self.requests: Counter = Counter()  # (method, outcome) -> requests
        self.prompt_tokens: Counter = Counter()  # method -> tokens
        self.completion_tokens: Counter = Counter()
        self._lock = threading.Lock()

    def count(self, method: str, outcome: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        with self._lock:
            self.requests[method, outcome] += 1
            self.prompt_tokens[method] += prompt_tokens
            self.completion_tokens[method] += completion_tokens

    def render(self, state: dict) -> str:
        """The counters, then `state` (Backend.stats(): gauges, and per-lane gauges as dicts)."""
        lines = []

        def metric(name: str, kind: str, help: str, samples) -> None:
            lines.append(f"# HELP rlphf_{name} {help}")
            lines.append(f"# TYPE rlphf_{name} {kind}")
            for labels, value in samples:
                tag = ",".join(f'{k}="{v}"' for k, v in labels.items())
                lines.append(f"rlphf_{name}{{{tag}}} {value:g}" if tag else f"rlphf_{name} {value:g}")

        with self._lock:
            requests = sorted(self.requests.items())
            prompt, completion = sorted(self.prompt_tokens.items()), sorted(self.completion_tokens.items())
        metric(
            "requests_total",
            "counter",
            "requests answered, by method and outcome (ok, bad_request, error, cancelled)",
            [({"method": m, "outcome": o}, n) for (m, o), n in requests],
        )
        metric("prompt_tokens_total", "counter", "prompt tokens", [({"method": m}, n) for m, n in prompt])
        metric(
            "completion_tokens_total",
            "counter",
            "tokens generated",
            [({"method": m}, n) for m, n in completion],
        )
        metric(
            "uptime_seconds", "gauge", "seconds since the server started", [({}, time.time() - self.started)]
        )
        for name, (kind, help, value) in state.items():
            samples = (
                [({"lane": k}, v) for k, v in value.items()] if isinstance(value, dict) else [({}, value)]
            )
            metric(name, kind, help, samples)
        return "\n".join(lines) + "\n"


def resident_bytes() -> int:
    """This process's resident memory (Linux; 0 where /proc is missing)."""
    import os

    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
