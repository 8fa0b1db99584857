"""Reward models as LoRA adapters with their score heads on one shared base, every pole scored in one forward.

A reward model (`rm/<pole>/`, see training/rm.py) is a LoRA adapter on the base plus a one-output score head
(peft's `modules_to_save`). Merging each into its own copy of the base holds one base per pole (six 7B copies:
about 95 GB); here the base is held once (in train-pcm, the experts' own peft model) and each reward adapter is
loaded beside the experts as `rm-<pole>`, its score head kept apart. A batch is replicated once per pole (row
b*K + i is scored by pole i); StackedLoRA adds every row's own LoRA update in one batched matmul per layer, the
body's last hidden state is pooled once per row as the sequence classifier pools it (the rightmost non-pad
token), and each pole's head is applied to its own rows.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rlphf_cli.decoding.stacked_lora import StackedLoRA
from rlphf_cli.errors import UserError

PREFIX = "rm-"  # reward adapters' names beside expert adapters (named by the bare pole)


def _attach(model, name: str, path: Path):
    """Load the LoRA of a saved reward model into `model` (plain or peft) as adapter `name`; returns (model, head)."""
    from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    config = LoraConfig.from_pretrained(str(path))
    config.modules_to_save = None  # the score head is applied here, not wrapped into the base
    # only the body is run for rewards: no task head wrapping; a shared peft model keeps its own task type
    shared = isinstance(model, PeftModel)
    config.task_type = next(iter(model.peft_config.values())).task_type if shared else None
    config.inference_mode = True
    weights = load_file(str(path / "adapter_model.safetensors"))
    lora = {k: v for k, v in weights.items() if ".lora_" in k}
    head_weights = {k.rsplit(".", 1)[-1]: v for k, v in weights.items() if ".lora_" not in k}
    if set(head_weights) - {"weight", "bias"} or "weight" not in head_weights:
        raise UserError(f"reward model {path} holds no single score head (keys: {sorted(head_weights)})")
    if shared:
        model.add_adapter(name, config)
    else:
        model = get_peft_model(model, config, adapter_name=name)
    result = set_peft_model_state_dict(model, lora, adapter_name=name)
    if getattr(result, "unexpected_keys", None):
        raise UserError(f"reward model {path} does not fit the base: {result.unexpected_keys[0]} is unknown")
    for pname, param in model.named_parameters():
        if f".{name}." in pname:
            param.requires_grad_(False)
    w = head_weights["weight"]
    head = torch.nn.Linear(w.shape[1], w.shape[0], bias="bias" in head_weights)
    with torch.no_grad():
        head.weight.copy_(w)
        if head.bias is not None:
            head.bias.copy_(head_weights["bias"])
    dtype = next(p for p in model.parameters()).dtype
    return model, head.to(dtype=dtype, device=next(model.parameters()).device).eval()


class RewardAdapters:
    """Reward adapters on one base: `add(pole, path)`, then `score(poles, texts)` in one forward per batch.

    `batch_size` counts rows per forward after replication (batch_size // K texts), so that scoring K poles
    holds the activations of one reward model's batch.
    """

    def __init__(self, model, tokenizer, batch_size: int = 32):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.heads: dict[str, torch.nn.Linear] = {}
        self.stacked: StackedLoRA | None = None

    def add(self, pole: str, path: Path) -> None:
        if pole in self.heads:
            return
        self.model, self.heads[pole] = _attach(self.model, PREFIX + pole, Path(path))
        self.stacked = StackedLoRA(self.model)  # new adapters may bring new LoRA layers

    @torch.no_grad()
    def score(self, poles: list[str], texts: list[str]) -> dict[str, list[float]]:
        """Every pole's scalar score of each full text (prompt + response; the EOS its trainer appended is added)."""
        unknown = [p for p in poles if p not in self.heads]
        if unknown:
            raise KeyError(f"no reward adapter for {unknown}; loaded: {list(self.heads)}")
        k = len(poles)
        per_forward = max(
            1, self.batch_size // max(k, 1)
        )  # rows per forward stay batch_size: activations as one model's
        out: dict[str, list[float]] = {p: [] for p in poles}
        if not texts or not k:
            return out
        body = self.model.get_base_model().base_model  # the transformer without its LM head
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        self.stacked.prepare([tuple(PREFIX + p for p in poles)])  # every row scores all poles
        pad = self.tokenizer.pad_token_id
        try:
            for i in range(0, len(texts), per_forward):
                batch = [t + self.tokenizer.eos_token for t in texts[i : i + per_forward]]
                enc = self.tokenizer(batch, return_tensors="pt", padding=True).to(device)
                ids = enc.input_ids.repeat_interleave(k, dim=0)
                mask = enc.attention_mask.repeat_interleave(k, dim=0)
                # positions count real tokens only: left padding must not shift absolute positions (GPT-2)
                pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
                with self.stacked.applied():
                    hidden = body(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
                # as the sequence classifier pools: the rightmost token that is not the pad token
                positions = torch.arange(ids.shape[1], device=device)
                last = (positions * (ids != pad).int()).argmax(-1)
                pooled = hidden[torch.arange(ids.shape[0], device=device), last].view(-1, k, hidden.shape[-1])
                for j, pole in enumerate(poles):
                    out[pole] += self.heads[pole](pooled[:, j])[:, 0].float().tolist()
        finally:
            self.model.train(was_training)
        return out
