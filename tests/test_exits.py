"""How a command ends when running fails: Ctrl-C, out of memory, a crash in a launched training process."""

import logging

import pytest
import torch

from rlphf_cli.cli import main
from rlphf_cli.config import compose
from rlphf_cli.errors import Failure, UserError
from rlphf_cli.launcher import launch_error, relaunch


@pytest.fixture
def rlphf(monkeypatch, capsys, tmp_path):
    """Run `rlphf report` in this process with `report` replaced by `raising`: (exit code, stderr, run dir)."""
    root = logging.getLogger()
    before = list(root.handlers), root.level

    def run(raising):
        def report(cfg):
            raise raising

        monkeypatch.setattr("rlphf_cli.evaluation.report.report", report)
        monkeypatch.setattr("sys.argv", ["rlphf", "report", f"run_dir={tmp_path}"])
        with pytest.raises(SystemExit) as exit_:
            main()
        return exit_.value.code, capsys.readouterr().err, tmp_path

    yield run
    for h in root.handlers:
        h.close()
    root.handlers[:], root.level = before


def test_ctrl_c_exits_130_with_the_resume_hint(rlphf):
    code, err, _ = rlphf(KeyboardInterrupt())
    assert code == 130 and err == "interrupted: run the same command again to resume\n"


def test_out_of_memory_is_said_as_such_with_exit_1_and_the_traceback_in_the_log(rlphf):
    code, err, run_dir = rlphf(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(
        "error: out of GPU memory in report (CUDA out of memory. Tried to allocate 2.00 GiB)"
    )
    assert "Traceback" in (run_dir / "logs" / "report.log").read_text()


def test_loading_an_expert_out_of_memory_is_not_called_a_base_mismatch(tmp_path, monkeypatch):
    from peft import PeftModel

    from conftest import make_random_expert_run
    from rlphf_cli.adapters import load_experts

    cfg = make_random_expert_run(tmp_path, poles=("P1A",))

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(PeftModel, "from_pretrained", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        load_experts(cfg, object(), ["P1A"])

    def mismatch(*args, **kwargs):
        raise RuntimeError("Error(s) in loading state_dict: size mismatch for lora_A\nmore lines")

    monkeypatch.setattr(PeftModel, "from_pretrained", mismatch)
    with pytest.raises(UserError, match="expert P1A .* does not fit the base .*size mismatch for lora_A$"):
        load_experts(cfg, object(), ["P1A"])


def test_launched_processes_errors_keep_their_own_exit_meaning():
    bad_input = launch_error(
        "[rank 1] error: no base model in /r/base\nTraceback...\nCalledProcessError: 1\n", 2, 1
    )
    assert isinstance(bad_input, UserError) and str(bad_input) == "no base model in /r/base"
    crash = launch_error("[rank 0] crashed: ValueError: nan loss\nsubprocess.CalledProcessError: ...\n", 2, 1)
    assert isinstance(crash, Failure) and crash.exit_code == 1
    assert str(crash) == "a training process crashed: ValueError: nan loss"
    silent = launch_error("Killed\n", 2, 137)
    assert isinstance(silent, Failure) and "exit code 137): Killed" in str(silent)


@pytest.mark.slow
def test_a_crash_in_a_launched_process_is_exit_1_with_its_last_error_line(tmp_path, capfd):
    cfg = compose([f"run_dir={tmp_path}", "launcher.num_processes=2"])
    with pytest.raises(
        Failure, match=r"a training process crashed: TypeError: .*JSON object must be str"
    ) as exc:
        relaunch(cfg, "json:loads")  # json.loads(cfg) raises TypeError in every launched process
    assert exc.value.exit_code == 1
    assert "crashed: TypeError" in capfd.readouterr().err  # their output still reaches the terminal
