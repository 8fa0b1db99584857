"""`rlphf personalize mode=web`: PReF's questions on a page (API level; the page itself in the browser test)."""

import json

import pytest
from fastapi.testclient import TestClient
from test_personalize import CANDIDATES, candidates_run  # noqa: F401  (a fixture)

from conftest import make_random_expert_run
from rlphf_cli.config import compose
from rlphf_cli.decoding.generate import generate
from rlphf_cli.personalize.users import load_user_preference
from rlphf_cli.personalize.web import Session, build_app, chart_svg
from rlphf_cli.preferences import POLES

TINY = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=2"]


def web_config(run_dir, *overrides):
    return compose(
        [
            f"run_dir={run_dir}",
            "personalize.mode=web",
            "personalize.user=web1",
            "personalize.questions=4",
            f"personalize.{CANDIDATES}",
            *TINY,
            *overrides,
        ]
    )


@pytest.mark.slow
def test_web_questions_save_each_answer_resume_and_write_the_user_file(candidates_run):  # noqa: F811
    run_dir, _ = candidates_run
    make_random_expert_run(run_dir)  # a base and random experts: enough to decode a response with mod
    cfg = web_config(run_dir)
    client = TestClient(build_app(Session(cfg)))
    state = client.get("/api/state").json()
    assert state["answered"] == 0 and state["questions"] == 4 and state["result"] is None
    first = state["question"]
    assert set(first) == {"id", "prompt", "a", "b"}  # the candidates' sources are not shown
    # bad input: one line, 4xx, nothing written
    for body, status in [
        ({"question": first["id"], "choice": "C"}, 400),
        ({"question": first["id"] + 1, "choice": "A"}, 409),
        ({"question": 10**6, "choice": "A"}, 404),
        ({"question": "x", "choice": "A"}, 400),
        ({"question": first["id"], "choice": "A", "extra": 1}, 400),
    ]:
        r = client.post("/api/answer", json=body)
        assert r.status_code == status and "\n" not in r.json()["error"]
    r = client.post("/api/answer", content=b"x" * 5000, headers={"content-type": "application/json"})
    assert r.status_code == 413
    answers = run_dir / "users" / "web1.answers.jsonl"
    assert not answers.exists()
    assert client.post("/api/finish", json={}).status_code == 400  # nothing answered yet
    second = client.post("/api/answer", json={"question": first["id"], "choice": "A"}).json()
    again = client.post("/api/answer", json={"question": first["id"], "choice": "A"})  # a double submit
    assert again.status_code == 200 and again.json()["answered"] == 1
    assert len(answers.read_text().splitlines()) == 1  # saved at once, once
    # a restarted page resumes at the same next question
    client = TestClient(build_app(Session(cfg)))
    resumed = client.get("/api/state").json()
    assert resumed["answered"] == 1 and resumed["question"] == second["question"]
    state = resumed
    for choice in ["B", "TIE", "A"]:
        state = client.post(
            "/api/answer", json={"question": state["question"]["id"], "choice": choice}
        ).json()
    assert state["answered"] == 4 and state["question"] is None and state["result"] is None
    result = client.post("/api/finish", json={}).json()["result"]
    user = json.loads((run_dir / "users" / "web1.json").read_text())
    assert user["n_answers"] == 4 and result["mixture"] == user["mixture"]
    assert result["chart"].startswith("<svg") and all(p in result["chart"] for p in user["mixture"])
    response = result["response"]
    assert response["method"] == "mod" and isinstance(response["text"], str), response
    rows = [json.loads(x) for x in answers.read_text().splitlines()]
    assert [r["choice"] for r in rows] == ["A", "B", "TIE", "A"]
    assert client.post("/api/answer", json={"question": 0, "choice": "A"}).status_code == 409
    # `generate preference=@users/web1.json` reads the file the page wrote
    pref = load_user_preference("@users/web1.json"[1:], run_dir, list(POLES)[:6])
    assert pref.user == "web1" and pref.name == response["preference"]
    out = generate(
        compose(
            [
                f"run_dir={run_dir}",
                "generate.method=mod",
                "generate.preference=@users/web1.json",
                "benchmark.max_eval_prompts=1",
                "generate.max_new_tokens=8",
                *TINY,
            ]
        )
    )
    rows = [json.loads(x) for x in (run_dir / "generations" / "mod.jsonl").read_text().splitlines()]
    assert out and {r["combination"] for r in rows} == {pref.name}


def test_chart_labels_are_escaped_and_bars_follow_the_weights():
    svg = chart_svg({"P1A": 0.75, "P2B": 0.25}, {"P1A": 0.1, "P2B": 0.5})
    assert svg.count("<rect") == 2 and 'width="270.0"' in svg and "0.25 ± 0.50" in svg
    assert "<script" not in chart_svg({"<script>": 1.0}, {}) and "&lt;script&gt;" in chart_svg(
        {"<script>": 1.0}, {}
    )


@pytest.mark.slow
def test_the_page_needs_a_token_off_loopback(candidates_run, tmp_path):  # noqa: F811
    import subprocess
    import sys

    run_dir, _ = candidates_run
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlphf_cli",
            "personalize",
            f"run_dir={run_dir}",
            "mode=web",
            "user=x",
            "host=10.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "personalize.token" in bad.stderr
    client = TestClient(build_app(Session(web_config(run_dir)), token="open-sesame"))
    assert client.get("/").status_code == 403 and client.get("/api/state").status_code == 403
    assert client.get("/?token=open-sesame").status_code == 200


@pytest.mark.parametrize(
    "path", ["/../users/web1.answers.jsonl", "/users/web1.json", "/personalize/candidates.jsonl"]
)
def test_no_run_file_is_served(candidates_run, path):  # noqa: F811
    run_dir, _ = candidates_run
    client = TestClient(build_app(Session(web_config(run_dir))))
    assert client.get(path).status_code == 404
