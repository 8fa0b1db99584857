"""LoRA adapters applied to expert-replicated rows with one batched matmul per layer.

peft's per-row `adapter_names` loops over the adapters inside every LoRA layer, selecting each one's rows;
on the decoding hot path that costs more than the matmuls themselves. Here the base layers run once over
all B x K rows (adapters disabled) and a forward hook adds every row's own low-rank update. Row b*K + i
carries the i-th adapter of row b's list (`__base__`, or a layer the adapter does not target, is a zero
update). The A and B tensors of the adapters in use are stacked once per adapter set into [N, r, in] and
[N, out, r] (ranks padded with zeros). When every row carries the same list the K stacked updates are
broadcast over the rows; when rows differ (other preferences, other users), each row's A and B are
gathered once per decoded batch.
"""

from __future__ import annotations

import contextlib

import torch

BASE = "__base__"  # peft's name for "no adapter" in a per-row adapter list


class StackedLoRA:
    def __init__(self, model):
        from peft.tuners.lora import LoraLayer

        self.model = model
        self.layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
        for m in self.layers:
            if any(m.use_dora.get(a, False) for a in m.lora_A):
                raise ValueError("stacked LoRA decoding does not support DoRA adapters")
        self._stacks: dict[tuple[str, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._rows: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _stack(self, layer, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        base = layer.get_base_layer()
        weight = base.weight
        rank = max([layer.r[a] for a in names if a in layer.lora_A] or [1])
        A = weight.new_zeros(len(names), rank, base.in_features)
        B = weight.new_zeros(len(names), base.out_features, rank)
        for i, a in enumerate(names):
            if a in layer.lora_A:
                r = layer.r[a]
                A[i, :r] = layer.lora_A[a].weight.to(weight.dtype)
                B[i, :, :r] = layer.lora_B[a].weight.to(weight.dtype) * layer.scaling[a]
        return A, B

    def prepare(self, rows: list[tuple[str, ...]]) -> None:
        """Set up the updates for rows that each carry a list of adapters (all lists of one length); one
        list stands for every row."""
        if not all(isinstance(row, tuple | list) for row in rows):
            raise TypeError("StackedLoRA.prepare takes one list of adapter names per row")
        names = tuple(dict.fromkeys(a for row in rows for a in row))
        unknown = [a for a in names if a != BASE and a not in self.model.peft_config]
        if unknown:
            raise KeyError(f"unknown expert adapter(s) {unknown}; loaded: {list(self.model.peft_config)}")
        if names not in self._stacks:
            # keep one adapter set at a time; peft's adapters may have changed since (soups are added)
            self._stacks = {names: [self._stack(m, names) for m in self.layers]}
        self.k = len(rows[0])
        shared = all(row == rows[0] for row in rows)
        index = torch.tensor([[names.index(a) for a in row] for row in (rows[:1] if shared else rows)])
        # shared: [K, r, in] broadcast over the rows; per row: [B, K, r, in], gathered once for the batch
        self._rows = [
            (A[index[0]], B[index[0]]) if shared else (A[index], B[index]) for A, B in self._stacks[names]
        ]

    @contextlib.contextmanager
    def applied(self):
        """Run the model with adapters disabled and the prepared updates added to every LoRA layer.

        Entered once per decoded batch (not per step): toggling peft's adapters walks every module.
        """
        k = self.k
        hooks = []
        for layer, (A, B) in zip(self.layers, self._rows, strict=True):
            down, up = (
                ("bktd,krd->bktr", "bktr,kor->bkto")
                if A.dim() == 3
                else ("bktd,bkrd->bktr", "bktr,bkor->bkto")
            )

            def hook(module, inputs, output, A=A, B=B, down=down, up=up):
                x = inputs[0]
                xk = x.reshape(x.shape[0] // k, k, -1, x.shape[-1]).to(A.dtype)
                delta = torch.einsum(up, torch.einsum(down, xk, A), B)
                return output + delta.reshape(output.shape).to(output.dtype)

            hooks.append(layer.register_forward_hook(hook))
        try:
            with self.model.disable_adapter():
                yield
        finally:
            for h in hooks:
                h.remove()
