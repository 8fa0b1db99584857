"""K LoRA adapters applied to expert-replicated rows with one batched matmul per layer.

peft's per-row `adapter_names` loops over the adapters inside every LoRA layer, selecting each one's rows;
on the decoding hot path that costs more than the matmuls themselves. Here the base layers run once over
all B x K rows (adapters disabled) and a forward hook adds every row's own low-rank update: the A and B
tensors of the active adapters are stacked once per expert set into [K, r, in] and [K, out, r] (ranks
padded with zeros, `__base__` or a missing target as a zero update), and row b*K + i uses adapter i.
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
        self.active: tuple[str, ...] = ()

    def _stack(self, layer, active: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        base = layer.get_base_layer()
        weight = base.weight
        rank = max([layer.r[a] for a in active if a in layer.lora_A] or [1])
        A = weight.new_zeros(len(active), rank, base.in_features)
        B = weight.new_zeros(len(active), base.out_features, rank)
        for i, a in enumerate(active):
            if a in layer.lora_A:
                r = layer.r[a]
                A[i, :r] = layer.lora_A[a].weight.to(weight.dtype)
                B[i, :, :r] = layer.lora_B[a].weight.to(weight.dtype) * layer.scaling[a]
        return A, B

    def prepare(self, active: list[str]) -> None:
        key = tuple(active)
        unknown = [a for a in key if a != BASE and a not in self.model.peft_config]
        if unknown:
            raise KeyError(f"unknown expert adapter(s) {unknown}; loaded: {list(self.model.peft_config)}")
        if key not in self._stacks:
            self._stacks = {key: [self._stack(m, key) for m in self.layers]}  # keep one expert set at a time
        self.active = key

    @contextlib.contextmanager
    def applied(self):
        """Run the model with adapters disabled and the stacked updates added to every LoRA layer.

        Entered once per decoded batch (not per step): toggling peft's adapters walks every module.
        """
        k = len(self.active)
        hooks = []
        for layer, (A, B) in zip(self.layers, self._stacks[self.active], strict=True):

            def hook(module, inputs, output, A=A, B=B):
                x = inputs[0]
                rows = x.shape[0]
                xk = x.reshape(rows // k, k, -1, x.shape[-1]).to(A.dtype)
                delta = torch.einsum("bktr,kor->bkto", torch.einsum("bktd,krd->bktr", xk, A), B)
                return output + delta.reshape(output.shape).to(output.dtype)

            hooks.append(layer.register_forward_hook(hook))
        try:
            with self.model.disable_adapter():
                yield
        finally:
            for h in hooks:
                h.remove()
