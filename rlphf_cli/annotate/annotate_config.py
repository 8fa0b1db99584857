"""Config of `rlphf annotate`: which methods to compare, how many items, and where the study page listens."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import II


@dataclass
class AnnotateConfig:
    study: str = "study"  # the study's name: annotations/<study>.jsonl (answers), <study>.study.json (items)
    method: str = "pcm"  # one method or several, comma-separated
    baseline: str = "soups"  # one baseline or several, comma-separated: every method x baseline pair is asked
    items: int = 20  # regular items (prompt, combination, two responses) over all pairs
    gold: int = (
        2  # attention items: pairs the benchmark's judge finds clear-cut on every pole (if it has one)
    )
    repeats: int = 2  # regular items asked a second time, sides swapped, later in the study (consistency)
    gold_margin: float = 0.3  # a gold pair: the judge's score gap at least this on every pole of the item
    seed: int = II("seed")  # seeds which items are drawn and each item's left/right swap
    host: str = "127.0.0.1"
    port: int = 8100
    # required when host is not a loopback address: the page and every request must carry ?token=...
    token: str | None = None
    max_body: int = 16384  # bytes: a larger request body is refused (413)
    # shown as a link once a rater has answered every item, e.g. Prolific's
    # https://app.prolific.com/submissions/complete?cc=CODE
    completion_url: str | None = None
    rationale_chars: int = 300  # the one-line rationale is cut to at most this many characters
