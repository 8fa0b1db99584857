"""`rlphf train-expert`: LoRA experts per pole by DPO, PPO and GRPO; resuming; bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from helpers import TEST_OVERRIDES, new_run, shared_run

from rlphf_cli.config import compose
from rlphf_cli.errors import UserError
from rlphf_cli.runs import RunDir
from rlphf_cli.training.expert import train_expert


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.getbasetemp()


def _cfg(run, *overrides):
    return compose([f"run_dir={run}", *TEST_OVERRIDES, *overrides])


def _check(run, pole):
    return RunDir(run).artifact(f"experts/{pole}").manifest()["metrics"]


@pytest.mark.slow
def test_dpo_expert_beats_the_base_on_its_pole(base_run, root):
    run = new_run(base_run, root, "dpo_run")
    train_expert(_cfg(run, "expert.pole=P2A", "expert.algo=dpo"))
    art = RunDir(run).artifact("experts/P2A")
    assert sorted(p.name for p in art.path.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "manifest.json",
    ]
    adapter = json.loads((art.path / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and adapter["lora_alpha"] == 32 and adapter["task_type"] == "CAUSAL_LM"
    manifest = art.manifest()
    assert manifest["pole"] == "P2A" and manifest["algo"] == "dpo" and manifest["base"]["fingerprint"]
    check = manifest["metrics"]
    assert check["steps"] == 120
    assert check["decoding"] == "greedy" and check["judgments"] == 48
    assert check["sampled"]["judgments"] == 48 * 2
    # reduced budget (120 steps of 4 pairs): a lower bar than the default budget's 80%
    assert check["win_rate_vs_base"] >= 0.65, check


@pytest.mark.slow
def test_experts_load_together_under_their_pole_names(base_run, root):
    from peft import PeftModel

    from rlphf_cli.modeling import load_causal_lm

    run = root / "dpo_run"
    shutil.copytree(run / "experts" / "P2A", run / "experts" / "P2B")  # a second adapter, same base
    model = load_causal_lm(str(run / "base"), _cfg(run).model)
    model = PeftModel.from_pretrained(model, str(run / "experts" / "P2A"), adapter_name="P2A")
    model.load_adapter(str(run / "experts" / "P2B"), adapter_name="P2B")
    assert set(model.peft_config) == {"P2A", "P2B"}


@pytest.mark.slow
def test_grpo_raises_the_poles_judge_score(base_run, root):
    run = new_run(base_run, root, "grpo_run", with_pairs=False)
    train_expert(_cfg(run, "expert.pole=P3A", "expert.algo=grpo", "expert.grpo.max_steps=30"))
    check = _check(run, "P3A")["sampled"]
    # the mean P3A judge score (in [0, 1], -1 for invalid text) of held-out samples rises by at least 0.25
    assert check["judge_score_expert"] >= check["judge_score_base"] + 0.25, check


@pytest.mark.slow
def test_ppo_against_the_poles_reward_model_raises_its_judge_score(base_run, root, caplog):
    run = shared_run(base_run, root)  # its P2A reward model is trained here if test_rm has not made it
    with caplog.at_level("INFO"):
        train_expert(_cfg(run, "expert.pole=P2A", "expert.algo=ppo", "expert.ppo.max_steps=15"))
    assert "reward_model reward" in caplog.text
    manifest = RunDir(run).artifact("experts/P2A").manifest()
    check = manifest["metrics"]["sampled"]
    # the mean P2A judge score of held-out samples (in [0, 1], -1 for invalid text) rises by at least 0.2
    assert check["judge_score_expert"] >= check["judge_score_base"] + 0.2, manifest["metrics"]
    shutil.rmtree(run / "experts")


@pytest.mark.slow
def test_ppo_resumes_from_its_checkpoint(base_run, root, caplog):
    from rlphf_cli.training.ppo import last_ppo_checkpoint, train_ppo

    run = new_run(base_run, root, "ppo_resume", with_pairs=False)
    work = run / "experts" / "P3A.partial"
    cfg = _cfg(
        run, "expert.algo=ppo", "expert.ppo.batch_size=4", "expert.save_steps=1", "expert.max_new_tokens=32"
    )
    first = train_ppo(_with(cfg, 2), "P3A", work, work / "checkpoints", "judge")
    assert first["steps"] == 2 and last_ppo_checkpoint(work / "checkpoints").name == "checkpoint-1"
    with caplog.at_level("INFO"):
        second = train_ppo(_with(cfg, 3), "P3A", work, work / "checkpoints", "judge")
    assert "resuming PPO from" in caplog.text and "checkpoint-1" in caplog.text
    assert second["steps"] == 3 and last_ppo_checkpoint(work / "checkpoints").name == "checkpoint-2"
    assert (work / "adapter_model.safetensors").is_file()


def _with(cfg, max_steps):
    from omegaconf import OmegaConf

    return OmegaConf.merge(cfg, {"expert": {"ppo": {"max_steps": max_steps}}})


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_checkpoint(base_run, root):
    run = new_run(base_run, root, "resume_run")
    args = [
        sys.executable, "-m", "rlphf_cli", "train-expert", f"run_dir={run}", "pole=P3A", "algo=dpo",
        "pairs.pairs_per_prompt=4",  # the pairs' own setting: other settings would be refused as stale
        "expert.dpo.max_steps=40", "expert.save_steps=10", "expert.eval_samples=1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    checkpoints = run / "experts" / "P3A.partial" / "checkpoints"
    deadline = time.time() + 120
    while not list(checkpoints.glob("checkpoint-*/trainer_state.json")) and time.time() < deadline:
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not RunDir(run).artifact("experts/P3A").is_complete()
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "resuming from" in out.stdout + out.stderr
    art = RunDir(run).artifact("experts/P3A")
    assert art.is_complete() and not art.work.exists() and art.manifest()["metrics"]["steps"] == 40


@pytest.mark.slow
def test_unknown_pole_or_algorithm_is_one_line_and_exit_2(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "rlphf_cli", "train-expert", f"run_dir={tmp_path}", "pole=P9Z"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: unknown pole 'P9Z'; valid poles: P1A, P1B, P2A, P2B, P3A, P3B"
    ]
    with pytest.raises(UserError, match="unknown expert.algo 'sac'"):
        train_expert(_cfg(tmp_path, "expert.algo=sac"))
    assert not (tmp_path / "experts").exists()


@pytest.mark.slow
def test_missing_base_and_bad_pairs_leave_nothing_behind(base_run, tmp_path):
    with pytest.raises(UserError, match="no base model"):
        train_expert(_cfg(tmp_path, "expert.pole=P1A"))
    run = new_run(base_run, tmp_path, "run", with_pairs=False)
    release = tmp_path / "release"
    release.mkdir()
    (release / "P1A.json").write_text(json.dumps([{"user_input": "q", "completion_a": "a"}]))
    with pytest.raises(UserError, match="lacks field 'completion_b'"):
        train_expert(_cfg(run, "expert.pole=P1A", f"pairs.data_dir={release}"))
    assert not (run / "experts").exists()


@pytest.mark.slow
def test_tokenizer_without_pad_token_is_given_one_with_one_warning(base_run, tmp_path, caplog):
    from transformers import AutoTokenizer

    run = new_run(base_run, tmp_path, "run")
    tok = AutoTokenizer.from_pretrained(run / "base")
    tok.pad_token = None
    tok.save_pretrained(run / "base")
    assert AutoTokenizer.from_pretrained(run / "base").pad_token is None
    with caplog.at_level("WARNING"):
        train_expert(_cfg(run, "expert.pole=P1A", "expert.dpo.max_steps=2", "expert.eval_samples=1"))
    assert RunDir(run).artifact("experts/P1A").is_complete()
    assert caplog.text.count("has no pad token") == 1


@pytest.mark.slow
def test_expert_of_another_base_is_refused(base_run, tmp_path):
    run = new_run(base_run, tmp_path, "run", with_pairs=False)
    expert = RunDir(run).artifact("experts/P1A")
    expert.start()
    (expert.work / "adapter_config.json").write_text("{}")
    expert.commit(
        "expert", None, pole="P1A", algo="dpo", base={"path": "/elsewhere", "fingerprint": "f" * 64}
    )
    with pytest.raises(UserError, match=r"experts/P1A was trained on another base \(/elsewhere\)"):
        train_expert(_cfg(run, "expert.pole=P1A"))
