"""`rlphf personalize mode=interactive user=NAME`: ask a user up to `personalize.questions` questions.

Each question is the candidate pair the current posterior is least sure about (PReF's criterion), among
the candidates the experts and mixtures wrote for training prompts. Both responses are shown side by side;
the answer is A, B, T (tie) or q (stop here and write the user file). Every answer is appended to
`users/NAME.answers.jsonl` at once, so an interrupted session resumes where it stopped; the answers file
is in the format `mode=fit` reads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TextIO

from rlphf_cli.benchmarks import get_benchmark
from rlphf_cli.errors import Interrupted, UserError
from rlphf_cli.personalize.candidates import Features, candidate_pairs, ensure_candidates, pair_pool
from rlphf_cli.personalize.fit import fit_answers, read_answers, report, user_body
from rlphf_cli.personalize.model import most_uncertain, two_pole_dimensions
from rlphf_cli.personalize.users import answers_path, check_user_name, write_user
from rlphf_cli.runs import append_jsonl

log = logging.getLogger(__name__)

KEYS = {"a": "A", "b": "B", "t": "TIE", "q": "quit"}


def _key(prompt: str, a: str, b: str) -> tuple[str, frozenset]:
    return prompt, frozenset((a, b))


def show(console, number: int, total: int, prompt: str, a: str, b: str) -> None:
    from rich.panel import Panel
    from rich.table import Table

    table = Table(show_header=True, expand=True, title=f"question {number} of {total}")
    table.add_column("A", ratio=1)
    table.add_column("B", ratio=1)
    table.add_row(a, b)
    console.print(Panel(prompt, title="prompt"))
    console.print(table)


def read_choice(stream: TextIO, console) -> str:
    while True:
        console.print(
            "Which answer do you prefer? [bold]A[/], [bold]B[/], [bold]T[/] (tie) or [bold]q[/] (stop): ",
            end="",
        )
        line = stream.readline()
        if not line:  # end of input: what is answered is saved; the same command resumes
            raise Interrupted("input ended: answers so far are saved; run the same command again to resume")
        if not stream.isatty():  # piped answers do not echo: show them, so the transcript reads right
            console.print(line.strip())
        choice = KEYS.get(line.strip().lower())
        if choice:
            return choice
        console.print(f"'{line.strip()}' is not an answer.")


def interactive(cfg, stream: TextIO, console=None) -> Path | None:
    from rich.console import Console

    console = console or Console()
    pc = cfg.personalize
    name = check_user_name(pc.user)
    if pc.questions < 1:
        raise UserError(f"personalize.questions must be at least 1, got {pc.questions}")
    dims = two_pole_dimensions(get_benchmark(cfg.benchmark).poles)
    features = Features(cfg, dims)
    groups = candidate_pairs(ensure_candidates(cfg), features)
    pairs, diffs = pair_pool(groups, sorted(groups))
    if len(pairs) == 0:
        raise UserError("no valid candidate pair to ask about: raise personalize.candidate_prompts")
    path = answers_path(cfg.run_dir, name)
    answers = read_answers(path, appended=True) if path.exists() else []
    if answers:
        console.print(f"resuming: {len(answers)} answer(s) of {pc.questions} already in {path}")
    asked_keys = {_key(a["prompt"], a["response_a"], a["response_b"]) for a in answers}
    asked = [i for i, (x, y) in enumerate(pairs) if _key(x["prompt"], x["text"], y["text"]) in asked_keys]
    while len(answers) < pc.questions and len(asked) < len(pairs):
        post = fit_answers(answers, features, pc.l2)
        i = most_uncertain(post, diffs, asked)
        a, b = pairs[i]
        show(console, len(answers) + 1, pc.questions, a["prompt"], a["text"], b["text"])
        choice = read_choice(stream, console)
        if choice == "quit":
            break
        row = {
            "prompt": a["prompt"],
            "response_a": a["text"],
            "response_b": b["text"],
            "choice": choice,
            "prompt_id": a["prompt_id"],
            "source_a": a["combination"],
            "source_b": b["combination"],
        }
        append_jsonl(path, [row])
        answers.append(row)
        asked.append(i)
    if not answers:
        console.print("no answers yet: no user file written")
        return None
    post = fit_answers(answers, features, pc.l2)
    out = write_user(cfg.run_dir, name, {**user_body(cfg, post, dims, str(path)), "reward": features.kind})
    report(out)
    return out
