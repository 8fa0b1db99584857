"""Config of `rlphf eval` and of the judges."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import II


@dataclass
class JudgeConfig:
    kind: str = "synthetic"  # synthetic | reward_model | llm | human
    # human: the study whose answers are read (annotations/<study>.jsonl, made by `rlphf annotate`)
    study: str = II("annotate.study")
    # human: leave out raters who passed fewer than this share of their gold (attention) items
    min_gold_pass: float = 0.0
    # reward_model: score differences at most this are ties (the RMs' scores are logits)
    tie_margin: float = 0.1
    # llm: an OpenAI-compatible chat API (OpenAI, a local vLLM, ...)
    base_url: str | None = None  # None: $OPENAI_BASE_URL, else https://api.openai.com/v1
    model: str = "gpt-4o-mini"
    api_key: str | None = None  # None: the environment variable named by key_env; never saved or printed
    key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    max_output: int = 400  # most tokens in one answer (rationale + verdict)
    timeout: float = 60.0  # seconds per request
    retries: int = 5  # attempts after the first one, on transient errors (connection, timeout, 429, 5xx)
    backoff: float = 1.0  # seconds before the first retry; doubles after each
    concurrency: int = 8  # requests in flight at once
    cache: bool = True  # keep every answer in run_dir/eval/judge_cache.jsonl so a re-run never asks twice


@dataclass
class EvalConfig:
    method: str = "pcm"
    baseline: str = "soups"  # a method, or all
    seed: int = II("seed")  # seeds the A/B order swaps and the bootstrap; the run's seed unless given
    bootstrap_samples: int = 1000  # for the 95% confidence intervals (prompts resampled)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
