"""Per-objective scorers for the Pareto fronts: the benchmark judge, the run's reward models, or any Hugging Face
sequence-classification reward model (a Hub id or a local folder) read through its own prompt template.

Each scorer gives one float per (prompt, response), higher is better, and says what range it declares: the
synthetic judge scores valid responses in [0, 1] (an invalid one -1), so its floor 0 is the hypervolume's
natural reference; reward models declare none (their logits have no fixed scale).
"""

from __future__ import annotations

import logging

import torch

from rlphf_cli.errors import UserError, first_line

log = logging.getLogger(__name__)

HH_TEMPLATE = "\n\nHuman: {prompt}\n\nAssistant: {response}"  # what HH-RLHF's GPT-2 reward models read


def parse_scorer_specs(default: str, overrides: str, objectives: list[str]) -> dict[str, str]:
    """Each objective's scorer spec: `overrides` (`P1A:hf:ID;P1B:judge`) over `default`."""
    specs = dict.fromkeys(objectives, default.strip())
    for part in [p for p in str(overrides or "").split(";") if p.strip()]:
        objective, sep, spec = part.partition(":")
        if not sep or not spec.strip():
            raise UserError(
                f"bad pareto.scorers entry {part!r}: expected OBJECTIVE:SCORER, e.g. P1A:hf:<model>"
            )
        if objective.strip() not in specs:
            raise UserError(
                f"pareto.scorers names {objective.strip()!r}, in no objective set; objectives: {', '.join(specs)}"
            )
        specs[objective.strip()] = spec.strip()
    for objective, spec in specs.items():
        check_spec(spec, objective)
    return specs


def check_spec(spec: str, objective: str = "") -> None:
    kind = spec.split(":", 1)[0]
    if kind not in ("auto", "judge", "reward_model", "hf") or (kind == "hf") != spec.startswith("hf:"):
        raise UserError(
            f"unknown scorer {spec!r}{f' for {objective}' if objective else ''}; valid: auto, judge, "
            "reward_model, hf:<Hub id or local folder>"
        )
    if kind == "hf" and not spec[3:].strip():
        raise UserError(f"scorer {spec!r} names no model: hf:<Hub id or local folder>")


def check_template(template: str) -> None:
    if template != "auto" and (template.count("{prompt}") != 1 or template.count("{response}") != 1):
        raise UserError(
            f"pareto.hf_template must be auto or hold {{prompt}} and {{response}} once each; got {template!r}"
        )


class JudgeScorer:
    score_range = (0.0, 1.0)

    def __init__(self, cfg):
        from rlphf_cli.rewards import get_reward

        self.reward = get_reward(cfg, "judge")

    def describe(self, objective: str) -> dict:
        return {"scorer": "judge", "benchmark": self.reward.benchmark.name}

    def score(self, objective: str, prompts: list[str], responses: list[str]) -> list[float]:
        return self.reward.score(objective, prompts, responses)


class RunRewardModelScorer:
    score_range = None

    def __init__(self, cfg):
        from rlphf_cli.rewards import get_reward

        self.reward = get_reward(cfg, "reward_model")

    def describe(self, objective: str) -> dict:
        return {"scorer": "reward_model", "model": f"rm/{objective}"}

    def score(self, objective: str, prompts: list[str], responses: list[str]) -> list[float]:
        return self.reward.score(objective, prompts, responses)


class HFRewardModel:
    """A sequence-classification reward model with one output, scoring `template` filled with each pair."""

    score_range = None

    def __init__(
        self, source: str, template: str, max_length: int, device, trust_remote_code=False, batch=16
    ):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from rlphf_cli.modeling import _check_exists

        _check_exists(source, "reward model")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                source, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load reward model {source}: {first_line(exc)}") from None
        if self.model.config.num_labels != 1:
            raise UserError(
                f"reward model {source} has {self.model.config.num_labels} outputs; a scorer needs one"
            )
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id  # the last real token is found by it
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "left"  # a long input keeps its end, where the score is read
        self.model = self.model.to(device).eval()
        self.source, self.template, self.max_length, self.batch, self.device = (
            source,
            template,
            max_length,
            batch,
            device,
        )

    def describe(self, objective: str) -> dict:
        return {"scorer": "hf", "model": self.source, "template": self.template}

    def text(self, prompt: str, response: str) -> str:
        if self.template == "auto" and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
                tokenize=False,
            )
        template = HH_TEMPLATE if self.template == "auto" else self.template
        return template.replace("{prompt}", prompt).replace("{response}", response)

    @torch.no_grad()
    def score(self, objective: str, prompts: list[str], responses: list[str]) -> list[float]:
        texts = [self.text(p, r) for p, r in zip(prompts, responses, strict=True)]
        out: list[float] = []
        for i in range(0, len(texts), self.batch):
            enc = self.tokenizer(
                texts[i : i + self.batch],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
            ).to(self.device)
            out += self.model(**enc).logits[:, 0].float().tolist()
        return out


def make_scorers(cfg, objectives: list[str]) -> dict[str, object]:
    """One scorer per objective (models shared between objectives that name the same one)."""
    from rlphf_cli.benchmarks import get_benchmark
    from rlphf_cli.modeling import resolve_device

    p = cfg.pareto
    check_template(p.hf_template)
    specs = parse_scorer_specs(p.scorer, p.scorers, objectives)
    has_judge = hasattr(get_benchmark(cfg.benchmark), "score")
    made: dict[str, object] = {}
    out = {}
    for objective in objectives:
        spec = specs[objective]
        if spec == "auto":
            spec = "judge" if has_judge else "reward_model"
        if spec not in made:
            if spec == "judge":
                made[spec] = JudgeScorer(cfg)
            elif spec == "reward_model":
                made[spec] = RunRewardModelScorer(cfg)
            else:
                made[spec] = HFRewardModel(
                    spec[3:].strip(),
                    p.hf_template,
                    p.hf_max_length,
                    resolve_device(cfg.device),
                    cfg.model.trust_remote_code,
                )
        out[objective] = made[spec]
    return out
