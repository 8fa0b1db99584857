"""Default-budget figures of reward models and experts on the synthetic benchmark, all poles, three algorithms.

    python scripts/expert_figures.py [run_dir] [key=value ...]

Trains the base if missing, then the pairs, the six reward models and the six experts with each of dpo, ppo
and grpo (experts/<pole> of each algorithm is kept under experts_<algo>/<pole>), and prints one table:
reward-model held-out accuracy, and per algorithm the expert's non-tied win rate against the base on its own
pole (held-out prompts, the pole's judge) with the judge score before -> after. Complete artifacts are reused.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

ALGOS = ("dpo", "ppo", "grpo")


def main() -> None:
    from rlphf_cli import logs
    from rlphf_cli.config import compose
    from rlphf_cli.training.expert import train_expert
    from rlphf_cli.training.pairs import make_pairs
    from rlphf_cli.training.rm import train_rm
    from rlphf_cli.training.sft import train_sft

    logs.setup(None)
    args = sys.argv[1:]
    run = Path(args.pop(0) if args and "=" not in args[0] else "runs/expert_figures").resolve()
    overrides = [f"run_dir={run}", *args]
    cfg = compose(overrides)
    seconds: dict[str, float] = {}

    def timed(name, fn, *a):
        start = time.perf_counter()
        fn(*a)
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start

    timed("base", train_sft, cfg)
    timed("pairs", make_pairs, cfg)
    timed("rm", train_rm, cfg)
    for algo in ALGOS:
        kept = run / f"experts_{algo}"
        if not kept.is_dir():
            shutil.rmtree(run / "experts", ignore_errors=True)
            timed(algo, train_expert, compose([*overrides, f"expert.algo={algo}"]))
            os.replace(run / "experts", kept)
    print(table(run, cfg.benchmark.poles, seconds))


def table(run: Path, poles, seconds: dict[str, float]) -> str:
    def manifest(path: Path) -> dict:
        return json.loads((path / "manifest.json").read_text()) if (path / "manifest.json").is_file() else {}

    def pct(x) -> str:
        return "—" if x is None else f"{100 * x:.1f}"

    pairs = manifest(run / "data" / "pairs").get("counts", {})
    lines = ["| pole | pairs kept (ties dropped) | RM held-out accuracy % (pairs) |", "|---|---|---|"]
    for pole in poles:
        rm = manifest(run / "rm" / pole).get("metrics", {})
        count = pairs.get(pole, {})
        lines.append(
            f"| {pole} | {count.get('pairs', '?')} ({count.get('ties_dropped', '?')}) | "
            f"{pct(rm.get('heldout_accuracy'))} ({rm.get('heldout_pairs', '?')}) |"
        )
    lines += [
        "",
        "Experts against the base on their own pole (48 held-out prompts, the pole's judge):",
        "",
        "| pole | algo | greedy: non-tied win % (W/L/T) | sampled T=1: non-tied win % (W/L/T) | sampled judge score "
        "base -> expert | sampled invalid % base -> expert |",
        "|---|---|---|---|---|---|",
    ]
    for pole in poles:
        for algo in ALGOS:
            check = manifest(run / f"experts_{algo}" / pole).get("metrics", {})
            if "win_rate_vs_base" not in check:
                continue
            s = check.get("sampled", {})
            lines.append(
                f"| {pole} | {algo} | {pct(check['win_rate_vs_base'])} ({check['wins']}/{check['losses']}/"
                f"{check['ties']}) | {pct(s.get('win_rate_vs_base'))} ({s.get('wins')}/{s.get('losses')}/"
                f"{s.get('ties')}) | {s.get('judge_score_base', 0):.2f} -> {s.get('judge_score_expert', 0):.2f} | "
                f"{pct(s.get('invalid_base'))} -> {pct(s.get('invalid_expert'))} |"
            )
    lines.append("")
    lines.append("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
