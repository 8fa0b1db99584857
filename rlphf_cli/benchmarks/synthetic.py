"""The built-in synthetic benchmark: a small deterministic text world with the P-Soups dimensions.

Responses vary independently along P1 register (simple vs technical wording), P2 amount (one fact vs
three facts plus background) and P3 tone (friendly vs unfriendly phrases). A judge per pole scores a
response from its text alone; a response that is off-topic, malformed, repetitive or without a fact is
invalid and scores below every valid response on every pole, so junk cannot game a judge.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from itertools import product

from rlphf_cli.benchmarks.base import Prompt
from rlphf_cli.benchmarks.synthetic_world import (
    FRIENDLY_CLOSERS,
    FRIENDLY_OPENERS,
    QUESTION_FORMS,
    TOPICS,
    UNFRIENDLY_CLOSERS,
    UNFRIENDLY_OPENERS,
)
from rlphf_cli.errors import UserError
from rlphf_cli.preferences import POLES, dimensions

_SLOT = re.compile(r"\[([^|\]]+)\|([^\]]+)\]")
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE = re.compile(r"[^.!?]+[.!?]*")
INVALID_SCORE = -1.0
AMOUNT_LEVELS = (0, 1, 2)  # concise (1 fact) .. informative (3 facts + background)
REGISTER_LEVELS = (0.0, 0.5, 1.0)  # share of slots worded technically
TONE_LEVELS = (-1, 0, 1)  # unfriendly, neutral, friendly


def _key(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def _render_slots(template: str, technical: list[bool]) -> str:
    it = iter(technical)
    return _SLOT.sub(lambda m: m.group(2) if next(it) else m.group(1), template)


@dataclass(frozen=True)
class SentenceInfo:
    kind: str  # fact | background | friendly | unfriendly
    topic: str | None = None
    index: int = 0
    n_simple: int = 0
    n_technical: int = 0


@dataclass
class Parsed:
    valid: bool
    reason: str = ""
    facts: set[int] = field(default_factory=set)
    background: bool = False
    n_simple: int = 0
    n_technical: int = 0
    friendly: int = 0
    unfriendly: int = 0

    @property
    def technical_share(self) -> float:
        total = self.n_simple + self.n_technical
        return self.n_technical / total if total else 0.0

    @property
    def amount(self) -> int:
        return len(self.facts) + int(self.background)


class SyntheticWorld:
    """Prompts, a response generator with controllable levels, a parser and per-pole judges."""

    poles = ("P1A", "P1B", "P2A", "P2B", "P3A", "P3B")

    def __init__(self) -> None:
        self.sentences: dict[str, SentenceInfo] = {}
        for topic, spec in TOPICS.items():
            for i, fact in enumerate(spec["facts"]):
                self._add_template(fact, "fact", topic, i)
            self._add_template(spec["background"], "background", topic, 0)
        for kind, phrases in (
            ("friendly", FRIENDLY_OPENERS + FRIENDLY_CLOSERS),
            ("unfriendly", UNFRIENDLY_OPENERS + UNFRIENDLY_CLOSERS),
        ):
            for p in phrases:
                self.sentences[_key(p)] = SentenceInfo(kind)
        # Longest topic names first, matched on whole words ("rain" must not match "rainbows").
        self._topic_keys = sorted(((_key(t), t) for t in TOPICS), key=lambda kt: -len(kt[0]))

    def _add_template(self, template: str, kind: str, topic: str, index: int) -> None:
        n_slots = len(_SLOT.findall(template))
        for technical in product([False, True], repeat=n_slots):
            text = _render_slots(template, list(technical))
            info = SentenceInfo(kind, topic, index, n_slots - sum(technical), sum(technical))
            self.sentences[_key(text)] = info

    # ----- prompts -----
    def prompts(self, split: str) -> list[Prompt]:
        """Questions about every topic; two question forms per topic are held out for evaluation."""
        out = []
        n_forms = len(QUESTION_FORMS)
        for ti, topic in enumerate(TOPICS):
            held_out = {ti % n_forms, (ti + 5) % n_forms}
            for fi, form in enumerate(QUESTION_FORMS):
                if (fi in held_out) == (split == "eval"):
                    out.append(Prompt(f"{topic.replace(' ', '_')}-{fi}", form.format(topic=topic)))
        return out

    def topic_of(self, prompt: str) -> str | None:
        padded = f" {_key(prompt)} "
        for key, topic in self._topic_keys:
            if f" {key} " in padded:
                return topic
        return None

    # ----- generating responses -----
    def render(self, topic: str, amount: int, register: float, tone: int, rng: random.Random) -> str:
        spec = TOPICS[topic]
        n_facts = amount + 1
        background = amount == 2 or (amount == 1 and rng.random() < 0.5)
        facts = rng.sample(list(spec["facts"]), n_facts)
        body = [facts[0]] + ([spec["background"]] if background else []) + facts[1:]
        sentences = [_render_slots(s, [rng.random() < register for _ in _SLOT.findall(s)]) for s in body]
        if tone:
            openers, closers = (
                (FRIENDLY_OPENERS, FRIENDLY_CLOSERS) if tone > 0 else (UNFRIENDLY_OPENERS, UNFRIENDLY_CLOSERS)
            )
            has_opener = rng.random() < 0.8
            has_closer = rng.random() < 0.8 or not has_opener
            if has_opener:
                sentences.insert(0, rng.choice(openers))
            if has_closer:
                sentences.append(rng.choice(closers))
        return " ".join(sentences)

    def random_levels(self, rng: random.Random) -> dict[str, float]:
        return {
            "P1": rng.choice(REGISTER_LEVELS),
            "P2": rng.choice(AMOUNT_LEVELS),
            "P3": rng.choice(TONE_LEVELS),
        }

    # ----- judging -----
    def parse(self, prompt: str, response: str) -> Parsed:
        topic = self.topic_of(prompt)
        if topic is None:
            return Parsed(False, "prompt is not about a known topic")
        parsed = Parsed(True)
        seen: set[str] = set()
        for raw in _SENTENCE.findall(response.lower()):
            key = _key(raw)
            if not key:
                continue
            if key in seen:
                return Parsed(False, "repetition")
            seen.add(key)
            info = self.sentences.get(key)
            if info is None:
                return Parsed(False, "malformed sentence")
            if info.kind in ("fact", "background"):
                if info.topic != topic:
                    return Parsed(False, "off-topic")
                if info.kind == "fact":
                    parsed.facts.add(info.index)
                else:
                    parsed.background = True
                parsed.n_simple += info.n_simple
                parsed.n_technical += info.n_technical
            elif info.kind == "friendly":
                parsed.friendly += 1
            else:
                parsed.unfriendly += 1
        if not seen:
            return Parsed(False, "empty")
        if not parsed.facts:
            return Parsed(False, "no fact")
        return parsed

    def score_parsed(self, pole: str, p: Parsed) -> float:
        if not p.valid:
            return INVALID_SCORE
        tone = (max(-2, min(2, p.friendly - p.unfriendly)) + 2) / 4
        scores = {
            "P1A": 1.0 - p.technical_share,
            "P1B": p.technical_share,
            "P2A": 1.0 / p.amount,
            "P2B": p.amount / 4.0,
            "P3A": tone,
            "P3B": 1.0 - tone,
        }
        if pole not in scores:
            valid = ", ".join(scores)
            raise UserError(f"the synthetic benchmark has no judge for pole {pole!r}; valid poles: {valid}")
        return scores[pole]

    def score(self, pole: str, prompt: str, response: str) -> float:
        """A pole's score in [0, 1] for a valid response; INVALID_SCORE (-1) for an invalid one."""
        return self.score_parsed(pole, self.parse(prompt, response))

    def compare(self, pole: str, prompt: str, a: str, b: str, tie_margin: float = 0.05) -> str:
        """Pairwise judgment for one pole: "A", "B" or "TIE"."""
        sa, sb = self.score(pole, prompt, a), self.score(pole, prompt, b)
        if abs(sa - sb) <= tie_margin:
            return "TIE"
        return "A" if sa > sb else "B"


_LEVEL_OF_POLE = {
    "P1A": ("P1", 0.0),
    "P1B": ("P1", 1.0),
    "P2A": ("P2", 0),
    "P2B": ("P2", 2),
    "P3A": ("P3", 1),
    "P3B": ("P3", -1),
}


class SyntheticBenchmark:
    """The synthetic benchmark as the rest of the tool sees it."""

    name = "synthetic"

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.world = SyntheticWorld()
        self.poles = list(cfg.poles)
        bad = [p for p in self.poles if p not in SyntheticWorld.poles]
        if bad:
            raise UserError(
                f"the synthetic benchmark has no pole(s) {', '.join(bad)}; valid: {', '.join(SyntheticWorld.poles)}"
            )

    def train_prompts(self) -> list[Prompt]:
        return self.world.prompts("train")

    def eval_prompts(self) -> list[Prompt]:
        prompts = self.world.prompts("eval")
        cap = self.cfg.max_eval_prompts
        return prompts[:cap] if cap else prompts

    def sft_corpus(self, n: int, seed: int) -> list[dict[str, str]]:
        """Prompt/completion pairs with every level of every dimension, drawn independently.

        A share (`prompted_fraction`) of examples append the preference texts of one to three dimensions
        (one pole each, in dimension order, as P-Soups's prompts carry them) and follow those poles, so that
        preference prompting with a whole combination is a meaningful baseline.
        """
        rng = random.Random(seed)
        prompts = self.train_prompts()
        by_dim = dimensions(self.poles)
        out = []
        for _ in range(n):
            prompt = rng.choice(prompts)
            levels = self.world.random_levels(rng)
            text = prompt.text
            if rng.random() < self.cfg.prompted_fraction:
                chosen = sorted(rng.sample(list(by_dim), rng.randint(1, len(by_dim))))
                for dim in chosen:
                    pole = rng.choice(by_dim[dim])
                    levels[dim] = _LEVEL_OF_POLE[pole][1]
                    text = f"{text} {POLES[pole].text}"
            topic = self.world.topic_of(prompt.text)
            response = self.world.render(topic, levels["P2"], levels["P1"], levels["P3"], rng)
            out.append({"prompt": text, "completion": response})
        return out

    def vocabulary_text(self) -> list[str]:
        """Every text the tiny tokenizer must cover."""
        texts = [p.text for p in self.world.prompts("train") + self.world.prompts("eval")]
        texts += [p.text for p in POLES.values()]
        for template in [s for spec in TOPICS.values() for s in [*spec["facts"], spec["background"]]]:
            texts += [m.group(1) + " " + m.group(2) for m in _SLOT.finditer(template)]
            texts.append(_SLOT.sub(" ", template))
        texts += FRIENDLY_OPENERS + FRIENDLY_CLOSERS + UNFRIENDLY_OPENERS + UNFRIENDLY_CLOSERS
        return texts

    def score(self, pole: str, prompt: str, response: str) -> float:
        return self.world.score(pole, prompt, response)

    def compare(self, pole: str, prompt: str, a: str, b: str) -> str:
        return self.world.compare(pole, prompt, a, b, self.cfg.tie_margin)
