"""`rlphf pipeline`: every stage, end to end, skipping what is complete.

train-sft -> pairs -> train-rm -> train-expert -> train-arm (GenARM's reward models) -> train-parm (PARM's one
preference-conditioned reward model) -> headroom -> train-pcm -> generate (every registered method) -> eval (the
registry's plan: pcm against every baseline, soups against prompted, genarm against soups, parm against genarm)
-> report -> pareto (each weight-honouring method's front over a weight lattice, HV and MIP). Each stage reads
and writes the run directory, so an interrupted pipeline resumes where it stopped. `seeds=0,1,2` runs the whole
pipeline once per seed, in `<run_dir>/seed<N>`, and closes with a report over the seeds.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from pathlib import Path

from rich.console import Console

from rlphf_cli.methods import NAMES as METHODS
from rlphf_cli.methods import evaluation_plan
from rlphf_cli.runs import RunDir, atomic_write_text

log = logging.getLogger(__name__)
console = Console()


def _call(target: str, cfg):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)(cfg)


def _generate_all(cfg) -> None:
    from rlphf_cli.decoding.generate import ensure_generations

    plan = evaluation_plan()
    first = list(dict.fromkeys(m for m, _ in plan))  # the evaluated methods first (pcm), then the rest
    for method in dict.fromkeys([*first, *METHODS]):
        ensure_generations(cfg, method)


def _evaluate_all(cfg) -> None:
    from rlphf_cli.evaluation.evaluate import evaluate_pair
    from rlphf_cli.judges import get_judge

    judge = get_judge(cfg)
    for method, baseline in evaluation_plan():
        evaluate_pair(cfg, method, baseline, judge)


def _train_arms(cfg) -> None:
    """GenARM's autoregressive reward models, one per pole: `train-expert algo=arm` (saved as arms/<pole>)."""
    from omegaconf import OmegaConf

    from rlphf_cli.training.expert import train_expert

    train_expert(OmegaConf.merge(cfg, {"expert": {"algo": "arm"}}))


def _train_parm(cfg) -> None:
    """PARM: one autoregressive reward model conditioned on the preference weights (`train-expert algo=parm`)."""
    from omegaconf import OmegaConf

    from rlphf_cli.training.expert import train_expert

    train_expert(OmegaConf.merge(cfg, {"expert": {"algo": "parm"}}))


STAGES = [
    ("train-sft", "rlphf_cli.training.sft:train_sft"),
    ("pairs", "rlphf_cli.training.pairs:make_pairs"),
    ("train-rm", "rlphf_cli.training.rm:train_rm"),
    ("train-expert", "rlphf_cli.training.expert:train_expert"),
    ("train-arm", _train_arms),
    ("train-parm", _train_parm),
    ("headroom", "rlphf_cli.evaluation.headroom:headroom"),
    ("train-pcm", "rlphf_cli.training.pcm:train_pcm"),
    ("ablation", "rlphf_cli.training.pcm:train_ablation"),
    ("generate", _generate_all),
    ("eval", _evaluate_all),
    ("report", "rlphf_cli.evaluation.report:report"),
    ("pareto", "rlphf_cli.evaluation.pareto:pareto"),
]


def parse_seeds(spec) -> list[int]:
    from rlphf_cli.errors import UserError

    try:
        seeds = [int(x) for x in str(spec).replace(";", ",").split(",") if x.strip()]
    except ValueError:
        raise UserError(
            f"bad seeds={spec!r}: expected integers separated by commas, e.g. seeds=0,1,2"
        ) from None
    if len(set(seeds)) != len(seeds):
        raise UserError(f"seeds={spec!r} names a seed twice")
    return seeds


def pipeline(cfg) -> Path:
    """The whole pipeline for `seed`, or once per seed of `seeds` (each in `<run_dir>/seed<N>`)."""
    if not cfg.seeds:
        return run_pipeline(cfg)
    from omegaconf import OmegaConf

    seeds = parse_seeds(cfg.seeds)
    root = RunDir(cfg.run_dir).root
    for seed in seeds:
        console.rule(f"[bold]seed {seed} ({seeds.index(seed) + 1} of {len(seeds)})")
        run_pipeline(OmegaConf.merge(cfg, {"run_dir": str(root / f"seed{seed}"), "seed": seed, "seeds": ""}))
    from rlphf_cli.evaluation.seeds import aggregate_markdown

    runs = [root / f"seed{seed}" for seed in seeds]
    from rlphf_cli.evaluation.pareto import seeds_section as pareto_seeds

    text = (
        aggregate_markdown(runs) + "\n" + "\n".join([*seeds_section(runs, cfg), *pareto_seeds(runs)]) + "\n"
    )
    path = root / "summary.md"
    atomic_write_text(path, text)
    console.rule(f"[bold]summary over {len(seeds)} seeds")
    console.print(text)
    console.print(f"written to {path}")
    return path


def run_pipeline(cfg) -> Path:
    from rlphf_cli.benchmarks import get_benchmark
    from rlphf_cli.training.pairs import external_pairs_dir

    run = RunDir(cfg.run_dir)
    skip = {"pairs"} if external_pairs_dir(cfg) else set()
    if not hasattr(get_benchmark(cfg.benchmark), "score"):
        skip.add("headroom")  # it needs a programmatic judge (the synthetic benchmark's); P-Soups has none
        console.print("headroom skipped: the benchmark has no programmatic judge")
    stages = [(name, fn) for name, fn in STAGES if name not in skip]
    timings: list[tuple[str, float]] = []
    for i, (name, target) in enumerate(stages, 1):
        console.rule(f"[bold]stage {i}/{len(stages)}: {name}")
        start = time.perf_counter()
        target(cfg) if callable(target) else _call(target, cfg)
        timings.append((name, time.perf_counter() - start))
        console.print(f"[green]stage {name} done in {timings[-1][1]:.0f}s")
    summary = summarize(run, timings, cfg.seed, cfg)
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


def _parm_checks(run: RunDir) -> list[tuple[str, dict]]:
    """PARM's own-pole checks, shaped as the experts' manifests (one per pole) for the experts table."""
    parm = run.artifact("parm")
    if not parm.is_complete():
        return []
    checks = parm.manifest().get("metrics", {}).get("checks", {})
    return [(pole, {"algo": "parm", "metrics": check}) for pole, check in checks.items()]


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def summarize(run: RunDir, timings: list[tuple[str, float]], seed: int, cfg=None) -> str:
    """The demo's closing page: win rates, mixtures and headroom, the PCM, experts, reward models, time."""
    report = run.root / "eval" / "report.md"
    lines = [
        f"# rlphf pipeline: {run.root.name} (seed {seed}; one seed, no spread: `seeds=0,1,2` gives three)",
        "",
    ]
    if report.exists():
        lines += [report.read_text().strip(), ""]
    if cfg is not None:
        lines += _mixtures_section(run, cfg)
    lines += _pcm_section(run)
    pareto_table = run.root / "pareto" / "table.md"
    if pareto_table.is_file():
        lines += [pareto_table.read_text().strip(), ""]
    parm_rows = _parm_checks(run)
    experts = [*_manifests(run, "experts").items(), *_manifests(run, "arms").items(), *parm_rows]
    if any("win_rate_vs_base" in m.get("metrics", {}) for _, m in experts):  # none without a benchmark judge
        lines += ["## Experts against the base on their own pole (held-out prompts, benchmark judge)", ""]
        if any(m.get("algo") == "arm" for _, m in experts):
            lines += [
                "Rows `arm`: the base guided by the pole's GenARM reward model, against the base alone.",
                "",
            ]
        if parm_rows:
            lines += [
                "Rows `parm`: the base guided by the one PARM at the pole's one-hot weights, against the base alone.",
                "",
            ]
        lines += [
            "| pole | algo | decoding | non-tied win rate % | wins / losses / ties | judge score expert / base | invalid % expert / base |",
            "|---|---|---|---|---|---|---|",
        ]
        for pole, m in experts:
            x = m.get("metrics", {})
            for check in (x, x.get("sampled")):
                if not check or "win_rate_vs_base" not in check:
                    continue
                lines.append(
                    f"| {pole} | {m.get('algo', '?')} | {check.get('decoding', 'greedy')} | {_pct(check['win_rate_vs_base'])} | "
                    f"{check['wins']} / {check['losses']} / {check['ties']} | "
                    f"{check['judge_score_expert']:.3f} / {check['judge_score_base']:.3f} | "
                    f"{_pct(check['invalid_expert'])} / {_pct(check['invalid_base'])} |"
                )
        lines.append("")
    parm = run.artifact("parm")
    accuracy = parm.manifest().get("metrics", {}).get("heldout_accuracy") if parm.is_complete() else None
    if accuracy:
        lines += [
            "PARM: held-out pairwise accuracy % at each pole's one-hot weights: "
            + ", ".join(f"{p} {_pct(a)}" for p, a in accuracy.items())
            + ".",
            "",
        ]
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
    lines += ["## Time per stage", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {sec:.0f} |" for name, sec in timings]
    lines.append(f"| total | {sum(s for _, s in timings):.0f} |")
    return "\n".join(lines) + "\n"


def _mixtures_section(run: RunDir, cfg) -> list[str]:
    """Every method's mean judge score beside the headroom references (the best fixed mixture, the oracle)."""
    from rlphf_cli.evaluation.headroom import method_scores

    headroom = run.root / "headroom" / "results.json"
    h = json.loads(headroom.read_text()) if headroom.is_file() else None
    scores = method_scores(cfg, METHODS, set(h["prompt_ids"]) if h else None)
    if not scores and h is None:
        return []
    lines = [
        "## Mixtures under the benchmark judge (mean score over the combination's poles, held-out prompts)",
        "",
        "An invalid response scores -1 on every pole. The best fixed mixture is chosen per combination on "
        "training prompts from a grid; the sentence oracle switches experts at sentence boundaries using the "
        "judges themselves (an upper reference, not a method). Every row is on the same "
        f"{len(h['prompt_ids']) if h else 'held-out'} prompts x every combination.",
        "",
        "| method | mean judge score | valid % |",
        "|---|---|---|",
    ]
    lines += [f"| {m} | {x['score']:.3f} | {_pct(x['valid'])} |" for m, x in scores.items()]
    if h is not None:
        for key, label in (
            ("best_fixed", "best fixed mixture (grid)"),
            ("sentence_oracle", "sentence oracle"),
        ):
            rows = [c[key] for c in h["combinations"]]
            valid = sum(r["valid"] for r in rows) / len(rows)
            lines.append(f"| {label} | {h['mean'][key]:.3f} | {_pct(valid)} |")
        gain = h["mean"]["sentence_oracle"] - h["mean"]["best_fixed"]
        lines += [
            "",
            f"Headroom: the oracle is {gain:+.3f} above the best fixed mixture and "
            f"{h['mean']['sentence_oracle'] - h['mean']['uniform']:+.3f} above uniform "
            f"(headroom stage, {h['eval_prompts']} prompts x {len(h['combinations'])} combinations).",
        ]
    return [*lines, ""]


def _pcm_section(run: RunDir) -> list[str]:
    pcm = run.artifact("pcm")
    if not pcm.is_complete():
        return []
    manifest = pcm.manifest()
    metrics, history = manifest.get("metrics", {}), manifest.get("history", [])
    lines = ["## The PCM", ""]
    if history:
        n = len(history)
        bounds = sorted({round(i * n / 10) for i in range(11)})  # ten near-equal parts (fewer below 10 steps)
        curve = [
            sum(h["reward"] for h in history[a:b]) / (b - a) for a, b in zip(bounds, bounds[1:], strict=False)
        ]
        lines += [
            f"Training reward (mean normalised reward of its samples), by tenth of {len(history)} steps: "
            + " -> ".join(f"{r:.3f}" for r in curve),
            "",
        ]
    if "pcm_reward" in metrics:
        lines += [
            f"Held-out mean normalised reward: PCM {metrics['pcm_reward']:.3f}, uniform {metrics['uniform_reward']:.3f} "
            f"({metrics['pcm_minus_uniform']:+.3f}) over {metrics['eval_prompts']} prompts x every combination.",
            "",
        ]
    ablations = [f"- {name}: {value}" for name, value in metrics.get("ablations", {}).items()]
    for other in sorted((run.root / "ablations").glob("pcm-*/manifest.json")):
        x = json.loads(other.read_text()).get("metrics", {})
        if "pcm_reward" in x:
            algo = other.parent.name.removeprefix("pcm-")
            ablations.append(
                f"- algorithm: the same PCM trained with {algo.upper()} {x['pcm_reward']:.3f} against "
                f"{manifest.get('config', {}).get('pcm', {}).get('algo', '?').upper()} {metrics.get('pcm_reward', float('nan')):.3f} "
                f"(uniform {x.get('uniform_reward', metrics.get('uniform_reward', float('nan'))):.3f})"
            )
    if ablations:
        lines += ["Ablations (held-out mean normalised reward):", "", *ablations, ""]
    sweep = metrics.get("weight_sweep")
    if sweep:
        lines += [
            "Moving a dimension's weight from one pole to the other (the other dimensions' first poles share "
            "the rest): the judge's mean score on the second pole, held-out prompts:",
            "",
            "| dimension (first -> second pole) | first 0.6 | first 0.2 | second 0.2 | second 0.6 | rising |",
            "|---|---|---|---|---|---|",
            *(
                f"| {dim} ({x['points'][0].split()[0]} -> {x['score_of']}) | "
                + " | ".join(f"{v:.3f}" for v in x["scores"])
                + f" | {'yes' if x['monotone'] else 'no'} |"
                for dim, x in sweep.items()
            ),
            "",
        ]
    by_role = metrics.get("weight_by_token_role")
    if by_role:
        roles = list(next(iter(by_role.values())))
        lines += [
            "Mean PCM weight on each dimension's expert by the decision a token makes (held-out prompts; "
            "uniform would be 0.33 everywhere):",
            "",
            "| expert | " + " | ".join(roles) + " |",
            "|---|" + "---|" * len(roles),
        ]
        lines += [
            f"| {k.replace('_', ' ')} | " + " | ".join(f"{v[r]:.2f}" for r in roles) + " |"
            for k, v in by_role.items()
        ]
        lines.append("")
    by_fifth = metrics.get("weight_by_response_fifth")
    if by_fifth:
        lines += [
            "Mean PCM weight on each dimension's expert, by fifth of the response (held-out prompts):",
            "",
            "| expert | 1st | 2nd | 3rd | 4th | 5th |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {k.replace('_', ' ')} | " + " | ".join(f"{x:.2f}" for x in v) + " |"
            for k, v in by_fifth.items()
        ]
        lines.append("")
    if (pcm.path / "token_weights.png").is_file():
        lines += ["Weights token by token, one response per combination: `pcm/token_weights.png`.", ""]
    return lines


def seeds_section(runs: list[Path], cfg) -> list[str]:
    """The mixtures, the headroom and the PCM's figures over seeds: mean ± sd (min–max) n."""
    from omegaconf import OmegaConf

    from rlphf_cli.evaluation.headroom import method_scores
    from rlphf_cli.evaluation.seeds import spread

    def number(x: float) -> str:
        return f"{x:.3f}"

    rows: dict[str, list[float | None]] = {}
    for i, run in enumerate(runs):
        headroom = run / "headroom" / "results.json"
        h = json.loads(headroom.read_text()) if headroom.is_file() else None
        scores = method_scores(
            OmegaConf.merge(cfg, {"run_dir": str(run)}), METHODS, set(h["prompt_ids"]) if h else None
        )
        values = {m: x["score"] for m, x in scores.items()}
        if h is not None:
            values |= {
                "best fixed mixture (grid)": h["mean"]["best_fixed"],
                "sentence oracle": h["mean"]["sentence_oracle"],
            }
        pcm = RunDir(run).artifact("pcm")
        metrics = pcm.manifest().get("metrics", {}) if pcm.is_complete() else {}
        for key, label in (
            ("pcm_reward", "PCM held-out normalised reward"),
            ("uniform_reward", "uniform held-out normalised reward"),
            ("pcm_log_mixing_reward", "PCM weights in log space (ablation)"),
        ):
            if key in metrics:
                values[label] = metrics[key]
        for other in sorted((run / "ablations").glob("pcm-*/manifest.json")):
            x = json.loads(other.read_text()).get("metrics", {})
            if "pcm_reward" in x:
                values[f"PCM trained with {other.parent.name.removeprefix('pcm-').upper()} (ablation)"] = x[
                    "pcm_reward"
                ]
        for role, by_dim in _role_rows(metrics).items():
            values[role] = by_dim
        for key, value in values.items():
            rows.setdefault(key, [None] * len(runs))[i] = value
    if not rows:
        return []
    lines = [
        "## Mixtures, headroom and the PCM over seeds (benchmark judge; mean ± sd (min–max) n)",
        "",
        "Mean judge scores over the combination's poles on the headroom stage's prompts; normalised rewards from "
        "train-pcm's held-out comparison; PCM weights by the decision a token makes.",
        "",
        "| figure | over seeds |",
        "|---|---|",
    ]
    lines += [f"| {key} | {spread(values, number)} |" for key, values in rows.items()]
    return [*lines, ""]


def _role_rows(metrics: dict) -> dict[str, float]:
    return {
        f"PCM weight, {dim.removeprefix('expert_of_dimension_')} expert, {role}": w
        for dim, by_role in metrics.get("weight_by_token_role", {}).items()
        for role, w in by_role.items()
    }
