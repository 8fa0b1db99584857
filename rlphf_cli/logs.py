"""Where messages go: this tool's own lines to the terminal, everything to the run's log file.

The terminal shows the `rlphf_cli` loggers (and any library's errors) and the progress bars; library chatter
(HTTP requests of the judge, transformers and trl warnings, Python warnings) and the Trainers' logged
figures go only to `<run_dir>/logs/<command>.log`, appended to by every run of that command.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from rlphf_cli.runs import RunDir

OURS = ("rlphf", "rlphf_cli")
FILE_ONLY = ("rlphf.trainer", "rlphf.trace")  # a Trainer's figures; tracebacks behind a one-line error
LOG_FILE_ENV = "RLPHF_LOG_FILE"  # launched training processes append to their parent's log file


class TerminalFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name in FILE_ONLY:
            return False
        return record.name.split(".")[0] in OURS or record.levelno >= logging.ERROR


def log_file(run_dir: str | Path, command: str) -> Path:
    return RunDir(run_dir).root / "logs" / f"{command}.log"


def setup(path: Path | None, prefix: str = "") -> None:
    """The terminal handler (ours only) and, with `path`, the file handler (everything) on the root logger."""
    from rich.logging import RichHandler

    terminal = RichHandler(show_path=False, log_time_format="[%X]")
    terminal.setFormatter(logging.Formatter(prefix + "%(message)s"))
    terminal.addFilter(TerminalFilter())
    handlers: list[logging.Handler] = [terminal]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.environ[LOG_FILE_ENV] = str(path)
        to_file = logging.FileHandler(path, encoding="utf-8")
        to_file.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s"))
        handlers.append(to_file)
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)
    # Python warnings become records of `py.warnings` (the file, not the terminal); hooked afresh each time,
    # since whatever replaced `warnings.showwarning` after an earlier call would otherwise keep them
    logging.captureWarnings(False)
    logging.captureWarnings(True)
    for noisy in ("urllib3", "filelock", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_libraries()


def quiet_libraries() -> None:
    """Library settings that keep the terminal for this tool's own lines."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings(
        "ignore", message=r".*gradient_checkpointing.* is deprecated", category=FutureWarning
    )
    warnings.filterwarnings("ignore", message=r".*right-padding was detected.*")
    import transformers

    # transformers prints through a handler of its own; through the root logger its warnings reach the file
    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.enable_propagation()
    transformers.logging.set_verbosity_warning()
    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars on every model load


def keep_traceback(message: str) -> None:
    """The exception being handled, with its traceback, into the log file (never the terminal)."""
    if any(isinstance(h, logging.FileHandler) for h in logging.getLogger().handlers):
        logging.getLogger("rlphf.trace").error(message, exc_info=True)
