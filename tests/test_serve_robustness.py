"""`rlphf serve` under bad input, load and long uptime: a bad request is a 400 (or fails alone) and never
touches its neighbours; `stop` and `max_completion_tokens` are honoured; an abandoned request stops
decoding; `/health` and `/metrics` answer; soups are bounded, so memory stays flat over many weightings."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from helpers import NAMES, PAD, tiny_base, with_experts

from conftest import make_random_expert_run
from rlphf_cli.config import compose
from rlphf_cli.decoding.engine import BASE, AdapterExperts, FixedWeights, Sampler, decode
from rlphf_cli.serving.batching import Lane, Row
from rlphf_cli.serving.methods import Backend
from rlphf_cli.serving.server import ServerThread, build_app, held_back, serve_threads, stop_index

pytestmark = pytest.mark.slow  # starts servers or decodes every method: over a second each on 2 cores

TINY = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=2"]
PROMPTS = ["what is a cloud", "explain the moon to me", "why do birds sing"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A random tiny run with experts (no PCM), served on a free port; yields (httpx client, run_dir)."""
    run_dir = tmp_path_factory.mktemp("serve_robust")
    make_random_expert_run(run_dir)
    cfg = compose(
        [
            f"run_dir={run_dir}",
            *TINY,
            "generate.max_new_tokens=10",
            "serve.max_batch=16",
            "serve.max_soups=4",
            "serve.soups_merged=true",
            "serve.max_merged_soups=2",
        ]
    )
    backend = Backend(cfg)
    backend.scheduler.start()
    port = free_port()
    with ServerThread(build_app(backend), port=port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client, run_dir, backend
    backend.scheduler.stop()


def post(client, body, chat=False, raw: str | None = None):
    path = "/v1/chat/completions" if chat else "/v1/completions"
    if raw is not None:
        return client.post(path, content=raw, headers={"content-type": "application/json"})
    return client.post(path, json=body)


def greedy(method="uniform", prompt=PROMPTS[0], preference="P1A,P2B,P3A", **kw):
    return {
        "model": method,
        "prompt": prompt,
        "preference": preference,
        "max_tokens": 10,
        "temperature": 0,
        **kw,
    }


BAD = [
    (greedy(preference="   "), "needs a `preference`"),
    (greedy(max_tokens="abc"), "max_tokens must be a whole number"),
    (greedy(max_tokens=[16]), "max_tokens must be a whole number"),
    (greedy(max_tokens={}), "max_tokens must be a whole number"),
    (greedy(max_tokens=16.5), "max_tokens must be a whole number"),
    (greedy(max_tokens="16"), "max_tokens must be a whole number"),
    (greedy(max_tokens=True), "max_tokens must be a whole number"),
    (greedy(max_tokens=0), "max_tokens must be 1 to"),
    (greedy(max_completion_tokens=2.5), "max_completion_tokens must be a whole number"),
    (greedy(max_completion_tokens=5), "max_tokens and max_completion_tokens differ"),
    (greedy(stream="false"), "`stream` must be true or false"),
    (greedy(prompt=""), "the prompt is empty"),
    (greedy(prompt="  \n "), "the prompt is empty"),
    (greedy(temperature=-1), "temperature must be a number from 0 to 2"),
    (greedy(temperature=3), "temperature must be a number from 0 to 2"),
    (greedy(temperature="0.5"), "temperature must be a number"),
    (greedy(top_p=1.5), "top_p must be a number from 0 to 1"),
    (greedy(stop=["a", "b", "c", "d", "e"]), "`stop` must be"),
    (greedy(stop=""), "`stop` must be"),
    (greedy(stop=3), "`stop` must be"),
    (greedy(n=2), "`n` is not supported"),
    (greedy(n=True), "`n` is not supported"),
    (greedy(logprobs=3), "`logprobs` is not supported"),
    (greedy(echo=True), "`echo` is not supported"),
    (greedy(preference="P1A:1e308,P2B:1e308"), "sum overflows"),
    (greedy(method="soups", preference="P1A:1e308,P2B:1e308"), "sum overflows"),
    (greedy(preference="@users/nonexistent.json"), "user file not found: users/nonexistent.json"),
]
RAW = [  # what JSON parsing accepts but no number of tokens or temperature is
    ('{"model": "uniform", "prompt": "hi", "preference": "P1A", "max_tokens": 1e400}', "max_tokens"),
    ('{"model": "uniform", "prompt": "hi", "preference": "P1A", "max_tokens": NaN}', "max_tokens"),
    ('{"model": "uniform", "prompt": "hi", "preference": "P1A", "max_tokens": Infinity}', "max_tokens"),
    ('{"model": "uniform", "prompt": "hi", "preference": "P1A", "temperature": NaN}', "temperature"),
    ('{"model": "uniform", "prompt": "hi", "preference": "P1A", "top_p": -Infinity}', "top_p"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("{not json", "not JSON"),
]


@pytest.mark.parametrize("body,message", BAD + [(None, m) for _, m in RAW], ids=range(len(BAD) + len(RAW)))
def test_bad_requests_are_400_with_one_line(server, body, message):
    client, run_dir, _ = server
    raw = None if body is not None else next(r for r, m in RAW if m == message)
    out = post(client, body, raw=raw)
    assert out.status_code == 400, out.text
    error = out.json()["error"]
    assert message in error["message"] and "\n" not in error["message"], error
    assert str(run_dir) not in error["message"] and "current folder" not in error["message"]


def test_bad_chat_requests_are_400(server):
    client, _, _ = server
    body = {"model": "mod", "preference": "P1A", "messages": [{"role": "user", "content": ""}]}
    assert post(client, body, chat=True).status_code == 400
    body["messages"][0]["content"] = "hello"
    assert post(client, {**body, "max_completion_tokens": "5"}, chat=True).status_code == 400
    assert post(client, {**body, "stream": "true"}, chat=True).status_code == 400


def test_a_user_file_message_shows_no_server_path(server):
    client, run_dir, _ = server
    (run_dir / "users").mkdir(exist_ok=True)
    (run_dir / "users" / "broken.json").write_text("{")
    for name in ("nonexistent", "broken"):
        error = post(client, greedy(preference=f"@users/{name}.json")).json()["error"]["message"]
        assert f"users/{name}.json" in error and str(run_dir) not in error and "current folder" not in error


def test_good_requests_beside_bad_ones_are_unaffected(server):
    """The issue's case: temperature 1e-300 (or 1e-45, or NaN) among ordinary requests of one method made
    all of them fail with HTTP 500."""
    client, _, _ = server
    good = [
        greedy(m, p, c) for m in ("uniform", "soups") for p in PROMPTS for c in ("P1A,P2B,P3A", "P1B,P2A")
    ]
    alone = [post(client, b).json()["choices"][0]["text"] for b in good]
    tiny = [greedy("uniform", PROMPTS[0], "P1A,P2B,P3A", temperature=t) for t in (1e-300, 1e-45)]
    tiny += [greedy("soups", PROMPTS[0], "P1A,P2B,P3A", temperature=1e-300)]
    nan = '{"model": "uniform", "prompt": "hi", "preference": "P1A", "temperature": NaN}'
    jobs = [(b, None) for b in good] + [(b, None) for b in tiny] + [(None, nan)] * 3
    jobs = jobs[::2] + jobs[1::2]  # bad ones in the middle
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda j: post(client, j[0], raw=j[1]), jobs))
    for (body, raw), out in zip(jobs, answers, strict=True):
        if raw is not None:
            assert out.status_code == 400, out.text
            continue
        assert out.status_code == 200, out.text
        text = out.json()["choices"][0]["text"]
        # a temperature of 1e-300 is greedy decoding (sampling from NaN before)
        expected = alone[good.index(body)] if body in good else alone[good.index({**body, "temperature": 0})]
        assert text == expected, body


def test_soups_are_bounded_and_rebuilt_when_needed_again(server):
    """serve.max_soups=4: the least recently used soup no row needs is freed; one asked for again is merged
    again, to the same text; rows in flight keep theirs (8 weightings at once, 4 kept)."""
    client, _, backend = server
    weightings = [f"P1A:{w:.2f},P2B:{1 - w:.2f}" for w in (0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9)]
    bodies = [greedy("soups", PROMPTS[1], w) for w in weightings]
    alone = [post(client, b).json()["choices"][0]["text"] for b in bodies]
    experts = 6
    assert metric(client, "adapters_loaded") == experts + 4 and metric(client, "soups_loaded") == 4
    assert metric(client, "soups_evicted_total") >= 4
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda b: post(client, b).json()["choices"][0]["text"], bodies))
    assert together == alone
    assert post(client, bodies[0]).json()["choices"][0]["text"] == alone[0]
    assert metric(client, "adapters_loaded") == experts + 4 == len(backend.runtime.model.peft_config)

    merged = [{**b, "model": "soups-merged"} for b in bodies[:3]]
    texts = [post(client, b).json()["choices"][0]["text"] for b in merged]
    assert texts == alone[:3]  # a merged soup decodes as the batched one
    assert metric(client, "merged_soups_loaded") == 2 == len(backend.merged)
    assert post(client, merged[0]).json()["choices"][0]["text"] == alone[0]
    assert metric(client, "merged_soups_loaded") == 2
    assert not any(
        name.startswith("soups-merged") and name not in backend.merged for name in backend.scheduler.lanes
    )


def lane_rows(prompts, experts, weights, samplers, lengths, events):
    return [
        Row(p, n, s, lambda k, v, i=i: events.append((i, k, v)), e, w)
        for i, (p, e, w, s, n) in enumerate(zip(prompts, experts, weights, samplers, lengths, strict=True))
    ]


def test_a_row_that_fails_fails_alone():
    """A row whose sampling fails (a NaN temperature, past any check), or whose setup fails when it joins,
    gets the error; the rows beside it decode as they would alone."""
    model = with_experts(tiny_base())
    a, b, c = NAMES
    prompts = [[5, 9, 11, 3], [7, 8], [12, 13, 14], [20, 21], [30, 31, 32]]
    experts = [(a, b), (b, c), (a, BASE), (c, a), (b, a)]
    weights = torch.tensor([[0.3, 0.7], [0.5, 0.5], [1.0, 0.0], [0.6, 0.4], [0.5, 0.5]])
    lengths = [8, 6, 7, 9, 5]
    ok = Sampler(greedy=True)
    samplers = [ok, Sampler(temperature=float("nan")), ok, ok, ok]
    alone = [
        decode(
            AdapterExperts(model),
            FixedWeights(weights[i : i + 1]),
            [prompts[i]],
            [experts[i]],
            eos_token_id=-1,
            pad_token_id=PAD,
            max_new_tokens=lengths[i],
            sampler=ok,
        ).tokens[0]
        for i in range(5)
    ]
    events = []
    rows = lane_rows(prompts, experts, list(weights), samplers, lengths, events)
    rows[4].spec = None  # its provider cannot be made: it fails when it joins

    def provider(rs):
        if any(r.spec is None for r in rs):
            raise ValueError("no weights for this row")
        return FixedWeights(torch.stack([r.spec for r in rs]))

    lane = Lane("t", AdapterExperts(model), provider, "prob", 8, PAD, -1, torch.device("cpu"))
    lane.pending += rows[:3]
    for step in range(20):
        if step == 2:
            lane.pending.append(rows[3])
        if step == 3:
            lane.pending.append(rows[4])  # joins the running batch and fails; the others go on
        lane.step()
    assert not lane.rows and not lane.pending
    for i in (0, 2, 3):
        assert rows[i].tokens == alone[i], i
        assert [k for j, k, _ in events if j == i and k != "token"] == ["done"]
    for i in (1, 4):
        assert [k for j, k, _ in events if j == i and k != "token"] == ["error"], i
    assert any("no weights" in str(v) for j, k, v in events if j == 4 and k == "error")


def test_stop_and_max_completion_tokens(server):
    client, _, _ = server
    full = post(client, greedy(max_tokens=12)).json()["choices"][0]["text"]
    words = full.split()
    assert len(words) >= 4, full
    stop = " " + words[2]
    expected = full[: full.index(stop)]
    out = post(client, greedy(max_tokens=12, stop=[stop, "\u2603never"])).json()
    assert out["choices"][0]["text"] == expected and out["choices"][0]["finish_reason"] == "stop"
    with client.stream("POST", "/v1/completions", json=greedy(max_tokens=12, stop=stop, stream=True)) as r:
        chunks = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: {")]
    assert "".join(c["choices"][0]["text"] for c in chunks) == expected
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"

    five = post(client, greedy(max_tokens=None, max_completion_tokens=5)).json()
    assert five["usage"]["completion_tokens"] == 5
    assert five["choices"][0]["text"] == post(client, greedy(max_tokens=5)).json()["choices"][0]["text"]
    chat = {"model": "mod", "preference": "P1A", "temperature": 0, "max_completion_tokens": 3}
    chat["messages"] = [{"role": "user", "content": PROMPTS[1]}]
    assert post(client, chat, chat=True).json()["usage"]["completion_tokens"] == 3


def test_stop_helpers():
    assert stop_index("a cloud is white", [" is", "oud"]) == 4
    assert stop_index("a cloud", ["xyz"]) is None
    assert held_back("the cl", ["cloud"]) == 2 and held_back("the cloud", ["cloud"]) == 0
    assert held_back("ab", ["bc", "abc"]) == 2


def metric(client, name: str, **labels) -> float:
    """A sample of /metrics; with no labels given, the sum over every label (e.g. every lane)."""
    text = client.get("/metrics").text
    tag = ",".join(f'{k}="{v}"' for k, v in labels.items())
    heads = (f"rlphf_{name}{{{tag}}} ",) if tag else (f"rlphf_{name} ", f"rlphf_{name}{{")
    return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(heads))


def test_an_abandoned_request_stops_decoding(server):
    """A non-streaming request whose client goes away is cancelled: its row leaves the batch, long before
    its 240 tokens (which the same request, waited for, decodes: no end token cuts it short)."""
    client, _, _ = server
    body = greedy("uniform", PROMPTS[2], "P1B,P2B,P3B", max_tokens=240)
    steps = metric(client, "decode_steps_total")
    cancelled = metric(client, "requests_total", method="uniform", outcome="cancelled")
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{client.base_url}/v1/completions", json=body, timeout=0.1)
    deadline = time.time() + 30
    while (
        metric(client, "batch_rows") > 0
        or metric(client, "requests_total", method="uniform", outcome="cancelled") == cancelled
    ):
        assert time.time() < deadline, "the abandoned row kept decoding"
        time.sleep(0.05)
    used = metric(client, "decode_steps_total") - steps
    assert used < 200, used  # all 240 before
    assert post(client, body).json()["usage"]["completion_tokens"] == 240


def test_health_and_metrics(server):
    client, _, backend = server
    health = client.get("/health").json()
    assert health["status"] == "ok" and "uniform" in health["methods"] and health["threads"] >= 1
    before = metric(client, "requests_total", method="mod", outcome="ok")
    tokens = metric(client, "completion_tokens_total", method="mod")
    out = post(client, greedy("mod", max_tokens=4)).json()
    assert post(client, greedy("mod", max_tokens="x")).status_code == 400
    assert metric(client, "requests_total", method="mod", outcome="ok") == before + 1
    assert metric(client, "requests_total", method="mod", outcome="bad_request") >= 1
    assert (
        metric(client, "completion_tokens_total", method="mod") == tokens + out["usage"]["completion_tokens"]
    )
    assert metric(client, "adapters_loaded") == len(backend.runtime.model.peft_config) >= 6
    assert metric(client, "queue_rows") == 0 and metric(client, "batch_size_mean") >= 1
    assert metric(client, "resident_memory_bytes") > 1e6 and metric(client, "torch_threads") >= 1
    assert "rlphf_batch_rows{" in client.get("/metrics").text


def test_serve_threads():
    s = compose(["serve.threads=3"]).serve
    assert serve_threads(s) == 3
    assert serve_threads(compose([]).serve) == max(1, len(os.sched_getaffinity(0)) // 2)


# --- memory over many soup weightings, in a server process of its own


def rss_kb(pid: int) -> int:
    status = open(f"/proc/{pid}/status").read()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))


def weightings_rss(run_dir, n: int, max_soups: int, checkpoints) -> dict:
    """Start `rlphf serve`, send `n` soups requests of distinct weightings; the server's RSS (kB) at each
    checkpoint, and what /metrics and /health say at the end."""
    port = free_port()
    cmd = [sys.executable, "-m", "rlphf_cli", "serve", f"run_dir={run_dir}", f"serve.port={port}", *TINY]
    cmd += [f"serve.max_soups={max_soups}", "serve.threads=1", "generate.max_new_tokens=2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            deadline = time.time() + 120
            while True:
                assert proc.poll() is None, proc.stderr.read()
                try:
                    client.get("/health")
                    break
                except httpx.TransportError:
                    assert time.time() < deadline
                    time.sleep(0.2)
            rss = {}
            for i in range(n):
                w = (i + 1) / (n + 2)  # distinct to 4 significant digits: another soup each
                body = greedy("soups", "hi", f"P1A:{w:.4f},P2B:{1 - w:.4f}", max_tokens=1)
                assert post(client, body).status_code == 200
                if i + 1 in checkpoints:
                    rss[i + 1] = rss_kb(proc.pid)
            return {
                "rss": rss,
                "adapters": metric(client, "adapters_loaded"),
                "threads": client.get("/health").json()["threads"],
            }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def memory_run(tmp_path, n) -> float:
    """kB of resident memory each weighting added between the first quarter of `n` and the end."""
    run_dir = tmp_path / "run"
    make_random_expert_run(run_dir)
    warm = n // 4
    out = weightings_rss(run_dir, n, max_soups=8, checkpoints={warm, n})
    print(f"RSS after {warm} weightings {out['rss'][warm]} kB, after {n}: {out['rss'][n]} kB")
    assert out["adapters"] == 6 + 8  # the experts and the 8 most recent soups
    assert out["threads"] == 1  # serve.threads reached torch
    return (out["rss"][n] - out["rss"][warm]) / (n - warm)


# Measured on this model (400 weightings, RSS from the 100th to the 400th): 2.2 kB per weighting with
# serve.max_soups=8, 49 kB with the soups unbounded (and 5.5 times slower by the end).
PER_WEIGHTING_KB = 16


def test_memory_stays_flat_over_soup_weightings(tmp_path):
    growth = memory_run(tmp_path, 80)
    assert growth < PER_WEIGHTING_KB, f"resident memory grew {growth:.1f} kB per weighting"


@pytest.mark.slow
def test_memory_stays_flat_over_400_soup_weightings(tmp_path):
    growth = memory_run(tmp_path, 400)
    assert growth < PER_WEIGHTING_KB, f"resident memory grew {growth:.1f} kB per weighting"
