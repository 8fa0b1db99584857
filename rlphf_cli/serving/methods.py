"""What a run directory can serve, and how each method's rows are decoded (loading as `rlphf generate` does).

Every lane but `soups-merged` runs on one peft model (the base with one LoRA adapter per pole, and the soups
merged so far). Rows of one method share a lane whatever their preference: each row runs the experts its
preference names (as many per row as the benchmark has dimensions, BASE at weight 0 for the rest), or its
soup, or the base, with its own weights, as `rlphf generate` decodes a batch of mixed preferences.
"""

from __future__ import annotations

import copy
import logging

import torch

from rlphf_cli.adapters import base_model_path, load_experts
from rlphf_cli.benchmarks import get_benchmark
from rlphf_cli.decoding.engine import BASE, AdapterExperts, FixedWeights, Sampler
from rlphf_cli.decoding.generate import DEFAULT_MIXING, method_prompt
from rlphf_cli.decoding.soups import MERGES, add_soup, soup_name
from rlphf_cli.errors import UserError
from rlphf_cli.modeling import load_causal_lm, load_tokenizer, resolve_device
from rlphf_cli.preferences import Preference, all_combinations, parse_weighted_preferences
from rlphf_cli.runs import RunDir
from rlphf_cli.serving.batching import Lane, Row, Scheduler

log = logging.getLogger(__name__)

MIXTURES = ("uniform", "mod", "pcm")


class Backend:
    """The run's models, the methods they allow, and one scheduler that decodes every request."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        if cfg.generate.soups_merge not in MERGES:
            raise UserError(
                f"unknown generate.soups_merge {cfg.generate.soups_merge!r}; valid: {', '.join(MERGES)}"
            )
        self.bench = get_benchmark(cfg.benchmark)
        base_path = base_model_path(cfg)
        self.tokenizer = load_tokenizer(base_path, cfg.model.trust_remote_code)
        base = load_causal_lm(base_path, cfg.model, self.device).eval()
        self.max_positions = getattr(base.config, "max_position_embeddings", None)
        run = RunDir(cfg.run_dir)
        self.poles = [p for p in self.bench.poles if run.artifact(f"experts/{p}").is_complete()]
        self.model = load_experts(cfg, base, self.poles) if self.poles else base
        self.methods = ["sft", "prompted"]
        if self.poles:
            self.methods += ["uniform", "mod", "soups"] + (["soups-merged"] if cfg.serve.soups_merged else [])
        self.pcm = None
        if run.artifact("pcm").is_complete() and self.poles == list(self.bench.poles):
            from rlphf_cli.pcm.provider import load_pcm

            self.pcm = load_pcm(cfg, self.device, expert_poles=list(self.bench.poles))
            self.methods.append("pcm")
        self.width = max(len(c) for c in all_combinations(self.bench.poles))  # experts per mixture row
        self.merged: dict[str, object] = {}  # soups-merged: one plain model per soup
        self.scheduler = Scheduler(self._make_lane, self._prepare)
        g = cfg.generate
        self.default_sampler = Sampler(g.temperature, g.top_k, g.top_p, g.greedy)

    @property
    def merge(self) -> str:
        return self.cfg.generate.soups_merge

    # --- requests
    def preference(self, method: str, spec) -> Preference | None:
        """The request's `preference` field: poles (`P1A,P2B,P3A`) or weights (`P1A:0.7,P2B:0.3`)."""
        if spec is None or spec == "":
            if method == "sft":
                return None
            raise UserError(f'method {method} needs a `preference`, e.g. "P1A,P2B,P3A" or "P1A:0.7,P2B:0.3"')
        if not isinstance(spec, str):
            raise UserError('`preference` must be a string such as "P1A,P2B,P3A" or "P1A:0.7,P2B:0.3"')
        spec = spec.strip()
        if spec.startswith("@"):
            return self.user_preference(spec[1:])
        if ";" in spec or spec == "all":
            raise UserError(f"one preference per request, not {spec!r}")
        allowed = self.poles if method in (*MIXTURES, "soups", "soups-merged") else self.bench.poles
        (pref,) = parse_weighted_preferences(spec, allowed)
        return pref

    def user_preference(self, name: str) -> Preference:
        """`@users/NAME.json`: a user's inferred weights (`rlphf personalize`), read from the run's users/
        folder only: a request never names a file elsewhere."""
        import re

        from rlphf_cli.personalize.users import load_user_preference

        if not re.fullmatch(r"users/[A-Za-z0-9_.-]+\.json", name) or ".." in name:
            raise UserError(f"a user preference is @users/NAME.json, not @{name}")
        from rlphf_cli.runs import RunDir

        return load_user_preference(str(RunDir(self.cfg.run_dir).root / name), self.cfg.run_dir, self.poles)

    def row(
        self, method: str, text: str, pref: Preference | None, max_tokens, sampler, emit
    ) -> tuple[str, Row]:
        """Check a request and make its row; return the lane it goes to. Bad input raises UserError."""
        if method not in self.methods:
            raise UserError(f"unknown model {method!r}; this run serves: {', '.join(self.methods)}")
        max_tokens = self.cfg.generate.max_new_tokens if max_tokens is None else int(max_tokens)
        if not 1 <= max_tokens <= self.cfg.serve.max_new_tokens:
            raise UserError(f"max_tokens must be 1 to {self.cfg.serve.max_new_tokens}; got {max_tokens}")
        pref = pref or Preference((), ())
        ids = self.tokenizer(method_prompt(self.cfg, method, text, pref, self.tokenizer)).input_ids
        limit = self.max_positions
        if method == "pcm":  # the PCM reads the same tokens: its own positions count too
            limit = min(p for p in (limit, self.pcm.pcm.body.config.max_position_embeddings) if p)
        if limit and len(ids) + max_tokens > limit:
            raise UserError(
                f"prompt too long: {len(ids)} tokens + max_tokens {max_tokens} > the model's {limit} positions"
            )
        row = Row(ids, max_tokens, sampler or self.default_sampler, emit, experts=(BASE,), spec=pref)
        if method in ("sft", "prompted"):
            return "base", row
        if method in ("soups", "soups-merged"):
            name = soup_name(pref.combination, self.merge, pref.weights, self.cfg.generate.soups_density)
            if method == "soups":
                row.experts = (name,)
                return "soups", row
            return f"soups-merged:{name}", row
        row.experts = tuple(pref.combination) + (BASE,) * (self.width - len(pref.combination))
        return method, row

    def _prepare(self, row: Row, lane: str) -> None:
        """On the scheduler thread: make the soup a row needs (its adapter, or its merged model)."""
        if lane == "soups" or lane.startswith("soups-merged:"):
            pref = row.spec
            name = soup_name(pref.combination, self.merge, pref.weights, self.cfg.generate.soups_density)
            if name not in self.model.peft_config:
                self.scheduler.release_hooks()
                add_soup(
                    self.model,
                    list(pref.combination),
                    list(pref.weights),
                    self.merge,
                    self.cfg.generate.soups_density,
                )
            if lane.startswith("soups-merged:") and name not in self.merged:
                self.scheduler.release_hooks()
                copied = copy.deepcopy(self.model)
                copied.set_adapter(name)
                self.merged[name] = copied.merge_and_unload().eval()

    # --- lanes
    def _make_lane(self, name: str) -> Lane:
        if name.startswith("soups-merged:"):
            experts, provider, mixing = AdapterExperts(self.merged[name.split(":", 1)[1]]), self._ones, "prob"
        elif name in ("base", "soups"):
            experts, provider, mixing = AdapterExperts(self.model), self._ones, "prob"
        else:
            experts, mixing = AdapterExperts(self.model), self._mixing(name)
            provider = (
                self._pcm if name == "pcm" else (lambda rows: self._fixed(rows, by_preference=name == "mod"))
            )
        return Lane(
            name,
            experts,
            provider,
            mixing,
            self.cfg.serve.max_batch,
            self.tokenizer.pad_token_id,
            self.tokenizer.eos_token_id,
            self.device,
            seed=self.cfg.generate.seed,
        )

    def _mixing(self, method: str) -> str:
        mixing = self.cfg.generate.mixing or DEFAULT_MIXING[method]
        if mixing not in ("prob", "log"):
            raise UserError(f"unknown generate.mixing {mixing!r}; valid: prob, log")
        return mixing

    def _ones(self, rows: list[Row]) -> FixedWeights:
        return FixedWeights(torch.ones(len(rows), 1, device=self.device))

    def _fixed(self, rows: list[Row], by_preference: bool) -> FixedWeights:
        """uniform: equal weights on the row's poles; mod: the preference's weights (BASE padding: 0)."""
        w = torch.zeros(len(rows), self.width)
        for i, row in enumerate(rows):
            n = len(row.spec.combination)
            w[i, :n] = torch.tensor(row.spec.weights) if by_preference else 1.0 / n
        return FixedWeights(w.to(self.device))

    def _pcm(self, rows: list[Row]):
        return self.pcm.provider([r.spec for r in rows], [r.experts for r in rows])
