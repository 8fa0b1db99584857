"""Personalized Soups: merge the chosen experts' LoRA adapters into one adapter per combination.

`psoups` averages the LoRA A tensors and the B tensors separately, as the P-Soups code does, so the merged
update is mean(B) @ mean(A), cross terms included. `delta` is the weighted mean of the experts' updates,
sum_i w_i B_i @ A_i, exactly (peft's "cat" combination: the ranks are concatenated).

`ties_svd` and `dare_linear_svd` are peft's TIES and DARE merges applied to the experts' full weight deltas
B_i @ A_i, the result cut back to a LoRA by SVD at the sum of the merged ranks (`add_weighted_adapter`'s
combination types of those names). peft's factor-wise `ties`/`linear`/`dare_*` combine A and B separately
(cross terms; peft issue 3004), so they are not offered. Experts of weight 0 are left out of the merge, so
that they take no part in TIES's sign election. TIES: each delta keeps its `density` largest-magnitude
entries, a sign is elected per entry, and peft averages the weighted deltas that agree with it; the weights
are passed times the number of merged experts, so that equal weights give TIES's own disjoint mean. A soup
of one expert (one-hot weights) is that expert, unpruned: peft copies a single adapter. DARE: each delta keeps a random `density` share of its
entries, rescaled by 1/density, then the weighted sum (seeded from the adapter's name: the same soup every time).
"""

from __future__ import annotations

import copy
import re
import zlib

import torch

from rlphf_cli.errors import UserError

MERGES = ("psoups", "delta", "ties_svd", "dare_linear_svd")
SVD_MERGES = ("ties_svd", "dare_linear_svd")


def soup_name(poles, merge: str, weights=None, density: float = 0.5) -> str:
    """The merged adapter's name; it carries the weights when they are not equal, so that another weighting
    is another adapter (peft ignores a reused name, and stacked decoding caches tensors by adapter name), and
    the density of the TIES/DARE merges."""
    from rlphf_cli.preferences import format_weight, preference_name

    tail = f"_d{format_weight(density).replace('.', 'p')}" if merge in SVD_MERGES else ""
    if weights is None or "=" not in preference_name(tuple(poles), weights):
        return f"soup_{merge}_" + "_".join(poles) + tail
    parts = [
        f"{p}-{format_weight(w)}".replace(".", "p").replace("+", "")
        for p, w in zip(poles, weights, strict=True)
    ]
    return f"soup_{merge}_" + "_".join(parts) + tail


@torch.no_grad()
def add_soup(
    model, poles: list[str], weights: list[float], merge: str = "psoups", density: float = 0.5
) -> str:
    """Add a merged adapter for `poles` to a peft model holding one adapter per pole; return its name."""
    if merge not in MERGES:
        raise UserError(f"unknown soups merge {merge!r}; valid: {', '.join(MERGES)}")
    missing = [p for p in poles if p not in model.peft_config]
    if missing:
        raise UserError(f"no expert adapter for {', '.join(missing)}")
    name = soup_name(poles, merge, weights, density)
    if name in model.peft_config:
        return name
    if merge in SVD_MERGES:
        if not 0 < density <= 1:
            raise UserError(f"generate.soups_density must be in (0, 1]; got {density}")
        kept = [(p, float(w)) for p, w in zip(poles, weights, strict=True) if w > 0]
        scale = len(kept) if merge == "ties_svd" else 1
        rank = sum(model.peft_config[p].r for p, _ in kept)
        # peft's SVD keeps `svd_rank` singular values of every layer's delta; a layer narrower than the summed
        # rank has only min(in, out) of them (more crashes peft), and cutting there loses nothing
        rank = min([rank, *_narrowest(model, kept[0][0])])
        with torch.random.fork_rng(devices=[]):  # DARE's random drops: the same soup for the same name
            torch.manual_seed(zlib.crc32(name.encode()))
            model.add_weighted_adapter(
                [p for p, _ in kept],
                [w * scale for _, w in kept],
                name,
                combination_type=merge,
                svd_rank=rank,
                density=density,
            )
    elif merge == "delta":
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


def _narrowest(model, adapter: str) -> list[int]:
    """min(in, out) of every layer that carries `adapter`."""
    return [
        min(m.lora_A[adapter].weight.shape[1], m.lora_B[adapter].weight.shape[0])
        for m in model.modules()
        if hasattr(m, "lora_A") and adapter in getattr(m, "lora_A", {})
    ]
