"""What a decoding method is: the `Method` base class every module of this package subclasses.

A method decides, for a row (one instruction under one preference), which experts the row mixes (adapter
names on the run's one peft model; `BASE` is the base alone), with which weights, in which mixing space, and
whether the preference texts go into the prompt. Everything else (loading, batching, sampling, resuming,
serving) is shared, so rows of different methods run in one batch.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from rlphf_cli.decoding.engine import BASE, FixedWeights
from rlphf_cli.preferences import Preference
from rlphf_cli.runs import RunDir, input_hash


class Method:
    """One decoding method. Subclasses set the class attributes and override what differs.

    Attributes:
        name: the method's name (`generate method=NAME`, the served model's id, `generations/NAME.jsonl`).
        help: one line for `--help` and the README.
        adapters: the run's adapter folders the method decodes with, one adapter per pole (`experts`, `arms`).
        needs_pcm: decodes with the trained PCM (`pcm/`).
        mixing: its default mixing space, `prob` or `log` (`generate.mixing` overrides it); None: one
            expert per row, no mixture (the setting is not recorded).
        takes_weights: honours continuous preference weights (`P1A:0.7,P2B:0.3`); False: it reads only
            which poles are chosen.
        reads_preference: always decodes with the preference texts after the instruction (as `prompted`);
            others do when listed in `generate.preference_in_prompt` (`[all]`: every method).
        settings_keys: its own settings that decide its outputs, beside the shared sampling ones, as
            {recorded name: `generate.*` key} (kept in each record and in `generations/NAME.settings.json`;
            a resume that changes one is refused).
        baseline: the pipeline evaluates the methods that compare with every baseline (pcm) against it.
        evaluate_against: the baselines the pipeline evaluates this method against (`*`: every baseline).
    """

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    adapters: ClassVar[tuple[str, ...]] = ()
    needs_pcm: ClassVar[bool] = False
    mixing: ClassVar[str | None] = None
    takes_weights: ClassVar[bool] = True
    reads_preference: ClassVar[bool] = False
    settings_keys: ClassVar[dict[str, str]] = {}
    baseline: ClassVar[bool] = True
    evaluate_against: ClassVar[tuple[str, ...]] = ()

    # --- what the method needs from the run
    def inputs(self, cfg) -> dict[str, str]:
        """The artifacts it decodes with and their hashes (`made_from`): the base, adapters, the PCM."""
        root = RunDir(cfg.run_dir).root
        out = {"base": input_hash(root / "base")}
        for folder in self.adapters:
            out |= {f"{folder}/{p}": input_hash(root / folder / p) for p in cfg.benchmark.poles}
        if self.needs_pcm:
            out["pcm"] = input_hash(root / "pcm")
        return out

    def servable_poles(self, run: RunDir, poles) -> list[str]:
        """The poles a request may name (their adapters are complete); empty: the run cannot decode it."""
        ok = [p for p in poles if all(run.artifact(f"{f}/{p}").is_complete() for f in self.adapters)]
        if self.needs_pcm and (ok != list(poles) or not run.artifact("pcm").is_complete()):
            return []
        return ok

    def load(self, runtime, poles) -> None:
        """Load what decoding needs onto the runtime (its adapters for `poles`, the PCM)."""
        for folder in self.adapters:
            runtime.load_adapters(folder, poles)
        if self.needs_pcm:
            runtime.pcm(runtime.cfg.benchmark.poles)

    # --- settings
    def mixing_space(self, cfg) -> str:
        return cfg.generate.mixing or self.mixing or "prob"

    def settings(self, cfg) -> dict:
        """The method's own settings that decide its outputs (beside the shared sampling settings)."""
        out = {key: cfg.generate[k] for key, k in self.settings_keys.items()}
        if self.mixing is not None:
            out["mixing"] = self.mixing_space(cfg)
        return out

    def preference_in_prompt(self, cfg) -> bool:
        listed = cfg.generate.preference_in_prompt
        return self.reads_preference or "all" in listed or self.name in listed

    def notes(self, prefs: list[Preference]) -> list[str]:
        """Log lines about how the method reads these preferences (e.g. weights it ignores)."""
        if not self.takes_weights and any(p.weighted for p in prefs):
            return [f"{self.name} reads only which poles are chosen, not their weights"]
        return []

    # --- rows
    def prepare(self, runtime, prefs: list[Preference]) -> None:
        """Make what rows of these preferences need before they decode (soups: their merged adapters)."""

    def experts(self, runtime, pref: Preference) -> tuple[str, ...]:
        """The experts a row of this preference mixes (adapter names; BASE: the base alone)."""
        return (BASE,)

    def weights(self, runtime, pref: Preference) -> list[float]:
        """Fixed weights over `experts(pref)`, used when `provider` gives none."""
        return [1.0]

    def provider(self, runtime, prefs: list[Preference], active: list[tuple[str, ...]]):
        """The weight provider of rows with these preferences, each mixing `active[i]` (padded with PAD);
        the default: fixed weights from `weights` (PAD slots at 0)."""
        width = len(active[0])
        w = torch.zeros(len(prefs), width)
        for i, pref in enumerate(prefs):
            row = self.weights(runtime, pref)
            w[i, : len(row)] = torch.tensor(row, dtype=torch.float32)
        return FixedWeights(w.to(runtime.device))

    def record(self, cfg) -> dict:
        """Fields every record of this method carries (its own settings)."""
        return self.settings(cfg)


class Mixture(Method):
    """A fixed-weight mixture of the preference's experts (uniform, mod)."""

    adapters = ("experts",)

    def experts(self, runtime, pref):
        return tuple(pref.combination)
