"""The mixture decoding engine: K experts in lockstep, one token at a time, mixed with per-step weights.

Experts are either LoRA adapters on one base (one batched forward per step, rows replicated per expert,
one KV cache) or K separate models that share a tokenizer (one forward and one cache each). Rows of one
batch may mix different experts (other combinations, other users, other methods): `active` is then one list
per row, all of one length (pad a shorter one with PAD, which runs nothing, or BASE, both at weight 0), and
each row runs only its own experts. A weight provider gives the mixture weights before every token: fixed
weights, or a model (the PCM) that reads the same token stream. Mixing happens after each expert's
log-softmax, in probability space (`logsumexp(log w + logp)`, the PCM paper's choice) or in log space
(`sum w logp`, as MOD), one space for the batch or one per row; temperature, top-k, top-p and greedy are
applied once, to the mixture. `DecodeState` is the steppable batch that `decode` and serving both drive.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from transformers import DynamicCache

from rlphf_cli.decoding.stacked_lora import BASE, StackedLoRA

PAD = "__pad__"  # an empty slot in a row's expert list (rows of one batch mix as many): weight 0, no forward


@dataclass
class Sampler:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False

    def __call__(self, logp: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Pick the next token of every row from mixed log-probabilities [B, V]."""
        if self.greedy or self.temperature == 0:
            return logp.argmax(-1)
        logits = logp / self.temperature
        if self.top_k and self.top_k < logits.shape[-1]:
            kth = torch.topk(logits, self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
            cum = sorted_logits.softmax(-1).cumsum(-1)
            drop = cum - sorted_logits.softmax(-1) >= self.top_p  # keep the smallest prefix reaching top_p
            drop[:, 0] = False  # the most likely token always stays: an empty choice would sample NaN
            logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        probs = logits.softmax(-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def mix(logp: torch.Tensor, weights: torch.Tensor, mode: str | Sequence[str] = "prob") -> torch.Tensor:
    """Combine expert log-probs [B, K, V] with weights [B, K] into normalised log-probs [B, V].

    `mode` is one space for every row, or one per row: rows of both spaces in one batch get both mixes,
    each row keeping its own."""
    if not isinstance(mode, str):
        modes = list(mode)
        if len(set(modes)) == 1:
            return mix(logp, weights, modes[0])
        in_log = torch.tensor([m == "log" for m in modes], device=logp.device)
        return torch.where(in_log[:, None], mix(logp, weights, "log"), mix(logp, weights, "prob"))
    if logp.shape[1] == 1:
        return logp[:, 0]
    if mode == "prob":
        return torch.logsumexp(weights.clamp_min(0).log()[:, :, None] + logp, dim=1)
    if mode == "log":
        # experts with zero weight must not contribute -inf * 0 = nan
        combined = torch.einsum("bk,bkv->bv", weights, logp.masked_fill(weights[:, :, None] == 0, 0.0))
        return combined.log_softmax(-1)
    raise ValueError(f"unknown mixing mode {mode!r}; valid: prob, log")


Active = list[str] | list[list[str]] | list[tuple[str, ...]]


def rows_active(active: Active, batch: int) -> list[tuple[str, ...]]:
    """The experts each row mixes: `active` is one list for every row, or one list per row."""
    if active and isinstance(active[0], list | tuple):
        rows = [tuple(a) for a in active]
        if len(rows) != batch:
            raise ValueError(f"{len(rows)} per-row expert lists for {batch} rows")
        if len({len(r) for r in rows}) != 1:
            raise ValueError("every row must mix the same number of experts: pad shorter lists with PAD")
        return rows
    return [tuple(active)] * batch


class Experts(Protocol):
    names: list[str]

    def prefill(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: list[tuple[str, ...]]
    ) -> torch.Tensor:
        """Run the prompts [B, T]; return each row's experts' next-token log-probs [B, Ka, V]."""

    def step(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Feed one token per row [B] (mask already extended); return log-probs [B, Ka, V]."""

    def close(self) -> None:
        """The batch is decoded: release what prefill set up."""

    # optional: `select(index, front)` keeps only rows `index` of the batch (their caches too) and drops
    # the first `front` positions, which no kept row attends to; `decode` then drops finished rows


def select_cache(cache, index: torch.Tensor, drop_front: int) -> None:
    """Keep rows `index` of a KV cache, without its first `drop_front` positions."""
    for layer in cache.layers:
        layer.keys = layer.keys[index, :, drop_front:]
        layer.values = layer.values[index, :, drop_front:]


def pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """`t` left-padded with zeros to `width` along `dim`."""
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def join_caches(old, new, width: int) -> None:
    """Put `old`'s rows before `new`'s, every layer left-padded to `width` positions (into `new`)."""
    for lo, ln in zip(old.layers, new.layers, strict=True):
        ln.keys = torch.cat([pad_left(lo.keys, width, 2), pad_left(ln.keys, width, 2)], dim=0)
        ln.values = torch.cat([pad_left(lo.values, width, 2), pad_left(ln.values, width, 2)], dim=0)


def pad_cache(cache, width: int) -> None:
    """Left-pad every layer of a KV cache to `width` positions (rows joined a wider batch)."""
    for layer in cache.layers:
        layer.keys, layer.values = pad_left(layer.keys, width, 2), pad_left(layer.values, width, 2)


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)


class _CachedForward:
    """One model (rows may carry per-row adapter names) with a KV cache, or recomputing without one."""

    def __init__(self, model, use_cache: bool = True):
        self.model = model
        self.use_cache = use_cache

    def start(self, input_ids, attention_mask, **kwargs) -> torch.Tensor:
        self.kwargs = kwargs
        self.ids, self.mask = input_ids, attention_mask
        self.cache = DynamicCache() if self.use_cache else None
        return self._forward(input_ids, attention_mask, _positions(attention_mask))

    def select(self, rows: torch.Tensor, front: int) -> None:
        self.ids = self.ids[rows, front:]
        if self.cache is not None:
            select_cache(self.cache, rows, front)

    def join(self, old_ids, old_cache, old_kwargs, width: int) -> None:
        """Put the rows of a batch that was running (its ids, cache, kwargs) before the ones just started."""
        self.ids = torch.cat([pad_left(old_ids, width, 1), pad_left(self.ids, width, 1)])
        if self.cache is not None:
            join_caches(old_cache, self.cache, width)
        if "adapter_names" in self.kwargs:
            self.kwargs["adapter_names"] = old_kwargs["adapter_names"] + self.kwargs["adapter_names"]

    def step(self, tokens, attention_mask) -> torch.Tensor:
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        if self.use_cache:
            pos = _positions(attention_mask)[:, -1:]
            return self._forward(tokens[:, None], attention_mask, pos)
        return self._forward(self.ids, attention_mask, _positions(attention_mask))

    @torch.no_grad()
    def _forward(self, ids, mask, pos) -> torch.Tensor:
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            cache=self.cache,
            use_cache=self.use_cache,
            **self.kwargs,
        )
        return out.logits[:, -1].float().log_softmax(-1)


class AdapterExperts:
    """Experts as LoRA adapters on one peft model: one forward per step over the rows' experts.

    Row b's expert i runs as one row of the forward unless it is PAD (a slot that only pads a shorter list
    to the batch's width: nothing runs, its log-probs are -inf, its weight must be 0).
    `stacked=True` (default) adds the adapters' updates with one batched matmul per layer (see
    stacked_lora.py); `stacked=False` uses peft's per-row `adapter_names`, the reference implementation.
    """

    def __init__(self, model, use_cache: bool = True, stacked: bool = True):
        self.model = model.eval()
        self.stacked = None
        if stacked and hasattr(model, "peft_config"):
            self.stacked = StackedLoRA(self.model)
        self.fwd = _CachedForward(self.model, use_cache)
        self._session = contextlib.ExitStack()
        self.rows: list[tuple[str, ...]] = []
        self.flat: list[tuple[int, int]] = []  # (row, slot) of every expert that runs, in forward order

    @property
    def names(self) -> list[str]:  # read live: soups add adapters as they go
        return list(getattr(self.model, "peft_config", {}).keys())

    def _set_flat(self, flat: list[tuple[int, int]], device) -> None:
        self.flat = flat
        self._src = torch.tensor([b for b, _ in flat], dtype=torch.long, device=device)
        self._dense = len(flat) == len(self.rows) * self.k  # no PAD: the forward's rows are b*k + i

    def _adapters(self) -> list[str]:
        return [self.rows[b][i] for b, i in self.flat]

    def _spread(self, logp: torch.Tensor) -> torch.Tensor:
        """The forward's log-probs [N, V] as [B, Ka, V]; PAD slots -inf."""
        if self._dense:
            return logp.view(len(self.rows), self.k, -1)
        out = logp.new_full((len(self.rows), self.k, logp.shape[-1]), float("-inf"))
        rows = torch.tensor(self.flat, dtype=torch.long, device=logp.device)
        out[rows[:, 0], rows[:, 1]] = logp
        return out

    def prefill(self, input_ids, attention_mask, rows):
        unknown = sorted({a for row in rows for a in row if a not in (BASE, PAD) and a not in self.names})
        if unknown:
            raise KeyError(f"unknown expert adapter(s) {unknown}; loaded: {self.names}")
        self.k = len(rows[0])
        self.rows = [tuple(r) for r in rows]
        self._set_flat(
            [(b, i) for b, row in enumerate(self.rows) for i, a in enumerate(row) if a != PAD],
            input_ids.device,
        )
        # forward row j carries adapter rows[b][i] for flat[j] = (b, i); a plain model takes no names
        kwargs = {}
        self.close()
        if self.stacked is not None:
            self._apply()  # until close(), at the end of decode()
        elif self.names:
            kwargs = {"adapter_names": self._adapters()}
        logp = self.fwd.start(input_ids[self._src], attention_mask[self._src], **kwargs)
        return self._spread(logp)

    def _apply(self) -> None:
        if self._dense:  # every row runs all its k experts
            self.stacked.prepare(self.rows)
        else:  # one forward row per running expert
            self.stacked.prepare([(a,) for a in self._adapters()])
        self._session.enter_context(self.stacked.applied())

    def step(self, tokens, attention_mask):
        return self._spread(self.fwd.step(tokens[self._src], attention_mask[self._src]))

    def join(self, input_ids, attention_mask, rows, width: int) -> torch.Tensor:
        """Rows join the running batch after its own: prefill them, append their caches (every row
        left-padded to `width` positions); return their log-probs [B_new, Ka, V]."""
        old_rows, old_flat, k, fwd = self.rows, self.flat, self.k, self.fwd
        old = (fwd.ids, fwd.cache, dict(fwd.kwargs))
        if len(rows[0]) != k:
            raise ValueError(f"rows joining a batch of {k} experts per row carry {len(rows[0])}")
        logp = self.prefill(input_ids, attention_mask, rows)  # the new rows' updates only
        fwd.join(*old, width)
        n = len(old_rows)
        self.rows = old_rows + self.rows
        self._set_flat(old_flat + [(b + n, i) for b, i in self.flat], input_ids.device)
        self.resume()  # every row's updates, old and new
        return logp

    def suspend(self) -> None:
        """Lift the stacked updates off the model (another batch shares it); `resume` puts them back."""
        self.close()

    def resume(self) -> None:
        """Apply the updates of the rows now in the batch (after `suspend`, or after rows joined)."""
        self.close()
        if self.stacked is not None and self.rows:
            self._apply()

    def select(self, index: torch.Tensor, front: int) -> None:
        """Keep rows `index` (each with its experts), without the first `front` positions."""
        where = {b: j for j, b in enumerate(index.tolist())}
        kept = [j for j, (b, _) in enumerate(self.flat) if b in where]
        flat = [(where[b], i) for b, i in self.flat if b in where]
        self.rows = [self.rows[i] for i in index.tolist()]
        dense_before = self._dense
        self._set_flat(flat, index.device)
        rows = torch.tensor(kept, dtype=torch.long, device=index.device)
        self.fwd.select(rows, front)
        if self.stacked is not None:
            if dense_before:
                self.stacked.select(index)  # its masks are per row of k experts
            else:
                self.stacked.select(rows)
        elif "adapter_names" in self.fwd.kwargs:
            names = self.fwd.kwargs["adapter_names"]
            self.fwd.kwargs["adapter_names"] = [names[i] for i in kept]

    def close(self) -> None:
        """Leave the model as it was (adapters enabled, no hooks)."""
        self._session.close()


class SeparateExperts:
    """Experts as separate models sharing a tokenizer (the black-box case): one forward and cache each.

    Every model any row needs runs over all rows; each row then takes its own experts' log-probs.
    """

    def __init__(self, models: dict[str, object], use_cache: bool = True):
        self.names = list(models)
        self.fwds = {name: _CachedForward(m.eval(), use_cache) for name, m in models.items()}

    def prefill(self, input_ids, attention_mask, rows):
        self.used = list(dict.fromkeys(a for row in rows for a in row if a != PAD))
        unknown = [a for a in self.used if a not in self.fwds]
        if unknown:
            raise KeyError(f"unknown expert(s) {unknown}; loaded: {self.names}")
        self.index = torch.tensor(  # a PAD slot reads any expert: its weight is 0
            [[self.used.index(a) if a != PAD else 0 for a in row] for row in rows], device=input_ids.device
        )
        return self._select([self.fwds[a].start(input_ids, attention_mask) for a in self.used])

    def step(self, tokens, attention_mask):
        return self._select([self.fwds[a].step(tokens, attention_mask) for a in self.used])

    def select(self, index: torch.Tensor, front: int) -> None:
        for a in self.used:
            self.fwds[a].select(index, front)
        self.index = self.index[index]

    def _select(self, logps: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(logps, dim=1)  # [B, N, V]
        return stacked.gather(1, self.index[:, :, None].expand(-1, -1, stacked.shape[-1]))

    def close(self) -> None:
        pass


class WeightProvider(Protocol):
    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Weights [B, Ka] for the first new token, having read the prompts."""

    def step(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Read one more token per row; weights [B, Ka] for the next one."""


class FixedWeights:
    """The same weights at every step (uniform mixtures, MOD, one-hot checks)."""

    def __init__(self, weights: torch.Tensor):
        self.weights = weights

    def prefill(self, input_ids, attention_mask):
        return self.weights.to(input_ids.device)

    def step(self, tokens, attention_mask):
        return self.weights.to(tokens.device)

    def select(self, index: torch.Tensor, front: int) -> None:
        if self.weights.shape[0] > 1:  # one row of weights stands for every row
            self.weights = self.weights[index.to(self.weights.device)]

    def join(self, other: FixedWeights, width: int, sizes: tuple[int, int]) -> None:
        """Rows of `other` (`sizes`: this batch's rows, the new rows) join after these."""
        a = self.weights.expand(sizes[0], -1) if self.weights.shape[0] == 1 else self.weights
        b = other.weights.expand(sizes[1], -1) if other.weights.shape[0] == 1 else other.weights
        self.weights = torch.cat([a, b.to(a.device)])

    def pad(self, width: int) -> None:
        """Nothing to pad: fixed weights read no tokens."""


class CompositeWeights:
    """Rows of one batch routed to their own providers (fixed weights, the PCM, ...): `parts` pairs the
    index of some rows with the provider that gives their weights; every row belongs to one part."""

    def __init__(self, parts: list[tuple[torch.Tensor, object]], batch: int):
        self.parts, self.batch = parts, batch

    def _run(self, call) -> torch.Tensor:
        out = None
        for index, provider in self.parts:
            w = call(index, provider)
            if out is None:
                out = w.new_zeros(self.batch, w.shape[1])
            out[index.to(w.device)] = w.to(out.dtype)
        return out

    def prefill(self, input_ids, attention_mask):
        return self._run(lambda i, p: p.prefill(input_ids[i], attention_mask[i]))

    def step(self, tokens, attention_mask):
        return self._run(lambda i, p: p.step(tokens[i], attention_mask[i]))

    def select(self, index: torch.Tensor, front: int) -> None:
        where = torch.full((self.batch,), -1, dtype=torch.long)
        where[index.cpu()] = torch.arange(len(index))
        parts = []
        for rows, provider in self.parts:
            new = where[rows.cpu()]
            kept = (new >= 0).nonzero().flatten()
            if len(kept):
                provider.select(kept.to(index.device), front)
                parts.append((new[kept].to(rows.device), provider))
        self.parts, self.batch = parts, len(index)

    def join(self, other, width: int, sizes: tuple[int, int]) -> None:
        """Rows of `other` (a composite or one provider for all of them) join after these."""
        theirs = other.parts if isinstance(other, CompositeWeights) else [(torch.arange(sizes[1]), other)]
        joined = []
        for rows, provider in theirs:
            rows = rows + sizes[0]
            mine = next((j for j, (_, p) in enumerate(self.parts) if type(p) is type(provider)), None)
            if mine is not None and mine not in joined and hasattr(provider, "join"):
                old_rows, old = self.parts[mine]
                old.join(provider, width, (len(old_rows), len(rows)))
                self.parts[mine] = (torch.cat([old_rows, rows.to(old_rows.device)]), old)
                joined.append(mine)
            else:
                provider.pad(width)
                self.parts.append((rows, provider))
                joined.append(len(self.parts) - 1)
        for j, (_, provider) in enumerate(self.parts):
            if j not in joined:
                provider.pad(width)
        self.batch = sizes[0] + sizes[1]

    def pad(self, width: int) -> None:
        for _, provider in self.parts:
            provider.pad(width)


def join_providers(old, new, width: int, sizes: tuple[int, int]):
    """The provider of a batch after rows join: `old`'s rows, then `new`'s (both left-padded to `width`)."""
    if type(old) is type(new) and hasattr(old, "join"):
        old.join(new, width, sizes)
        return old
    joined = (
        old
        if isinstance(old, CompositeWeights)
        else CompositeWeights([(torch.arange(sizes[0]), old)], sizes[0])
    )
    joined.join(new, width, sizes)
    return joined


@dataclass
class Decoded:
    tokens: list[list[int]]  # new tokens per row, up to and including EOS
    weights: list[torch.Tensor] = field(default_factory=list)  # per row [T_i, Ka] when recorded
    expert_logps: list[torch.Tensor] = field(default_factory=list)  # per row [T_i, Ka]: logp_k(chosen token)


def left_pad(prompts: list[list[int]], pad_token_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


class DecodeState:
    """A running batch that can be stepped: prefill, one token at a time, rows joining and rows leaving.

    It holds the experts' and the provider's state for the rows now in the batch, their attention mask and
    the next-token log-probs and weights. `decode` drives it for one batch; serving's continuous batching
    (serving/batching.py) drives it with rows joining and leaving at every step. Each row mixes in its own
    space (`prob` or `log`).
    """

    def __init__(self, experts: Experts, pad_token_id: int, device):
        self.experts, self.pad, self.device = experts, pad_token_id, device
        self.provider = self.mask = self.logp = self.weights = None
        self.modes: list[str] = []

    @property
    def size(self) -> int:
        return 0 if self.mask is None else self.mask.shape[0]

    def start(self, prompts: list[list[int]], active: Active, provider, mixing: str | Sequence[str]) -> None:
        """Prefill a new batch of prompts (token ids, unpadded)."""
        ids, mask = left_pad(prompts, self.pad, self.device)
        self.logp = self.experts.prefill(ids, mask, rows_active(active, len(prompts)))
        self.weights = provider.prefill(ids, mask)
        self.provider, self.mask = provider, mask
        self.modes = [mixing] * len(prompts) if isinstance(mixing, str) else list(mixing)

    def join(self, prompts: list[list[int]], active: Active, provider, mixing: str | Sequence[str]) -> None:
        """Rows join the running batch (after its rows), prefilled now; `provider` gives their weights."""
        if self.size == 0:
            return self.start(prompts, active, provider, mixing)
        ids, mask = left_pad(prompts, self.pad, self.device)
        width = max(self.mask.shape[1], mask.shape[1])
        logp = self.experts.join(ids, mask, rows_active(active, len(prompts)), width)
        weights = provider.prefill(ids, mask)
        self.provider = join_providers(self.provider, provider, width, (self.size, len(prompts)))
        self.mask = torch.cat([pad_left(self.mask, width, 1), pad_left(mask, width, 1)])
        self.logp = torch.cat([self.logp, logp])
        self.weights = torch.cat([self.weights, weights.to(self.weights.dtype)])
        self.modes += [mixing] * len(prompts) if isinstance(mixing, str) else list(mixing)

    def mixed(self) -> torch.Tensor:
        """The next-token log-probs of every row's mixture [B, V]."""
        return mix(self.logp, self.weights, self.modes)

    def leave(self, keep: torch.Tensor) -> None:
        """Only rows `keep` stay; positions no kept row attends to are dropped."""
        if len(keep) == 0:
            self.experts.close()
            self.provider = self.mask = self.logp = self.weights = None
            self.modes = []
            return
        mask = self.mask[keep]
        front = int((mask.sum(0) == 0).long().cumprod(0).sum())  # positions no kept row attends to
        self.experts.select(keep, front)
        self.provider.select(keep, front)
        self.mask, self.logp, self.weights = mask[:, front:], self.logp[keep], self.weights[keep]
        self.modes = [self.modes[i] for i in keep.tolist()]

    def step(self, tokens: torch.Tensor) -> None:
        """Feed one token per row: the next log-probs and weights."""
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        self.logp = self.experts.step(tokens, self.mask)
        self.weights = self.provider.step(tokens, self.mask)

    def close(self) -> None:
        self.experts.close()


@torch.no_grad()
def decode(
    experts: Experts,
    provider: WeightProvider,
    prompts: list[list[int]],
    active: Active,
    *,
    eos_token_id: int,
    pad_token_id: int,
    max_new_tokens: int = 64,
    mixing: str | Sequence[str] = "prob",
    sampler: Sampler | None = None,
    generator: torch.Generator | None = None,
    record: bool = False,
    device: torch.device | str = "cpu",
    on_step: Callable[[], None] | None = None,
) -> Decoded:
    """Decode a batch of prompts (token ids, unpadded) with the active experts mixed by the provider.

    `active` names the experts every row mixes, or one list per row; the provider's weights follow it.
    `mixing` is one space for every row or one per row.

    `on_step` is called after each step that fed a token to the experts (the decoding benchmark times it).
    """
    sampler = sampler or Sampler()
    batch = len(prompts)
    compact = hasattr(experts, "select") and hasattr(provider, "select")
    state = DecodeState(experts, pad_token_id, device)
    rec_w: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    rec_lp: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    try:
        state.start(prompts, active, provider, mixing)
        device = state.mask.device
        tokens_out = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
        live = torch.arange(batch, device=device)  # the rows still in the batch, by original index
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        for t in range(max_new_tokens):
            token = sampler(state.mixed(), generator)
            token = token.masked_fill(done, pad_token_id)
            tokens_out[live, t] = token
            if record:
                w, logp = state.weights.float(), state.logp
                lp = logp.gather(-1, token[:, None, None].expand(-1, logp.shape[1], 1)).squeeze(-1)
                for j in (~done).nonzero().flatten().tolist():
                    rec_w[int(live[j])].append(w[j])
                    rec_lp[int(live[j])].append(lp[j])
            done |= token == eos_token_id
            if bool(done.all()) or t == max_new_tokens - 1:
                break
            if compact and int(done.sum()) >= max(1, len(live) // 8):
                # finished rows leave the batch: later steps compute only the rows still writing
                keep = (~done).nonzero().flatten()
                state.leave(keep)
                live, token, done = live[keep], token[keep], done[keep]
            state.step(token)
            if on_step is not None:
                on_step()
        steps = tokens_out[:, : t + 1].tolist()
    finally:
        state.close()
    result = Decoded(tokens=[])
    for i, row in enumerate(steps):
        n = row.index(eos_token_id) + 1 if eos_token_id in row else len(row)
        result.tokens.append(row[:n])
        if record:
            result.weights.append(torch.stack(rec_w[i]))
            result.expert_logps.append(torch.stack(rec_lp[i]))
    return result
