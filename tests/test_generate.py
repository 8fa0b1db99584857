import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from conftest import make_random_expert_run
from rlphf_cli.benchmarks import get_benchmark
from rlphf_cli.config import compose
from rlphf_cli.decoding.generate import ensure_generations
from rlphf_cli.decoding.soups import add_soup
from rlphf_cli.generations import GenerationsFile
from rlphf_cli.preferences import all_combinations, combination_name

pytestmark = pytest.mark.slow  # starts servers or decodes every method: over a second each on 2 cores

CORE = ["P1A", "P1B", "P2A", "P2B", "P3A", "P3B"]
KOALA = Path(__file__).resolve().parents[2] / "shared" / "data" / "koala_test_set.jsonl"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen_run")
    make_random_expert_run(path)
    return path


def small(run_dir, *more):
    return compose(
        [
            f"run_dir={run_dir}",
            "benchmark.max_eval_prompts=4",
            "generate.max_new_tokens=8",
            "generate.batch_size=3",
            "model.hidden_size=32",
            "model.intermediate_size=64",
            "model.num_hidden_layers=2",
            *more,
        ]
    )


@pytest.mark.parametrize("method", ["sft", "prompted", "soups", "mod", "uniform"])
def test_every_fixed_method_writes_one_line_per_prompt_and_preference(run_dir, method):
    cfg = small(run_dir, "generate.preference=all")
    path = ensure_generations(cfg, method)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 4 * 8
    prompt_ids = [p.id for p in get_benchmark(cfg.benchmark).eval_prompts()]
    expected = {(pid, combination_name(c)) for pid in prompt_ids for c in all_combinations(CORE)}
    assert len(prompt_ids) == 4 and {(r["prompt_id"], r["combination"]) for r in records} == expected
    assert all(r["method"] == method and r["new_tokens"] <= 8 for r in records)
    if method == "soups":
        assert {r["merge"] for r in records} == {"psoups"}
    assert GenerationsFile(run_dir, method).is_complete()


def test_rerun_resumes_without_duplicates_and_drops_a_cut_line(run_dir):
    cfg = small(run_dir, "generate.preference=all")
    path = ensure_generations(cfg, "uniform")
    lines = path.read_text().splitlines()
    keep = lines[:-2]
    path.write_text("\n".join(keep) + "\n" + lines[-2][:10])  # interrupted mid-line
    ensure_generations(cfg, "uniform")
    again = path.read_text().splitlines()
    keys = [(json.loads(x)["prompt_id"], json.loads(x)["combination"]) for x in again]
    assert len(keys) == len(set(keys)) and set(keys) == {
        (json.loads(x)["prompt_id"], json.loads(x)["combination"]) for x in lines
    }
    assert again[: len(keep)] == keep  # what was written is never rewritten


def test_same_seed_same_text_and_settings_change_is_refused(run_dir, tmp_path):
    other = tmp_path / "copy"
    shutil.copytree(run_dir, other, ignore=shutil.ignore_patterns("generations"))
    a = ensure_generations(small(run_dir, "generate.preference=P1B,P2A"), "mod").read_text()
    b = ensure_generations(small(other, "generate.preference=P1B,P2A"), "mod").read_text()
    pick = lambda text: sorted(
        (r["prompt_id"], r["combination"], r["text"])
        for r in map(json.loads, text.splitlines())
        if r["combination"] == "P1B,P2A"
    )
    assert pick(a) == pick(b)
    from rlphf_cli.errors import UserError

    with pytest.raises(UserError, match="other settings .*temperature"):
        ensure_generations(small(run_dir, "generate.temperature=0.5"), "mod")


def test_psoups_and_delta_merges_match_hand_computation(run_dir):
    base = AutoModelForCausalLM.from_pretrained(run_dir / "base")
    model = PeftModel.from_pretrained(base, str(run_dir / "experts/P1A"), adapter_name="P1A")
    model.load_adapter(str(run_dir / "experts/P2B"), adapter_name="P2B")
    layer = model.base_model.model.model.layers[0].self_attn.v_proj
    A = {p: layer.lora_A[p].weight.detach() for p in ("P1A", "P2B")}
    B = {p: layer.lora_B[p].weight.detach() for p in ("P1A", "P2B")}
    s = layer.scaling["P1A"]

    one = add_soup(model, ["P1A"], [1.0], "psoups")
    torch.testing.assert_close(layer.lora_B[one].weight @ layer.lora_A[one].weight, B["P1A"] @ A["P1A"])

    soup = add_soup(model, ["P1A", "P2B"], [0.5, 0.5], "psoups")
    expected = s * ((B["P1A"] + B["P2B"]) / 2) @ ((A["P1A"] + A["P2B"]) / 2)
    torch.testing.assert_close(
        layer.scaling[soup] * layer.lora_B[soup].weight @ layer.lora_A[soup].weight, expected
    )

    delta = add_soup(model, ["P1A", "P2B"], [0.5, 0.5], "delta")
    expected = s * (B["P1A"] @ A["P1A"] + B["P2B"] @ A["P2B"]) / 2
    got = layer.scaling[delta] * layer.lora_B[delta].weight @ layer.lora_A[delta].weight
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)

    # a soup of one adapter decodes exactly like that adapter
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        a = model(input_ids=ids, adapter_names=["P1A"]).logits
        b = model(input_ids=ids, adapter_names=[one]).logits
    torch.testing.assert_close(a, b)


def rlphf(*args):
    return subprocess.run(
        [sys.executable, "-m", "rlphf_cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (["preference=P1A,P1B"], "names two poles of dimension P1"),
        (["preference=P9Z"], "unknown pole 'P9Z'"),
        (["preference=P1A:-0.5,P2B:1.5"], "must not be negative"),
        (["preference=P1A:nan,P2B:0.5"], "is not finite"),
        (["preference=P1A:1e308,P2B:1e308"], "sum overflows"),
        (["preference=P1A,P2B;"], "trailing `;`"),
        (["method=nope"], "unknown method 'nope'"),
    ],
)
def test_bad_preferences_and_methods(run_dir, args, message):
    out = rlphf("generate", f"run_dir={run_dir}", "method=mod", *args)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_missing_expert_and_bad_prompt_files(tmp_path, run_dir):
    lonely = tmp_path / "lonely"
    make_random_expert_run(lonely, poles=("P1A",))
    out = rlphf("generate", f"run_dir={lonely}", "method=uniform", "preference=P1A,P2B")
    assert out.returncode == 2 and "no expert for P2B" in out.stderr

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "prompt": "tell me about bees."}\n{"id": 2, "prompt": \n')
    out = rlphf("generate", f"run_dir={run_dir}", "method=sft", f"prompts={bad}")
    assert out.returncode == 2 and "bad.jsonl:2:" in out.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    out = rlphf("generate", f"run_dir={run_dir}", "method=sft", f"prompts={empty}")
    assert out.returncode == 2 and "empty" in out.stderr
    assert not (run_dir / "generations" / "sft.settings.json").read_text().count("bad.jsonl")


@pytest.mark.skipif(not KOALA.exists(), reason="../shared/data is not present")
def test_koala_prompts_file(run_dir, tmp_path):
    prompts = tmp_path / "koala.jsonl"
    prompts.write_text("".join(KOALA.read_text().splitlines(keepends=True)[:3]))
    cfg = small(tmp_path / "k", f"generate.prompts={prompts}", "generate.preference=P1A,P2A,P3A")
    shutil.copytree(run_dir, cfg.run_dir, ignore=shutil.ignore_patterns("generations"))
    records = [json.loads(x) for x in ensure_generations(cfg, "soups").read_text().splitlines()]
    assert len(records) == 3 and all(r["prompt_id"] for r in records)


@pytest.mark.parametrize("method", ["uniform", "mod", "pcm", "soups"])
def test_preferences_mixed_in_one_batch_decode_as_each_alone(run_dir, tmp_path, method):
    """Rows of one batch carry different preferences (other poles, other weights, another count of poles:
    padded with the base at weight 0) and still give the greedy text each preference gets alone."""
    from rlphf_cli.modeling import load_tokenizer
    from rlphf_cli.pcm.model import build_pcm
    from rlphf_cli.runs import RunDir

    prefs = ["P1A,P2A,P3A", "P1B,P2B,P3B", "P3B", "P1B,P2A"]
    if method != "uniform":  # uniform mixes equally whatever the weights
        prefs.append("P1A:0.8,P2B:0.2")
    runs = {}
    for name in ("together", "alone"):
        runs[name] = tmp_path / name
        shutil.copytree(run_dir, runs[name], ignore=shutil.ignore_patterns("generations"))
    if method == "pcm":
        cfg = small(run_dir)
        tokenizer = load_tokenizer(str(run_dir / "base"), False)
        pcm = build_pcm(cfg.pcm, len(tokenizer), tokenizer.pad_token_id, CORE, CORE, seed=3)
        torch.nn.init.normal_(pcm.head.weight, std=2.0)  # weights that change along the response
        torch.nn.init.normal_(pcm.preference.weight, std=1.0)  # and with the preference
        for path in runs.values():
            art = RunDir(path).artifact("pcm")
            pcm.save(art.start())
            art.commit("pcm", None, experts=CORE, poles=CORE)
    greedy = ["generate.greedy=true", "generate.max_new_tokens=10"]
    ensure_generations(small(runs["together"], f"generate.preference={';'.join(prefs)}", *greedy), method)
    for pref in prefs:
        ensure_generations(small(runs["alone"], f"generate.preference={pref}", *greedy), method)
    texts = {}
    for name, path in runs.items():
        records = GenerationsFile(path, method).read()
        texts[name] = {(r["prompt_id"], r["combination"], tuple(r["weights"])): r["text"] for r in records}
    assert len(texts["together"]) == 4 * len(prefs)
    assert texts["together"] == texts["alone"]
    assert len(set(texts["together"].values())) > len(prefs)  # preferences and prompts really differ
