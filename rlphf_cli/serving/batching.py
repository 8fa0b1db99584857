"""Continuous batching over the mixture engine: rows join a running batch at the next step and leave when done.

A lane is one running batch, an engine `DecodeState` (decoding/engine.py) that the lane steps: rows that
arrive are prefilled together and join it (its caches left-padded to a common length), a finished row
leaves it (cut out of every cache; leading columns no row attends to are dropped). Positions come from the
attention mask (the engine's rule), so padding changes no row's output.

Every row carries its own experts (all of the lane's length k, padded with PAD, which runs nothing), its own
mixing space and its preference (`spec`, read by the lane's provider): rows of every method and preference
share one lane and one forward. `rlphf serve` runs one lane on the shared peft model, plus one per merged
soup model (`soups-merged`).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from rlphf_cli.decoding.engine import AdapterExperts, DecodeState, Sampler

log = logging.getLogger(__name__)


@dataclass
class Row:
    """One request being decoded; `emit` is called from the scheduler thread with each event."""

    prompt_ids: list[int]
    max_new_tokens: int
    sampler: Sampler
    emit: Callable[[str, object], None]  # ("token", id) ... then ("done", "stop"|"length") or ("error", msg)
    experts: tuple[str, ...] = ()  # the experts the row mixes, padded to its lane's k with PAD
    spec: object = None  # what the lane's provider needs for this row (its preference)
    tokens: list[int] = field(default_factory=list)
    cancelled: bool = False
    mixing: str | None = None  # the row's mixing space; None: its lane's
    method: object = None  # the row's decoding method (methods/), for the lane's provider


class Lane:
    """One running batch of rows that share an `Experts` object and a number of experts per row."""

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
        self.make_provider = provider  # the weight provider of rows that join together
        self.max_batch, self.pad, self.eos, self.device = max_batch, pad_token_id, eos_token_id, device
        self.generator = torch.Generator(device).manual_seed(seed)
        self.state = DecodeState(experts, pad_token_id, device)
        self.rows: list[Row] = []
        self.pending: list[Row] = []
        self.hooked = False  # the lane's LoRA updates are on the shared model (see Scheduler)

    @property
    def busy(self) -> bool:
        return bool(self.rows or self.pending)

    # --- the stacked LoRA updates live on a model other lanes share: one lane at a time
    def release(self) -> None:
        if self.hooked:
            self.experts.suspend()
            self.hooked = False

    def resume(self) -> None:
        """Apply the updates of the rows now running (after another lane ran)."""
        self.release()
        if self.rows:
            self.experts.resume()
            self.hooked = True

    # --- one step: admit waiting rows, pick a token for every row, drop finished rows, feed the rest
    def step(self) -> None:
        self._admit()
        if not self.rows:
            return
        tokens = self._pick(self.state.mixed())
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
            self.rows = [self.rows[i] for i in keep]
            index = torch.tensor(keep, dtype=torch.long, device=self.state.mask.device)
            self.state.leave(index)
            tokens = tokens[index]
        if not self.rows:
            self.hooked = False  # leaving the last row lifted the updates
            return
        self.state.step(tokens)

    def fail(self, message: str) -> None:
        """Something broke mid-step: every row gets the error; the lane starts afresh."""
        for row in self.rows + self.pending:
            row.emit("error", message)
        self.rows, self.pending = [], []
        self.release()
        self.state = DecodeState(self.experts, self.pad, self.device)

    def _admit(self) -> None:
        for r in self.pending:
            if r.cancelled:
                r.emit("done", "cancelled")
        room = self.max_batch - len(self.rows)
        fits = [r for r in self.pending if not r.cancelled][:room]
        self.pending = [r for r in self.pending if r not in fits and not r.cancelled]
        if not fits:
            return
        self.state.join(
            [r.prompt_ids for r in fits],
            [r.experts for r in fits],
            self.make_provider(fits),
            [r.mixing or self.mixing for r in fits],
        )
        self.hooked = True
        self.rows += fits

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


class Scheduler:
    """The thread that owns the models: takes rows from any thread, steps every busy lane in turn."""

    def __init__(self, make_lane: Callable[[str], Lane], prepare: Callable[[Row, str], None] | None = None):
        self.make_lane = make_lane
        self.prepare = prepare  # run on the scheduler thread before a row is queued (e.g. add a soup)
        self.lanes: dict[str, Lane] = {}
        self.inbox: queue.Queue = queue.Queue()
        self.hooked: Lane | None = None  # the lane whose LoRA hooks are on the shared model
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
        if shares:
            self.hooked = lane if lane.hooked else None
