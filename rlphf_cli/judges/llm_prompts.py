"""The LLM judge's prompts: one criterion per pole, a short rationale, then a verdict A, B or TIE.

Written for this project (not copied from P-Soups): the criterion paraphrases the pole's preference text
as a comparison, and the judge is told to weigh that criterion alone.
"""

from __future__ import annotations

import hashlib

from rlphf_cli.errors import UserError
from rlphf_cli.judges.base import Comparison

SYSTEM = (
    "You are a careful, impartial judge of AI assistant responses. You compare two responses to the same "
    "instruction on exactly one criterion, and nothing else."
)

CRITERIA = {
    "P1A": "Understandable by an elementary school student: which response could a ten-year-old follow more "
    "easily? Prefer plain everyday words, short sentences and simple examples; penalise jargon and "
    "unexplained technical terms.",
    "P1B": "Expert level: which response is written so that only a PhD student in that specific field would "
    "fully understand it? Prefer precise technical terminology, domain-specific detail and assumed "
    "expertise; penalise simplified, layperson wording.",
    "P2A": "Conciseness: which response is more concise and to the point? Prefer the one that answers with "
    "fewer words and no padding, repetition or unneeded background.",
    "P2B": "Informativeness: which response is more informative? Prefer the one that gives more relevant "
    "facts and the background a reader needs, without missing important information.",
    "P3A": "Friendly and humorous: which response is more friendly, witty, funny and humorous, like a close "
    "friend talking?",
    "P3B": "Unfriendly manner: which response is more unfriendly, that is curt, cold, dismissive or rude "
    "towards the user?",
    "P3C": "Sassy manner: which response is sassier, that is cheekier, bolder and more playfully impertinent?",
    "P3D": "Sarcastic manner: which response is more sarcastic, that is more ironic and mocking, saying the "
    "opposite of what it means?",
}

TEMPLATE = """Compare the two responses to the instruction below on this criterion only:

{criterion}

Ignore every other quality (correctness, helpfulness, length, formatting) unless the criterion asks for it, and do not let the order of the two responses sway you. If neither response satisfies the criterion better than the other, the verdict is TIE.

[Instruction]
{prompt}

[Response A]
{a}
[End of Response A]

[Response B]
{b}
[End of Response B]

First explain in at most three sentences which response better satisfies the criterion and why. Then, on the last line, write exactly one of:
Verdict: A
Verdict: B
Verdict: TIE"""


def criterion(pole: str) -> str:
    if pole not in CRITERIA:
        raise UserError(
            f"the llm judge has no criterion for pole {pole!r}; valid poles: {', '.join(CRITERIA)}"
        )
    return CRITERIA[pole]


def messages(c: Comparison) -> list[dict[str, str]]:
    user = TEMPLATE.format(criterion=criterion(c.pole), prompt=c.prompt, a=c.a, b=c.b)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def prompt_version(pole: str) -> str:
    """A short hash of everything the judge reads besides the comparison: a new wording is a new judgment."""
    return hashlib.sha256("\n".join([SYSTEM, TEMPLATE, criterion(pole)]).encode()).hexdigest()[:12]


def prompts_version() -> str:
    """A short hash of every prompt of the judge, to tell evaluations with other wordings apart."""
    return hashlib.sha256("\n".join([SYSTEM, TEMPLATE, *CRITERIA.values()]).encode()).hexdigest()[:12]
