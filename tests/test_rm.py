"""`rlphf train-rm`: a LoRA reward model per pole, its held-out accuracy, loading it back as a reward."""

import json
import shutil

import pytest
from helpers import TEST_OVERRIDES, new_run, shared_run

from rlphf_cli.config import compose
from rlphf_cli.errors import UserError
from rlphf_cli.runs import RunDir

RM_POLE = "P2A"


@pytest.fixture(scope="module")
def rm_run(base_run, tmp_path_factory):
    """The shared run with the reduced-budget reward model of RM_POLE (trained once)."""
    from rlphf_cli.training.rm import train_rm

    run = shared_run(base_run, tmp_path_factory.getbasetemp())
    train_rm(compose([f"run_dir={run}", f"rm.pole={RM_POLE}", *TEST_OVERRIDES]))
    return run


@pytest.mark.slow
def test_reward_model_is_a_peft_adapter_with_held_out_accuracy(rm_run):
    art = RunDir(rm_run).artifact(f"rm/{RM_POLE}")
    assert art.is_complete() and not art.work.exists()
    names = {p.name for p in art.path.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "manifest.json"} <= names
    assert "checkpoints" not in names
    config = json.loads((art.path / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 32 and config["task_type"] == "SEQ_CLS"
    manifest = art.manifest()
    assert manifest["pole"] == RM_POLE and manifest["base"]["fingerprint"]
    metrics = manifest["metrics"]
    assert metrics["heldout_pairs"] >= 50 and metrics["train_pairs"] >= 9 * metrics["heldout_pairs"] - 9
    # reduced budget: a lower but meaningful bar than the default budget's 85%
    assert metrics["heldout_accuracy"] >= 0.70, metrics


@pytest.mark.slow
def test_reward_model_scores_through_the_rewards_interface(rm_run):
    from rlphf_cli.rewards import get_reward
    from rlphf_cli.training.pairs import load_pairs

    cfg = compose([f"run_dir={rm_run}"])
    pairs = load_pairs(RunDir(rm_run).artifact("data/pairs").path / f"{RM_POLE}.json")[:40]
    reward = get_reward(cfg, "reward_model")
    chosen = reward.score(RM_POLE, [p["user_input"] for p in pairs], [p["completion_a"] for p in pairs])
    rejected = reward.score(RM_POLE, [p["user_input"] for p in pairs], [p["completion_b"] for p in pairs])
    assert all(isinstance(x, float) for x in chosen)
    assert sum(c > r for c, r in zip(chosen, rejected, strict=True)) >= 0.6 * len(pairs)


@pytest.mark.slow
def test_complete_reward_models_are_skipped(rm_run, caplog):
    from rlphf_cli.training.rm import train_rm

    art = RunDir(rm_run).artifact(f"rm/{RM_POLE}")
    before = art.manifest_path.stat().st_mtime_ns
    with caplog.at_level("INFO"):
        train_rm(compose([f"run_dir={rm_run}", f"rm.pole={RM_POLE}", *TEST_OVERRIDES]))  # same settings
    assert art.manifest_path.stat().st_mtime_ns == before
    assert "already complete" in caplog.text


@pytest.mark.slow
def test_unknown_pole_and_missing_base_are_one_line_errors(base_run, tmp_path):
    from rlphf_cli.training.rm import train_rm

    with pytest.raises(UserError, match="unknown pole 'P9Z'; valid poles: P1A"):
        train_rm(compose([f"run_dir={tmp_path}", "rm.pole=P9Z"]))
    with pytest.raises(UserError, match="no base model"):
        train_rm(compose([f"run_dir={tmp_path}", "rm.pole=P1A"]))
    assert not (tmp_path / "rm").exists()


@pytest.mark.slow
def test_empty_pairs_file_leaves_nothing_behind(base_run, tmp_path):
    from rlphf_cli.training.rm import train_rm

    run = new_run(base_run, tmp_path, "run", with_pairs=False)
    release = tmp_path / "release"
    release.mkdir()
    (release / "P1A.json").write_text("[]")
    with pytest.raises(UserError, match="holds no pairs"):
        train_rm(compose([f"run_dir={run}", "rm.pole=P1A", f"pairs.data_dir={release}"]))
    assert not (run / "rm").exists()


@pytest.mark.slow
def test_reward_model_of_another_base_is_refused(rm_run, base_run, tmp_path):
    """An adapter copied from a run with a different base: one line, naming the problem."""
    from rlphf_cli.rewards import get_reward

    other = new_run(base_run, tmp_path, "other", with_pairs=False)
    manifest = json.loads((other / "base" / "manifest.json").read_text())
    manifest["content_hash"] = "0" * 64  # another base
    (other / "base" / "manifest.json").write_text(json.dumps(manifest))
    shutil.copytree(rm_run / "rm" / RM_POLE, other / "rm" / RM_POLE)
    with pytest.raises(UserError, match="trained on another base"):
        get_reward(compose([f"run_dir={other}"]), "reward_model").score(RM_POLE, ["a"], ["b"])
