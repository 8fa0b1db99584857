"""LoRA adapters applied to expert-replicated rows with two dense matmuls per layer.

peft's per-row `adapter_names` loops over the adapters inside every LoRA layer, selecting each one's rows;
on the decoding hot path that costs more than the matmuls themselves. Here the base layers run once over
all B x K rows (adapters disabled) and a forward hook adds every row's own low-rank update. Row b*K + i
carries the i-th adapter of row b's list (`__base__`, or a layer the adapter does not target, is a zero
update). The A and B matrices of the N adapters in use are concatenated once per adapter set into
[N*r, in] and [out, N*r] (ranks padded with zeros); every row projects onto all N adapters' down
matrices, a 0/1 mask keeps its own adapter's r columns, and one matmul with the concatenated up matrices
adds its update. Dense matmuls over all rows beat B x K tiny per-row ones (gathered A and B) by far at
decoding's one token per step; the extra work, N*r columns beside the layer's `out`, is small. The mask is
made once per decoded batch: [K, N*r] when every row carries the same list, [B, K, N*r] when rows differ
(other preferences, other users).

A row's entry may also be a `Blend`, a weighted sum of several adapters' updates (a PARM at a preference:
its shared part at 1, each pole's part at the pole's weight): its mask row then holds those real-valued
scales instead of a single 1, at the same cost.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

BASE = "__base__"  # peft's name for "no adapter" in a per-row adapter list


@dataclass(frozen=True)
class Blend:
    """One row's update as sum_j scale_j x (adapter_j's update): ((name, scale), ...). Hashable, so it
    stands in a per-row expert list like an adapter name."""

    parts: tuple[tuple[str, float], ...]

    def names(self) -> list[str]:
        return [a for a, _ in self.parts]


def adapter_names(entry) -> list[str]:
    """The adapters an entry of a row's expert list runs: one name, or a blend's names."""
    return entry.names() if isinstance(entry, Blend) else [entry]


class StackedLoRA:
    def __init__(self, model):
        from peft.tuners.lora import LoraLayer
        from transformers.pytorch_utils import Conv1D

        self.model = model
        named = [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]
        self.layers = [m for _, m in named]
        for name, m in named:
            base = m.get_base_layer()
            if not isinstance(base, torch.nn.Linear | Conv1D):  # GPT-2's Conv1D: peft's fan_in_fan_out
                kind = type(base).__name__
                raise ValueError(
                    f"stacked LoRA decoding supports LoRA on linear layers only; {name} is {kind}"
                )
            if any(m.use_dora.get(a, False) for a in m.lora_A):
                raise ValueError("stacked LoRA decoding does not support DoRA adapters")
        self._stacks: dict[tuple[str, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._names: tuple[str, ...] = ()
        self._rank = 1
        self._mask = torch.zeros(0)

    def _stack(self, layer, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's adapters `names` concatenated: A [N*r, in] and B [out, N*r], B scaled.

        peft's sizes, not the base layer's: GPT-2's Conv1D has no in_features and stores its weight [in, out]
        (the LoRA factors themselves are laid out as for nn.Linear either way)."""
        weight = layer.get_base_layer().weight
        rank, n_in, n_out = self._rank, layer.in_features, layer.out_features
        A = weight.new_zeros(len(names), rank, n_in)
        B = weight.new_zeros(n_out, len(names), rank)
        for i, a in enumerate(names):
            if a in layer.lora_A:
                r = layer.r[a]
                A[i, :r] = layer.lora_A[a].weight.to(weight.dtype)
                B[:, i, :r] = layer.lora_B[a].weight.to(weight.dtype) * layer.scaling[a]
        return A.reshape(-1, n_in), B.reshape(n_out, -1)

    def prepare(self, rows: list[tuple[str, ...]]) -> None:
        """Set up the updates for rows that each carry a list of adapters (all lists of one length); one
        list stands for every row."""
        if not all(isinstance(row, tuple | list) for row in rows):
            raise TypeError("StackedLoRA.prepare takes one list of adapter names per row")
        names = tuple(dict.fromkeys(a for row in rows for entry in row for a in adapter_names(entry)))
        unknown = [a for a in names if a != BASE and a not in self.model.peft_config]
        if unknown:
            raise KeyError(f"unknown expert adapter(s) {unknown}; loaded: {list(self.model.peft_config)}")
        if names not in self._stacks:
            # keep one adapter set at a time; peft's adapters may have changed since (soups are added)
            self._rank = max([m.r[a] for m in self.layers for a in names if a in m.lora_A] or [1])
            self._stacks = {names: [self._stack(m, names) for m in self.layers]}
            self._names = names
        self.k = len(rows[0])
        shared = all(row == rows[0] for row in rows)
        A = self._stacks[names][0][0] if self.layers else torch.zeros(0)
        slots = torch.zeros(
            len(rows[:1] if shared else rows), self.k, len(names), dtype=A.dtype
        )  # [1 or B, K, N]
        for b, row in enumerate(rows[:1] if shared else rows):
            for i, entry in enumerate(row):
                for a, scale in entry.parts if isinstance(entry, Blend) else ((entry, 1.0),):
                    slots[b, i, names.index(a)] += scale
        mask = slots.repeat_interleave(self._rank, dim=-1).to(A.device)  # [1 or B, K, N*r]
        self._mask = mask[:, :, None, :]  # broadcast over the tokens of each row

    def select(self, index: torch.Tensor) -> None:
        """Keep rows `index` of the prepared batch (finished rows leave it)."""
        if self._mask.shape[0] > 1:
            self._mask = self._mask[index.to(self._mask.device)]

    @contextlib.contextmanager
    def applied(self):
        """Run the model with adapters disabled and the prepared updates added to every LoRA layer.

        Entered once per decoded batch (not per step): toggling peft's adapters walks every module.
        """
        k = self.k
        hooks = []
        for layer, (A, B) in zip(self.layers, self._stacks[self._names], strict=True):

            def hook(module, inputs, output, A=A, B=B):
                x = inputs[0]
                xk = x.reshape(x.shape[0] // k, k, -1, x.shape[-1]).to(A.dtype)
                delta = torch.nn.functional.linear(torch.nn.functional.linear(xk, A) * self._mask, B)
                return output + delta.reshape(output.shape).to(output.dtype)

            hooks.append(layer.register_forward_hook(hook))
        try:
            with self.model.disable_adapter():
                yield
        finally:
            for h in hooks:
                h.remove()
