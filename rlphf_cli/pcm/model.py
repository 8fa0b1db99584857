"""The PCM network, its saving and loading.

A LLaMA-style body reads the experts' token stream (instruction, then the partial response); the
preference enters as a weight vector over the poles, projected and added to every input embedding, so a
continuous, user-inferred preference (PReF) is as easy to give as a binary combination. A linear head
gives one logit per expert, added to the log of the preference's weight on that expert's pole (the
weight prior): the head starts at zero, so an untrained PCM is exactly the preference's weighted mixture
(the uniform mixture for a binary combination), and training learns where to depart from it. Without
the prior (PCMs saved before it) a PCM had to learn to read weights from the embedding alone, and did not.

Saved as a folder: the body as a Hugging Face model (`config.json`, `model.safetensors`), the preference
projection and head in `pcm_head.safetensors`, and `pcm.json` naming the poles and the experts in order.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rlphf_cli.errors import UserError

HEAD_FILE = "pcm_head.safetensors"
META_FILE = "pcm.json"


class PreferenceControlModel(nn.Module):
    def __init__(self, body, poles: list[str], experts: list[str], weight_prior: bool = True):
        super().__init__()
        self.weight_prior = weight_prior
        # expert k's pole among the preference's columns (-1: an expert that is no pole, no prior)
        self.register_buffer(
            "expert_pole",
            torch.tensor([poles.index(e) if e in poles else -1 for e in experts]),
            persistent=False,
        )
        self.body = body  # a transformers base model (LlamaModel, GPT2Model, ...: no LM head)
        self.poles = list(poles)
        self.experts = list(experts)
        hidden = body.config.hidden_size
        self.preference = nn.Linear(len(poles), hidden, bias=False)
        self.head = nn.Linear(hidden, len(experts))
        nn.init.normal_(self.preference.weight, std=body.config.initializer_range)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids, attention_mask, preference, past_key_values=None, use_cache=False):
        """Expert logits [B, T, K] at every position; `preference` is [B, n_poles]."""
        embeds = self.body.get_input_embeddings()(input_ids) + self.preference(preference)[:, None, :]
        if past_key_values is not None and past_key_values.get_seq_length() > 0:
            positions = (attention_mask.long().cumsum(-1) - 1)[:, -input_ids.shape[1] :]
        else:
            positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
        out = self.body(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=positions,
            cache=past_key_values,
            use_cache=use_cache,
        )
        logits = self.head(out.last_hidden_state)
        if self.weight_prior:
            weights = preference[:, self.expert_pole.clamp_min(0)].masked_fill(self.expert_pole < 0, 1.0)
            logits = logits + weights.clamp_min(1e-6).log()[:, None, :].to(logits.dtype)
        return logits, past_key_values

    def preference_vector(self, combination, weights) -> torch.Tensor:
        vec = torch.zeros(len(self.poles))
        for pole, w in zip(combination, weights, strict=True):
            if pole not in self.poles:
                raise UserError(f"the PCM knows no pole {pole!r}; its poles: {', '.join(self.poles)}")
            vec[self.poles.index(pole)] = w
        return vec

    def expert_index(self, rows: list[tuple[str, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's experts as indices into the PCM's experts [B, Ka], and which are real (not BASE/PAD padding)."""
        from rlphf_cli.decoding.engine import PAD
        from rlphf_cli.decoding.stacked_lora import BASE

        padding = (BASE, PAD)
        missing = sorted({a for row in rows for a in row if a not in padding and a not in self.experts})
        if missing:
            raise UserError(
                f"the PCM was trained for experts {', '.join(self.experts)}; got {', '.join(missing)}"
            )
        index = torch.tensor(
            [[self.experts.index(a) if a not in padding else 0 for a in row] for row in rows]
        )
        real = torch.tensor([[a not in padding for a in row] for row in rows])
        return index, real

    def log_weights(self, logits: torch.Tensor, active=None, index=None) -> torch.Tensor:
        """Log-softmax over each row's experts only, in their order: [B, ..., K] -> [B, ..., Ka].

        `active` names the experts of every row, or one list per row (BASE padding gets weight 0); a caller
        that asks every decoding step passes `index`, `expert_index` of those rows, made once.
        """
        from rlphf_cli.decoding.engine import rows_active

        index, real = index or self.expert_index(rows_active(active, logits.shape[0]))
        view = (index.shape[0], *([1] * (logits.dim() - 2)), index.shape[1])
        index, real = index.to(logits.device).view(view), real.to(logits.device).view(view)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 -> fp32
        picked = logits.gather(-1, index.expand(*logits.shape[:-1], -1))
        return picked.masked_fill(~real, float("-inf")).log_softmax(-1)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.body.save_pretrained(folder, safe_serialization=True)
        save_file({k: v.contiguous() for k, v in self._extra_state().items()}, folder / HEAD_FILE)
        meta = {"poles": self.poles, "experts": self.experts, "weight_prior": self.weight_prior}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2))

    def _extra_state(self) -> dict[str, torch.Tensor]:
        return {
            "preference.weight": self.preference.weight.detach().cpu(),
            "head.weight": self.head.weight.detach().cpu(),
            "head.bias": self.head.bias.detach().cpu(),
        }

    @classmethod
    def load(cls, folder: Path, experts: list[str] | None = None) -> PreferenceControlModel:
        from transformers import AutoModel

        folder = Path(folder)
        if not (folder / META_FILE).is_file():
            raise UserError(f"no PCM in {folder}: run `rlphf train-pcm` first")
        meta = json.loads((folder / META_FILE).read_text())
        if experts is not None and list(experts) != meta["experts"]:
            raise UserError(
                f"the PCM in {folder} was trained for experts [{', '.join(meta['experts'])}] "
                f"({len(meta['experts'])}), not [{', '.join(experts)}] ({len(experts)})"
            )
        body = AutoModel.from_pretrained(folder)  # a LLaMA body, or one of the experts' family (init_from)
        model = cls(body, meta["poles"], meta["experts"], meta.get("weight_prior", False))
        state = load_file(folder / HEAD_FILE)
        model.preference.weight.data.copy_(state["preference.weight"])
        model.head.weight.data.copy_(state["head.weight"])
        model.head.bias.data.copy_(state["head.bias"])
        return model


def build_pcm(pcm_cfg, vocab_size: int, pad_token_id: int, poles: list[str], experts: list[str], seed: int):
    """A fresh PCM: a LLaMA-style body of the configured size, or the body (no LM head) of `pcm.init_from`,
    a small model of any architecture transformers knows, e.g. of the experts' family."""
    from transformers import AutoModel, LlamaConfig, LlamaModel

    torch.manual_seed(seed)
    if pcm_cfg.init_from:
        body = AutoModel.from_pretrained(pcm_cfg.init_from)
        # a family pads its embeddings to its own size (Qwen2.5 0.5B: 151936, 7B: 152064): the PCM must
        # read every token of the experts' tokenizer
        if body.config.vocab_size < vocab_size:
            raise UserError(
                f"pcm.init_from={pcm_cfg.init_from} has vocabulary {body.config.vocab_size}, smaller than the "
                f"experts' tokenizer ({vocab_size})"
            )
    else:
        body = LlamaModel(
            LlamaConfig(
                vocab_size=vocab_size,
                hidden_size=pcm_cfg.hidden_size,
                intermediate_size=pcm_cfg.intermediate_size,
                num_hidden_layers=pcm_cfg.num_hidden_layers,
                num_attention_heads=pcm_cfg.num_attention_heads,
                num_key_value_heads=pcm_cfg.num_attention_heads,
                max_position_embeddings=pcm_cfg.max_position_embeddings,
                pad_token_id=pad_token_id,
            )
        )
    return PreferenceControlModel(body, poles, experts)
