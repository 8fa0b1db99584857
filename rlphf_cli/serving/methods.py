"""What a run directory can serve, and how requests become rows of one batch (loading as `rlphf generate`).

Every method of the registry (rlphf_cli/methods/) whose inputs the run holds is served. All of them decode on
one peft model (the base with the experts, the ARMs and the soups merged so far) in one lane: rows of any
method and preference share each forward, every row with its own experts (PAD, weight 0 and no forward,
pads the shorter lists), weights, mixing space and weight provider. A method that offers `merged_model` (soups) is also served
as `<name>-merged`, one merged model per preference, each in its own lane.
"""

from __future__ import annotations

import logging
import re

import torch

from rlphf_cli.benchmarks import get_benchmark
from rlphf_cli.decoding.engine import BASE, AdapterExperts, FixedWeights
from rlphf_cli.decoding.generate import check_generate_config, method_prompt
from rlphf_cli.decoding.runtime import Runtime
from rlphf_cli.errors import UserError
from rlphf_cli.methods import all_methods, get_method
from rlphf_cli.methods.batch import batch_provider, padded_experts
from rlphf_cli.preferences import Preference, all_combinations, parse_weighted_preferences
from rlphf_cli.runs import RunDir
from rlphf_cli.serving.batching import Lane, Row, Scheduler

log = logging.getLogger(__name__)

MERGED = "-merged"  # suffix of a method served as one merged model per preference
MAIN = "main"  # the lane every row runs in but merged models'


class Backend:
    """The run's models, the methods they allow, and one scheduler that decodes every request."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.runtime = rt = Runtime(cfg)
        self.device = rt.device
        self.tokenizer = rt.tokenizer
        self.max_positions = rt.max_positions
        self.bench = get_benchmark(cfg.benchmark)
        run = RunDir(cfg.run_dir)
        self.poles: dict[str, list[str]] = {}  # served method -> the poles a request may name
        for m in all_methods():
            poles = m.servable_poles(run, self.bench.poles)
            if not poles:
                continue
            check_generate_config(cfg, m.name)
            m.load(rt, poles)
            self.poles[m.name] = poles
        self.methods = []
        for name in self.poles:
            self.methods.append(name)
            if cfg.serve.soups_merged and hasattr(get_method(name), "merged_model"):
                self.methods.append(name + MERGED)
        # experts per row: the widest row any served method makes (a combination of every dimension)
        widest = max(all_combinations(self.bench.poles), key=len)
        full = Preference(tuple(widest), (1.0 / len(widest),) * len(widest))
        self.width = max(len(get_method(n).experts(rt, full)) for n in self.poles)
        self.merged: dict[str, object] = {}  # one plain model per merged soup
        self.scheduler = Scheduler(self._make_lane, self._prepare)
        rt.before_model_change = self.scheduler.release_hooks  # adding a soup lifts the running batch's hooks
        self.default_sampler = rt.sampler()

    def _method(self, served: str):
        """The registry's method of a served name (`soups-merged` is soups)."""
        return get_method(served.removesuffix(MERGED) if served not in self.poles else served)

    # --- requests
    def preference(self, method: str, spec) -> Preference | None:
        """The request's `preference` field: poles (`P1A,P2B,P3A`) or weights (`P1A:0.7,P2B:0.3`)."""
        m = self._method(method)
        if spec is None or spec == "":
            if not (m.adapters or m.needs_pcm or m.preference_in_prompt(self.cfg)):
                return None  # a method that reads no preference (sft)
            raise UserError(f'method {method} needs a `preference`, e.g. "P1A,P2B,P3A" or "P1A:0.7,P2B:0.3"')
        if not isinstance(spec, str):
            raise UserError('`preference` must be a string such as "P1A,P2B,P3A" or "P1A:0.7,P2B:0.3"')
        spec = spec.strip()
        if spec.startswith("@"):
            return self.user_preference(spec[1:], self.poles[m.name])
        if ";" in spec or spec == "all":
            raise UserError(f"one preference per request, not {spec!r}")
        (pref,) = parse_weighted_preferences(spec, self.poles[m.name])
        return pref

    def user_preference(self, name: str, poles=None) -> Preference:
        """`@users/NAME.json`: a user's inferred weights (`rlphf personalize`), read from the run's users/
        folder only: a request never names a file elsewhere."""
        from rlphf_cli.personalize.users import load_user_preference

        if not re.fullmatch(r"users/[A-Za-z0-9_.-]+\.json", name) or ".." in name:
            raise UserError(f"a user preference is @users/NAME.json, not @{name}")
        poles = poles or list(self.bench.poles)
        return load_user_preference(str(RunDir(self.cfg.run_dir).root / name), self.cfg.run_dir, poles)

    def row(
        self, method: str, text: str, pref: Preference | None, max_tokens, sampler, emit
    ) -> tuple[str, Row]:
        """Check a request and make its row; return the lane it goes to. Bad input raises UserError."""
        if method not in self.methods:
            raise UserError(f"unknown model {method!r}; this run serves: {', '.join(self.methods)}")
        m = self._method(method)
        max_tokens = self.cfg.generate.max_new_tokens if max_tokens is None else int(max_tokens)
        if not 1 <= max_tokens <= self.cfg.serve.max_new_tokens:
            raise UserError(f"max_tokens must be 1 to {self.cfg.serve.max_new_tokens}; got {max_tokens}")
        pref = pref or Preference((), ())
        ids = self.tokenizer(method_prompt(self.cfg, m.name, text, pref, self.tokenizer)).input_ids
        limit = self.max_positions
        if m.needs_pcm:  # the PCM reads the same tokens: its own positions count too
            pcm_limit = self.runtime.pcm(self.bench.poles).pcm.body.config.max_position_embeddings
            limit = min(p for p in (limit, pcm_limit) if p)
        if limit and len(ids) + max_tokens > limit:
            raise UserError(
                f"prompt too long: {len(ids)} tokens + max_tokens {max_tokens} > the model's {limit} positions"
            )
        row = Row(ids, max_tokens, sampler or self.default_sampler, emit, spec=pref)
        row.method = m
        if method != m.name:  # one merged model per preference, in a lane of its own
            (soup,) = m.experts(self.runtime, pref)
            row.experts, row.mixing = (BASE,), "prob"
            return f"{method}:{soup}", row
        row.experts = padded_experts(self.runtime, m, pref, self.width)
        row.mixing = m.mixing_space(self.cfg)
        return MAIN, row

    def _prepare(self, row: Row, lane: str) -> None:
        """On the scheduler thread: make what a row needs (its soup adapter, or its merged model)."""
        row.method.prepare(self.runtime, [row.spec])
        if lane != MAIN and lane not in self.merged:
            self.scheduler.release_hooks()
            self.merged[lane] = row.method.merged_model(self.runtime, row.spec)

    # --- lanes
    def _make_lane(self, name: str) -> Lane:
        if name == MAIN:
            experts, provider = self.runtime.experts, self._provider
        else:
            experts, provider = AdapterExperts(self.merged[name]), self._ones
        return Lane(
            name,
            experts,
            provider,
            "prob",
            self.cfg.serve.max_batch,
            self.tokenizer.pad_token_id,
            self.tokenizer.eos_token_id,
            self.device,
            seed=self.cfg.generate.seed,
        )

    def _ones(self, rows: list[Row]) -> FixedWeights:
        return FixedWeights(torch.ones(len(rows), 1, device=self.device))

    def _provider(self, rows: list[Row]):
        """Each method's own weights for its rows (fixed, the PCM's, ...), routed by row."""
        return batch_provider(self.runtime, [(r.method, r.spec) for r in rows], [r.experts for r in rows])
