"""The study page in a real browser: headless Chromium (Debian's `chromium`) driven by playwright clicks
through a 10-item study with the keyboard and the mouse, reloads mid-way, finishes; then the annotations
file and the human eval table are checked, and a screenshot is saved."""

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
from test_annotate import HOSTILE, STUDY, make_run
from test_personalize import candidates_run  # noqa: F401  (a fixture)

from rlphf_cli.annotate.server import build_app
from rlphf_cli.annotate.study import answers_path, make_study
from rlphf_cli.config import compose
from rlphf_cli.evaluation.evaluate import evaluate
from rlphf_cli.serving.server import ServerThread

pytestmark = pytest.mark.slow  # starts servers or decodes every method: over a second each on 2 cores

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parent.parent


def chromium() -> str:
    for name in (os.environ.get("RLPHF_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        found = name and shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium installed (apt-get install chromium); the browser test needs one")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser():
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    executable = chromium()
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_a_rater_clicks_through_a_study(tmp_path, browser):
    from playwright.sync_api import expect

    run_dir = make_run(tmp_path / "run")
    done_url = "https://app.prolific.com/submissions/complete?cc=C0DE"
    cfg = compose([f"run_dir={run_dir}", *STUDY, f"annotate.completion_url='{done_url}'"])
    study = make_study(cfg)
    items = study["items"]
    assert len(items) == 10
    port = free_port()
    url = f"http://127.0.0.1:{port}/?PROLIFIC_PID=pid42&STUDY_ID=st1&SESSION_ID=se7"
    page = browser.new_page(viewport={"width": 1200, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    with ServerThread(build_app(cfg, study), port=port):
        page.goto(url)
        for n, item in enumerate(items):
            expect(page.locator("#progress")).to_have_text(f"{n} of 10 answered")
            # the texts are shown as text: the hostile response is visible verbatim and never ran
            shown = page.inner_text("#response-a") + page.inner_text("#response-b")
            assert (item["a"].split()[0] in shown) and page.evaluate("window.__pwned") is None
            if HOSTILE in item["a"] + item["b"]:
                assert "<script>" in shown and page.locator("#response-a b, #response-b b").count() == 0
                page.screenshot(path=str(tmp_path / "hostile.png"))
            if n == 0:
                page.screenshot(path=str(tmp_path / "annotate.png"), full_page=True)
            if n == 4:  # a reload mid-way resumes at the same item
                page.reload()
                expect(page.locator("#progress")).to_have_text("4 of 10 answered")
            if n % 2 == 0:  # the keyboard: A/T/B answer the highlighted row and move on, X, R, Enter
                for _ in item["poles"]:
                    page.keyboard.press("b" if item["swap"] else "a")
                page.keyboard.press("t")  # the optional overall row
                page.keyboard.press("x")
                page.keyboard.press("r")
                page.keyboard.type("A bit clearer & shorter <b>really</b>")
                page.keyboard.press("Enter")
            else:  # the mouse
                side = "B" if item["swap"] else "A"
                for pole in item["poles"]:
                    page.click(f"#btn-{pole}-{side}")
                page.click("#btn-overall-" + side)
                page.click("#submit")
                if n == 1:  # a second click while the first is in flight, or after: never a second answer
                    page.click("#submit", force=True)
        page.wait_for_selector("#done:not(.hidden)")
        assert "All 10 items are answered" in page.inner_text("#done")
        assert page.get_attribute("#completion", "href") == done_url  # Prolific's completion link
        page.screenshot(path=str(tmp_path / "done.png"))
    assert not errors, errors
    rows = [json.loads(x) for x in answers_path(run_dir, "s1").read_text().splitlines()]
    assert [r["item_id"] for r in rows] == [i["id"] for i in items]  # each once, in order, none doubled
    for n, (row, item) in enumerate(zip(rows, items, strict=True)):
        assert row["rater"] == "pid42" and row["PROLIFIC_PID"] == "pid42" and row["SESSION_ID"] == "se7"
        assert set(row["winners"].values()) == {"pcm"} and row["swap"] == item["swap"]
        assert "Chrome" in row["user_agent"] and row["answered_ms"] >= row["shown_ms"] > 0
        if n % 2 == 0:
            assert row["both_bad"] and row["overall"] == "TIE"
            assert row["rationale"] == "A bit clearer & shorter <b>really</b>"
        else:
            assert not row["both_bad"] and row["overall_winner"] == "pcm" and row["rationale"] == ""
    (out,) = evaluate(
        compose([f"run_dir={run_dir}", *STUDY, "eval.judge.kind=human", "eval.bootstrap_samples=200"])
    )
    table = (out / "table.md").read_text()
    assert "**Overall: 100.0" in table and "pid42 | 10 | 2/2 (100%) | 1/1 (100%)" in table
    assert (tmp_path / "annotate.png").stat().st_size > 10_000
    docs = REPO / "docs"
    if os.environ.get("RLPHF_UPDATE_SCREENSHOT"):  # README's picture: RLPHF_UPDATE_SCREENSHOT=1 pytest ...
        docs.mkdir(exist_ok=True)
        shutil.copy(tmp_path / "annotate.png", docs / "annotate.png")


def test_personalize_on_the_page(candidates_run, browser, tmp_path):  # noqa: F811
    from playwright.sync_api import expect
    from test_personalize_web import web_config

    from conftest import make_random_expert_run
    from rlphf_cli.personalize.web import Session
    from rlphf_cli.personalize.web import build_app as personalize_app

    run_dir, _ = candidates_run
    make_random_expert_run(run_dir)
    cfg = web_config(run_dir, "personalize.questions=3")
    port = free_port()
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    with ServerThread(personalize_app(Session(cfg)), port=port):
        page.goto(f"http://127.0.0.1:{port}/")
        expect(page.locator("#progress")).to_have_text("0 of 3 answered")
        page.keyboard.press("a")
        expect(page.locator("#progress")).to_have_text("1 of 3 answered")
        page.reload()  # resumes
        expect(page.locator("#progress")).to_have_text("1 of 3 answered")
        page.click("#choose-B")
        expect(page.locator("#progress")).to_have_text("2 of 3 answered")
        page.click("#choose-TIE")
        expect(page.locator("#result")).to_be_visible(timeout=120_000)
        assert page.locator("#chart svg rect").count() >= 1
        assert page.inner_text("#generate-cmd") == "rlphf generate preference=@users/web1.json"
        assert page.text_content("#method") == "mod"
        page.screenshot(path=str(tmp_path / "personalize.png"), full_page=True)
    assert not errors, errors
    user = json.loads((run_dir / "users" / "web1.json").read_text())
    assert user["n_answers"] == 3
    rows = [json.loads(x) for x in (run_dir / "users" / "web1.answers.jsonl").read_text().splitlines()]
    assert [r["choice"] for r in rows] == ["A", "B", "TIE"]
    if os.environ.get("RLPHF_UPDATE_SCREENSHOT"):
        shutil.copy(tmp_path / "personalize.png", REPO / "docs" / "personalize.png")
