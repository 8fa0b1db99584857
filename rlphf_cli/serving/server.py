"""The HTTP side of `rlphf serve`: OpenAI's `/v1/completions`, `/v1/chat/completions` and `/v1/models`.

A request's `model` is the decoding method; the extra body field `preference` carries the poles or weights.
Handlers only check the request and wait for tokens: the scheduler thread (batching.py) owns the models and
decodes every waiting request together, a new one joining the running batch at the next step. Bad input is
HTTP 400 with a one-line message in OpenAI's error shape, checked before a row exists, so that it never
reaches another request's batch; the server keeps serving. `/health` and `/metrics` (Prometheus text) say
how it is doing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from rlphf_cli.decoding.engine import Sampler
from rlphf_cli.errors import UserError
from rlphf_cli.serving.metrics import Metrics

log = logging.getLogger(__name__)


def _error(status: int, message: str):
    kind = "invalid_request_error" if status == 400 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def _number(body: dict, key: str, low: float, high: float) -> float | None:
    """A JSON number from `low` to `high` (NaN and 1e400, which JSON parsing turns into inf, are not)."""
    value = body.get(key)
    if value is None:
        return None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not low <= value <= high:
        raise UserError(f"{key} must be a number from {low:g} to {high:g}; got {json.dumps(value)[:40]}")
    return float(value)


def _sampler(body: dict, default: Sampler) -> Sampler:
    temperature = _number(body, "temperature", 0, 2)  # OpenAI's ranges
    top_p = _number(body, "top_p", 0, 1)
    if temperature is None and top_p is None:
        return default
    greedy = default.greedy if temperature is None else temperature == 0
    temperature = default.temperature if temperature is None else temperature
    return Sampler(temperature, default.top_k, default.top_p if top_p is None else top_p, greedy=greedy)


def _max_tokens(body: dict) -> int | None:
    """`max_tokens`, or `max_completion_tokens` (what current chat clients send): a whole JSON number."""
    given = {k: body[k] for k in ("max_tokens", "max_completion_tokens") if body.get(k) is not None}
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{key} must be a whole number; got {json.dumps(value)[:40]}")
    if len(set(given.values())) > 1:
        raise UserError("max_tokens and max_completion_tokens differ; give one of them")
    return next(iter(given.values()), None)


def _stops(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if (
        not isinstance(stops, list)
        or not 0 < len(stops) <= 4
        or not all(isinstance(x, str) and x for x in stops)
    ):
        raise UserError("`stop` must be a non-empty string or a list of 1 to 4 of them")
    return stops


def _flag(body: dict, key: str) -> bool:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise UserError(f"`{key}` must be true or false, not {json.dumps(value)[:40]}")
    return bool(value)


# OpenAI fields this server does not implement: refused unless they ask for what it does anyway
UNSUPPORTED = {
    "n": (1,),
    "best_of": (1,),
    "echo": (False,),
    "suffix": ("",),
    "logprobs": (False, 0),
    "top_logprobs": (0,),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logit_bias": ({},),
    "tools": ([],),
    "functions": ([],),
    "response_format": ({"type": "text"},),
}


def _unsupported(body: dict) -> None:
    for key, neutral in UNSUPPORTED.items():
        value = body.get(key)
        if value is not None and not any(type(value) is type(n) and value == n for n in neutral):
            raise UserError(f"`{key}` is not supported by this server (got {json.dumps(value)[:40]})")


def _prompt(body: dict, chat: bool) -> str:
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise UserError("`messages` must be a non-empty list")
        users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        if not users or not all(isinstance(c, str) for c in users):
            raise UserError("`messages` needs at least one user message with string content")
        prompt = users[-1]  # the model's prompt template holds one instruction: the latest user message
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise UserError("`prompt` must be a string (one prompt per request)")
    if not prompt.strip():
        raise UserError("the prompt is empty" if not chat else "the latest user message is empty")
    return prompt


def stop_index(text: str, stops: list[str]) -> int | None:
    """Where the first stop string begins in `text`, if one does."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def held_back(text: str, stops: list[str]) -> int:
    """How many characters at the end of `text` could begin a stop string: a stream waits before sending them."""
    longest = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:k]):
                longest = k
                break
    return longest


def build_app(backend):
    """The FastAPI application over a `Backend` (methods.py); its scheduler must be started."""
    app = FastAPI(title="rlphf serve")
    tokenizer = backend.tokenizer
    metrics = Metrics()

    @app.exception_handler(Exception)
    async def unexpected(
        request: Request, exc: Exception
    ):  # one line for the client, the traceback in the log
        log.exception("request to %s failed", request.url.path)
        metrics.count("-", "error")
        return _error(500, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

    @app.get("/v1/models")
    async def models():
        now = int(time.time())
        data = [{"id": m, "object": "model", "created": now, "owned_by": "rlphf"} for m in backend.methods]
        return {"object": "list", "data": data}

    @app.get("/health")
    async def health():
        alive = backend.scheduler.thread.is_alive()
        body = {
            "status": "ok" if alive else "the scheduler thread has stopped",
            "methods": backend.methods,
            "uptime_s": round(time.time() - metrics.started, 1),
            "threads": _torch_threads(),
        }
        return JSONResponse(body, status_code=200 if alive else 503)

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(metrics.render(backend.stats()), media_type="text/plain; version=0.0.4")

    async def complete(request: Request, chat: bool):
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            metrics.count("-", "bad_request")
            return _error(400, "the request body is not JSON")
        except RecursionError:
            metrics.count("-", "bad_request")
            return _error(400, "the request body is nested too deeply")
        if not isinstance(body, dict):
            metrics.count("-", "bad_request")
            return _error(400, "the request body must be a JSON object")
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def emit(kind, value):  # called on the scheduler thread
            loop.call_soon_threadsafe(events.put_nowait, (kind, value))

        method = body.get("model")
        try:
            if not isinstance(method, str) or method not in backend.methods:
                raise UserError(f"unknown model {method!r}; this run serves: {', '.join(backend.methods)}")
            _unsupported(body)
            stream = _flag(body, "stream")
            stops = _stops(body)
            pref = backend.preference(method, body.get("preference"))
            text = _prompt(body, chat)
            sampler = _sampler(body, backend.default_sampler)
            lane, row = backend.row(method, text, pref, _max_tokens(body), sampler, emit)
        except UserError as exc:
            metrics.count(method if method in backend.methods else "-", "bad_request")
            return _error(400, str(exc))
        backend.scheduler.submit(lane, row)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        def decoded() -> tuple[str, str | None]:
            """The text so far, cut before a stop string; "stop" when one came (the row is let go)."""
            text = tokenizer.decode(row.tokens, skip_special_tokens=True).strip()
            at = stop_index(text, stops) if stops else None
            if at is None:
                return text, None
            row.cancelled = True  # it leaves its batch at the next step
            return text[:at], "stop"

        def usage() -> dict:
            n = len(row.tokens)
            return {
                "prompt_tokens": len(row.prompt_ids),
                "completion_tokens": n,
                "total_tokens": len(row.prompt_ids) + n,
            }

        def finished(outcome: str) -> None:
            metrics.count(method, outcome, len(row.prompt_ids), len(row.tokens))

        def choice(text: str | None, finish, delta: bool) -> dict:
            if not chat:
                return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
            if delta:
                return {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
            return {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}

        def envelope(choices: list, final: bool = False) -> dict:
            kind = ("chat.completion.chunk" if stream else "chat.completion") if chat else "text_completion"
            out = {"id": rid, "object": kind, "created": created, "model": method, "choices": choices}
            if final:
                out["usage"] = usage()
            return out

        if not stream:
            watch = asyncio.ensure_future(_until_disconnected(request, row, events))
            try:
                while True:
                    kind, value = await events.get()
                    if kind == "disconnected":  # nobody will read the answer: stop decoding it
                        finished("cancelled")
                        return _error(499, "the client went away")
                    if kind == "error":
                        finished("error")
                        return _error(500, value)
                    if kind == "token" and stops:
                        text, finish = decoded()
                        if finish:
                            finished("ok")
                            return envelope([choice(text, finish, delta=False)], final=True)
                    if kind == "done":
                        text, finish = decoded()
                        finished("ok")
                        return envelope([choice(text, finish or value, delta=False)], final=True)
            finally:
                watch.cancel()

        async def sse():
            sent = ""
            outcome = "cancelled"
            try:
                if chat:
                    yield _sse(
                        envelope([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}])
                    )
                while True:
                    kind, value = await events.get()
                    if kind == "error":
                        outcome = "error"
                        yield _sse({"error": {"message": value, "type": "server_error", "code": 500}})
                        break
                    text, finish = decoded()
                    if finish or kind == "done":
                        rest = text[len(sent) :] if text.startswith(sent) else ""
                        yield _sse(envelope([choice(rest, finish or value, delta=True)], final=True))
                        outcome = "ok"
                        break
                    safe = text[: len(text) - held_back(text, stops)] if stops else text
                    if kind == "token" and safe.startswith(sent) and len(safe) > len(sent):
                        yield _sse(envelope([choice(safe[len(sent) :], None, delta=True)]))
                        sent = safe
                yield "data: [DONE]\n\n"
            finally:
                row.cancelled = True  # a client that went away frees its row at the next step
                finished(outcome)

        return StreamingResponse(sse(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await complete(request, chat=True)

    return app


async def _until_disconnected(request: Request, row, events: asyncio.Queue) -> None:
    """Wait for the client to go away (its body is read: the next ASGI message is the disconnect), then
    let the row go: a non-streaming request nobody waits for must not decode to the end."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    row.cancelled = True
    events.put_nowait(("disconnected", None))


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def serve_threads(s) -> int:
    """`serve.threads`, or half the CPU cores this process may use (at least 1): torch's default, every
    core, lets its threads spin against the HTTP thread and anything else on the machine."""
    import os

    if s.threads:
        return int(s.threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // 2)


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"


class ServerThread:
    """uvicorn in a background thread (tests, benchmarks): `with ServerThread(app, port): ...`."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 8000):
        import uvicorn

        self.server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_config=None, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, name="rlphf-serve-http", daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve(cfg) -> None:
    """`rlphf serve`: load the run's methods and answer OpenAI-style requests until interrupted."""
    import torch
    import uvicorn

    from rlphf_cli.serving.methods import Backend

    s = cfg.serve
    torch.set_num_threads(serve_threads(s))
    backend = Backend(cfg)
    backend.scheduler.start()
    log.info(
        'serving %s from %s at http://%s:%d/v1 (model = method; body field `preference`, e.g. "P1A,P2B,P3A"; '
        "%d torch threads)",
        ", ".join(backend.methods),
        cfg.run_dir,
        s.host,
        s.port,
        torch.get_num_threads(),
    )
    try:
        uvicorn.run(build_app(backend), host=s.host, port=s.port, log_config=None, log_level="info")
    finally:
        backend.scheduler.stop()
