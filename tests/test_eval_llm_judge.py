"""The LLM judge against a small OpenAI-compatible server started on 127.0.0.1 by the test."""

import json
import re
import socket
import subprocess
import sys

import pytest
from helpers import config, generation_rows, write_generations

from rlphf_cli.errors import UserError
from rlphf_cli.evaluation.evaluate import evaluate
from rlphf_cli.evaluation.scoring import ALL, rescore
from rlphf_cli.judges import Comparison
from rlphf_cli.judges.llm import JudgeCache, LLMJudge, parse_verdict

SECRET = "sk-test-not-a-real-key-7f3a"
COMBOS = [("P1A", "P2A", "P3A"), ("P1B", "P2B", "P3B")]


@pytest.fixture
def run_dir(tmp_path):
    write_generations(tmp_path, "pcm", generation_rows("pcm", True, n_prompts=3, combos=COMBOS))
    write_generations(tmp_path, "soups", generation_rows("soups", False, n_prompts=3, combos=COMBOS))
    return tmp_path


def llm_config(run_dir, base_url, *overrides):
    return config(
        run_dir,
        "eval.judge.kind=llm",
        f"eval.judge.base_url={base_url}",
        "eval.judge.model=judge-1",
        "eval.judge.backoff=0.01",
        "eval.judge.retries=2",
        "eval.judge.concurrency=4",
        *overrides,
    )


@pytest.mark.slow
def test_llm_judge_agrees_with_the_judge_it_asks_and_caches_every_answer(run_dir, api):
    (out,) = evaluate(llm_config(run_dir, api.base_url, f"eval.judge.api_key={SECRET}"))
    llm = json.loads((out / "results.json").read_text())
    assert len(api.requests) == len(llm["judgments"]) == 3 * 2 * 3
    assert {r["auth"] for r in api.requests} == {f"Bearer {SECRET}"}
    assert all(r["body"]["model"] == "judge-1" for r in api.requests)
    assert all(j["rationale"] and j["verdict"] in ("A", "B", "TIE") for j in llm["judgments"])

    (synthetic_out,) = evaluate(config(run_dir))  # same seed, same swaps: the same verdicts
    synthetic = json.loads((synthetic_out / "results.json").read_text())
    assert [j["winner"] for j in llm["judgments"]] == [j["winner"] for j in synthetic["judgments"]]

    # the key is never written anywhere in the run directory
    assert not [p for p in run_dir.rglob("*") if p.is_file() and SECRET in p.read_text(errors="ignore")]

    # a re-run from scratch asks nothing: every answer comes from eval/judge_cache.jsonl
    (run_dir / "eval" / "pcm_vs_soups" / "manifest.json").unlink()
    evaluate(llm_config(run_dir, api.base_url, f"eval.judge.api_key={SECRET}"))
    assert len(api.requests) == 18
    again = json.loads((out / "results.json").read_text())
    assert [j["winner"] for j in again["judgments"]] == [j["winner"] for j in llm["judgments"]]
    assert all(j["cached"] for j in again["judgments"])


def test_unparseable_answers_are_counted_not_tied(run_dir, api):
    api.unparseable_poles = {"P3B"}
    (out,) = evaluate(llm_config(run_dir, api.base_url))
    summary = rescore(out)
    assert summary.overall.unparseable == 3  # 3 prompts x the one combination with P3B
    assert summary.cells[(ALL, "P3B")].win_rate is None and summary.cells[(ALL, "P3B")].ties == 0
    assert summary.overall.judgments == 15
    bad = [j for j in json.loads((out / "results.json").read_text())["judgments"] if j["verdict"] is None]
    assert len(bad) == 3 and all(j["winner"] is None and "cannot pick" in j["rationale"] for j in bad)
    assert "Unparseable judge answers: 3" in (out / "table.md").read_text()
    assert json.loads((out / "manifest.json").read_text())["unparseable"] == 3


def test_transient_server_errors_are_retried(run_dir, api):
    api.fail_first = 2
    (out,) = evaluate(llm_config(run_dir, api.base_url))
    assert len(api.requests) == 18 + 2
    assert rescore(out).overall.unparseable == 0


def test_key_from_the_environment(run_dir, api, monkeypatch):
    monkeypatch.setenv("RLPHF_TEST_JUDGE_KEY", SECRET)
    evaluate(llm_config(run_dir, api.base_url, "eval.judge.key_env=RLPHF_TEST_JUDGE_KEY"))
    assert {r["auth"] for r in api.requests} == {f"Bearer {SECRET}"}


@pytest.mark.slow
def test_a_refused_key_fails_at_once(run_dir, api):
    api.status = 401
    with pytest.raises(UserError, match="refused the API key"):
        evaluate(llm_config(run_dir, api.base_url))
    assert len(api.requests) <= 4  # no retries; only requests already in flight were sent
    assert not (run_dir / "eval" / "pcm_vs_soups").exists()


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_an_unreachable_server_is_one_clear_error(run_dir):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    with pytest.raises(UserError, match=r"judge API at .* failed after 3 attempts: Connection error"):
        evaluate(llm_config(run_dir, url))
    assert not (run_dir / "eval" / "pcm_vs_soups").exists()
    assert not (run_dir / "eval" / "pcm_vs_soups.partial").exists()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlphf_cli",
            "eval",
            f"run_dir={run_dir}",
            "eval.judge.kind=llm",
            f"eval.judge.base_url={url}",
            "eval.judge.backoff=0.01",
            "eval.judge.retries=1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert re.fullmatch(r"error: judge API at \S+ failed after 2 attempts: .*", out.stderr.strip()), (
        out.stderr
    )


@pytest.mark.parametrize(
    "answer,verdict",
    [
        ("B is simpler.\nVerdict: B", "B"),
        ("Reasoning...\n**Verdict:** A", "A"),
        ("verdict: tie", "TIE"),
        ("Final verdict: [[B]]", "B"),
        ("Verdict: Response A", "A"),
        ("<think>maybe Verdict: B</think>A is friendlier.\nVerdict: A", "A"),
        ("I first thought Verdict: A, but on reflection\nVerdict: B", "B"),
        ("A is better. [[A]]", "A"),
        ("Response B fits best.\nB", "B"),
        ("Verdict: a tie", "TIE"),
        ("verdict: b", "B"),
        ("Both are fine, but the first is simpler.\nverdict: a", "A"),
        ("[[b]]", "B"),
        ("Both are fine.", None),
        ("Verdict: C", None),
        ("", None),
    ],
)
def test_parse_verdict(answer, verdict):
    assert parse_verdict(answer)[0] == verdict


def test_parse_verdict_keeps_the_rationale():
    assert parse_verdict("A uses plain words.\nVerdict: A") == ("A", "A uses plain words.")
    assert parse_verdict("no idea") == (None, "no idea")


def test_cache_survives_a_torn_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_text(json.dumps({"key": "k1", "answer": "Verdict: A"}) + "\n" + '{"key": "k2", "ans')
    cache = JudgeCache(path)
    assert cache.get("k1") == "Verdict: A" and cache.get("k2") is None
    cache.put("k2", "Verdict: B")
    assert JudgeCache(path).answers == {"k1": "Verdict: A", "k2": "Verdict: B"}


def test_cache_key_depends_on_order_and_model(tmp_path):
    cfg = config(tmp_path, "eval.judge.kind=llm", "eval.judge.base_url=http://127.0.0.1:9/v1")
    judge = LLMJudge(cfg)
    ab, ba = Comparison("P1A", "q", "x", "y"), Comparison("P1A", "q", "y", "x")
    assert judge.key(ab) != judge.key(ba)
    other = LLMJudge(config(tmp_path, "eval.judge.kind=llm", "eval.judge.model=other"))
    assert judge.key(ab) != other.key(ab)
    assert "api_key" not in json.dumps(judge.describe())


@pytest.mark.slow
def test_empty_answers_are_asked_again_and_never_cached(run_dir, api):
    api.empty = 3
    (out,) = evaluate(llm_config(run_dir, api.base_url))
    assert len(api.requests) == 18 + 3 and rescore(out).overall.unparseable == 0
    cache = run_dir / "eval" / "judge_cache.jsonl"
    assert all(json.loads(line)["answer"] for line in cache.read_text().split("\n") if line)

    cache.unlink()
    (run_dir / "eval" / "pcm_vs_soups" / "manifest.json").unlink()
    api.empty, api.requests = -1, []  # a judge that never answers: unparseable, and asked again next time
    (out,) = evaluate(llm_config(run_dir, api.base_url))
    assert rescore(out).overall.unparseable == 18 and len(api.requests) == 18 * 3
    assert not cache.exists() or not cache.read_text().strip()


@pytest.mark.slow
def test_cache_key_and_description_name_the_server_and_the_output_limit(tmp_path):
    base = ["eval.judge.kind=llm", "eval.judge.base_url=http://127.0.0.1:9/v1"]
    judge = LLMJudge(config(tmp_path, *base))
    c = Comparison("P1A", "q", "x", "y")
    other_server = LLMJudge(
        config(tmp_path, "eval.judge.kind=llm", "eval.judge.base_url=http://127.0.0.1:10/v1")
    )
    shorter = LLMJudge(config(tmp_path, *base, "eval.judge.max_output=50"))
    assert len({judge.key(c), other_server.key(c), shorter.key(c)}) == 3
    assert judge.describe()["base_url"] == "http://127.0.0.1:9/v1" and shorter.describe()["max_output"] == 50


def test_http_chatter_goes_to_the_log_file_not_the_terminal(run_dir, api, capsys):
    import logging

    from rlphf_cli import logs

    path = logs.log_file(run_dir, "eval")
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    try:
        logs.setup(path)
        evaluate(llm_config(run_dir, api.base_url))
    finally:
        for h in root.handlers:
            h.close()
        root.handlers[:], root.level = before
    text = path.read_text()
    assert text.count("HTTP Request: POST") == 18
    terminal = "".join(capsys.readouterr())
    assert "HTTP Request" not in terminal and "llm judge judge-1: 18 comparisons" in terminal
