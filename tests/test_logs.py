"""The terminal shows this tool's lines and progress bars; library chatter and Trainer figures go to the log file."""

import logging

import pytest

from rlphf_cli import logs
from rlphf_cli.training.common import TRAINER_LOG, log_to_file


@pytest.fixture
def logged(tmp_path, capsys):
    """logs.setup on a file for the test's length; yields (the file, a reader of what the terminal got)."""
    root = logging.getLogger()
    before = list(root.handlers), root.level
    path = tmp_path / "logs" / "cmd.log"
    logs.setup(path)
    yield path, lambda: "".join(capsys.readouterr())
    for h in root.handlers:
        h.close()
    root.handlers[:], root.level = before


def test_library_chatter_and_warnings_reach_only_the_file(logged):
    import warnings

    import transformers

    path, terminal = logged
    logging.getLogger("rlphf_cli.somewhere").info("our own line")
    logging.getLogger("httpx").info("HTTP Request: POST http://x/v1/chat/completions")
    transformers.logging.get_logger("transformers.trainer").warning("a transformers warning")
    warnings.warn("a library's warning", UserWarning, stacklevel=1)
    logging.getLogger("openai").error("a library's error")
    shown, kept = terminal(), path.read_text()
    assert "our own line" in shown and "a library's error" in shown
    for chatter in ("HTTP Request", "a transformers warning", "a library's warning"):
        assert chatter in kept and chatter not in shown


def test_trainer_figures_go_to_the_file_and_the_progress_bar_stays(logged, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments
    from transformers.trainer_callback import ProgressCallback

    path, terminal = logged
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=16, hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1
        )
    )
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True)
    trainer = log_to_file(Trainer(model=model, args=args))
    bars = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, ProgressCallback)]
    assert len(bars) == 1 and type(bars[0]) is not ProgressCallback  # still a progress bar, ours
    trainer.state.global_step = 7
    trainer.callback_handler.on_log(args, trainer.state, trainer.control, {"loss": 1.25, "total_flos": 3.0})
    assert "step 7: {'loss': 1.25}" in path.read_text()
    assert "loss" not in terminal()
    assert logging.getLogger(TRAINER_LOG).name in logs.FILE_ONLY
