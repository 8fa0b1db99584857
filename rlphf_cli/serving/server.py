"""The HTTP side of `rlphf serve`: OpenAI's `/v1/completions`, `/v1/chat/completions` and `/v1/models`.

A request's `model` is the decoding method; the extra body field `preference` carries the poles or weights.
Handlers only check the request and wait for tokens: the scheduler thread (batching.py) owns the models and
decodes every waiting request together, a new one joining the running batch at the next step. Bad input is
HTTP 400 with a one-line message in OpenAI's error shape; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from rlphf_cli.decoding.engine import Sampler
from rlphf_cli.errors import UserError

log = logging.getLogger(__name__)


def _error(status: int, message: str):
    kind = "invalid_request_error" if status == 400 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def _sampler(body: dict, default: Sampler) -> Sampler:
    temperature = body.get("temperature")
    top_p = body.get("top_p")
    if temperature is None and top_p is None:
        return default
    try:
        temperature = default.temperature if temperature is None else float(temperature)
        top_p = default.top_p if top_p is None else float(top_p)
    except (TypeError, ValueError):
        raise UserError("temperature and top_p must be numbers") from None
    if temperature < 0 or not 0 < top_p <= 1:
        raise UserError(f"temperature must be >= 0 and top_p in (0, 1]; got {temperature}, {top_p}")
    return Sampler(temperature, default.top_k, top_p, greedy=temperature == 0)


def _prompt(body: dict, chat: bool) -> str:
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise UserError("`messages` must be a non-empty list")
        users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        if not users or not all(isinstance(c, str) for c in users):
            raise UserError("`messages` needs at least one user message with string content")
        return users[-1]  # the model's prompt template holds one instruction: the latest user message
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise UserError("`prompt` must be a string (one prompt per request)")
    return prompt


def build_app(backend):
    """The FastAPI application over a `Backend` (methods.py); its scheduler must be started."""
    app = FastAPI(title="rlphf serve")
    tokenizer = backend.tokenizer

    @app.get("/v1/models")
    async def models():
        now = int(time.time())
        data = [{"id": m, "object": "model", "created": now, "owned_by": "rlphf"} for m in backend.methods]
        return {"object": "list", "data": data}

    async def complete(request: Request, chat: bool):
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the request body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def emit(kind, value):  # called on the scheduler thread
            loop.call_soon_threadsafe(events.put_nowait, (kind, value))

        try:
            method = body.get("model")
            if not isinstance(method, str) or method not in backend.methods:
                raise UserError(f"unknown model {method!r}; this run serves: {', '.join(backend.methods)}")
            if body.get("n", 1) != 1:
                raise UserError("n must be 1")
            pref = backend.preference(method, body.get("preference"))
            text = _prompt(body, chat)
            sampler = _sampler(body, backend.default_sampler)
            lane, row = backend.row(method, text, pref, body.get("max_tokens"), sampler, emit)
        except UserError as exc:
            return _error(400, str(exc))
        backend.scheduler.submit(lane, row)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        def decoded() -> str:
            return tokenizer.decode(row.tokens, skip_special_tokens=True).strip()

        def usage() -> dict:
            n = len(row.tokens)
            return {
                "prompt_tokens": len(row.prompt_ids),
                "completion_tokens": n,
                "total_tokens": len(row.prompt_ids) + n,
            }

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

        stream = bool(body.get("stream"))
        if not stream:
            while True:
                kind, value = await events.get()
                if kind == "error":
                    return _error(500, value)
                if kind == "done":
                    return envelope([choice(decoded(), value, delta=False)], final=True)

        async def sse():
            sent = ""
            try:
                if chat:
                    yield _sse(
                        envelope([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}])
                    )
                while True:
                    kind, value = await events.get()
                    if kind == "error":
                        yield _sse({"error": {"message": value, "type": "server_error", "code": 500}})
                        break
                    text = decoded()
                    if kind == "token" and text.startswith(sent) and len(text) > len(sent):
                        yield _sse(envelope([choice(text[len(sent) :], None, delta=True)]))
                        sent = text
                    if kind == "done":
                        rest = text[len(sent) :] if text.startswith(sent) else ""
                        yield _sse(envelope([choice(rest, value, delta=True)], final=True))
                        break
                yield "data: [DONE]\n\n"
            finally:
                row.cancelled = True  # a client that went away frees its row at the next step

        return StreamingResponse(sse(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await complete(request, chat=True)

    return app


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
    import uvicorn

    from rlphf_cli.serving.methods import Backend

    s = cfg.serve
    backend = Backend(cfg)
    backend.scheduler.start()
    log.info(
        'serving %s from %s at http://%s:%d/v1 (model = method; body field `preference`, e.g. "P1A,P2B,P3A")',
        ", ".join(backend.methods),
        cfg.run_dir,
        s.host,
        s.port,
    )
    try:
        uvicorn.run(build_app(backend), host=s.host, port=s.port, log_config=None, log_level="info")
    finally:
        backend.scheduler.stop()
