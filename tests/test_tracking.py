"""Tracking: `tracking=wandb tracking.mode=offline` writes a W&B offline run folder and never the API key."""

import pytest
from helpers import TEST_OVERRIDES, new_run

from rlphf_cli.config import compose, to_yaml

SECRET = "wandb-secret-key-that-must-not-leak-0123456789"


@pytest.mark.slow
def test_wandb_offline_writes_run_folders_and_no_secret(base_run, tmp_path, monkeypatch, capsys):
    from rlphf_cli.runs import RunDir
    from rlphf_cli.training.expert import train_expert

    for var in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY"):
        monkeypatch.setenv(var, "placeholder")  # restored after the test; the trainer sets its own values
        monkeypatch.delenv(var)
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    run = new_run(base_run, tmp_path, "run")
    overrides = [f"run_dir={run}", *TEST_OVERRIDES, "tracking=wandb", "tracking.mode=offline"]
    cfg = compose([*overrides, "expert.pole=P3A", "expert.dpo.max_steps=3", "expert.eval_samples=1"])
    assert cfg.tracking.backend == "wandb"
    train_expert(cfg)  # a TRL trainer (transformers' W&B callback)
    ppo = compose([*overrides, "expert.pole=P3B", "expert.algo=ppo", "expert.reward=judge", "expert.ppo.max_steps=2",
                   "expert.ppo.batch_size=4", "expert.eval_samples=1"])  # fmt: skip
    train_expert(ppo)  # our PPO loop (wandb directly)
    runs = sorted((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 2, list((run / "wandb").iterdir())
    for folder in runs:
        assert list(folder.glob("run-*.wandb")), list(folder.iterdir())
    assert (
        RunDir(run).artifact("experts/P3A").is_complete()
        and RunDir(run).artifact("experts/P3B").is_complete()
    )
    # the key is in the environment only: not in the printed config, the manifests, the logs, the W&B files
    assert SECRET not in to_yaml(cfg)
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    for path in run.rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert SECRET.encode() not in path.read_bytes(), path
