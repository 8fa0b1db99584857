"""`rlphf pareto`: every weight-honouring method decoded on a lattice of weights over each objective set; the
mean score per objective of each (method, weight) is a point, a method's non-dominated points its front.

For each objective set (two or three poles), each method that takes weights decodes every (prompt, weight)
row of every set in one mixed-preference stream (`decode_method`); methods that take none (sft, prompted
for the set's combination, uniform) decode once per set and are reference markers. Each objective has a
scorer (`pareto_scorers.py`); per prompt scores are kept. Written under `<run_dir>/pareto/`:

- `generations/<method>.jsonl`: the decoded rows (resumable, like `generations/`);
- `<set>/<method>/eval_data_pref<w1>_<w2>.csv`: MOD's layout, `prompt, response, obtained_score1, ...`, and
  `means_pref<w1>_<w2>.json`, the means with 95% bootstrap intervals over prompts;
- `<set>/results.json`: the reference point, every point, each method's Pareto set, hypervolume (exact) and
  MIP with 95% bootstrap intervals; `<set>/front.png|svg`: the figure;
- `results.json` (every set) and `table.md` (HV and MIP per method and set).
"""

from __future__ import annotations

import csv
import json
import logging
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlphf_cli.errors import UserError
from rlphf_cli.evaluation.pareto_metrics import (
    MOD_SIMPLEX_3,
    bootstrap_fronts,
    hypervolume,
    mip,
    pareto_mask,
    simplex_lattice,
)
from rlphf_cli.preferences import Preference, check_poles, format_weight
from rlphf_cli.runs import RunDir, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

FOLDER = "pareto"


def method_table() -> dict[str, bool]:
    """Every registered method and whether it takes weights (`Method.takes_weights`): the ONE place the sweep
    learns which methods exist and which are decoded across weights (the others are reference points)."""
    from rlphf_cli.methods import all_methods

    return {m.name: m.takes_weights for m in all_methods()}


@dataclass(frozen=True)
class SweepMethod:
    label: str  # its name in files and tables: soups, soups-ties_svd, mod, ...
    method: str  # the decoding method
    takes_weights: bool
    generate: dict = field(default_factory=dict, hash=False, compare=False)  # generate.* for this method


def default_methods() -> list[str]:
    """Every registered method, those that take weights first; soups also with the TIES and DARE merges."""
    from rlphf_cli.decoding.soups import SVD_MERGES
    from rlphf_cli.methods import get_method

    table = method_table()
    out = []
    for name in sorted(table, key=lambda n: not table[n]):
        out.append(name)
        if "merge" in get_method(name).settings_keys:
            out += [f"{name}:{merge}" for merge in SVD_MERGES]
    return out


def sweep_methods(cfg) -> list[SweepMethod]:
    """`pareto.methods` resolved: `soups:<merge>` is soups with another merge (`generate.soups_merge`)."""
    from rlphf_cli.decoding.soups import MERGES
    from rlphf_cli.methods import get_method

    table = method_table()
    out = []
    for spec in list(cfg.pareto.methods) or default_methods():
        method, _, merge = str(spec).partition(":")
        if method not in table:
            raise UserError(f"unknown pareto method {spec!r}; valid: {', '.join(table)} (soups:<merge>)")
        takes_merge = "merge" in get_method(method).settings_keys  # soups's generate.soups_merge
        if merge and (not takes_merge or merge not in MERGES):
            raise UserError(
                f"bad pareto method {spec!r}: only soups takes a merge, one of {', '.join(MERGES)}"
            )
        label = f"{method}-{merge}" if merge else method
        extra = {"soups_merge": merge} if merge else {}
        out.append(SweepMethod(label, method, table[method], extra))
    labels = [m.label for m in out]
    if len(set(labels)) != len(labels):
        raise UserError(f"pareto.methods names a method twice: {', '.join(labels)}")
    return out


def objective_sets(cfg) -> list[tuple[str, ...]]:
    """`pareto.objective_sets`: `P1A,P1B;P2A,P3A;...`, each two or three distinct poles of the benchmark."""
    sets = []
    for part in str(cfg.pareto.objective_sets).split(";"):
        if not part.strip():
            raise UserError(f"empty objective set in pareto.objective_sets={cfg.pareto.objective_sets!r}")
        poles = tuple(check_poles([p for p in part.split(",") if p.strip()], list(cfg.benchmark.poles)))
        if not 2 <= len(poles) <= 3 or len(set(poles)) != len(poles):
            raise UserError(f"objective set {part!r}: give two or three distinct poles")
        sets.append(poles)
    return sets


# `pareto.simplex`, three objectives: MOD's 13 weight vectors, or every point of the lattice
SIMPLEXES = {"mod": MOD_SIMPLEX_3, "lattice": None}


def weight_grid(cfg, n_objectives: int) -> list[tuple[float, ...]]:
    p = cfg.pareto
    if n_objectives == 3 and SIMPLEXES[p.simplex] is not None:
        return list(SIMPLEXES[p.simplex])
    return simplex_lattice(n_objectives, p.lattice)


def check_pareto(cfg) -> None:
    """Everything of the `pareto` section that can be checked before decoding (exit 2 on a bad value)."""
    from rlphf_cli.evaluation.pareto_scorers import check_template, parse_scorer_specs

    p = cfg.pareto
    if p.lattice < 2:
        raise UserError(f"pareto.lattice must be at least 2 (points per axis); got {p.lattice}")
    if p.simplex not in SIMPLEXES:
        raise UserError(f"unknown pareto.simplex {p.simplex!r}; valid: {', '.join(SIMPLEXES)}")
    for key in ("prompts", "bootstrap_samples"):
        if p[key] < 0:
            raise UserError(f"pareto.{key} must be at least 0; got {p[key]}")
    if p.batch_size < 1 or (p.max_new_tokens is not None and p.max_new_tokens < 1):
        raise UserError("pareto.batch_size and pareto.max_new_tokens must be at least 1")
    sets = objective_sets(cfg)
    sweep_methods(cfg)
    check_template(p.hf_template)
    parse_scorer_specs(p.scorer, p.scorers, sorted({o for s in sets for o in s}))
    for s in sets:
        reference_point(p.reference, len(s))


def reference_point(spec: str, n: int) -> list[float] | None:
    """`pareto.reference`: auto (None) or n numbers."""
    if str(spec).strip() == "auto":
        return None
    try:
        ref = [float(x) for x in str(spec).split(",")]
    except ValueError:
        raise UserError(f"bad pareto.reference {spec!r}: auto or one number per objective") from None
    if len(ref) != n:
        raise UserError(f"pareto.reference {spec!r} has {len(ref)} numbers; an objective set has {n}")
    return ref


def set_name(objectives) -> str:
    return "-".join(objectives)


def weights_tag(weights) -> str:
    """MOD's file-name form of a weight vector: 0.3_0.7."""
    return "_".join(format_weight(w) for w in weights)


# --- decoding


def method_config(cfg, m: SweepMethod):
    from omegaconf import OmegaConf

    p = cfg.pareto
    g = {"greedy": bool(p.greedy), "batch_size": int(p.batch_size), **m.generate}
    if p.max_new_tokens is not None:
        g["max_new_tokens"] = int(p.max_new_tokens)
    return OmegaConf.merge(cfg, {"generate": g})


def decode_method(cfg, m: SweepMethod, rows: list[tuple]) -> dict[tuple[str, str], dict]:
    """Decode the rows (prompt, preference) of one method that are not decoded yet, all in one mixed stream;
    return every record by (prompt id, preference name). The one place the sweep decodes."""
    from rlphf_cli.config import to_dict
    from rlphf_cli.decoding.generate import Generator, method_settings
    from rlphf_cli.generations import GenerationsFile
    from rlphf_cli.methods import get_method

    mcfg = method_config(cfg, m)
    out = GenerationsFile(cfg.run_dir, m.label, folder=f"{FOLDER}/generations")
    settings = method_settings(mcfg, m.method)
    out.check_settings(settings, cfg.force)
    done = {(r["prompt_id"], r["combination"]) for r in out.read()}
    todo = [(p, pref) for p, pref in rows if (p.id, pref.name) not in done]
    if todo:
        log.info("pareto %s: %d of %d (prompt, weight) rows to decode", m.label, len(todo), len(rows))
        Generator(mcfg, m.method, get_method(m.method).mixing_space(mcfg), settings).run(todo, out)
    records = {(r["prompt_id"], r["combination"]): r for r in out.read()}
    out.commit(to_dict(mcfg), method=m.label, records=len(records), settings=settings)
    return records


# --- the sweep


def pareto(cfg) -> Path:
    """`rlphf pareto` (and the pipeline's stage): decode, score, and write fronts, HV, MIP, figures, table."""
    from rlphf_cli.decoding.generate import load_eval_prompts
    from rlphf_cli.evaluation.pareto_scorers import make_scorers

    start = time.perf_counter()
    check_pareto(cfg)
    sets = objective_sets(cfg)
    methods = sweep_methods(cfg)
    prompts = load_eval_prompts(cfg)
    if cfg.pareto.prompts:
        prompts = prompts[: cfg.pareto.prompts]
    if not prompts:
        raise UserError("pareto: no evaluation prompts")
    grids = {s: weight_grid(cfg, len(s)) for s in sets}
    prefs = {
        s: [Preference(s, tuple(w)) for w in grids[s]] for s in sets
    }  # weighted methods: every lattice point
    equal = {s: Preference(s, (1.0 / len(s),) * len(s)) for s in sets}  # reference methods: the combination
    records = {}
    for m in methods:
        wanted = [pref for s in sets for pref in (prefs[s] if m.takes_weights else [equal[s]])]
        rows = [(p, pref) for pref in dict.fromkeys(wanted) for p in prompts]
        records[m.label] = decode_method(cfg, m, rows)
    objectives = sorted({o for s in sets for o in s})
    scorers = make_scorers(cfg, objectives)
    scores = score_records(scorers, records, sets, methods, prompts, prefs, equal)
    root = RunDir(cfg.run_dir).root / FOLDER
    results = {}
    for s in sets:
        results[set_name(s)] = write_set(
            cfg, root / set_name(s), s, methods, prompts, prefs[s], equal[s], records, scores, scorers
        )
    summary = {
        "objective_sets": [list(s) for s in sets],
        "methods": {
            m.label: {"method": m.method, "takes_weights": m.takes_weights, **m.generate} for m in methods
        },
        "prompts": len(prompts),
        "bootstrap_samples": cfg.pareto.bootstrap_samples,
        "decoding": {
            "greedy": bool(cfg.pareto.greedy),
            "max_new_tokens": cfg.pareto.max_new_tokens or cfg.generate.max_new_tokens,
        },
        "sets": results,
        "seconds": time.perf_counter() - start,
    }
    atomic_write_json(root / "results.json", summary)
    atomic_write_text(root / "table.md", "\n".join(table_lines(summary)) + "\n")
    log.info("pareto: %d objective sets x %d methods in %.0f s", len(sets), len(methods), summary["seconds"])
    from rich.console import Console

    Console().print("\n".join(table_lines(summary)), markup=False, highlight=False)
    return root


def score_records(scorers, records, sets, methods, prompts, prefs, equal) -> dict:
    """Per (method, set, preference name): [prompts, objectives] scores, each (prompt, text) scored once."""
    needed: dict[str, dict[tuple[str, str], float | None]] = {o: {} for o in scorers}
    for m in methods:
        for s in sets:
            for pref in prefs[s] if m.takes_weights else [equal[s]]:
                for p in prompts:
                    r = records[m.label][(p.id, pref.name)]
                    for o in s:
                        needed[o][(p.text, r["text"])] = None
    for o, pairs in needed.items():
        keys = list(pairs)
        values = scorers[o].score(o, [k[0] for k in keys], [k[1] for k in keys]) if keys else []
        pairs.update(zip(keys, values, strict=True))
    out = {}
    for m in methods:
        for s in sets:
            for pref in prefs[s] if m.takes_weights else [equal[s]]:
                out[(m.label, s, pref.name)] = np.array(
                    [
                        [needed[o][(p.text, records[m.label][(p.id, pref.name)]["text"])] for o in s]
                        for p in prompts
                    ],
                    dtype=float,
                )
    return out


def write_set(
    cfg, folder: Path, objectives, methods, prompts, prefs, equal, records, scores, scorers
) -> dict:
    """One objective set: CSVs and means per (method, weight), the Pareto sets, HV and MIP, the figure."""
    from rlphf_cli.evaluation.scoring import bootstrap_ci

    samples, seed = cfg.pareto.bootstrap_samples, cfg.seed
    ids = [p.id for p in prompts]
    points: dict[str, list[dict]] = {}
    arrays: dict[str, np.ndarray] = {}
    weights: dict[str, np.ndarray] = {}
    for m in methods:
        rows = prefs if m.takes_weights else [equal]
        points[m.label] = []
        for pref in rows:
            s = scores[(m.label, objectives, pref.name)]
            tag = weights_tag(pref.weights)
            stem = f"pref{tag}" if m.takes_weights else "reference"
            write_csv(folder / m.label / f"eval_data_{stem}.csv", prompts, records[m.label], pref, s)
            point = {
                "weights": list(pref.weights),
                "means": s.mean(axis=0).tolist(),
                "ci_low": [],
                "ci_high": [],
            }
            for j, o in enumerate(objectives):
                key = zlib.crc32(f"{m.label}|{pref.name}|{o}".encode())
                ci = bootstrap_ci(ids, s[:, j].tolist(), samples, seed + key)
                point["ci_low"].append(ci[0] if ci else None)
                point["ci_high"].append(ci[1] if ci else None)
            atomic_write_json(
                folder / m.label / f"means_{stem}.json",
                {"objectives": list(objectives), "prompts": len(ids), "bootstrap_samples": samples, **point},
            )
            points[m.label].append(point)
        arrays[m.label] = np.stack([scores[(m.label, objectives, pref.name)] for pref in rows])
        # a method without weights is scored on the lattice's weight vectors too: what ignoring them gets
        weights[m.label] = np.array([pref.weights for pref in prefs])
    all_means = np.array([pt["means"] for pts in points.values() for pt in pts])
    declared = [scorers[o].score_range for o in objectives]
    ref = reference_point(cfg.pareto.reference, len(objectives))
    if ref is None:
        ref = [d[0] if d else float(all_means[:, j].min()) for j, d in enumerate(declared)]
    top = [d[1] if d else float(all_means[:, j].max()) for j, d in enumerate(declared)]
    scale = [(t - r) if t > r else 1.0 for t, r in zip(top, ref, strict=True)]
    mip_arrays = {
        label: (a if a.shape[0] == len(prefs) else np.repeat(a, len(prefs), axis=0))
        for label, a in arrays.items()
    }
    cis = bootstrap_fronts(mip_arrays, weights, ref, scale, samples, seed)
    out_methods = {}
    for m in methods:
        means = np.array([pt["means"] for pt in points[m.label]])
        mask = pareto_mask(means)
        for pt, on in zip(points[m.label], mask, strict=True):
            pt["pareto"] = bool(on)
        out_methods[m.label] = {
            "method": m.method,
            "takes_weights": m.takes_weights,
            "points": points[m.label],
            "pareto_set": [pt["weights"] for pt in points[m.label] if pt["pareto"]],
            "hv": hypervolume(means, ref),
            "hv_ci": cis[m.label]["hv"],
            "mip": mip(weights[m.label], mip_arrays[m.label].mean(axis=1), ref, scale),
            "mip_ci": cis[m.label]["mip"],
        }
    result = {
        "objectives": list(objectives),
        "scorers": {o: scorers[o].describe(o) for o in objectives},
        "reference_point": ref,
        "reference": "declared" if cfg.pareto.reference != "auto" else "auto",
        "mip_scale": scale,
        "weights": [list(p.weights) for p in prefs],
        "prompts": len(ids),
        "methods": out_methods,
    }
    from rlphf_cli.evaluation.pareto_plot import plot_front

    result["figures"] = [str(p) for p in plot_front(result, folder / "front")]
    atomic_write_json(folder / "results.json", result)
    return result


def write_csv(path: Path, prompts, records: dict, pref: Preference, scores: np.ndarray) -> None:
    """MOD's layout: prompt, response, obtained_score1, obtained_score2, ..."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.partial")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "response", *(f"obtained_score{j + 1}" for j in range(scores.shape[1]))])
        for p, row in zip(prompts, scores, strict=True):
            w.writerow([p.text, records[(p.id, pref.name)]["text"], *(f"{x:.6g}" for x in row)])
    tmp.replace(path)


# --- tables


def _interval(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "—"


def table_lines(summary: dict) -> list[str]:
    lines = [
        "## Pareto fronts: hypervolume and MIP per method",
        "",
        f"{summary['prompts']} prompts; {'greedy' if summary['decoding']['greedy'] else 'sampled'}, up to "
        f"{summary['decoding']['max_new_tokens']} new tokens. HV: the area (volume, for three objectives) the "
        "method's points dominate above the reference point; MIP: the mean over the weight vectors of "
        "<weights, (score - reference) / scale>. Methods without weights (sft, prompted, uniform) are one point, "
        "scored against every weight vector for MIP. [95% bootstrap interval over prompts].",
        "",
    ]
    for name, r in summary["sets"].items():
        ref = ", ".join(f"{x:.3f}" for x in r["reference_point"])
        scorers = ", ".join(f"{o}: {r['scorers'][o]['scorer']}" for o in r["objectives"])
        lines += [
            f"### {' vs '.join(r['objectives'])} ({len(r['weights'])} weight vectors; reference point ({ref}); "
            f"scorers {scorers})",
            "",
            "| method | points | on its front | HV | HV 95% CI | MIP | MIP 95% CI |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, x in r["methods"].items():
            lines.append(
                f"| {label}{'' if x['takes_weights'] else ' (reference)'} | {len(x['points'])} | "
                f"{len(x['pareto_set'])} | {x['hv']:.4f} | {_interval(x['hv_ci'])} | {x['mip']:.3f} | "
                f"{_interval(x['mip_ci'])} |"
            )
        lines += ["", f"Figure: `{', '.join(Path(f).name for f in r['figures'])}` in `pareto/{name}/`.", ""]
    return lines


def seeds_section(runs: list[Path]) -> list[str]:
    """HV and MIP per objective set and method over seeds: mean ± sd (min–max) n."""
    from rlphf_cli.evaluation.seeds import spread

    rows: dict[tuple[str, str], dict[str, list[float | None]]] = {}
    for i, run in enumerate(runs):
        path = Path(run) / FOLDER / "results.json"
        if not path.is_file():
            continue
        for name, r in json.loads(path.read_text()).get("sets", {}).items():
            for label, x in r["methods"].items():
                cell = rows.setdefault((name, label), {"hv": [None] * len(runs), "mip": [None] * len(runs)})
                cell["hv"][i], cell["mip"][i] = x["hv"], x["mip"]
    if not rows:
        return []
    lines = [
        "## Pareto fronts over seeds (hypervolume and MIP; mean ± sd (min–max) n)",
        "",
        "| objectives | method | HV | MIP |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name.replace('-', ' vs ')} | {label} | {spread(v['hv'], lambda x: f'{x:.4f}')} | "
        f"{spread(v['mip'], lambda x: f'{x:.3f}')} |"
        for (name, label), v in rows.items()
    ]
    return [*lines, ""]
