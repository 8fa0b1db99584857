"""Checks of a composed config, run before a command writes anything.

Each bad value is one UserError (exit 2) that names the key and what is allowed. `check(cfg, command)` is
what the CLI calls; `check_generate` and `check_pcm` are the sections' own checks, for the stages that
take a config from elsewhere (the pipeline, tests).
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from rlphf_cli.errors import UserError

TRAINING_COMMANDS = ("train-sft", "train-rm", "train-expert", "train-pcm", "pipeline")
GENERATING_COMMANDS = (
    "generate",
    "eval",
    "pipeline",
    "personalize",
    "serve",
    "pareto",
)  # eval generates what it lacks
TRACKING_MODES = ("online", "offline", "disabled")


def check(cfg, command: str) -> None:
    """Everything a command reads from the config that can be checked before it runs."""
    check_run_dir(cfg.run_dir)
    check_device(cfg.device)
    check_prompt_template(cfg.model.prompt_template)
    check_benchmark_poles(cfg.benchmark.poles)
    if command in TRAINING_COMMANDS:
        check_tracking(cfg.tracking)
    if command in GENERATING_COMMANDS:
        check_generate(cfg.generate)
    if command == "generate" and not str(cfg.generate.preference).strip().startswith("@"):
        import logging

        from rlphf_cli.preferences import parse_weighted_preferences

        quiet = logging.getLogger(
            "rlphf_cli.preferences"
        )  # its normalisation warning comes once, from generate
        quiet.disabled = True
        try:
            parse_weighted_preferences(str(cfg.generate.preference), list(cfg.benchmark.poles))  # bad: exit 2
        finally:
            quiet.disabled = False
    if command in ("train-rm", "train-expert", "pipeline"):
        from rlphf_cli.adapters import check_lora_targets

        check_lora_targets(
            cfg, {"train-rm": ("rm",), "train-expert": ("expert",)}.get(command, ("rm", "expert"))
        )
    if command in ("train-pcm", "pipeline"):
        check_pcm(cfg)
    if command in ("pareto", "pipeline"):
        from rlphf_cli.evaluation.pareto import check_pareto

        check_pareto(cfg)
    if command == "serve":
        check_serve(cfg.serve)
    if command == "annotate":
        from rlphf_cli.annotate.server import check_completion_url
        from rlphf_cli.annotate.web import check_host

        check_host(cfg.annotate.host, cfg.annotate.port, cfg.annotate.token, "annotate")
        check_completion_url(cfg.annotate.completion_url)
    if command == "personalize" and cfg.personalize.mode == "web":
        from rlphf_cli.annotate.web import check_host

        check_host(cfg.personalize.host, cfg.personalize.port, cfg.personalize.token, "personalize")


def check_serve(s) -> None:
    if not 0 < s.port < 65536:
        raise UserError(f"serve.port must be 1 to 65535; got {s.port}")
    _at_least("serve", s, "max_batch", 1)
    _at_least("serve", s, "max_new_tokens", 1)
    _at_least("serve", s, "max_soups", 1)
    _at_least("serve", s, "max_merged_soups", 1)
    if s.threads is not None:
        _at_least("serve", s, "threads", 1)


def check_run_dir(run_dir: str) -> None:
    path = Path(run_dir).expanduser()
    for where in (path, *path.parents):  # the nearest part that exists must be a folder
        if where.exists():
            if not where.is_dir():
                raise UserError(f"run_dir={run_dir} is not a folder ({where} is a file); give a folder path")
            return


def check_device(device: str) -> None:
    from rlphf_cli.modeling import resolve_device

    resolve_device(device)


def check_prompt_template(template: str) -> None:
    from rlphf_cli.modeling import TEMPLATE_NAMES

    if template in TEMPLATE_NAMES:
        return
    if template.count("{prompt}") != 1:
        raise UserError(
            f"model.prompt_template must be one of {', '.join(TEMPLATE_NAMES)} or contain {{prompt}} once, "
            "where the instruction goes "
            f"(e.g. '<|user|>\\n{{prompt}}\\n<|assistant|>\\n'); got {template!r}"
        )


def check_benchmark_poles(poles) -> None:
    from rlphf_cli.preferences import POLES

    names = list(poles)
    unknown = [p for p in names if p not in POLES]
    if unknown or not names:
        what = f"unknown pole(s) {', '.join(map(repr, unknown))}" if unknown else "no poles"
        raise UserError(f"{what} in benchmark.poles; valid poles: {', '.join(POLES)}")
    twice = sorted({p for p in names if names.count(p) > 1})
    if twice:
        raise UserError(f"benchmark.poles names {', '.join(twice)} twice; list each pole once")


def check_tracking(tc) -> None:
    from rlphf_cli.tracking import BACKENDS

    if tc.backend not in BACKENDS:
        raise UserError(f"unknown tracking.backend {tc.backend!r}; valid: {', '.join(BACKENDS)}")
    if tc.backend != "wandb":
        return
    if tc.mode not in TRACKING_MODES:
        raise UserError(f"unknown tracking.mode {tc.mode!r}; valid: {', '.join(TRACKING_MODES)}")
    if tc.mode == "online" and not wandb_logged_in():
        raise UserError(
            "tracking.mode=online needs a W&B login: set $WANDB_API_KEY or run `wandb login`; "
            "or use tracking.mode=offline (sync later) or tracking=none"
        )


def wandb_logged_in() -> bool:
    """An API key in the environment or in ~/.netrc for the W&B host, as wandb looks for one (no network)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _at_least(section: str, cfg, key: str, low: int) -> None:
    value = cfg[key]
    if value < low:
        raise UserError(f"{section}.{key} must be at least {low}, got {value}")


def check_generate(g) -> None:
    """The sampler and batch settings of `rlphf generate`."""
    _at_least("generate", g, "batch_size", 1)
    _at_least("generate", g, "max_new_tokens", 1)
    _at_least("generate", g, "top_k", 0)
    if g.temperature < 0:
        raise UserError(f"generate.temperature must be at least 0 (0: greedy), got {g.temperature}")
    if not 0 < g.top_p <= 1:
        raise UserError(f"generate.top_p must be in (0, 1] (1: off), got {g.top_p}")


def check_pcm(cfg, train_prompts: int | None = None) -> None:
    """The `pcm` section; `train_prompts` is the benchmark's number of training prompts (read when None)."""
    p = cfg.pcm
    if p.algo not in ("rebel", "rloo"):
        raise UserError(f"unknown pcm.algo {p.algo!r}; valid: rebel, rloo")
    if p.samples_per_prompt < 2:
        raise UserError("pcm.samples_per_prompt must be at least 2 (REBEL and RLOO compare responses)")
    if p.algo == "rebel" and p.samples_per_prompt != 2:
        raise UserError("pcm.algo=rebel compares pairs: set pcm.samples_per_prompt=2")
    for key in ("steps", "prompts_per_step", "update_epochs", "max_new_tokens", "save_steps"):
        _at_least("pcm", p, key, 1)
    _at_least("pcm", p, "eval_prompts", 0)
    _at_least("pcm", p, "weighted_per_step", 0)
    _at_least("pcm", p, "max_grad_norm", 0)  # 0: not clipped
    if not p.weight_concentration > 0:
        raise UserError(f"pcm.weight_concentration must be above 0, got {p.weight_concentration}")
    if p.temperature <= 0:
        raise UserError(f"pcm.temperature must be above 0 (the PCM learns from samples), got {p.temperature}")
    if p.reward not in ("judge", "reward_model"):
        raise UserError(f"unknown pcm.reward {p.reward!r}; valid: judge, reward_model")
    if p.init_from:
        from rlphf_cli.modeling import looks_local

        if looks_local(p.init_from) and not Path(p.init_from).expanduser().is_dir():
            raise UserError(
                f"pcm.init_from={p.init_from} is not a folder; give a folder with a pretrained small model "
                "(config.json and weights) that shares the experts' tokenizer, or a hub id"
            )
    if train_prompts is None:
        from rlphf_cli.benchmarks import get_benchmark

        train_prompts = len(get_benchmark(cfg.benchmark).train_prompts())
    if p.prompts_per_step > train_prompts:
        raise UserError(
            f"pcm.prompts_per_step={p.prompts_per_step} is more than the benchmark's {train_prompts} "
            f"training prompts; use at most {train_prompts}"
        )
