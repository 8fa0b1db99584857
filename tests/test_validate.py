"""Bad input: one line naming the key and what is allowed, exit 2, nothing written (not even the config)."""

import pytest

from rlphf_cli.cli import main


@pytest.fixture
def rlphf(monkeypatch, capsys, tmp_path):
    """Run the CLI in this process: (exit code, stderr, whether run_dir was written)."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))

    def run(*args):
        run_dir = tmp_path / "run"
        monkeypatch.setattr("sys.argv", ["rlphf", *args, f"run_dir={run_dir}"])
        with pytest.raises(SystemExit) as exit_:
            main()
        return exit_.value.code, capsys.readouterr().err, run_dir.exists()

    return run


@pytest.mark.parametrize(
    "args,message",
    [
        (["generate", "batch_size=0"], "generate.batch_size must be at least 1, got 0"),
        (["generate", "max_new_tokens=0"], "generate.max_new_tokens must be at least 1, got 0"),
        (["generate", "top_k=-1"], "generate.top_k must be at least 0, got -1"),
        (["generate", "top_p=0"], "generate.top_p must be in (0, 1]"),
        (["generate", "temperature=-0.5"], "generate.temperature must be at least 0"),
        (["eval", "generate.top_p=1.5"], "generate.top_p must be in (0, 1]"),
        (["train-pcm", "pcm.init_from=/no/such/folder"], "pcm.init_from=/no/such/folder is not a folder"),
        (
            ["train-pcm", "prompts_per_step=100000"],
            "pcm.prompts_per_step=100000 is more than the benchmark's",
        ),
        (["train-pcm", "samples_per_prompt=1"], "pcm.samples_per_prompt must be at least 2"),
        (["train-pcm", "pcm.max_grad_norm=-1"], "pcm.max_grad_norm must be at least 0"),
        (
            ["train-sft", "benchmark=psoups", "benchmark.poles=[P1A,P9Z]"],
            "unknown pole(s) 'P9Z' in benchmark.poles",
        ),
        (["generate", "device=tpu"], "unknown device 'tpu'; valid: auto, cpu, cuda, cuda:N"),
        (["train-rm", "tracking=wandb"], "tracking.mode=online needs a W&B login"),
        (["train-sft", "tracking.backend=mlflow"], "unknown tracking.backend 'mlflow'; valid: none, wandb"),
        (
            ["train-sft", "model.prompt_template=plain"],
            "model.prompt_template must be one of auto, chat, tulu, alpaca or contain {prompt} once",
        ),
        (["pipeline", "generate.batch_size=0"], "generate.batch_size must be at least 1"),
    ],
)
@pytest.mark.slow
def test_bad_input_is_one_line_exit_2_and_nothing_written(rlphf, args, message):
    code, err, written = rlphf(*args)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert message in err
    assert not written


def test_a_file_as_run_dir_is_one_line(rlphf, tmp_path):
    (tmp_path / "run").write_text("not a folder")
    code, err, _ = rlphf("report")
    assert code == 2 and err.count("\n") == 1 and "is not a folder" in err and "run is a file" in err


def test_wandb_offline_needs_no_login(rlphf, monkeypatch):
    from rlphf_cli import validate
    from rlphf_cli.config import compose

    validate.check_tracking(compose(["tracking=wandb", "tracking.mode=offline"]).tracking)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    validate.check_tracking(compose(["tracking=wandb"]).tracking)


def test_pcm_checks_take_the_prompt_count_from_the_caller():
    from rlphf_cli.config import compose
    from rlphf_cli.errors import UserError
    from rlphf_cli.validate import check_pcm

    cfg = compose(["pcm.prompts_per_step=5"])
    check_pcm(cfg, train_prompts=5)
    with pytest.raises(UserError, match="more than the benchmark's 4 training prompts; use at most 4"):
        check_pcm(cfg, train_prompts=4)
