"""One batch for every method: rows of different methods differ only in their experts, weights, mixing space
and weight provider, so any mix of (method, preference) rows becomes one engine batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlphf_cli.decoding.engine import PAD, CompositeWeights
from rlphf_cli.methods.base import Method
from rlphf_cli.preferences import Preference


@dataclass
class Plan:
    active: list[tuple[str, ...]]  # each row's experts, padded with PAD (weight 0, no forward) to one width
    provider: object  # the weight provider of every row (a composite when several methods share the batch)
    mixing: str | list[str]  # one mixing space, or one per row


def plan_rows(
    runtime, rows: list[tuple[Method, Preference]], mixing: str | None = None, width: int | None = None
) -> Plan:
    """Experts, weights and mixing of rows that each carry a method and a preference (their soups, PCM,
    adapters already prepared). `mixing` overrides every row's; `width`: the number of experts per row
    (default: the widest row's)."""
    own = [tuple(m.experts(runtime, pref)) for m, pref in rows]
    width = width or max(len(a) for a in own)
    active = [a + (PAD,) * (width - len(a)) for a in own]
    modes = [mixing or m.mixing_space(runtime.cfg) for m, _ in rows]
    provider = batch_provider(runtime, rows, active)
    return Plan(active, provider, modes[0] if len(set(modes)) == 1 else modes)


def batch_provider(runtime, rows: list[tuple[Method, Preference]], active: list[tuple[str, ...]]):
    """The weight provider of rows (method, preference) mixing `active`: each method's own provider for its
    rows, routed by a `CompositeWeights` when several methods share the batch."""
    groups: dict[str, list[int]] = {}
    for i, (m, _) in enumerate(rows):
        groups.setdefault(m.name, []).append(i)
    parts = []
    for index in groups.values():
        m = rows[index[0]][0]
        provider = m.provider(runtime, [rows[i][1] for i in index], [active[i] for i in index])
        parts.append((torch.tensor(index, device=runtime.device), provider))
    return parts[0][1] if len(parts) == 1 else CompositeWeights(parts, len(rows))


def padded_experts(runtime, method: Method, pref: Preference, width: int) -> tuple[str, ...]:
    own = tuple(method.experts(runtime, pref))
    if len(own) > width:
        raise ValueError(f"{method.name} mixes {len(own)} experts; the batch holds {width} per row")
    return own + (PAD,) * (width - len(own))
