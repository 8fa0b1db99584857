"""Continuous batching over the mixture engine: rows join a running batch at the next step and leave when done.

A lane is one running batch: one `Experts` object (k experts per row, fixed while rows run), one weight
provider covering every row, one attention mask. A new row is prefilled on its own (with the others that
arrived with it) and its KV caches - the experts' and the PCM's, DynamicCache tensors [rows, heads, T, dim] -
are left-padded to a common length and concatenated along the batch; a finished row is cut out of every
cache, and leading columns that no row attends to any more are dropped. Positions come from the attention
mask (the engine's rule), so padding changes no row's output.

Every row carries its own experts (the engine's per-row lists, all of the lane's length k, padded with BASE
at weight 0), so rows of any preference share one forward. The lane reads the engine's state where it lives:
`AdapterExperts.fwd` (its cache; rows replicated per expert, row b*k + i is expert i of row b) and the
stacked LoRA's per-row updates (prepared again when rows join or leave), `PCMWeights.cache/preference/active`
and `FixedWeights.weights`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from rlphf_cli.decoding.engine import AdapterExperts, FixedWeights, Sampler, left_pad, mix

log = logging.getLogger(__name__)


@dataclass
class Row:
    """One request being decoded; `emit` is called from the scheduler thread with each event."""

    prompt_ids: list[int]
    max_new_tokens: int
    sampler: Sampler
    emit: Callable[[str, object], None]  # ("token", id) ... then ("done", "stop"|"length") or ("error", msg)
    experts: tuple[str, ...] = ()  # the experts the row mixes, padded to its lane's k with BASE
    spec: object = None  # what the lane's provider needs for this row (its preference)
    tokens: list[int] = field(default_factory=list)
    cancelled: bool = False


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def join_caches(old, new, width: int) -> None:
    """Put `old`'s rows before `new`'s, every layer left-padded to `width` positions (into `new`)."""
    for lo, ln in zip(old.layers, new.layers, strict=True):
        ln.keys = torch.cat([_pad_left(lo.keys, width, 2), _pad_left(ln.keys, width, 2)], dim=0)
        ln.values = torch.cat([_pad_left(lo.values, width, 2), _pad_left(ln.values, width, 2)], dim=0)


class Lane:
    """One running batch of rows that share an `Experts` object, a number of experts per row and a mixing mode."""

    def __init__(
        self,
        name: str,
        experts: AdapterExperts,
        provider: Callable[[list[Row]], object],
        mixing: str,
        max_batch: int,
        pad_token_id: int,
        eos_token_id: int,
        device,
        seed: int = 0,
    ):
        self.name, self.experts, self.mixing = name, experts, mixing
        self.make_provider = provider
        self.max_batch, self.pad, self.eos, self.device = max_batch, pad_token_id, eos_token_id, device
        self.generator = torch.Generator(device).manual_seed(seed)
        self.rows: list[Row] = []
        self.pending: list[Row] = []
        self.hooked = False  # the lane's LoRA hooks are on the shared model (see Scheduler)
        self.stepped = 0  # rows the last step decoded (metrics)

    @property
    def busy(self) -> bool:
        return bool(self.rows or self.pending)

    # --- the hooks of the stacked LoRA path live on a model other lanes share: one lane at a time
    def release(self) -> None:
        if self.hooked:
            self.experts.close()
            self.hooked = False

    def resume(self) -> None:
        """Install the stacked LoRA updates of the rows now running (after they changed, or another lane ran)."""
        self.release()
        if self.rows:
            stacked = self.experts.stacked
            if stacked is not None:
                stacked.prepare([r.experts for r in self.rows])
                self.experts._session.enter_context(stacked.applied())
            self.hooked = True

    # --- one step: admit waiting rows, pick a token for every row, drop finished rows, feed the rest
    def step(self) -> None:
        self._admit()
        self.stepped = len(self.rows)
        if not self.rows:
            return
        tokens = self._pick(mix(self.logp, self.weights, self.mixing))
        keep = []
        for i, (row, tok) in enumerate(zip(self.rows, tokens.tolist(), strict=True)):
            row.tokens.append(tok)
            row.emit("token", tok)
            if tok == self.eos:
                row.emit("done", "stop")
            elif len(row.tokens) >= row.max_new_tokens:
                row.emit("done", "length")
            elif row.cancelled:
                row.emit("done", "cancelled")
            else:
                keep.append(i)
        if len(keep) < len(self.rows):
            self._select(keep)
            tokens = tokens[keep]
        if not self.rows:
            self.release()
            return
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        self.logp = self.experts.step(tokens, self.mask)
        self.weights = self.provider.step(tokens, self.mask)

    def fail(self, message: str) -> None:
        """Something broke mid-step: every row gets the error; the lane starts afresh."""
        for row in self.rows + self.pending:
            row.emit("error", message)
        self.rows, self.pending = [], []
        self.release()

    def _admit(self) -> None:
        for r in self.pending:
            if r.cancelled:
                r.emit("done", "cancelled")
        room = self.max_batch - len(self.rows)
        fits = [r for r in self.pending if not r.cancelled][:room]
        self.pending = [r for r in self.pending if r not in fits and not r.cancelled]
        if not fits:
            return
        ids, mask = left_pad([r.prompt_ids for r in fits], self.pad, self.device)
        old_cache = self.experts.fwd.cache if self.rows else None
        logp = self.experts.prefill(ids, mask, [r.experts for r in fits])  # the new rows' hooks only
        self.hooked = True
        provider = self.make_provider(fits)
        weights = provider.prefill(ids, mask)
        if old_cache is None:
            self.mask, self.logp, self.weights, self.provider = mask, logp, weights, provider
        else:
            width = max(self.mask.shape[1], mask.shape[1])
            join_caches(old_cache, self.experts.fwd.cache, width)
            _join_provider(self.provider, provider, width)
            self.mask = torch.cat([_pad_left(self.mask, width, 1), _pad_left(mask, width, 1)])
            self.logp = torch.cat([self.logp, logp])
            self.weights = torch.cat([self.weights, weights])
        joined = bool(old_cache is not None)
        self.rows += fits
        self._reset_ids()
        if joined:
            self.resume()  # every row's LoRA updates, old and new

    def _select(self, keep: list[int]) -> None:
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.mask = self.logp = self.weights = self.provider = None
            return
        index = torch.tensor(keep, device=self.mask.device)
        mask = self.mask[index]
        front = int((mask.sum(0) == 0).long().cumprod(0).sum())  # columns no remaining row attends to
        self.experts.select(index, front)
        self.provider.select(index, front)
        self.mask, self.logp, self.weights = mask[:, front:], self.logp[index], self.weights[index]
        self._reset_ids()
        self.resume()

    def _reset_ids(self) -> None:
        # the engine keeps the token ids for its uncached path only; the served rows always use the cache
        self.experts.fwd.ids = torch.empty(len(self.rows) * self.experts.k, 0, dtype=torch.long)

    def _pick(self, logp: torch.Tensor) -> torch.Tensor:
        out = torch.empty(logp.shape[0], dtype=torch.long, device=logp.device)
        groups: dict[tuple, list[int]] = {}
        for i, row in enumerate(self.rows):
            s = row.sampler
            groups.setdefault((s.greedy or s.temperature == 0, s.temperature, s.top_k, s.top_p), []).append(i)
        for idx in groups.values():
            at = torch.tensor(idx, device=logp.device)
            out[at] = self.rows[idx[0]].sampler(logp[at], self.generator)
        return out


def _join_provider(old, new, width: int) -> None:
    """Put `old`'s rows before `new`'s in `old` (the lane keeps its provider object)."""
    if isinstance(old, FixedWeights):
        old.weights = torch.cat([old.weights, new.weights])
        return
    join_caches(old.cache, new.cache, width)  # the PCM: its cache, preference vectors, rows' experts
    old.cache = new.cache
    old.preference = torch.cat([old.preference, new.preference])
    old.active = old.active + new.active


class Scheduler:
    """The thread that owns the models: takes rows from any thread, steps every busy lane in turn."""

    def __init__(self, make_lane: Callable[[str], Lane], prepare: Callable[[Row, str], None] | None = None):
        self.make_lane = make_lane
        self.prepare = prepare  # run on the scheduler thread before a row is queued (e.g. add a soup)
        self.lanes: dict[str, Lane] = {}
        self.inbox: queue.Queue = queue.Queue()
        self.hooked: Lane | None = None  # the lane whose LoRA hooks are on the shared model
        self.steps = self.rows_stepped = 0  # decode steps and the rows they decoded (metrics)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="rlphf-serve-scheduler", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.inbox.put(None)
        self.thread.join(timeout=10)

    def submit(self, lane: str, row: Row) -> None:
        self.inbox.put((lane, row))

    def stats(self) -> dict:
        """Read from another thread (metrics): rows decoding per lane, rows waiting, steps so far."""
        lanes = list(self.lanes.items())
        return {
            "running": {name: len(lane.rows) for name, lane in lanes},
            "waiting": self.inbox.qsize() + sum(len(lane.pending) for _, lane in lanes),
            "steps": self.steps,
            "rows_stepped": self.rows_stepped,
        }

    def release_hooks(self) -> None:
        """Leave the shared model bare (no lane's hooks): before merging or copying adapters."""
        if self.hooked is not None:
            self.hooked.release()
            self.hooked = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            busy = any(lane.busy for lane in self.lanes.values())
            try:
                item = self.inbox.get(timeout=None if not busy else 0)
            except queue.Empty:
                item = None
            while item is not None:  # everything that arrived together joins the next step together
                self._take(*item)
                try:
                    item = self.inbox.get_nowait()
                except queue.Empty:
                    item = None
            if self._stop.is_set():
                break
            for lane in list(self.lanes.values()):
                if lane.busy:
                    self._step(lane)

    def _take(self, name: str, row: Row) -> None:
        try:
            if self.prepare is not None:
                self.prepare(row, name)
            if name not in self.lanes:
                self.release_hooks()
                self.lanes[name] = self.make_lane(name)
            self.lanes[name].pending.append(row)
        except Exception as exc:  # a request that cannot be set up fails alone
            log.exception("cannot queue a request for %s", name)
            row.emit("error", f"{type(exc).__name__}: {exc}")

    def _step(self, lane: Lane) -> None:
        shares = lane.experts.stacked is not None
        if shares and self.hooked is not lane:
            self.release_hooks()
            lane.resume()
        try:
            lane.step()
        except Exception as exc:
            log.exception("lane %s failed", lane.name)
            lane.fail(f"{type(exc).__name__}: {exc}")
        if lane.stepped:
            self.steps += 1
            self.rows_stepped += lane.stepped
        if shares:
            self.hooked = lane if lane.hooked else None
