"""Several training processes through `accelerate launch` (launcher.num_processes=N)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import new_run

from rlphf_cli.config import compose
from rlphf_cli.errors import UserError
from rlphf_cli.launcher import command, relaunch


def test_command_relaunches_this_module_under_accelerate(tmp_path):
    cfg = compose([f"run_dir={tmp_path}", "launcher.num_processes=4"])
    cmd = command(cfg, "rlphf_cli.training.expert:train_expert")
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--num_processes") + 1] == "4"
    assert "--multi_gpu" in cmd  # DDP; gloo on a CPU-only machine (`--cpu` would start one process)
    assert cmd[-3:] == ["-m", "rlphf_cli.launcher", "rlphf_cli.training.expert:train_expert"]
    cfg = compose([f"run_dir={tmp_path}", "launcher.num_processes=2", "launcher.accelerate_config=ddp"])
    cmd = command(cfg, "x:y")
    config_file = cmd[cmd.index("--config_file") + 1]
    assert config_file.endswith("accelerate/ddp.yaml") and "--multi_gpu" not in cmd


@pytest.mark.parametrize("name", ["ddp", "zero2", "zero3", "fsdp"])
def test_shipped_accelerate_configs_parse(name):
    import yaml

    from rlphf_cli.launcher import accelerate_config_path

    data = yaml.safe_load(accelerate_config_path(name).read_text())
    assert data["distributed_type"] in {"MULTI_GPU", "DEEPSPEED", "FSDP"}
    assert data["num_machines"] == 1


def test_bad_launcher_settings_are_one_line_errors(tmp_path):
    cfg = compose([f"run_dir={tmp_path}", "launcher.num_processes=2", "launcher.accelerate_config=nope"])
    with pytest.raises(UserError, match="unknown launcher.accelerate_config 'nope'"):
        command(cfg, "x:y")
    with pytest.raises(UserError, match="at least 1"):
        relaunch(compose([f"run_dir={tmp_path}", "launcher.num_processes=0"]), "x:y")
    assert relaunch(compose([f"run_dir={tmp_path}"]), "x:y") is False  # one process: nothing launched
    if importlib.util.find_spec("deepspeed") is None:
        zero3 = compose(
            [f"run_dir={tmp_path}", "launcher.num_processes=2", "launcher.accelerate_config=zero3"]
        )
        with pytest.raises(UserError, match="needs DeepSpeed"):
            command(zero3, "x:y")


@pytest.mark.slow
def test_dpo_expert_in_two_cpu_processes(base_run, tmp_path_factory):
    """Two gloo processes train one DPO expert; the adapter is written once, by the main process, and loads."""
    from peft import PeftModel

    from rlphf_cli.modeling import load_causal_lm
    from rlphf_cli.runs import RunDir

    run = new_run(base_run, tmp_path_factory.getbasetemp(), "two_processes")
    args = [
        f"run_dir={run}",
        "pole=P2A",
        "algo=dpo",
        "launcher.num_processes=2",
        "launcher.main_process_port=29731",
        "expert.max_steps=4",
        "expert.batch_size=2",
        "expert.eval_samples=1",
        "pairs.pairs_per_prompt=4",  # the shared pairs' setting (else they would be refused as made otherwise)
        "device=cpu",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "rlphf_cli", "train-expert", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert "[rank 0]" in log and "[rank 1]" in log  # two processes ran
    assert log.count("adapter saved by process 0 of 2") == 1  # and only the main process wrote it
    art = RunDir(run).artifact("experts/P2A")
    manifest = art.manifest()
    assert manifest["metrics"]["processes"] == 2 and manifest["metrics"]["steps"] == 4
    assert sorted(p.name for p in art.path.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "manifest.json",
    ]
    assert not art.work.exists()
    cfg = compose([f"run_dir={run}"])
    model = PeftModel.from_pretrained(load_causal_lm(str(run / "base"), cfg.model), str(art.path))
    assert any("lora_B" in name and p.abs().sum() > 0 for name, p in model.named_parameters())


def _rlphf(*args, env=None, timeout=120):
    """Run `rlphf` in its own process group; on a timeout (processes waiting on each other) end them all."""
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-m", "rlphf_cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.slow
def test_ppo_processes_stop_their_epochs_together(base_run, tmp_path_factory):
    """Process 1 sees a KL far over the target, process 0 its own (0 on the first minibatch): the average
    decides, so both stop after one update; a process deciding alone would leave the other waiting."""
    import json

    from rlphf_cli.runs import RunDir

    run = new_run(base_run, tmp_path_factory.getbasetemp(), "ppo_two_processes", with_pairs=False)
    hooks = str(Path(__file__).parent / "launched_hooks")
    out = _rlphf(
        "train-expert",
        f"run_dir={run}",
        "pole=P3A",
        "algo=ppo",
        "expert.reward=judge",
        "launcher.num_processes=2",
        "launcher.main_process_port=29733",
        "expert.ppo.max_steps=2",
        "expert.ppo.batch_size=4",
        "expert.ppo.mini_batch_size=2",
        "expert.ppo.epochs=4",
        "expert.ppo.target_kl=1.0",
        "expert.max_new_tokens=8",
        "expert.logging_steps=1",
        "expert.eval_samples=0",
        "device=cpu",
        env={
            "PYTHONPATH": os.pathsep.join([hooks, os.environ.get("PYTHONPATH", "")]),
            "RLPHF_TEST_KL_RANK1": "1000",
        },
    )
    log = (run / "logs" / "train-expert.log").read_text()
    assert out.returncode == 0, (out.stderr + log)[-3000:]
    assert log.count("adapter saved by process 0 of 2") == 1
    steps = [json.loads(line.split(": ", 2)[-1]) for line in log.splitlines() if "PPO step" in line]
    assert len(steps) == 2
    # mean over processes of (KL, 1000) on the first minibatch: over 1.5 x target, so one update, not 8
    assert all(s["updates"] == 1.0 and s["approx_kl"] >= 500 for s in steps), steps
    manifest = RunDir(run).artifact("experts/P3A").manifest()
    assert manifest["metrics"]["processes"] == 2 and manifest["metrics"]["steps"] == 2


@pytest.mark.slow
def test_pcm_in_two_cpu_processes(tmp_path):
    """train-pcm relaunches under accelerate: two gloo processes train one PCM, saved once, of the usual shape."""
    from conftest import make_random_expert_run
    from rlphf_cli.modeling import load_tokenizer
    from rlphf_cli.pcm.model import PreferenceControlModel, build_pcm
    from rlphf_cli.runs import RunDir

    make_random_expert_run(tmp_path)
    small = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=2"]
    args = ["pcm.steps=2", "pcm.prompts_per_step=1", "pcm.max_new_tokens=6", "pcm.eval_prompts=1", *small]
    out = _rlphf(
        "train-pcm",
        f"run_dir={tmp_path}",
        *args,
        "launcher.num_processes=2",
        "launcher.main_process_port=29734",
        "device=cpu",
    )
    log = (tmp_path / "logs" / "train-pcm.log").read_text()
    assert out.returncode == 0, (out.stderr + log)[-3000:]
    assert "[rank 0]" in log and "[rank 1]" in log
    assert log.count("by process 0 of 2") == 1
    art = RunDir(tmp_path).artifact("pcm")
    manifest = art.manifest()
    assert manifest["metrics"]["processes"] == 2 and len(manifest["history"]) == 2
    cfg = compose([f"run_dir={tmp_path}", *args])
    tok = load_tokenizer(str(tmp_path / "base"))
    poles = manifest["poles"]
    fresh = build_pcm(cfg.pcm, len(tok), tok.pad_token_id, poles, manifest["experts"], 0)
    saved = PreferenceControlModel.load(art.path, experts=manifest["experts"])
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(saved) == shapes(fresh)


@pytest.mark.slow
def test_sharded_parameters_are_refused_for_ppo_and_the_pcm(tmp_path):
    from rlphf_cli.launcher import refuse_sharded_parameters

    def cfg(name):
        return compose(
            [f"run_dir={tmp_path}", "launcher.num_processes=2", f"launcher.accelerate_config={name}"]
        )

    with pytest.raises(
        UserError, match="PPO does not run under FSDP .*use launcher.accelerate_config=ddp or zero2"
    ):
        refuse_sharded_parameters(cfg("fsdp"), "PPO")
    with pytest.raises(UserError, match="train-pcm does not run under ZeRO-3"):
        refuse_sharded_parameters(cfg("zero3"), "train-pcm")
    for name in ("ddp", "zero2"):
        refuse_sharded_parameters(cfg(name), "PPO")
    out = _rlphf(
        "train-pcm", f"run_dir={tmp_path}", "launcher.num_processes=2", "launcher.accelerate_config=fsdp"
    )
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "does not run under FSDP" in out.stderr


@pytest.mark.slow
def test_sft_in_two_cpu_processes(tmp_path):
    """train-sft relaunches under accelerate too: two gloo processes train the tiny base, saved once."""
    from rlphf_cli.runs import RunDir

    out = _rlphf(
        "train-sft",
        f"run_dir={tmp_path}",
        "model.hidden_size=16",
        "model.intermediate_size=32",
        "model.num_hidden_layers=1",
        "model.num_attention_heads=2",
        "benchmark.sft_examples=40",
        "sft.max_steps=3",
        "sft.batch_size=4",
        "launcher.num_processes=2",
        "launcher.main_process_port=29735",
        "device=cpu",
    )
    log = (tmp_path / "logs" / "train-sft.log").read_text()
    assert out.returncode == 0, (out.stderr + log)[-3000:]
    assert "[rank 1]" in log and log.count("base model saved to") == 1 and "by process 0 of 2" in log
    art = RunDir(tmp_path).artifact("base")
    assert art.manifest()["metrics"]["processes"] == 2 and (art.path / "model.safetensors").is_file()
