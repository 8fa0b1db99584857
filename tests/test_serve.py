"""`rlphf serve`: continuous batching gives each row the tokens it gets alone, and the HTTP server, driven by
the `openai` client on 127.0.0.1, returns `rlphf generate`'s greedy text for concurrent mixed requests."""

import json
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import torch
from helpers import NAMES, PAD, tiny_base, with_experts

from conftest import add_random_parm, make_random_expert_run
from rlphf_cli.config import compose
from rlphf_cli.decoding.engine import BASE, AdapterExperts, FixedWeights, Sampler, decode
from rlphf_cli.decoding.generate import ensure_generations
from rlphf_cli.methods import NAMES as METHOD_NAMES
from rlphf_cli.modeling import load_tokenizer
from rlphf_cli.pcm.model import build_pcm
from rlphf_cli.runs import RunDir
from rlphf_cli.serving.batching import Lane, Row
from rlphf_cli.serving.methods import Backend
from rlphf_cli.serving.server import ServerThread, build_app

pytestmark = pytest.mark.slow  # starts servers or decodes every method: over a second each on 2 cores

NAMES_SERVED = tuple(METHOD_NAMES)  # every registered method: the run holds experts, ARMs and a PCM
PROMPTS = ["what is a cloud", "explain the moon to me", "why do birds sing"]
TINY = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=2"]


def test_rows_joining_and_leaving_a_running_batch_decode_as_alone():
    model = with_experts(tiny_base())
    prompts = [[5, 9, 11, 3], [7, 8], [12, 13, 14, 15, 16, 17], [20, 21, 22], [30]]
    # rows of other preferences: their own experts (BASE at weight 0 pads a shorter list), their own weights
    a, b, c = NAMES
    experts = [(a, b, c), (a, BASE, BASE), (b, c, BASE), (c, a, b), (c, BASE, BASE)]
    weights = torch.tensor(
        [[0.2, 0.5, 0.3], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.3, 0.3, 0.4], [1.0, 0.0, 0.0]]
    )
    lengths = [12, 3, 9, 6, 10]  # rows leave at different steps
    for mixing in ("prob", "log"):
        alone = [
            decode(
                AdapterExperts(model),
                FixedWeights(weights[i : i + 1]),
                [p],
                [experts[i]],
                eos_token_id=-1,
                pad_token_id=PAD,
                max_new_tokens=lengths[i],
                mixing=mixing,
                sampler=Sampler(greedy=True),
            ).tokens[0]
            for i, p in enumerate(prompts)
        ]
        events = []
        rows = [
            Row(
                p,
                n,
                Sampler(greedy=True),
                lambda k, v, i=i, ev=events: ev.append((i, k, v)),
                experts[i],
                weights[i],
            )
            for i, (p, n) in enumerate(zip(prompts, lengths))
        ]
        lane = Lane(
            "test",
            AdapterExperts(model),
            lambda rs: FixedWeights(torch.stack([r.spec for r in rs])),
            mixing,
            max_batch=4,
            pad_token_id=PAD,
            eos_token_id=-1,  # rows end by length, at different steps
            device=torch.device("cpu"),
        )
        lane.pending += rows[:2]
        for step in range(40):
            if step == 2:
                lane.pending.append(rows[2])  # joins a running batch
            if step == 5:
                lane.pending += rows[3:]  # two at once; one waits for a free row (max_batch=4)
            lane.step()
        assert not lane.rows and not lane.pending and not lane.hooked
        assert [r.tokens for r in rows] == alone
        assert all(sum(1 for e in events if e[0] == i and e[1] == "done") == 1 for i in range(5))
        assert all(len(r.tokens) == n for r, n in zip(rows, lengths))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A random tiny run with experts and a PCM, its greedy generations, and a server on a free port."""
    run_dir = tmp_path_factory.mktemp("serve_run")
    make_random_expert_run(run_dir)
    arms = tmp_path_factory.mktemp("serve_arms")  # other random adapters stand in for GenARM's ARMs
    make_random_expert_run(arms, seed=1)
    shutil.copytree(arms / "experts", run_dir / "arms")
    add_random_parm(run_dir)
    prompts = run_dir / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"q{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS))
    )
    cfg = compose(
        [
            f"run_dir={run_dir}",
            *TINY,
            f"generate.prompts={prompts}",
            "generate.greedy=true",
            "generate.max_new_tokens=10",
            "generate.batch_size=2",
            "serve.max_batch=16",
            "serve.soups_merged=true",
            "pcm.hidden_size=32",
            "pcm.intermediate_size=64",
            "pcm.num_hidden_layers=1",
        ]
    )
    from rlphf_cli.benchmarks import get_benchmark

    poles = list(get_benchmark(cfg.benchmark).poles)
    tokenizer = load_tokenizer(str(run_dir / "base"))
    pcm = build_pcm(cfg.pcm, len(tokenizer), tokenizer.pad_token_id, poles, poles, seed=0)
    torch.nn.init.normal_(pcm.head.weight, std=2.0)  # an untrained head would be the uniform mixture
    art = RunDir(run_dir).artifact("pcm")
    pcm.save(art.start())
    art.commit("pcm", None)
    expected = {}
    for method in NAMES_SERVED:
        path = ensure_generations(cfg, method)
        for r in map(json.loads, path.read_text().splitlines()):
            expected[method, r["prompt"], r["combination"]] = r["text"]
    weighted = compose([*cfg_overrides(cfg), "generate.preference=P1A:0.7,P2B:0.3"])
    for r in map(json.loads, ensure_generations(weighted, "mod").read_text().splitlines()):
        if r["weights"] == [0.7, 0.3]:
            expected["mod-weighted", r["prompt"], r["combination"]] = r["text"]

    backend = Backend(cfg)
    backend.scheduler.start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with ServerThread(build_app(backend), port=port):
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        yield client, expected
    backend.scheduler.stop()


def cfg_overrides(cfg):
    g = cfg.generate
    return [
        f"run_dir={cfg.run_dir}",
        *TINY,
        f"generate.prompts={g.prompts}",
        "generate.greedy=true",
        f"generate.max_new_tokens={g.max_new_tokens}",
        "generate.batch_size=2",
    ]


def complete(client, method, prompt, preference, **kw):
    extra = {"preference": preference} if preference else {}
    out = client.completions.create(
        model=method, prompt=prompt, max_tokens=10, temperature=0, extra_body=extra, **kw
    )
    return out.choices[0].text


def test_models_lists_what_the_run_can_serve(served):
    client, _ = served
    ids = [m.id for m in client.models.list().data]
    assert ids == ["sft", "prompted", "soups", "soups-merged", "mod", "uniform", "genarm", "parm", "pcm"]


def test_concurrent_requests_with_different_preferences_equal_generate(served):
    client, expected = served
    from rlphf_cli.preferences import all_combinations, combination_name

    combos = [combination_name(c) for c in all_combinations(["P1A", "P1B", "P2A", "P2B", "P3A", "P3B"])]
    jobs = [
        (m, p, c) for m in NAMES_SERVED if m != "sft" for c in combos for p in PROMPTS
    ]  # every method but sft (which reads no preference), genarm included
    jobs += [("sft", p, None) for p in PROMPTS]
    jobs += [("soups-merged", p, c) for c in combos[:2] for p in PROMPTS]
    jobs += [("mod", p, "P1A:0.7,P2B:0.3") for p in PROMPTS]
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda j: complete(client, *j), jobs))
    for (method, prompt, combo), text in zip(jobs, got):
        if method == "sft":
            key = ("sft", prompt, combos[0])
        elif combo == "P1A:0.7,P2B:0.3":
            key = ("mod-weighted", prompt, "P1A=0.7,P2B=0.3")  # a weighted preference is named by its weights
        else:
            key = ("soups" if method == "soups-merged" else method, prompt, combo)
        assert text == expected[key], (method, prompt, combo)
    assert len({t for (m, _, _), t in zip(jobs, got) if m == "pcm"}) > 1


@pytest.mark.parametrize(
    "body,message",
    [
        (dict(model="pcm", preference="P9Z"), "unknown pole 'P9Z'"),
        (dict(model="nope", preference="P1A"), "unknown model 'nope'"),
        (dict(model="mod", preference="P1A,P1B"), "two poles of dimension P1"),
        (dict(model="mod", preference="P1A", prompt="why is the sky blue " * 60), "prompt too long"),
        (dict(model="mod"), "needs a `preference`"),
        (dict(model="mod", preference="@users/ann.json"), "user file not found"),
        (dict(model="mod", preference="@../secret.json"), "a user preference is @users/NAME.json"),
    ],
)
def test_bad_requests_are_400_and_the_server_keeps_serving(served, body, message):
    client, expected = served
    body = {"prompt": PROMPTS[0], "max_tokens": 10, **body}
    model, extra = body.pop("model"), {k: body.pop(k) for k in ("preference",) if k in body}
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=model, extra_body=extra, **body)
    assert message in info.value.message and "\n" not in info.value.body["message"]
    assert (
        complete(client, "uniform", PROMPTS[1], "P1B,P2A,P3B")
        == expected["uniform", PROMPTS[1], "P1B,P2A,P3B"]
    )


def test_streaming_returns_the_same_text(served):
    client, expected = served
    stream = client.completions.create(
        model="pcm",
        prompt=PROMPTS[2],
        max_tokens=10,
        temperature=0,
        stream=True,
        extra_body={"preference": "P1A,P2A,P3A"},
    )
    chunks = [c.choices[0].text for c in stream]
    assert len(chunks) > 2 and "".join(chunks) == expected["pcm", PROMPTS[2], "P1A,P2A,P3A"]

    chat = client.chat.completions.create(
        model="soups",
        messages=[{"role": "user", "content": PROMPTS[0]}],
        max_tokens=10,
        temperature=0,
        stream=True,
        extra_body={"preference": "P1B,P2B,P3B"},
    )
    text = "".join(c.choices[0].delta.content or "" for c in chat if c.choices)
    assert text == expected["soups", PROMPTS[0], "P1B,P2B,P3B"]
    whole = client.chat.completions.create(
        model="soups",
        messages=[{"role": "user", "content": PROMPTS[0]}],
        max_tokens=10,
        temperature=0,
        extra_body={"preference": "P1B,P2B,P3B"},
    )
    assert whole.choices[0].message.content == text and whole.usage.completion_tokens >= 1


def test_soups_of_other_weights_are_other_adapters():
    """A server keeps its soups: `P1A:0.8,P2B:0.2` must not reuse the equal-weight soup of the same poles."""
    from rlphf_cli.decoding.soups import add_soup

    model = with_experts(tiny_base())
    even = add_soup(model, ["P1A", "P2B"], [0.5, 0.5])
    tilted = add_soup(model, ["P1A", "P2B"], [0.8, 0.2])
    assert even != tilted and add_soup(model, ["P1A", "P2B"], [0.5, 0.5]) == even
    layer = model.base_model.model.model.layers[0].self_attn.v_proj
    assert not torch.equal(layer.lora_A[even].weight, layer.lora_A[tilted].weight)
