"""Personalized Soups: merge the chosen experts' LoRA adapters into one adapter per combination.

`psoups` averages the LoRA A tensors and the B tensors separately, as the P-Soups code does, so the merged
update is mean(B) @ mean(A), cross terms included. `delta` is the weighted mean of the experts' updates,
sum_i w_i B_i @ A_i, exactly (peft's "cat" combination: the ranks are concatenated).
"""

from __future__ import annotations

import copy
import re

import torch

from rlphf_cli.errors import UserError

MERGES = ("psoups", "delta")


def soup_name(poles, merge: str, weights=None) -> str:
    """The merged adapter's name; it carries the weights when they are not equal, so that another weighting
    is another adapter (peft ignores a reused name, and stacked decoding caches tensors by adapter name)."""
    from rlphf_cli.preferences import format_weight, preference_name

    if weights is None or "=" not in preference_name(tuple(poles), weights):
        return f"soup_{merge}_" + "_".join(poles)
    parts = [
        f"{p}-{format_weight(w)}".replace(".", "p").replace("+", "")
        for p, w in zip(poles, weights, strict=True)
    ]
    return f"soup_{merge}_" + "_".join(parts)


@torch.no_grad()
def add_soup(model, poles: list[str], weights: list[float], merge: str = "psoups") -> str:
    """Add a merged adapter for `poles` to a peft model holding one adapter per pole; return its name."""
    if merge not in MERGES:
        raise UserError(f"unknown soups merge {merge!r}; valid: {', '.join(MERGES)}")
    missing = [p for p in poles if p not in model.peft_config]
    if missing:
        raise UserError(f"no expert adapter for {', '.join(missing)}")
    name = soup_name(poles, merge, weights)
    if name in model.peft_config:
        return name
    if merge == "delta":
        model.add_weighted_adapter(list(poles), list(weights), name, combination_type="cat")
    else:
        ranks = {model.peft_config[p].r for p in poles}
        if len(ranks) > 1:
            raise UserError(f"psoups merge needs experts of one LoRA rank; got ranks {sorted(ranks)}")
        model.add_adapter(name, copy.deepcopy(model.peft_config[poles[0]]))
        params = dict(model.named_parameters())
        pattern = re.compile(rf"\.{re.escape(name)}\.")
        for key, param in params.items():
            if pattern.search(key):
                sources = [params[pattern.sub(f".{p}.", key)] for p in poles]
                param.copy_(sum(w * s for w, s in zip(weights, sources, strict=True)))
    model.eval()  # new adapter modules start in training mode, which per-row adapter names refuse
    return name
