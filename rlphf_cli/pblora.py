"""PARM's preference-aware bilinear LoRA (PBLoRA; Lin et al., ICML 2025), read from Baijiong-Lin/PARM.

Each target linear layer W gets an update conditioned on the preference weights alpha over K poles:

    delta_W(alpha) = s * (B1 W1 A1 + B2 W2(alpha) A2),   W2(alpha) = (alpha @ W2).view(r2, r2) = sum_i alpha_i M_i

with A = [A1; A2] ([r1 + r2, in]), B = [B1, B2] ([out, r1 + r2]), W1 [r1, r1], W2 [K, r2 * r2] and
s = lora_alpha / r2 (PARM's scaling). As PARM initialises it: A, W1 and W2 Kaiming-uniform, B zero, so the
update starts at zero.

The preference-dependent part is linear in alpha, so the update is a weighted sum of K + 1 LoRA-shaped
updates: `shared` (A1, s B1 W1) at scale 1 and, per pole i, (A2, s B2 M_i) at scale alpha_i. `lora_slots`
gives them; decoding installs them as plain LoRA adapters and runs the PARM at alpha as one row whose update
is that weighted sum (`stacked_lora.Blend`): the base plus one ARM per token, whatever the number of poles,
and rows with different weights share one forward.

Here, unlike PARM's peft fork (one preference vector per layer, set before each step), the weights are per
row: `PBLoRA.set_preference` takes [K] (every row) or [B, K].
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

CONFIG_FILE = "parm_config.json"
WEIGHTS_FILE = "pblora.safetensors"
SHARED = "shared"


def slot_name(prefix: str, part: str) -> str:
    """The adapter name of one LoRA-shaped part of a PARM (peft adapter names may not hold dots)."""
    return f"{prefix}__{part}"


class PBLoRALayer(nn.Module):
    """One layer's PBLoRA parameters; `delta(x, alpha)` is its update for inputs x [B, T, in]."""

    def __init__(self, in_features: int, out_features: int, r1: int, r2: int, poles: int, scaling: float):
        super().__init__()
        self.r1, self.r2, self.scaling = r1, r2, scaling
        self.A = nn.Parameter(torch.empty(r1 + r2, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, r1 + r2))
        self.W1 = nn.Parameter(torch.empty(r1, r1))
        self.W2 = nn.Parameter(torch.empty(poles, r2 * r2))
        for p in (self.A, self.W1, self.W2):
            nn.init.kaiming_uniform_(p, a=math.sqrt(5))

    def delta(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """x [B, T, in], alpha [B, K] -> the update [B, T, out]."""
        r1, r2 = self.r1, self.r2
        h = nn.functional.linear(x.to(self.A.dtype), self.A)  # [B, T, r1 + r2]
        shared = nn.functional.linear(h[..., :r1], self.W1)
        m = (alpha.to(self.W2.dtype) @ self.W2).view(-1, r2, r2)  # [B, r2, r2]: W2(alpha) per row
        pref = torch.einsum("btj,bij->bti", h[..., r1:], m)
        return nn.functional.linear(torch.cat([shared, pref], dim=-1), self.B) * self.scaling

    @torch.no_grad()
    def slots(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(A, B) of the shared part, then of each pole's part (B scaled by s): delta = shared + sum alpha_i pole_i."""
        r1, r2 = self.r1, self.r2
        A1, A2 = self.A[:r1], self.A[r1:]
        B1, B2 = self.B[:, :r1], self.B[:, r1:]
        out = [(A1.clone(), (B1 @ self.W1) * self.scaling)]
        for row in self.W2:
            out.append((A2.clone(), (B2 @ row.view(r2, r2)) * self.scaling))
        return out


class PBLoRA(nn.Module):
    """PBLoRA on a causal LM's target linear layers (the base frozen), by forward hooks.

    `set_preference(alpha)` before a forward: alpha [K] for every row or [B, K] per row.
    """

    def __init__(
        self,
        model: nn.Module,
        poles: list[str],
        r1: int,
        r2: int,
        lora_alpha: float,
        target_modules: list[str],
        dropout: float = 0.0,
    ):
        super().__init__()
        self.model = model
        self.poles = list(poles)
        self.r1, self.r2, self.lora_alpha = r1, r2, lora_alpha
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.names = [
            n
            for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and n.split(".")[-1] in set(target_modules)
        ]
        if not self.names:
            raise ValueError(f"no linear layer named any of {list(target_modules)} in the model")
        scaling = lora_alpha / r2
        self.layers = nn.ModuleDict(
            {
                n.replace(".", "/"): PBLoRALayer(
                    m.in_features, m.out_features, r1, r2, len(self.poles), scaling
                )
                for n, m in model.named_modules()
                if n in set(self.names)
            }
        )
        for p in model.parameters():
            p.requires_grad_(False)
        self.alpha: torch.Tensor | None = None
        self._hooks = [
            model.get_submodule(n).register_forward_hook(self._hook(self.layers[n.replace(".", "/")]))
            for n in self.names
        ]

    def _hook(self, layer: PBLoRALayer):
        def hook(module, inputs, output):
            x = inputs[0]
            alpha = self.alpha
            if alpha is None:
                raise RuntimeError("PBLoRA: call set_preference before the forward")
            alpha = alpha.to(x.device)
            if alpha.dim() == 1:
                alpha = alpha.expand(x.shape[0], -1)
            return output + layer.delta(self.dropout(x), alpha).to(output.dtype)

        return hook

    def set_preference(self, alpha) -> None:
        alpha = torch.as_tensor(alpha, dtype=torch.float32)
        if alpha.shape[-1] != len(self.poles):
            raise ValueError(f"a preference over {alpha.shape[-1]} poles for a PARM over {len(self.poles)}")
        self.alpha = alpha

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()

    # ----- saving and loading -----
    def config(self) -> dict:
        return {
            "poles": self.poles,
            "r1": self.r1,
            "r2": self.r2,
            "lora_alpha": self.lora_alpha,
            "modules": self.names,
        }

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {
            f"{n}.{p}": getattr(self.layers[n.replace(".", "/")], p).detach().cpu().contiguous()
            for n in self.names
            for p in ("A", "B", "W1", "W2")
        }
        save_file(tensors, str(folder / WEIGHTS_FILE))
        (folder / CONFIG_FILE).write_text(json.dumps(self.config(), indent=2) + "\n")

    @classmethod
    def load(cls, model: nn.Module, folder: Path) -> PBLoRA:
        from safetensors.torch import load_file

        folder = Path(folder)
        config = json.loads((folder / CONFIG_FILE).read_text())
        suffixes = sorted({n.split(".")[-1] for n in config["modules"]})
        parm = cls(model, config["poles"], config["r1"], config["r2"], config["lora_alpha"], suffixes)
        if parm.names != config["modules"]:
            raise ValueError(f"the PARM in {folder} targets other layers than this model has")
        tensors = load_file(str(folder / WEIGHTS_FILE))
        with torch.no_grad():
            for n in parm.names:
                layer = parm.layers[n.replace(".", "/")]
                for p in ("A", "B", "W1", "W2"):
                    getattr(layer, p).copy_(tensors[f"{n}.{p}"])
        return parm.to(next(model.parameters()).device)


def read_config(folder: Path) -> dict:
    return json.loads((Path(folder) / CONFIG_FILE).read_text())


def lora_slots(folder: Path) -> tuple[dict, dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]]:
    """A saved PARM as K + 1 LoRA-shaped parts: {part: {module: (A, B scaled)}}, part `shared` or a pole."""
    from safetensors.torch import load_file

    config = read_config(folder)
    tensors = load_file(str(Path(folder) / WEIGHTS_FILE))
    r1, r2 = config["r1"], config["r2"]
    parts: dict[str, dict] = {SHARED: {}, **{p: {} for p in config["poles"]}}
    for n in config["modules"]:
        layer = PBLoRALayer(1, 1, r1, r2, len(config["poles"]), config["lora_alpha"] / r2)
        layer.A = nn.Parameter(tensors[f"{n}.A"])
        layer.B = nn.Parameter(tensors[f"{n}.B"])
        layer.W1 = nn.Parameter(tensors[f"{n}.W1"])
        layer.W2 = nn.Parameter(tensors[f"{n}.W2"])
        for part, slot in zip([SHARED, *config["poles"]], layer.slots(), strict=True):
            parts[part][n] = slot
    return config, parts


def add_parm_adapters(model, folder: Path, prefix: str = "parm"):
    """Install a saved PARM's K + 1 parts as plain LoRA adapters `<prefix>__shared`, `<prefix>__<pole>` on
    `model` (a base model, wrapped in peft here, or a peft model); returns (the peft model, the config).

    peft's scaling is set to 1 (lora_alpha = r): the PBLoRA scaling is already in B.
    """
    from peft import LoraConfig, PeftModel, get_peft_model

    config, parts = lora_slots(folder)
    suffixes = sorted({n.split(".")[-1] for n in config["modules"]})
    for part, modules in parts.items():
        r = config["r1"] if part == SHARED else config["r2"]
        lora = LoraConfig(r=r, lora_alpha=r, lora_dropout=0.0, target_modules=suffixes)
        name = slot_name(prefix, part)
        if isinstance(model, PeftModel):
            model.add_adapter(name, lora)
        else:
            model = get_peft_model(model, lora, adapter_name=name)
        inner = model.base_model.model
        with torch.no_grad():
            for n, (A, B) in modules.items():
                layer = inner.get_submodule(n)
                w = layer.lora_A[name].weight
                layer.lora_A[name].weight.copy_(A.to(w.dtype))
                layer.lora_B[name].weight.copy_(B.to(w.dtype))
    return model.eval(), config


def parm_blend(poles: list[str], weights: dict[str, float], prefix: str = "parm"):
    """The expert-list entry of the PARM at `weights` (pole -> weight): its shared part at 1, each pole's
    part at the pole's weight (poles at 0 left out)."""
    from rlphf_cli.decoding.stacked_lora import Blend

    unknown = [p for p in weights if p not in poles]
    if unknown:
        raise KeyError(f"the PARM knows poles {poles}, not {unknown}")
    parts = [(slot_name(prefix, SHARED), 1.0)]
    parts += [(slot_name(prefix, p), float(weights[p])) for p in poles if weights.get(p, 0.0) != 0.0]
    return Blend(tuple(parts))
