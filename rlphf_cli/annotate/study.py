"""A study: the items raters see, drawn once from a run's generations and kept in
`annotations/<study>.study.json`, and the raters' answers, appended to `annotations/<study>.jsonl`.

An item is one prompt and combination with two methods' responses, shown as A and B after a seeded
left/right swap (recorded). Kinds: `regular` (what the win rates count), `gold` (a pair the benchmark's
judge finds clear-cut on every pole: an attention check with a known answer) and `repeat` (a regular item
asked again later with the sides swapped: a consistency check). The method names stay on the server.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from pathlib import Path

from rlphf_cli.errors import UserError
from rlphf_cli.evaluation import generations
from rlphf_cli.evaluation.generations import Pair
from rlphf_cli.generations import GenerationsFile, check_method
from rlphf_cli.preferences import POLES
from rlphf_cli.runs import RunDir, atomic_write_json, content_hash, read_jsonl

log = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
CHOICES = ("A", "B", "TIE")


def check_study_name(name) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UserError(f"a study name is 1 to 64 letters, digits, _ or - (got {name!r})")
    return name


def folder(run_dir) -> Path:
    return RunDir(run_dir).root / "annotations"


def study_path(run_dir, study: str) -> Path:
    return folder(run_dir) / f"{check_study_name(study)}.study.json"


def answers_path(run_dir, study: str) -> Path:
    return folder(run_dir) / f"{check_study_name(study)}.jsonl"


def method_pairs(run_dir, method: str, baseline: str) -> list[tuple[str, str]]:
    """Every (method, baseline) from comma-separated lists, each method a known one, none against itself."""
    methods = [check_method(run_dir, m.strip()) for m in str(method).split(",") if m.strip()]
    baselines = [check_method(run_dir, b.strip()) for b in str(baseline).split(",") if b.strip()]
    pairs = [(m, b) for m in methods for b in baselines if m != b]
    if not pairs:
        raise UserError(
            f"annotate.method={method} and annotate.baseline={baseline} make no pair of two methods"
        )
    return pairs


def swapped(seed: int, study: str, pair: Pair, method: str, baseline: str) -> bool:
    """A fair coin per item, fixed by the seed and the item's identity: True shows the baseline as A."""
    key = f"{seed}|{study}|{method}|{baseline}|{pair.prompt_id}|{pair.combination}"
    return hashlib.sha256(key.encode()).digest()[0] & 1 == 1


def _item(kind: str, pair: Pair, method: str, baseline: str, swap: bool) -> dict:
    a, b = (pair.baseline_text, pair.method_text) if swap else (pair.method_text, pair.baseline_text)
    return {
        "kind": kind,
        "method": method,
        "baseline": baseline,
        "prompt_id": pair.prompt_id,
        "combination": pair.combination,
        "poles": pair.poles,
        "prompt": pair.prompt,
        "a": a,
        "b": b,
        "swap": swap,
    }


def clear_cut(bench, pair: Pair, margin: float) -> str | None:
    """ "method" or "baseline" when the benchmark's judge scores that response higher by at least `margin`
    on every pole of the combination (both valid), else None."""
    sides = set()
    for pole in pair.poles:
        sm = bench.score(pole, pair.prompt, pair.method_text)
        sb = bench.score(pole, pair.prompt, pair.baseline_text)
        if sm < 0 or sb < 0 or abs(sm - sb) < margin:
            return None
        sides.add("method" if sm > sb else "baseline")
    return sides.pop() if len(sides) == 1 else None


def settings(cfg, pairs: list[tuple[str, str]], paths: dict[str, Path]) -> dict:
    a = cfg.annotate
    return {
        "pairs": [list(p) for p in pairs],
        "items": a["items"],
        "gold": a.gold,
        "repeats": a.repeats,
        "gold_margin": a.gold_margin,
        "seed": a.seed,
        "generations": {m: content_hash(p) for m, p in paths.items()},
    }


def build_items(cfg, pairs: list[tuple[str, str]], paths: dict[str, Path]) -> list[dict]:
    a = cfg.annotate
    rng = random.Random(f"{a.seed}|{a.study}")
    pools = []
    for method, baseline in pairs:
        found, _ = generations.pair(
            generations.read(paths[method]), generations.read(paths[baseline]), method, baseline
        )
        rng.shuffle(found)
        pools.append([(p, method, baseline) for p in found])
    drawn, rest = [], []
    for i in range(max((len(p) for p in pools), default=0)):  # round robin: the pairs share the items
        for pool in pools:
            if i < len(pool):
                (drawn if len(drawn) < a["items"] else rest).append(pool[i])
    if not drawn:
        raise UserError("the methods have no prompt and combination in common: nothing to annotate")
    if len(drawn) < a["items"]:
        log.warning("only %d items can be drawn (annotate.items=%d)", len(drawn), a["items"])
    items = [_item("regular", p, m, b, swapped(a.seed, a.study, p, m, b)) for p, m, b in drawn]
    gold = []
    if a.gold > 0:
        from rlphf_cli.benchmarks import get_benchmark

        bench = get_benchmark(cfg.benchmark)
        if not hasattr(bench, "score"):
            log.warning("benchmark %s has no programmatic judge: the study has no gold items", bench.name)
        else:
            for p, m, b in rest:
                side = clear_cut(bench, p, a.gold_margin)
                if side is None:
                    continue
                item = _item("gold", p, m, b, swapped(a.seed, a.study, p, m, b))
                better = "A" if (side == "method") != item["swap"] else "B"
                item["expected"] = dict.fromkeys(item["poles"], better)
                gold.append(item)
                if len(gold) == a.gold:
                    break
            if len(gold) < a.gold:
                log.warning("only %d clear-cut pairs for gold items (annotate.gold=%d)", len(gold), a.gold)
    order = list(items)
    for k, item in enumerate(gold):  # spread through the study
        order.insert(min(len(order), (k + 1) * len(items) // (len(gold) + 1) + k), item)
    for original in items[: max(0, a.repeats)]:  # asked again at the end, sides swapped
        again = {
            **original,
            "kind": "repeat",
            "swap": not original["swap"],
            "a": original["b"],
            "b": original["a"],
        }
        order.append(again)
    for n, item in enumerate(order, 1):
        item["id"] = f"q{n:03d}"
    for item in order:
        if item["kind"] == "repeat":
            item["repeat_of"] = next(
                x["id"]
                for x in order
                if x["kind"] == "regular"
                and (x["prompt_id"], x["combination"], x["method"], x["baseline"])
                == (item["prompt_id"], item["combination"], item["method"], item["baseline"])
            )
    return order


def make_study(cfg) -> dict:
    """The study's items, drawn on the first call and read back afterwards (the same config, the same
    generations); a study made from other settings is refused with one line."""
    a = cfg.annotate
    name = check_study_name(a.study)
    for key in ("items", "gold", "repeats"):
        if a[key] < (1 if key == "items" else 0):
            raise UserError(f"annotate.{key} must be at least {1 if key == 'items' else 0}, got {a[key]}")
    pairs = method_pairs(cfg.run_dir, a.method, a.baseline)
    methods = list(dict.fromkeys(m for p in pairs for m in p))
    paths = {}
    for m in methods:
        out = GenerationsFile(cfg.run_dir, m)
        if not out.is_complete():
            raise UserError(
                f"no complete generations for {m} in {out.path.parent}: run `rlphf generate method={m}`"
            )
        paths[m] = out.path
    want = settings(cfg, pairs, paths)
    path = study_path(cfg.run_dir, name)
    if path.is_file():
        study = load_study(cfg.run_dir, name)
        changed = [k for k in want if study["settings"].get(k) != want[k]]
        if changed:
            raise UserError(
                f"study {name!r} ({path}) was made from other settings or generations ({', '.join(changed)}); "
                "choose another annotate.study"
            )
        return study
    study = {"study": name, "settings": want, "items": build_items(cfg, pairs, paths)}
    atomic_write_json(path, study)
    kinds = [i["kind"] for i in study["items"]]
    log.info(
        "study %s: %d items (%d regular, %d gold, %d repeated) -> %s",
        name,
        len(kinds),
        kinds.count("regular"),
        kinds.count("gold"),
        kinds.count("repeat"),
        path,
    )
    return study


def load_study(run_dir, study: str) -> dict:
    import json

    path = study_path(run_dir, study)
    if not path.is_file():
        raise UserError(
            f"no study {study!r} in {path.parent}: run `rlphf annotate annotate.study={study}` first"
        )
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise UserError(f"{path}: not a study file (no items)")
    return body


def read_answers(run_dir, study: str) -> list[dict]:
    """Every answer; a line torn by a crash is dropped; a second answer of one rater to one item is ignored."""
    path = answers_path(run_dir, study)
    if not path.is_file():
        return []
    out, seen = [], set()
    for row in read_jsonl(path, appended=True):
        if not isinstance(row, dict) or (row.get("rater"), row.get("item_id")) in seen:
            continue
        seen.add((row.get("rater"), row.get("item_id")))
        out.append(row)
    return out


def pole_text(pole: str) -> str:
    return POLES[pole].text if pole in POLES else pole
