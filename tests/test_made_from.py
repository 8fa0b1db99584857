"""Stale artifacts are never reused silently: each records what it was made from; a changed setting or
input stops the command with one line naming it, `--force` redoes the stage, an unchanged config skips."""

import json
import os
import subprocess
import sys

import pytest

from conftest import make_random_expert_run
from rlphf_cli.config import compose
from rlphf_cli.errors import UserError
from rlphf_cli.runs import RunDir, made_from, made_from_changes

TINY = [
    "model.hidden_size=16",
    "model.intermediate_size=32",
    "model.num_hidden_layers=1",
    "model.num_attention_heads=2",
    "benchmark.sft_examples=40",
    "sft.max_steps=2",
    "sft.batch_size=4",
    "sft.save_steps=100",
]


def rlphf(*args):
    return subprocess.run(
        [sys.executable, "-m", "rlphf_cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.slow
def test_changes_name_keys_and_inputs_and_ignore_what_was_not_recorded():
    cfg = compose(["seed=1"])
    old = made_from(cfg, ["seed", "rm.lora_r"], {"base": "a", "rm/P1A": None})
    new = made_from(compose(["seed=2"]), ["seed", "rm.lora_r", "rm.max_steps"], {"base": "b", "rm/P1A": "c"})
    assert made_from_changes(old, new) == ["seed (1 -> 2)", "input base changed"]
    assert made_from_changes(None, new) == [] and made_from_changes(new, new) == []


@pytest.mark.slow
def test_a_changed_key_stops_force_redoes_unchanged_skips(tmp_path):
    from rlphf_cli.training.sft import train_sft

    run = tmp_path / "run"
    train_sft(compose([f"run_dir={run}", *TINY]))
    manifest = RunDir(run).artifact("base").manifest_path
    stamp = manifest.stat().st_mtime_ns
    assert json.loads(manifest.read_text())["made_from"]["config"]["sft.max_steps"] == 2

    train_sft(compose([f"run_dir={run}", *TINY, "sft.logging_steps=1"]))  # not a dependent key
    assert manifest.stat().st_mtime_ns == stamp  # skipped

    changed = rlphf("train-sft", f"run_dir={run}", *TINY, "sft.learning_rate=0.001")
    assert changed.returncode == 2
    lines = changed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "sft.learning_rate (0.005 -> 0.001)" in lines[0] and "new run_dir" in lines[0]
    assert "--force" in lines[0] and "rlphf train-sft" in lines[0]
    assert manifest.stat().st_mtime_ns == stamp  # nothing touched

    forced = rlphf("train-sft", f"run_dir={run}", *TINY, "sft.learning_rate=0.001", "--force")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert json.loads(manifest.read_text())["made_from"]["config"]["sft.learning_rate"] == 0.001


@pytest.fixture
def random_run(tmp_path):
    make_random_expert_run(tmp_path)
    return tmp_path


def _gen_cfg(run, *more):
    return compose(
        [
            f"run_dir={run}",
            "benchmark.max_eval_prompts=2",
            "generate.max_new_tokens=4",
            "generate.preference=P1A,P2B,P3A",
            "model.hidden_size=32",
            "model.intermediate_size=64",
            "model.num_hidden_layers=2",
            *more,
        ]
    )


@pytest.mark.slow
def test_generations_record_the_experts_they_used_and_stop_when_one_changed(random_run):
    from rlphf_cli.decoding.generate import ensure_generations
    from rlphf_cli.generations import GenerationsFile

    path = ensure_generations(_gen_cfg(random_run), "uniform")
    settings = json.loads(GenerationsFile(random_run, "uniform").settings_path.read_text())
    assert set(settings["inputs"]) == {
        "base",
        *(f"experts/{p}" for p in ("P1A", "P1B", "P2A", "P2B", "P3A", "P3B")),
    }
    ensure_generations(_gen_cfg(random_run), "uniform")  # unchanged: nothing to do
    # the P2B expert is retrained (here: its weights change and it is committed again)
    art = RunDir(random_run).artifact("experts/P2B")
    work = art.start()
    for f in art.path.iterdir():
        if f.name != "manifest.json":
            (work / f.name).write_bytes(f.read_bytes() + (b" " if f.suffix == ".json" else b""))
    art.commit("expert", None, pole="P2B", algo="random")
    from rlphf_cli.evaluation import generations as for_eval

    with pytest.raises(
        UserError, match=r"uniform.jsonl was made from other settings \(input experts/P2B changed\)"
    ):
        for_eval.ensure(_gen_cfg(random_run), "uniform")  # eval does not judge them either
    with pytest.raises(UserError, match=r"other settings \(input experts/P2B changed\).*--force"):
        ensure_generations(_gen_cfg(random_run), "uniform")
    ensure_generations(_gen_cfg(random_run, "force=true"), "uniform")
    assert len(path.read_text().splitlines()) == 2
    with pytest.raises(UserError, match=r"generate.preference_in_prompt \(false -> true\)"):
        ensure_generations(_gen_cfg(random_run, "generate.preference_in_prompt=[uniform]"), "uniform")


def test_a_partial_run_made_from_other_settings_is_not_resumed(tmp_path):
    art = RunDir(tmp_path).artifact("rm/P1A")
    before = made_from(compose(["rm.lora_r=8"]), ["rm.lora_r"])
    art.start(before)
    (art.work / "checkpoint").write_text("x")
    assert art.reuse(before, "train-rm") is False and (art.work / "checkpoint").exists()  # resumed
    after = made_from(compose(["rm.lora_r=16"]), ["rm.lora_r"])
    with pytest.raises(
        UserError,
        match=r"the partial run in .*rm/P1A.partial was made from other settings \(rm.lora_r \(8 -> 16\)\)",
    ):
        art.reuse(after, "train-rm")
    assert art.reuse(after, "train-rm", force=True) is False and not art.work.exists()
    art.start(after)
    manifest = art.commit("reward_model", None, made_from=after)
    assert manifest["made_from"] == after and not (art.path / "made_from.json").exists()
    assert art.reuse(after, "train-rm") is True


def test_stale_pairs_say_delete_them_and_a_trainers_force_keeps_them(tmp_path):
    from rlphf_cli.training.pairs import PAIRS_DIR, pairs_file

    run = RunDir(tmp_path)
    art = run.artifact(PAIRS_DIR)
    cfg = compose([f"run_dir={tmp_path}", "pairs.pairs_per_prompt=4"])
    from rlphf_cli.training.pairs import pairs_keys

    art.start()
    for pole in cfg.benchmark.poles:
        (art.work / f"{pole}.json").write_text("[]")
    art.commit("pairs", None, made_from=made_from(cfg, pairs_keys(cfg), {"base": None}))
    forced = compose([f"run_dir={tmp_path}", "pairs.pairs_per_prompt=2", "force=true"])
    with pytest.raises(
        UserError, match=r"pairs_per_prompt \(4 -> 2\)\); use a new run_dir, or delete .*data/pairs"
    ):
        pairs_file(forced, "P1A")  # as train-rm --force reads them: the pairs are not remade
    assert pairs_file(cfg, "P1A") == art.path / "P1A.json"


STAGE_KEYS = {  # stage: (its keys function, the config sections it is made from)
    "base": ("rlphf_cli.training.sft:base_keys", ("sft", "model")),
    "pairs": ("rlphf_cli.training.pairs:pairs_keys", ("pairs", "model")),
    "rm": ("rlphf_cli.training.rm:rm_keys", ("rm", "model")),
    "expert": ("rlphf_cli.training.expert:expert_keys", ("expert", "model")),
    "pcm": ("rlphf_cli.training.pcm:pcm_keys", ("pcm", "model")),
    "headroom": ("rlphf_cli.evaluation.headroom:headroom_keys", ("headroom", "model")),
}


@pytest.mark.parametrize("stage", sorted(STAGE_KEYS))
def test_every_key_of_a_stages_sections_is_made_from_unless_it_changes_no_result(stage):
    import importlib

    from omegaconf import DictConfig

    from rlphf_cli.runs import NO_RESULT_KEYS

    target, sections = STAGE_KEYS[stage]
    module, name = target.split(":")
    cfg = compose([])
    keys = set(getattr(importlib.import_module(module), name)(cfg))
    assert "model.dtype" in keys and "seed" in keys
    for section in sections:
        for key, value in cfg[section].items():
            dotted = f"{section}.{key}"
            if isinstance(value, DictConfig):  # an algorithm's own settings: the current one's only
                assert any(k.startswith(dotted + ".") for k in keys) == (key == cfg.expert.algo), dotted
            elif dotted not in NO_RESULT_KEYS:
                assert dotted in keys, f"{dotted} is not among {stage}'s made_from keys"
    assert not any(k.endswith(("logging_steps", "save_steps")) for k in keys)


@pytest.mark.slow
def test_a_dtype_change_is_refused_and_a_logging_interval_is_not(tmp_path):
    from rlphf_cli.training.expert import expert_made_from

    def cfg(*more):
        return compose([f"run_dir={tmp_path}", *more])

    art = RunDir(tmp_path).artifact("experts/P1A")
    art.start()
    art.commit("expert", None, made_from=expert_made_from(cfg(), "P1A"))
    assert art.reuse(expert_made_from(cfg("expert.logging_steps=1", "expert.save_steps=7"), "P1A"), "x")
    with pytest.raises(UserError, match=r"model.dtype \(\"float32\" -> \"bfloat16\"\)"):
        art.reuse(expert_made_from(cfg("model.dtype=bfloat16"), "P1A"), "train-expert")
    with pytest.raises(UserError, match=r"expert.dpo.beta"):
        art.reuse(expert_made_from(cfg("expert.dpo.beta=0.3"), "P1A"), "train-expert")
    assert art.reuse(expert_made_from(cfg("expert.ppo.kl_coef=0.5"), "P1A"), "x")  # not the dpo expert's
