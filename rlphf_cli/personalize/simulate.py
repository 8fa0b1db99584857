"""`rlphf personalize mode=simulate`: synthetic users with hidden signed strengths answer through the judges.

Each user's strengths are a random direction (Gaussian, normalised) times `personalize.user_scale`; an answer
to a pair is A with probability sigmoid(lambda . (phi(A) - phi(B))) (Bradley-Terry noise). Questions come from
the candidate pairs of two thirds of the candidate prompts; held-out answers (`heldout_pairs` per user, the
user's own noisy answers) from the other third. For every budget and for active (PReF's criterion) and random
questions: the cosine between inferred and hidden strengths and the accuracy on the held-out answers.

Downstream (the costly part, so only at `downstream_budget` answers, active questions, the first
`downstream_users` users and the first `downstream_prompts` evaluation prompts): pcm and mod decode with each
user's inferred mixture weights; the references are the unpersonalised uniform mixture of every expert, the
uniform mixture of the user's inferred poles (signs only, no weights), pcm and mod with equal weights over
the inferred poles (what the weights add beyond the signs), and the base. Every response is scored
by the user's hidden reward lambda . phi (an invalid response gets the lowest possible, -|lambda|_1); a
method wins a (user, prompt) when its reward is higher, ties count half; CIs bootstrap over users.

Written to `personalize/simulate/` (results.json, table.md, curves.png); the decoded responses are kept in
`personalize/generations/` so that a re-run resumes.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from rlphf_cli.benchmarks import get_benchmark
from rlphf_cli.config import to_dict
from rlphf_cli.decoding.generate import Generator, method_settings
from rlphf_cli.errors import UserError
from rlphf_cli.generations import GenerationsFile
from rlphf_cli.methods import get_method
from rlphf_cli.personalize.candidates import Features, candidate_pairs, ensure_candidates, pair_pool
from rlphf_cli.personalize.model import (
    Posterior,
    cosine,
    fit,
    mixture,
    most_uncertain,
    sigmoid,
    two_pole_dimensions,
)
from rlphf_cli.preferences import Preference, parse_weighted_preferences
from rlphf_cli.runs import RunDir, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

STRATEGIES = ("active", "random")


def hidden_users(n: int, dims: int, scale: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 7])
    x = rng.normal(size=(n, dims))
    return scale * x / np.linalg.norm(x, axis=1, keepdims=True)


def ask(
    lam: np.ndarray,
    pool: np.ndarray,
    budgets: list[int],
    strategy: str,
    l2: float,
    rng,
) -> dict[int, Posterior]:
    """One user answering up to max(budgets) questions; the posterior at each budget."""
    asked: list[int] = []
    choices: list[str] = []
    order = rng.permutation(len(pool))
    out = {}
    post = Posterior.prior(pool.shape[1], l2)
    for t in range(1, max(budgets) + 1):
        idx = most_uncertain(post, pool, asked) if strategy == "active" else int(order[t - 1])
        asked.append(idx)
        choices.append("A" if rng.random() < sigmoid(pool[idx] @ lam) else "B")
        post = fit(pool[asked], choices, l2)
        if t in budgets:
            out[t] = post
    return out


def bootstrap_ci(values: np.ndarray, samples: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(samples, len(values)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def simulate(cfg) -> Path:
    pc = cfg.personalize
    bench = get_benchmark(cfg.benchmark)
    dims = two_pole_dimensions(bench.poles)
    budgets = sorted({int(b) for b in pc.budgets})
    if not budgets or budgets[0] < 1:
        raise UserError(f"personalize.budgets must be positive answer counts, got {list(pc.budgets)}")
    if pc.downstream_users > 0 and pc.downstream_budget not in budgets:
        raise UserError(
            f"personalize.downstream_budget={pc.downstream_budget} is not one of personalize.budgets"
        )
    features = Features(cfg, dims)
    if features.kind != "judge":
        raise UserError(
            "mode=simulate needs the benchmark's judge (personalize.reward=judge): its users answer through it"
        )
    groups = candidate_pairs(ensure_candidates(cfg), features)
    ids = sorted(groups)
    np.random.default_rng([pc.seed, 3]).shuffle(ids)
    n_held = max(1, len(ids) // 3)
    pool_pairs, pool = pair_pool(groups, ids[n_held:])
    _, held = pair_pool(groups, ids[:n_held])
    if len(pool) < budgets[-1] or len(held) == 0:
        raise UserError(
            f"only {len(pool)} candidate pairs to ask and {len(held)} held out (need {budgets[-1]} and some): "
            "raise personalize.candidate_prompts"
        )
    log.info(
        "simulate: %d users, %d candidate pairs to ask (%d prompts), %d held out (%d prompts)",
        pc.users,
        len(pool),
        len(ids) - n_held,
        len(held),
        n_held,
    )
    users = hidden_users(pc.users, len(dims), pc.user_scale, pc.seed)
    rows, inferred = [], {}
    for u, lam in enumerate(users):
        rng = np.random.default_rng([pc.seed, 11, u])
        h = rng.choice(len(held), size=min(pc.heldout_pairs, len(held)), replace=False)
        answers_a = rng.random(len(h)) < sigmoid(held[h] @ lam)
        oracle = float(np.mean((held[h] @ lam > 0) == answers_a))
        for s, strategy in enumerate(STRATEGIES):
            posts = ask(lam, pool, budgets, strategy, pc.l2, np.random.default_rng([pc.seed, 13, u, s]))
            for b, post in posts.items():
                inferred[(u, strategy, b)] = post
                rows.append(
                    {
                        "user": u,
                        "strategy": strategy,
                        "budget": b,
                        "cosine": cosine(post.mean, lam),
                        "accuracy": float(np.mean((held[h] @ post.mean > 0) == answers_a)),
                        "oracle_accuracy": oracle,
                        "strengths": post.mean.tolist(),
                    }
                )
    curves = curve_table(rows, budgets)
    downstream = None
    if pc.downstream_users > 0:
        downstream = downstream_gain(cfg, bench, dims, users[: pc.downstream_users], inferred, features)
    results = {
        "users": pc.users,
        "user_scale": pc.user_scale,
        "l2": pc.l2,
        "dimensions": {d: list(p) for d, p in dims.items()},
        "candidate_pairs": {"asked_from": len(pool), "held_out": len(held)},
        "hidden_strengths": users.tolist(),
        "curves": curves,
        "downstream": downstream,
        "rows": rows,
    }
    art = RunDir(cfg.run_dir).artifact("personalize/simulate")
    work = art.start()
    atomic_write_json(work / "results.json", results)
    text = markdown(results)
    atomic_write_text(work / "table.md", text)
    plot(curves, work / "curves.png")
    art.commit("personalize-simulate", to_dict(cfg))
    print(text)
    log.info("wrote %s", art.path)
    return art.path


def curve_table(rows: list[dict], budgets: list[int]) -> list[dict]:
    out = []
    for b in budgets:
        entry = {"budget": b}
        for strategy in STRATEGIES:
            sel = [r for r in rows if r["budget"] == b and r["strategy"] == strategy]
            for key in ("cosine", "accuracy"):
                x = np.array([r[key] for r in sel])
                entry[f"{key}_{strategy}"] = float(x.mean())
                entry[f"{key}_{strategy}_se"] = float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0
        for key in ("cosine", "accuracy"):
            act = {r["user"]: r[key] for r in rows if r["budget"] == b and r["strategy"] == "active"}
            ran = {r["user"]: r[key] for r in rows if r["budget"] == b and r["strategy"] == "random"}
            diff = np.array([act[u] - ran[u] for u in act])
            entry[f"{key}_active_minus_random"] = float(diff.mean())
            entry[f"{key}_active_minus_random_ci"] = bootstrap_ci(diff, 1000, b) if len(diff) > 1 else None
        entry["oracle_accuracy"] = float(np.mean([r["oracle_accuracy"] for r in rows if r["budget"] == b]))
        out.append(entry)
    return out


def user_preference(strengths: np.ndarray, dims, poles, name: str) -> Preference:
    mix = mixture(strengths, dims)
    (pref,) = parse_weighted_preferences(",".join(f"{p}:{w!r}" for p, w in mix.items()), poles)
    return Preference(pref.combination, pref.weights, user=name)


def downstream_gain(cfg, bench, dims, users: np.ndarray, inferred: dict, features: Features) -> dict:

    pc = cfg.personalize
    prompts = bench.eval_prompts()[: pc.downstream_prompts]
    personal = [
        user_preference(inferred[(u, "active", pc.downstream_budget)].mean, dims, bench.poles, f"sim{u}")
        for u in range(len(users))
    ]
    every = Preference(tuple(bench.poles), (1.0 / len(bench.poles),) * len(bench.poles))
    signs = [Preference(p.combination, (1.0 / len(p.combination),) * len(p.combination)) for p in personal]
    arms = {  # label -> (method, preference of each user)
        "pcm": ("pcm", personal),
        "mod": ("mod", personal),
        "pcm (inferred poles, equal weights)": ("pcm", signs),
        "mod (inferred poles, equal weights)": ("mod", signs),
        "uniform (all experts)": ("uniform", [every] * len(users)),
        "uniform (inferred poles)": ("uniform", signs),
        "base": ("sft", [every] * len(users)),
    }
    references = ["uniform (all experts)", "uniform (inferred poles)", "base"]
    comparisons = [("pcm", b) for b in [*references, "pcm (inferred poles, equal weights)", "mod"]]
    comparisons += [("mod", b) for b in [*references, "mod (inferred poles, equal weights)"]]
    texts: dict[str, dict[tuple[str, str], dict]] = {}
    for method in dict.fromkeys(m for m, _ in arms.values()):
        prefs = list(dict.fromkeys(p for label, (m, ps) in arms.items() if m == method for p in ps))
        out = GenerationsFile(cfg.run_dir, method, folder="personalize/generations")
        settings = {**method_settings(cfg, method), "prompts": f"{cfg.benchmark.name}:eval[:{len(prompts)}]"}
        out.check_settings(settings)
        done = {(r["prompt_id"], r["combination"]) for r in out.read()}
        todo = [(p, pref) for pref in prefs for p in prompts if (p.id, pref.name) not in done]
        if todo:
            log.info("simulate: decoding %d %s responses", len(todo), method)
            mixing = get_method(method).mixing_space(cfg)
            Generator(cfg, method, mixing, settings).run(todo, out)
        texts[method] = {(r["prompt_id"], r["combination"]): r for r in out.read()}
    # reward[label] [users, prompts] under each user's hidden reward, as a share of its largest value
    reward = {}
    for label, (method, prefs) in arms.items():
        recs = [[texts[method][(p.id, pref.name)] for p in prompts] for pref in prefs]
        flat = [r for user in recs for r in user]
        phi, valid = features([r["prompt"] for r in flat], [r["text"] for r in flat])
        phi, valid = phi.reshape(len(users), len(prompts), -1), valid.reshape(len(users), len(prompts))
        scale = np.abs(users).sum(1)[:, None]
        reward[label] = np.where(valid, np.einsum("upd,ud->up", phi, users) / scale, -1.0)
    out = {
        "budget": pc.downstream_budget,
        "users": len(users),
        "prompts": len(prompts),
        "mean_reward": {},
        "win_rates": [],
    }
    for label, r in reward.items():
        out["mean_reward"][label] = {"mean": float(r.mean()), "valid": float((r > -1).mean())}
    for method, baseline in comparisons:
        d = reward[method] - reward[baseline]
        per_user = np.where(np.abs(d) <= 1e-9, 0.5, (d > 0).astype(float)).mean(1)
        low, high = bootstrap_ci(per_user, pc.bootstrap_samples, pc.seed)
        out["win_rates"].append(
            {
                "method": method,
                "baseline": baseline,
                "win_rate": float(per_user.mean()),
                "ci": [low, high],
                "comparisons": int(d.size),
            }
        )
    return out


def markdown(results: dict) -> str:
    lines = [
        f"### Personalization, simulated ({results['users']} users, hidden strength norm {results['user_scale']:g}, "
        f"L2 {results['l2']:g})",
        "",
        f"Questions from {results['candidate_pairs']['asked_from']} candidate pairs; held-out answers from "
        f"{results['candidate_pairs']['held_out']} pairs of other prompts. Mean over users ± standard error; "
        "`active − random`: mean paired difference [95% bootstrap CI].",
        "",
        "| answers | cosine active | cosine random | active − random | held-out acc. active | held-out acc. random "
        "| active − random | acc. of hidden weights |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def ci(c):
        return f"[{c[0]:+.3f}, {c[1]:+.3f}]" if c else ""

    for e in results["curves"]:
        lines.append(
            f"| {e['budget']} | {e['cosine_active']:.3f} ± {e['cosine_active_se']:.3f} "
            f"| {e['cosine_random']:.3f} ± {e['cosine_random_se']:.3f} "
            f"| {e['cosine_active_minus_random']:+.3f} {ci(e['cosine_active_minus_random_ci'])} "
            f"| {e['accuracy_active']:.3f} ± {e['accuracy_active_se']:.3f} "
            f"| {e['accuracy_random']:.3f} ± {e['accuracy_random_se']:.3f} "
            f"| {e['accuracy_active_minus_random']:+.3f} {ci(e['accuracy_active_minus_random_ci'])} "
            f"| {e['oracle_accuracy']:.3f} |"
        )
    d = results.get("downstream")
    if d:
        lines += [
            "",
            f"Downstream: each user's weights inferred from {d['budget']} active answers, {d['users']} users x "
            f"{d['prompts']} evaluation prompts, scored by the user's hidden reward (share of its maximum; "
            "an invalid response is -1).",
            "",
            "| decoded with | mean reward | valid |",
            "|---|---|---|",
        ]
        for label, m in d["mean_reward"].items():
            lines.append(f"| {label} | {m['mean']:+.3f} | {100 * m['valid']:.0f}% |")
        lines += [
            "",
            "| method | baseline | win rate (%) | 95% CI (users) | comparisons |",
            "|---|---|---|---|---|",
        ]
        for w in d["win_rates"]:
            lines.append(
                f"| {w['method']} (personalized) | {w['baseline']} | {100 * w['win_rate']:.1f} "
                f"| {100 * w['ci'][0]:.1f}–{100 * w['ci'][1]:.1f} | {w['comparisons']} |"
            )
    return "\n".join(lines) + "\n"


def plot(curves: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4))
    budgets = [e["budget"] for e in curves]
    for i, key in enumerate(("cosine", "accuracy")):
        ax = fig.add_subplot(1, 2, i + 1)
        for strategy in STRATEGIES:
            y = np.array([e[f"{key}_{strategy}"] for e in curves])
            se = np.array([e[f"{key}_{strategy}_se"] for e in curves])
            ax.errorbar(budgets, y, yerr=se, marker="o", capsize=3, label=strategy)
        if key == "accuracy":
            ax.plot(budgets, [e["oracle_accuracy"] for e in curves], "k--", label="hidden weights")
        ax.set_xscale("log")
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.set_xlabel("answers")
        ax.set_ylabel("cosine to hidden strengths" if key == "cosine" else "held-out answer accuracy")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
