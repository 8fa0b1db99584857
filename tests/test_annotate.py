"""`rlphf annotate` (the study, its page's API) and `rlphf eval eval.judge.kind=human`, on hand-written
generations from the synthetic world (no model needed)."""

import json
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from helpers import generation_rows, write_generations

from rlphf_cli.annotate.server import build_app
from rlphf_cli.annotate.study import answers_path, make_study, study_path
from rlphf_cli.config import compose
from rlphf_cli.errors import UserError
from rlphf_cli.evaluation.agreement import cohen_kappa, krippendorff_alpha
from rlphf_cli.evaluation.evaluate import evaluate

HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned=2"><b>bold</b> &amp;'
STUDY = ["annotate.items=7", "annotate.gold=2", "annotate.repeats=1", "annotate.study=s1"]


def study_config(run_dir, *overrides):
    return compose([f"run_dir={run_dir}", *STUDY, "eval.bootstrap_samples=200", *overrides])


def make_run(run_dir):
    """pcm (following each combination) and soups (neutral); pcm's responses to two of the four prompts
    carry hostile HTML (the judge finds those invalid, so gold items come from the other two)."""
    rows = generation_rows("pcm", True)
    hostile = sorted({r["prompt_id"] for r in rows})[:2]
    for r in rows:
        if r["prompt_id"] in hostile:
            r["text"] = HOSTILE + " " + r["text"]
    write_generations(run_dir, "pcm", rows)
    write_generations(run_dir, "soups")
    return run_dir


@pytest.fixture
def study_run(tmp_path):
    return make_run(tmp_path)


def answer_for(item: dict, choice: str = "method", rater: str = "r1") -> dict:
    """An answer naming the method (or the baseline) better on every criterion, in the page's A/B terms."""
    method_side = "B" if item["swap"] else "A"
    other = "A" if method_side == "B" else "B"
    side = {"method": method_side, "baseline": other, "tie": "TIE"}[choice]
    return {
        "rater": rater,
        "item_id": item["id"],
        "criteria": dict.fromkeys(item["poles"], side),
        "overall": side,
        "both_bad": False,
        "rationale": "clearer",
        "shown_ms": 1_000,
        "answered_ms": 4_500,
    }


@pytest.mark.slow
def test_study_items_swaps_gold_and_repeats(study_run):
    cfg = study_config(study_run)
    study = make_study(cfg)
    items = study["items"]
    kinds = [i["kind"] for i in items]
    assert len(items) == 10 and kinds.count("regular") == 7 and kinds.count("gold") == 2
    assert kinds.count("repeat") == 1 and kinds[-1] == "repeat"
    swaps = [i["swap"] for i in items if i["kind"] == "regular"]
    assert any(swaps) and not all(swaps)  # a seeded coin per item, recorded
    hostile = [i for i in items if HOSTILE in i["a"] + i["b"]]
    assert hostile and all((i["b"] if i["swap"] else i["a"]).startswith(HOSTILE) for i in hostile)
    for gold in (i for i in items if i["kind"] == "gold"):  # the judge's clear-cut side, in A/B terms
        assert set(gold["expected"]) == set(gold["poles"])
        assert set(gold["expected"].values()) == {"B" if gold["swap"] else "A"}
    repeat = items[-1]
    original = next(i for i in items if i["id"] == repeat["repeat_of"])
    assert (repeat["a"], repeat["b"], repeat["swap"]) == (original["b"], original["a"], not original["swap"])
    assert make_study(cfg) == study  # read back, not drawn again
    with pytest.raises(UserError, match="other settings"):
        make_study(study_config(study_run, "annotate.items=5"))
    # another seed draws other items and swaps
    other = make_study(study_config(study_run, "annotate.study=s2", "seed=3"))
    assert [(i["prompt_id"], i["combination"]) for i in other["items"]] != [
        (i["prompt_id"], i["combination"]) for i in items
    ]


def test_page_api_answers_resume_and_double_submit(study_run):
    cfg = study_config(study_run)
    study = make_study(cfg)
    client = TestClient(build_app(cfg, study))
    page = client.get("/")
    assert (
        page.status_code == 200
        and "<script>window" not in page.text
        and "Content-Security-Policy" in page.headers
    )
    state = client.get("/api/state", params={"rater": "r1"}).json()
    assert state["done"] == 0 and state["total"] == 10
    shown = state["item"]
    assert "method" not in shown and "baseline" not in shown and "swap" not in shown  # hidden from raters
    assert "pcm" not in json.dumps(shown) and "soups" not in json.dumps(shown)
    assert shown["preference"] and [c["pole"] for c in shown["criteria"]] == study["items"][0]["poles"]
    item = study["items"][0]
    body = {**answer_for(item), "PROLIFIC_PID": "p123", "STUDY_ID": "st9", "SESSION_ID": "se1"}
    first = client.post("/api/answer", json=body, headers={"user-agent": "pytest-agent"})
    assert first.status_code == 200 and first.json()["saved"] and first.json()["item"]["id"] == "q002"
    again = client.post("/api/answer", json=body)  # a double submit: ignored, not written
    assert again.status_code == 200 and again.json()["duplicate"] and again.json()["done"] == 1
    rows = [json.loads(x) for x in answers_path(study_run, "s1").read_text().splitlines()]
    assert len(rows) == 1
    row = rows[0]
    assert row["swap"] == item["swap"] and row["user_agent"] == "pytest-agent"
    assert (row["shown_ms"], row["answered_ms"]) == (1000, 4500) and row["served_ms"] > 0
    assert row["PROLIFIC_PID"] == "p123" and row["STUDY_ID"] == "st9" and row["SESSION_ID"] == "se1"
    assert set(row["winners"].values()) == {"pcm"} and row["overall_winner"] == "pcm"
    # a restarted server resumes where the rater was; another rater starts at the beginning
    client2 = TestClient(build_app(cfg, make_study(cfg)))
    assert client2.get("/api/state", params={"rater": "r1"}).json()["item"]["id"] == "q002"
    assert client2.get("/api/state", params={"rater": "r2"}).json()["item"]["id"] == "q001"
    assert client2.post("/api/answer", json=body).json()["duplicate"]
    assert len(answers_path(study_run, "s1").read_text().splitlines()) == 1


def bad_bodies(item, other_item):
    good = answer_for(item)
    return [
        (404, {**good, "item_id": "q999"}, "unknown item"),
        (400, {**good, "criteria": {**good["criteria"], "P3C": "A"}}, "has no criterion P3C"),
        (400, {**good, "item_id": other_item["id"], "criteria": {"P9Z": "A"}}, "has no criterion"),
        (400, {**good, "criteria": {item["poles"][0]: "A"}}, "needs an answer"),
        (400, {**good, "criteria": dict.fromkeys(item["poles"], "C")}, "A, B or TIE"),
        (400, {**good, "overall": "maybe"}, "overall"),
        (400, {**good, "rater": "<b>x</b>"}, "rater"),
        (400, {**good, "rater": ""}, "rater"),
        (400, {**good, "both_bad": "yes"}, "both_bad"),
        (400, {**good, "rationale": "x" * 301}, "rationale"),
        (400, {**good, "shown_ms": "soon"}, "shown_ms"),
        (400, {**good, "PROLIFIC_PID": "a b"}, "PROLIFIC_PID"),
        (400, {**good, "extra": 1}, "unknown field"),
    ]


def test_bad_input_is_a_one_line_4xx_and_writes_nothing(study_run):
    cfg = study_config(study_run, "annotate.max_body=2000")
    study = make_study(cfg)
    client = TestClient(build_app(cfg, study))
    item, other = study["items"][0], study["items"][1]
    for status, body, message in bad_bodies(item, other):
        r = client.post("/api/answer", json=body)
        assert r.status_code == status, (body, r.text)
        assert message in r.json()["error"] and "\n" not in r.json()["error"]
    for raw, status in [(b"{not json", 400), (b"[1, 2]", 400), (b"\xff\xfe", 400), (b"x" * 5000, 413)]:
        r = client.post("/api/answer", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == status and "\n" not in r.json()["error"]
    assert client.get("/api/state").status_code == 400  # no rater
    assert not answers_path(study_run, "s1").exists()


def test_no_file_outside_the_page_is_served(study_run, tmp_path_factory):
    secret = tmp_path_factory.mktemp("outside") / "secret.txt"
    secret.write_text("TOP-SECRET")
    (study_run / "inside.txt").write_text("RUN-FILE")
    cfg = study_config(study_run)
    client = TestClient(build_app(cfg, make_study(cfg)))
    for path in [
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        f"/{secret}",
        "/static/../../secret.txt",
        "/inside.txt",
        "/annotations/s1.study.json",
        "/api/../annotations/s1.study.json",
        "/docs",
        "/openapi.json",
    ]:
        r = client.get(path)
        assert r.status_code == 404, path
        assert "TOP-SECRET" not in r.text and "RUN-FILE" not in r.text and "root:" not in r.text


@pytest.mark.slow
def test_a_non_loopback_page_needs_a_token(study_run):
    bad = subprocess.run(
        [sys.executable, "-m", "rlphf_cli", "annotate", f"run_dir={study_run}", "annotate.host=0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        bad.returncode == 2 and "annotate.token" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    )
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlphf_cli",
            "annotate",
            f"run_dir={study_run}",
            "annotate.completion_url=javascript:x",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "completion_url" in bad.stderr
    assert not (study_run / "annotations").exists()
    cfg = study_config(study_run, "annotate.host=0.0.0.0", "annotate.token=sesame-1234")
    client = TestClient(build_app(cfg, make_study(cfg)))
    assert client.get("/").status_code == 403
    assert client.get("/", params={"token": "wrong-token"}).status_code == 403
    assert client.get("/", params={"token": "sesame-1234"}).status_code == 200
    state = client.get("/api/state", params={"rater": "r1"}, headers={"x-study-token": "sesame-1234"})
    assert state.status_code == 200
    assert client.post("/api/answer", json={}).status_code == 403


def answer_study(cfg, study, raters):
    """Each rater answers every item through the API: `raters` maps a rater to the side it prefers."""
    client = TestClient(build_app(cfg, study))
    for rater, choose in raters.items():
        for item in study["items"]:
            client.post("/api/answer", json=answer_for(item, choose(item), rater)).raise_for_status()


@pytest.mark.slow
def test_eval_human_win_rates_intervals_and_agreement(study_run, capsys):
    cfg = study_config(study_run)
    study = make_study(cfg)
    regular = [i["id"] for i in study["items"] if i["kind"] == "regular"]

    def pattern(item):  # varied answers (alpha needs them): gold items the method, the rest in turn
        if item["kind"] == "gold":
            return "method"
        return ["method", "baseline", "tie"][regular.index(item.get("repeat_of") or item["id"]) % 3]

    flip = {"method": "baseline", "baseline": "method", "tie": "method"}
    answer_study(
        cfg,
        study,
        {
            "ann": pattern,
            "bob": lambda i: pattern(i) if i["id"] != regular[0] else "tie",  # one item differs
            "cat": lambda i: flip[pattern(i)],  # the opposite: fails the gold items
        },
    )
    (out,) = evaluate(
        compose([f"run_dir={study_run}", *STUDY, "eval.judge.kind=human", "eval.bootstrap_samples=300"])
    )
    assert out.name == "pcm_vs_soups.human-s1"
    results = json.loads((out / "results.json").read_text())
    judgments = results["judgments"]
    assert len(judgments) == 3 * 7 * 3  # raters x regular items x poles; gold and repeats are not judgments
    wins = sum(j["winner"] == "pcm" for j in judgments) + sum(j["winner"] == "tie" for j in judgments) / 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["win_rate"] == pytest.approx(wins / len(judgments))
    low, high = manifest["ci"]
    assert low < manifest["win_rate"] < high
    table = (out / "table.md").read_text()
    assert "over prompts and raters" in table and "Krippendorff" in table and "Cohen" in table
    raters = results["raters"]
    assert raters["ann"]["gold_passed"] == 2 and raters["cat"]["gold_passed"] == 0
    assert raters["ann"]["repeat_consistency"] == 1.0 and raters["ann"]["median_seconds"] == 3.5
    assert raters["bob"]["repeat_consistency"] == 0.0  # its repeated item is the one it answered apart
    between = results["agreement"]["between_raters"]
    assert between["units"] == 21 and between["raters"] == 3 and between["alpha"] < 0.3
    with_judge = results["agreement"]["with_judge"]
    assert with_judge["n"] == 63 and "synthetic" in with_judge["judge"]
    assert "Krippendorff" in capsys.readouterr().out
    # raters below the gold bar are left out; agreement between the two left is high
    (out,) = evaluate(
        compose([f"run_dir={study_run}", *STUDY, "eval.judge.kind=human", "eval.judge.min_gold_pass=0.5"])
    )
    results = json.loads((out / "results.json").read_text())
    assert results["excluded_raters"] == ["cat"] and len(results["judgments"]) == 2 * 7 * 3
    assert results["agreement"]["between_raters"]["alpha"] > 0.7


@pytest.mark.slow
def test_eval_human_refusals(study_run):
    base = [f"run_dir={study_run}", *STUDY, "eval.judge.kind=human"]
    with pytest.raises(UserError, match="no study 's1'"):
        evaluate(compose(base))
    make_study(study_config(study_run))
    with pytest.raises(UserError, match="no answers yet"):
        evaluate(compose(base))
    assert study_path(study_run, "s1").is_file()
    with pytest.raises(UserError, match="no pcm vs prompted items"):
        evaluate(compose([*base, "eval.baseline=prompted"]))


def test_krippendorff_alpha_and_cohen_kappa_on_textbook_data():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", nominal example: alpha = 0.743
    coders = [
        "1 2 3 3 2 1 4 1 2 . . .",
        "1 2 3 3 2 2 4 1 2 5 . 3",
        ". 3 3 3 2 3 4 2 2 5 1 .",
        "1 2 3 3 2 4 4 1 2 5 1 .",
    ]
    rows = [c.split() for c in coders]
    units = {u: [r[u] for r in rows if r[u] != "."] for u in range(12)}
    result = krippendorff_alpha(units)
    assert result["alpha"] == pytest.approx(0.743, abs=5e-4) and result["units"] == 11
    # Cohen's kappa: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> 0.4
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b)["kappa"] == pytest.approx(0.4)
    assert krippendorff_alpha({1: ["a"], 2: ["b"]})["alpha"] is None  # nothing pairable


@pytest.mark.slow
def test_cli_annotate_serves_and_eval_human_prints_the_table(study_run):
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [f"run_dir={study_run}", *STUDY, f"annotate.port={port}"]
    server = subprocess.Popen(
        [sys.executable, "-m", "rlphf_cli", "annotate", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, server.stderr.read().decode()
                time.sleep(0.3)
        assert "Which response is better?" in page
        study = json.loads(study_path(study_run, "s1").read_text())
        for rater in ("r1", "r2"):
            for item in study["items"]:
                body = json.dumps(answer_for(item, "method", rater)).encode()
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/answer", body, {"content-type": "application/json"}
                )
                assert json.loads(urllib.request.urlopen(request, timeout=10).read())["saved"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    out = subprocess.run(
        [sys.executable, "-m", "rlphf_cli", "eval", *args, "eval.judge.kind=human", "--baseline", "soups"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "human (study s1)" in out.stdout and "100.0" in out.stdout
    assert "Krippendorff" in out.stdout and "Cohen's kappa" in out.stdout and "42 judgments" in out.stdout
    report = subprocess.run(
        [sys.executable, "-m", "rlphf_cli", "report", f"run_dir={study_run}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0 and "Judge: human (study s1)" in report.stdout


def test_the_interval_over_raters_is_wider_when_raters_disagree():
    from rlphf_cli.evaluation.scoring import bootstrap_ci, bootstrap_ci_crossed

    prompts = [f"p{i}" for i in range(40)] * 2
    raters = ["r1"] * 40 + ["r2"] * 40
    scores = [1.0] * 40 + [0.0] * 40  # r1 always prefers the method, r2 never
    low, high = bootstrap_ci(prompts, scores, 500, 0)
    assert (low, high) == (0.5, 0.5)  # over prompts alone: every prompt scores 0.5, no doubt at all
    low, high = bootstrap_ci_crossed(prompts, raters, scores, 500, 0)
    assert low == 0.0 and high == 1.0  # two raters who disagree: the rate could be anything
    # raters who agree give the prompts' interval back
    same = [float(i % 2) for i in range(40)] * 2
    assert bootstrap_ci_crossed(prompts, raters, same, 500, 0) == pytest.approx(
        bootstrap_ci(prompts, same, 500, 0), abs=0.08
    )


@pytest.mark.slow
def test_several_pairs_share_the_items_and_eval_reads_each(study_run):
    write_generations(study_run, "prompted")
    cfg = study_config(study_run, "annotate.baseline=soups,prompted", "annotate.items=8")
    study = make_study(cfg)
    pairs = [(i["method"], i["baseline"]) for i in study["items"] if i["kind"] == "regular"]
    assert pairs.count(("pcm", "soups")) == 4 and pairs.count(("pcm", "prompted")) == 4
    answer_study(cfg, study, {"r1": lambda i: "method", "r2": lambda i: "tie"})
    outs = evaluate(
        compose(
            [
                f"run_dir={study_run}",
                *STUDY,
                "annotate.baseline=soups,prompted",
                "annotate.items=8",
                "eval.judge.kind=human",
                "eval.baseline=all",
                "eval.bootstrap_samples=100",
            ]
        )
    )
    assert sorted(p.name for p in outs) == ["pcm_vs_prompted.human-s1", "pcm_vs_soups.human-s1"]
    for out in outs:
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["judgments"] == 2 * 4 * 3 and manifest["win_rate"] == pytest.approx(0.75)
