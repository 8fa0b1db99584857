"""`rlphf personalize mode=fit`: a user's answers file -> `users/<user>.json`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from rlphf_cli.benchmarks import get_benchmark
from rlphf_cli.errors import UserError
from rlphf_cli.personalize.candidates import Features
from rlphf_cli.personalize.model import Posterior, fit, summary, two_pole_dimensions
from rlphf_cli.personalize.users import check_user_name, write_user
from rlphf_cli.runs import read_jsonl

log = logging.getLogger(__name__)

CHOICES = ("A", "B", "TIE")
FIELDS = ("prompt", "response_a", "response_b")


def read_answers(path: str | Path, appended: bool = False) -> list[dict]:
    """Answers: one JSON object per line with prompt, response_a, response_b (strings) and choice A|B|TIE."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"answers file not found: {path}")
    out = []
    for n, row in enumerate(read_jsonl(path, appended=appended), 1):
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in FIELDS):
            raise UserError(f"{path}: answer {n} needs string fields {', '.join(FIELDS)}")
        choice = str(row.get("choice", "")).strip().upper()
        if choice not in CHOICES:
            raise UserError(f"{path}: answer {n} has choice {row.get('choice')!r}; valid: A, B, TIE")
        out.append({**row, "choice": choice})
    return out


def fit_answers(answers: list[dict], features: Features, l2: float) -> Posterior:
    """The posterior from answers; answers about a response the judge marks invalid are left out."""
    if not answers:
        return Posterior.prior(len(features.dims), l2)
    prompts = [a["prompt"] for a in answers]
    phi_a, valid_a = features(prompts, [a["response_a"] for a in answers])
    phi_b, valid_b = features(prompts, [a["response_b"] for a in answers])
    keep = valid_a & valid_b
    if not keep.all():
        log.warning("%d answer(s) about a response the judge marks invalid are left out", int((~keep).sum()))
    choices = [a["choice"] for a, k in zip(answers, keep, strict=True) if k]
    return fit(np.asarray(phi_a - phi_b)[keep], choices, l2)


def user_body(cfg, post: Posterior, dims, source: str) -> dict:
    return {**summary(post, dims, seed=cfg.personalize.seed), "source": source, "l2": cfg.personalize.l2}


def fit_mode(cfg) -> Path:
    pc = cfg.personalize
    name = check_user_name(pc.user)
    if not pc.answers:
        raise UserError(
            "mode=fit needs personalize.answers=<file.jsonl> (prompt, response_a, response_b, choice)"
        )
    answers = read_answers(pc.answers)
    if not answers:
        raise UserError(f"answers file is empty: {pc.answers}")
    dims = two_pole_dimensions(get_benchmark(cfg.benchmark).poles)
    features = Features(cfg, dims)
    post = fit_answers(answers, features, pc.l2)
    if post.n == 0:
        raise UserError(f"{pc.answers}: no usable answer (every one involves an invalid response)")
    path = write_user(
        cfg.run_dir, name, {**user_body(cfg, post, dims, str(pc.answers)), "reward": features.kind}
    )
    report(path)
    return path


def report(path: Path) -> None:
    import json

    body = json.loads(path.read_text())
    strengths = ", ".join(
        f"{d} {s:+.2f} ± {body['strength_sd'][d]:.2f}" for d, s in body["strengths"].items()
    )
    mix = ", ".join(f"{p} {w:.2f} ± {body['mixture_sd'][p]:.2f}" for p, w in body["mixture"].items())
    log.info("user %s from %d answers: strengths %s", body["user"], body["n_answers"], strengths)
    log.info("mixture weights %s -> %s (generate with preference=@users/%s.json)", mix, path, body["user"])
