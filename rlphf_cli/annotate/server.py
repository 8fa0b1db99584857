"""`rlphf annotate`: the study page over a run's generations, on FastAPI/uvicorn (127.0.0.1 unless told).

Routes: `/` the page (static: every text reaches it as JSON and is put in with textContent, never parsed as
HTML), `GET /api/state?rater=ID` the rater's next item and progress, `POST /api/answer` one answer. Each
answer is checked (a known item, exactly its criteria, A/B/TIE, a one-line rationale) and appended to
`annotations/<study>.jsonl` at once; a second answer of one rater to one item is ignored, not written.
Nothing else is served: no path reaches a file.
"""

from __future__ import annotations

import logging
import re
import threading
import time

from fastapi import FastAPI, Request

from rlphf_cli.annotate import study as studies
from rlphf_cli.annotate.page import STUDY_PAGE
from rlphf_cli.annotate.web import BadRequest, check_host, check_token, error, json_body, ok, page, serve_app
from rlphf_cli.errors import UserError
from rlphf_cli.runs import append_jsonl

log = logging.getLogger(__name__)

RATER = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
PROLIFIC = ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID")
FIELDS = {
    "rater",
    "item_id",
    "criteria",
    "overall",
    "both_bad",
    "rationale",
    "shown_ms",
    "answered_ms",
    *PROLIFIC,
}


def _rater(value) -> str:
    if not isinstance(value, str) or not RATER.fullmatch(value):
        raise BadRequest(400, "rater must be 1 to 64 letters, digits, _ . @ -")
    return value


def _ms(body: dict, key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e14:
        raise BadRequest(400, f"{key} must be a time in milliseconds")
    return int(value)


class Study:
    """The items, the answers so far (by rater) and the file they are appended to; one lock for writing."""

    def __init__(self, cfg, study: dict):
        self.cfg = cfg.annotate
        self.name = study["study"]
        self.items = study["items"]
        self.by_id = {item["id"]: item for item in self.items}
        self.path = studies.answers_path(cfg.run_dir, self.name)
        self.lock = threading.Lock()
        self.answered: dict[str, set[str]] = {}
        for row in studies.read_answers(cfg.run_dir, self.name):  # resume after a restart
            self.answered.setdefault(row["rater"], set()).add(row["item_id"])
        self.served: dict[tuple[str, str], int] = {}  # when the server sent each item to each rater

    def state(self, rater: str) -> dict:
        done = self.answered.get(rater, set())
        left = [item for item in self.items if item["id"] not in done]
        out = {
            "study": self.name,
            "total": len(self.items),
            "done": len(self.items) - len(left),
            "item": None,
        }
        if not left and self.cfg.completion_url:
            out["completion_url"] = self.cfg.completion_url
        if left:
            item = left[0]
            self.served.setdefault((rater, item["id"]), int(time.time() * 1000))
            out["item"] = {
                "id": item["id"],
                "prompt": item["prompt"],
                "a": item["a"],
                "b": item["b"],
                "preference": [studies.pole_text(p) for p in item["poles"]],
                "criteria": [{"pole": p, "text": studies.pole_text(p)} for p in item["poles"]],
            }
        return out

    def record(self, body: dict, user_agent: str) -> tuple[dict, bool]:
        """The row written for a valid answer, and whether it was new (a double submit is not)."""
        unknown = sorted(set(body) - FIELDS)
        if unknown:
            raise BadRequest(400, f"unknown field(s) {', '.join(unknown)}")
        rater = _rater(body.get("rater"))
        item = self.by_id.get(body.get("item_id")) if isinstance(body.get("item_id"), str) else None
        if item is None:
            raise BadRequest(404, f"unknown item {str(body.get('item_id'))[:40]!r}")
        criteria = body.get("criteria")
        if not isinstance(criteria, dict):
            raise BadRequest(400, "criteria must be an object of pole: A | B | TIE")
        extra = sorted(set(criteria) - set(item["poles"]))
        if extra:
            raise BadRequest(
                400,
                f"item {item['id']} has no criterion {', '.join(map(str, extra))[:80]}; "
                f"its criteria: {', '.join(item['poles'])}",
            )
        missing = [p for p in item["poles"] if p not in criteria]
        if missing:
            raise BadRequest(400, f"item {item['id']} needs an answer for {', '.join(missing)}")
        if any(v not in studies.CHOICES for v in criteria.values()):
            raise BadRequest(400, "each criterion's answer must be A, B or TIE")
        overall = body.get("overall")
        if overall is not None and overall not in studies.CHOICES:
            raise BadRequest(400, "overall must be A, B, TIE or null")
        both_bad = body.get("both_bad", False)
        if not isinstance(both_bad, bool):
            raise BadRequest(400, "both_bad must be true or false")
        rationale = body.get("rationale") or ""
        if not isinstance(rationale, str) or len(rationale) > self.cfg.rationale_chars:
            raise BadRequest(
                400, f"rationale must be one line of at most {self.cfg.rationale_chars} characters"
            )
        rationale = " ".join(rationale.split())
        prolific = {}
        for key in PROLIFIC:
            value = body.get(key)
            if value not in (None, ""):
                if not isinstance(value, str) or not RATER.fullmatch(value):
                    raise BadRequest(400, f"{key} must be 1 to 64 letters, digits, _ . @ -")
                prolific[key] = value
        shown, answered = _ms(body, "shown_ms"), _ms(body, "answered_ms")
        names = {"A": item["baseline"] if item["swap"] else item["method"]}
        names["B"] = item["method"] if item["swap"] else item["baseline"]
        names["TIE"] = "tie"
        row = {
            "study": self.name,
            "item_id": item["id"],
            "kind": item["kind"],
            "rater": rater,
            **prolific,
            "method": item["method"],
            "baseline": item["baseline"],
            "prompt_id": item["prompt_id"],
            "combination": item["combination"],
            "swap": item["swap"],
            "criteria": {p: criteria[p] for p in item["poles"]},
            "winners": {p: names[criteria[p]] for p in item["poles"]},
            "overall": overall,
            "overall_winner": names.get(overall) if overall else None,
            "both_bad": both_bad,
            "rationale": rationale,
            "served_ms": self.served.get((rater, item["id"])),
            "shown_ms": shown,
            "answered_ms": answered,
            "received_ms": int(time.time() * 1000),
            "user_agent": user_agent[:300],
        }
        if item["kind"] == "gold":
            row["gold_passed"] = all(criteria[p] == v for p, v in item["expected"].items())
        if item["kind"] == "repeat":
            row["repeat_of"] = item["repeat_of"]
        with self.lock:
            done = self.answered.setdefault(rater, set())
            if item["id"] in done:
                return row, False
            append_jsonl(self.path, [row])
            done.add(item["id"])
        return row, True


def check_completion_url(url: str | None) -> None:
    if url is not None and not re.fullmatch(r"https?://[^\s\"'<>]+", url):
        raise UserError(f"annotate.completion_url must be an http(s) address, got {url!r}")


def build_app(cfg, study: dict) -> FastAPI:
    state = Study(cfg, study)
    token = cfg.annotate.token
    limit = cfg.annotate.max_body
    app = FastAPI(title="rlphf annotate", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(BadRequest)
    async def refused(request: Request, exc: BadRequest):
        return error(exc.status, str(exc))

    @app.get("/")
    async def index(request: Request):
        check_token(request, token)
        return page(STUDY_PAGE)

    @app.get("/api/state")
    async def get_state(request: Request):
        check_token(request, token)
        return ok(state.state(_rater(request.query_params.get("rater"))))

    @app.post("/api/answer")
    async def answer(request: Request):
        check_token(request, token)
        body = await json_body(request, limit)
        row, new = state.record(body, request.headers.get("user-agent", ""))
        return ok({"saved": new, "duplicate": not new, **state.state(row["rater"])})

    app.state.study = state
    return app


def annotate(cfg) -> None:
    """`rlphf annotate`: draw (or read back) the study, then serve its page until interrupted."""
    a = cfg.annotate
    check_host(a.host, a.port, a.token, "annotate")
    check_completion_url(a.completion_url)
    study = studies.make_study(cfg)
    app = build_app(cfg, study)
    query = "?rater=YOUR_ID" + ("&token=..." if a.token else "")
    log.info(
        "study %s: %d items; raters open http://%s:%d/%s (Prolific adds PROLIFIC_PID, STUDY_ID, SESSION_ID); "
        "answers go to %s; Ctrl-C stops (answers are kept, the same command resumes)",
        study["study"],
        len(study["items"]),
        a.host,
        a.port,
        query,
        app.state.study.path,
    )
    print(f"study page: http://{a.host}:{a.port}/{query}", flush=True)
    serve_app(app, a.host, a.port)
