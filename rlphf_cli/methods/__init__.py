"""The decoding methods, one module each, registered by name in one lazy table.

`TABLE` maps a method's name to the module that defines it; the module is imported on first use (as
lm-evaluation-harness registers its models) and holds `METHOD`, an instance of a `Method` subclass
(methods/base.py). Everything that iterates over methods reads this table: `generate`, `serve`, `headroom`,
`personalize`, the pipeline's evaluation plan and the CLI's `--help`.

Adding a method is one module plus one line here:

    # rlphf_cli/methods/mine.py
    from rlphf_cli.methods.base import Method

    class Mine(Method):
        name = "mine"
        help = "one line for --help"
        adapters = ("experts",)          # run folders it decodes with, one adapter per pole (or "arms", ...)
        mixing = "prob"                  # default mixing space (None: one expert per row)
        takes_weights = True             # honours continuous weights (P1A:0.7,P2B:0.3)
        settings_keys = {"alpha": "mine_alpha"}  # its own settings that decide outputs (generate.mine_alpha)

        def experts(self, runtime, pref):     # the row's experts: adapter names, BASE for the base alone
            return tuple(pref.combination)

        def weights(self, runtime, pref):     # fixed weights over them; or override provider(...)
            return list(pref.weights)

    METHOD = Mine()

    # here:  "mine": "rlphf_cli.methods.mine",

The interface a module may rely on (stable): the `Method` attributes `name, help, adapters, needs_pcm,
mixing, takes_weights, reads_preference, settings_keys, baseline` and its methods `inputs(cfg)`,
`servable_poles(run, poles)`, `load(runtime, poles)`, `mixing_space(cfg)`, `settings(cfg)`,
`preference_in_prompt(cfg)`, `notes(prefs)`, `prepare(runtime, prefs)`, `experts(runtime, pref)`,
`weights(runtime, pref)`, `provider(runtime, prefs, active)`, `record(cfg)`; the `Runtime`
(decoding/runtime.py) with `cfg, device, tokenizer, model, load_adapters(folder, poles), pcm(poles),
add_soup(poles, weights, merge), encode(text), text(tokens)`. A method that needs a model of its own loads it
in `load` (onto the runtime) and decodes through `experts`/`provider`. A model whose LoRA depends on the
preference (PARM's preference-aware bilinear LoRA, B W(w) A) fits as soups do: `prepare` adds one adapter
per preference to `runtime.model` (its B already multiplied by W(w)), `experts` names it beside BASE.

Rows of every method share one batch (serve; generate batches one method): `methods/batch.py` pads each
row's experts with PAD (weight 0, no forward) to one width, routes rows to their method's provider (CompositeWeights),
and mixes each row in its own space.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from rlphf_cli.errors import UserError

if TYPE_CHECKING:  # the table stays light to import (the CLI's --help, reports): modules load on first use
    from rlphf_cli.methods.base import Method

TABLE: dict[str, str] = {
    "sft": "rlphf_cli.methods.sft",
    "prompted": "rlphf_cli.methods.prompted",
    "soups": "rlphf_cli.methods.soups",
    "mod": "rlphf_cli.methods.mod",
    "uniform": "rlphf_cli.methods.uniform",
    "genarm": "rlphf_cli.methods.genarm",
    "pcm": "rlphf_cli.methods.pcm",
}

NAMES: tuple[str, ...] = tuple(TABLE)
_loaded: dict[str, Method] = {}


def get_method(name: str) -> Method:
    """The method registered as `name` (its module imported on first use); one line for an unknown name."""
    if name not in TABLE:
        raise UserError(f"unknown method {name!r}; valid: {', '.join(NAMES)}")
    if name not in _loaded:
        method = importlib.import_module(TABLE[name]).METHOD
        if method.name != name:
            raise RuntimeError(f"{TABLE[name]} registers {method.name!r} as {name!r}")
        _loaded[name] = method
    return _loaded[name]


def all_methods() -> list[Method]:
    return [get_method(n) for n in NAMES]


def help_line() -> str:
    """The methods for `--help`: `name (help)` each."""
    return "; ".join(f"{m.name} ({m.help})" for m in all_methods())


def evaluation_plan() -> list[tuple[str, str]]:
    """The pipeline's (method, baseline) pairs: each method's `evaluate_against` (`*`: every baseline)."""
    baselines = [m.name for m in all_methods() if m.baseline]
    pairs = []
    for m in sorted(all_methods(), key=lambda m: "*" not in m.evaluate_against):  # pcm's pairs first
        for b in m.evaluate_against:
            pairs += [(m.name, x) for x in baselines if x != m.name] if b == "*" else [(m.name, b)]
    return pairs


__all__ = ["NAMES", "TABLE", "all_methods", "evaluation_plan", "get_method", "help_line"]
