"""`rlphf personalize mode=web user=NAME`: PReF's active questions on a local page.

The same questions as `mode=interactive` (each the candidate pair the posterior is least sure about), shown
in the browser; every answer is appended to `users/NAME.answers.jsonl` at once (what `mode=fit` reads), so
closing the page or stopping the server resumes. When the questions are done (or the user stops early) the
user file `users/NAME.json` is written, the page shows the inferred mixture weights with their uncertainty
(an inline SVG bar chart) and a response decoded with them (`personalize.web_method`: pcm when the run has
one, else mod). `rlphf generate preference=@users/NAME.json` reads the same file.
"""

from __future__ import annotations

import html
import logging
import threading

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool

from rlphf_cli.annotate.web import BadRequest, check_host, check_token, error, json_body, ok, page, serve_app
from rlphf_cli.benchmarks import get_benchmark
from rlphf_cli.errors import UserError
from rlphf_cli.methods import all_methods, get_method
from rlphf_cli.personalize.candidates import Features, candidate_pairs, ensure_candidates, pair_pool
from rlphf_cli.personalize.fit import CHOICES, fit_answers, read_answers, report, user_body
from rlphf_cli.personalize.model import most_uncertain, two_pole_dimensions
from rlphf_cli.personalize.users import answers_path, check_user_name, load_user_preference, write_user
from rlphf_cli.personalize.web_page import PERSONALIZE_PAGE
from rlphf_cli.preferences import POLES
from rlphf_cli.runs import RunDir, append_jsonl

log = logging.getLogger(__name__)


def _key(prompt: str, a: str, b: str) -> tuple[str, frozenset]:
    return prompt, frozenset((a, b))


class Session:
    """One user's questions, answers and result; one lock, since answers come from HTTP worker threads."""

    def __init__(self, cfg):
        pc = cfg.personalize
        self.cfg = cfg
        self.name = check_user_name(pc.user)
        if pc.questions < 1:
            raise UserError(f"personalize.questions must be at least 1, got {pc.questions}")
        self.dims = two_pole_dimensions(get_benchmark(cfg.benchmark).poles)
        self.features = Features(cfg, self.dims)
        groups = candidate_pairs(ensure_candidates(cfg), self.features)
        self.pairs, self.diffs = pair_pool(groups, sorted(groups))
        if len(self.pairs) == 0:
            raise UserError("no valid candidate pair to ask about: raise personalize.candidate_prompts")
        self.path = answers_path(cfg.run_dir, self.name)
        self.answers = read_answers(self.path, appended=True) if self.path.exists() else []
        keys = {_key(a["prompt"], a["response_a"], a["response_b"]) for a in self.answers}
        self.asked = [
            i for i, (x, y) in enumerate(self.pairs) if _key(x["prompt"], x["text"], y["text"]) in keys
        ]
        self.current: int | None = None
        self.result: dict | None = None
        self.lock = threading.Lock()

    def finished(self) -> bool:
        return len(self.answers) >= self.cfg.personalize.questions or len(self.asked) >= len(self.pairs)

    def state(self) -> dict:
        out = {
            "user": self.name,
            "answered": len(self.answers),
            "questions": self.cfg.personalize.questions,
            "question": None,
            "result": self.result,
        }
        if self.result is None and not self.finished():
            if self.current is None:
                post = fit_answers(self.answers, self.features, self.cfg.personalize.l2)
                self.current = most_uncertain(post, self.diffs, self.asked)
            a, b = self.pairs[self.current]
            out["question"] = {"id": self.current, "prompt": a["prompt"], "a": a["text"], "b": b["text"]}
        return out

    def answer(self, body: dict) -> dict:
        unknown = sorted(set(body) - {"question", "choice"})
        if unknown:
            raise BadRequest(400, f"unknown field(s) {', '.join(unknown)}")
        choice = body.get("choice")
        if choice not in CHOICES:
            raise BadRequest(400, "choice must be A, B or TIE")
        with self.lock:
            question = body.get("question")
            if isinstance(question, bool) or not isinstance(question, int):
                raise BadRequest(400, "question must be the id of the question shown")
            if self.result is not None or self.finished():
                raise BadRequest(409, "the questions are done; the result is on the page")
            self.state()  # the question on screen now
            if question != self.current:
                if question in self.asked:
                    return self.state()  # a double submit: already saved, ignored
                raise BadRequest(
                    409 if 0 <= question < len(self.pairs) else 404,
                    f"question {question} is not the one asked",
                )
            a, b = self.pairs[question]
            row = {
                "prompt": a["prompt"],
                "response_a": a["text"],
                "response_b": b["text"],
                "choice": choice,
                "prompt_id": a["prompt_id"],
                "source_a": a["combination"],
                "source_b": b["combination"],
            }
            append_jsonl(self.path, [row])
            self.answers.append(row)
            self.asked.append(question)
            self.current = None
            return self.state()

    def finish(self) -> dict:
        with self.lock:
            if not self.answers:
                raise BadRequest(400, "answer at least one question first")
            if self.result is None:
                self.result = self._result()
            return self.state()

    def _result(self) -> dict:
        pc = self.cfg.personalize
        post = fit_answers(self.answers, self.features, pc.l2)
        try:
            body = user_body(self.cfg, post, self.dims, str(self.path))
        except UserError as exc:  # e.g. only ties: no information about any dimension
            raise BadRequest(400, str(exc)) from None
        out = write_user(self.cfg.run_dir, self.name, {**body, "reward": self.features.kind})
        report(out)
        result = {
            "user_file": f"users/{self.name}.json",
            "n_answers": body["n_answers"],
            "mixture": body["mixture"],
            "mixture_sd": body["mixture_sd"],
            "strengths": body["strengths"],
            "strength_sd": body["strength_sd"],
            "preference": body["preference"],
            "chart": chart_svg(body["mixture"], body["mixture_sd"]),
            "pole_texts": {p: POLES[p].text for p in body["mixture"] if p in POLES},
        }
        try:
            result["response"] = decode_for_user(self.cfg, self.name)
        except UserError as exc:
            log.warning("no response decoded for %s: %s", self.name, exc)
            result["response"] = {"error": str(exc)}
        return result


def web_method(cfg) -> str:
    method = cfg.personalize.web_method
    if method == "auto":
        return "pcm" if RunDir(cfg.run_dir).artifact("pcm").is_complete() else "mod"
    weighted = [m.name for m in all_methods() if m.takes_weights]
    if method not in weighted:
        raise UserError(f"personalize.web_method must be auto or {', '.join(weighted)}; got {method!r}")
    return method


def decode_for_user(cfg, name: str) -> dict:
    """One response to the benchmark's first evaluation prompt, decoded with the user's weights."""
    from rlphf_cli.decoding.generate import Generator, method_settings
    from rlphf_cli.generations import GenerationsFile

    method = web_method(cfg)
    bench = get_benchmark(cfg.benchmark)
    pref = load_user_preference(f"users/{name}.json", cfg.run_dir, list(bench.poles))
    prompt = bench.eval_prompts()[0]
    out = GenerationsFile(cfg.run_dir, method, folder=f"personalize/web/{name}")
    settings = {**method_settings(cfg, method), "prompts": f"{cfg.benchmark.name}:eval[:1]"}
    try:
        out.check_settings(settings)
    except UserError:  # decoded before with other settings or models: this one response is made again
        for path in (out.path, out.manifest_path, out.settings_path):
            path.unlink(missing_ok=True)
        out.check_settings(settings)
    done = {(r["prompt_id"], r["combination"]): r for r in out.read()}
    if (prompt.id, pref.name) not in done:
        Generator(cfg, method, get_method(method).mixing_space(cfg), settings).run([(prompt, pref)], out)
        done = {(r["prompt_id"], r["combination"]): r for r in out.read()}
    row = done[(prompt.id, pref.name)]
    return {"method": method, "preference": pref.name, "prompt": prompt.text, "text": row.get("text") or ""}


def short_text(pole: str, chars: int = 26) -> str:
    text = POLES[pole].text.removeprefix("Generate a response ") if pole in POLES else ""
    return text if len(text) <= chars else text[: chars - 1].rstrip() + "…"


def chart_svg(mixture: dict[str, float], sd: dict[str, float]) -> str:
    """Horizontal bars of the mixture weights, each with a whisker of +-1 sd (clipped to [0, 1])."""
    left, width, row, top = 230, 360, 34, 24
    height = top + row * len(mixture) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 70}" height="{height}" '
        'role="img" aria-label="mixture weights with one standard deviation" font-family="sans-serif" font-size="13">',
        f'<text x="{left}" y="14" fill="#555">mixture weight (bar) ± 1 sd (whisker)</text>',
    ]
    for k, (pole, w) in enumerate(mixture.items()):
        y = top + k * row
        e = sd.get(pole, 0.0)
        lo, hi = max(0.0, w - e), min(1.0, w + e)
        label = html.escape(f"{pole}: {short_text(pole)}")
        parts += [
            f'<text x="{left - 8}" y="{y + 17}" text-anchor="end">{label}</text>',
            f'<rect x="{left}" y="{y + 4}" width="{width * w:.1f}" height="{row - 10}" fill="#3b6fd8"/>',
            f'<line x1="{left + width * lo:.1f}" x2="{left + width * hi:.1f}" y1="{y + row / 2 - 1}" '
            f'y2="{y + row / 2 - 1}" stroke="#111" stroke-width="2"/>',
            f'<text x="{left + width * hi + 6:.1f}" y="{y + 17}">{w:.2f} ± {e:.2f}</text>',
        ]
    axis = top + row * len(mixture) + 4
    parts.append(f'<line x1="{left}" x2="{left + width}" y1="{axis}" y2="{axis}" stroke="#999"/>')
    for t in (0, 0.5, 1):
        parts.append(
            f'<text x="{left + width * t:.1f}" y="{axis + 16}" text-anchor="middle" fill="#555">{t:g}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def build_app(session: Session, token: str | None = None, limit: int = 4096) -> FastAPI:
    app = FastAPI(title="rlphf personalize", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(BadRequest)
    async def refused(request: Request, exc: BadRequest):
        return error(exc.status, str(exc))

    @app.get("/")
    async def index(request: Request):
        check_token(request, token)
        return page(PERSONALIZE_PAGE)

    @app.get("/api/state")
    async def state(request: Request):
        check_token(request, token)
        with session.lock:
            return ok(session.state())

    @app.post("/api/answer")
    async def answer(request: Request):
        check_token(request, token)
        return ok(session.answer(await json_body(request, limit)))

    @app.post("/api/finish")
    async def finish(request: Request):
        check_token(request, token)
        return ok(await run_in_threadpool(session.finish))

    app.state.session = session
    return app


def web(cfg) -> None:
    pc = cfg.personalize
    check_host(pc.host, pc.port, pc.token, "personalize")
    session = Session(cfg)
    if session.answers:
        log.info(
            "resuming: %d answer(s) of %d already in %s", len(session.answers), pc.questions, session.path
        )
    query = f"?token={'...' if pc.token else ''}" if pc.token else ""
    print(f"personalization page for {session.name}: http://{pc.host}:{pc.port}/{query}", flush=True)
    serve_app(build_app(session, pc.token), pc.host, pc.port)
