"""The PCM as a weight provider inside the decoding engine: incremental, with its own KV cache."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from rlphf_cli.decoding.engine import join_caches, pad_cache, rows_active, select_cache
from rlphf_cli.pcm.model import PreferenceControlModel
from rlphf_cli.preferences import Preference
from rlphf_cli.runs import RunDir


class PCMWeights:
    """Reads the same tokens as the experts; before every token gives weights over the active experts."""

    def __init__(self, pcm: PreferenceControlModel, preference: torch.Tensor, active):
        self.pcm = pcm
        self.preference = preference  # [B, n_poles]: rows may carry different preferences
        self.active = rows_active(active, preference.shape[0])  # each row's experts, as the engine's
        self._index = pcm.expert_index(self.active)  # refuses experts the PCM was not trained with
        self._index_for = self.active

    @torch.no_grad()
    def prefill(self, input_ids, attention_mask):
        self.cache = DynamicCache()
        logits, _ = self.pcm(input_ids, attention_mask, self.preference, self.cache, use_cache=True)
        return self._weights(logits)

    @torch.no_grad()
    def step(self, tokens, attention_mask):
        logits, _ = self.pcm(tokens[:, None], attention_mask, self.preference, self.cache, use_cache=True)
        return self._weights(logits)

    def select(self, index: torch.Tensor, front: int) -> None:
        """Keep rows `index` (finished rows leave the batch), without the first `front` cached positions."""
        select_cache(self.cache, index, front)
        self.preference = self.preference[index]
        self.active = [self.active[i] for i in index.tolist()]  # a new list: _weights re-indexes it

    def join(self, other: PCMWeights, width: int, sizes: tuple[int, int]) -> None:
        """Rows of `other` join after these (both caches left-padded to `width` positions)."""
        join_caches(self.cache, other.cache, width)
        self.cache = other.cache
        self.preference = torch.cat([self.preference, other.preference])
        self.active = self.active + other.active  # a new list: _weights re-indexes it

    def pad(self, width: int) -> None:
        """The batch grew wider (longer rows joined): left-pad the cache to `width` positions."""
        pad_cache(self.cache, width)

    def _weights(self, logits):
        if self._index_for is not self.active:  # once per batch (the server replaces `active` as rows join)
            self._index, self._index_for = self.pcm.expert_index(self.active), self.active
        return self.pcm.log_weights(logits[:, -1], index=self._index).exp()


class LoadedPCM:
    """A trained PCM ready to hand out providers, one per batch."""

    def __init__(self, pcm: PreferenceControlModel, device):
        self.pcm = pcm.to(device).eval()
        self.device = device

    def provider(self, prefs: list[Preference], active) -> PCMWeights:
        """Weights for rows that each carry a preference and mix `active` (one list per row)."""
        vecs = torch.stack([self.pcm.preference_vector(p.combination, p.weights) for p in prefs])
        return PCMWeights(self.pcm, vecs.to(self.device), active)


def load_pcm(cfg, device, expert_poles: list[str]) -> LoadedPCM:
    art = RunDir(cfg.run_dir).artifact("pcm")
    from rlphf_cli.errors import UserError

    if not art.is_complete():
        raise UserError(f"no PCM in {art.path}: run `rlphf train-pcm run_dir={cfg.run_dir}` first")
    return LoadedPCM(PreferenceControlModel.load(art.path, experts=expert_poles), device)
