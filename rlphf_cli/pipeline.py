"""`rlphf pipeline`: every stage, end to end, skipping what is complete.

train-sft -> pairs -> train-rm -> train-expert -> train-pcm -> generate (every method) -> eval (pcm against
every baseline, and soups against prompted) -> report. Each stage reads and writes the run directory, so an
interrupted pipeline resumes where it stopped.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from pathlib import Path

from rich.console import Console

from rlphf_cli.runs import RunDir, atomic_write_text

log = logging.getLogger(__name__)
console = Console()

BASELINES = ("sft", "prompted", "soups", "mod", "uniform")


def _call(target: str, cfg):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)(cfg)


def _generate_all(cfg) -> None:
    from rlphf_cli.decoding.generate import ensure_generations

    for method in ("pcm", *BASELINES):
        ensure_generations(cfg, method)


def _evaluate_all(cfg) -> None:
    from rlphf_cli.evaluation.evaluate import evaluate_pair
    from rlphf_cli.judges import get_judge

    judge = get_judge(cfg)
    for baseline in BASELINES:
        evaluate_pair(cfg, "pcm", baseline, judge)
    evaluate_pair(cfg, "soups", "prompted", judge)


STAGES = [
    ("train-sft", "rlphf_cli.training.sft:train_sft"),
    ("pairs", "rlphf_cli.training.pairs:make_pairs"),
    ("train-rm", "rlphf_cli.training.rm:train_rm"),
    ("train-expert", "rlphf_cli.training.expert:train_expert"),
    ("train-pcm", "rlphf_cli.training.pcm:train_pcm"),
    ("generate", _generate_all),
    ("eval", _evaluate_all),
    ("report", "rlphf_cli.evaluation.report:report"),
]


def pipeline(cfg) -> Path:
    from rlphf_cli.training.pairs import external_pairs_dir

    run = RunDir(cfg.run_dir)
    stages = [(name, fn) for name, fn in STAGES if not (name == "pairs" and external_pairs_dir(cfg))]
    timings: list[tuple[str, float]] = []
    for i, (name, target) in enumerate(stages, 1):
        console.rule(f"[bold]stage {i}/{len(stages)}: {name}")
        start = time.perf_counter()
        target(cfg) if callable(target) else _call(target, cfg)
        timings.append((name, time.perf_counter() - start))
        console.print(f"[green]stage {name} done in {timings[-1][1]:.0f}s")
    summary = summarize(run, timings, cfg.seed)
    path = run.root / "summary.md"
    atomic_write_text(path, summary)
    console.rule("[bold]summary")
    console.print(summary)
    console.print(f"written to {path}")
    return path


def _manifests(run: RunDir, folder: str) -> dict[str, dict]:
    return {
        m.parent.name: json.loads(m.read_text()) for m in sorted((run.root / folder).glob("*/manifest.json"))
    }


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def summarize(run: RunDir, timings: list[tuple[str, float]], seed: int) -> str:
    """The demo's closing page: win rates, experts against the base, reward-model accuracies, time per stage."""
    report = run.root / "eval" / "report.md"
    lines = [f"# rlphf pipeline: {run.root.name} (seed {seed})", ""]
    if report.exists():
        lines += [report.read_text().strip(), ""]
    experts = _manifests(run, "experts")
    if experts:
        lines += ["## Experts against the base on their own pole (held-out prompts, benchmark judge)", ""]
        lines += [
            "| pole | algo | non-tied win rate % | wins / losses / ties | judge score expert / base | invalid % expert / base |",
            "|---|---|---|---|---|---|",
        ]
        for pole, m in experts.items():
            x = m.get("metrics", {})
            if "win_rate_vs_base" not in x:
                lines.append(f"| {pole} | {m.get('algo', '?')} | — | — | — | — |")
                continue
            lines.append(
                f"| {pole} | {m.get('algo', '?')} | {_pct(x['win_rate_vs_base'])} | {x['wins']} / {x['losses']} / {x['ties']} | "
                f"{x['judge_score_expert']:.3f} / {x['judge_score_base']:.3f} | {_pct(x['invalid_expert'])} / {_pct(x['invalid_base'])} |"
            )
        lines.append("")
    rms = _manifests(run, "rm")
    if rms:
        lines += ["## Reward models: held-out pairwise accuracy", ""]
        lines += ["| pole | accuracy % | pairs (train / held out) |", "|---|---|---|"]
        for pole, m in rms.items():
            x = m.get("metrics", {})
            lines.append(
                f"| {pole} | {_pct(x.get('heldout_accuracy'))} | {x.get('train_pairs', '?')} / {x.get('heldout_pairs', '?')} |"
            )
        lines.append("")
    pcm = run.artifact("pcm")
    if pcm.is_complete():
        metrics = pcm.manifest().get("metrics", {})
        if "pcm_reward" in metrics:
            lines += [
                "## PCM against the uniform mixture (mean normalised reward, held-out prompts)",
                "",
                f"PCM {metrics['pcm_reward']:.3f}, uniform {metrics['uniform_reward']:.3f} "
                f"({metrics['pcm_minus_uniform']:+.3f}) over {metrics['eval_prompts']} prompts x 8 combinations.",
                "",
            ]
    lines += ["## Time per stage", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {sec:.0f} |" for name, sec in timings]
    lines.append(f"| total | {sum(s for _, s in timings):.0f} |")
    return "\n".join(lines) + "\n"
