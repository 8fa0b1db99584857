"""Several training processes through `accelerate launch`: `launcher.num_processes=N`.

`rlphf train-rm|train-expert ... launcher.num_processes=2 [launcher.accelerate_config=ddp|zero2|zero3|fsdp]`
first checks its inputs and makes what every process shares (the pairs) in the one process the user started,
then starts N copies of this module under `accelerate launch` and waits for them. The copies receive the
resolved config through an environment variable (never a file, so no secret is written to disk) and a guard
variable that stops them from relaunching. On a machine without GPUs the processes use gloo on the CPU.
Only the main process writes artifacts; the others wait at barriers.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

from rlphf_cli import logs
from rlphf_cli.config import RootConfig, config_dir, register
from rlphf_cli.errors import Failure, RlphfError, UserError, first_line
from rlphf_cli.process import GUARD_ENV, in_launched_process

CONFIG_ENV = "RLPHF_LAUNCH_CONFIG"
ACCELERATE_CONFIGS = ("ddp", "zero2", "zero3", "fsdp")

log = logging.getLogger(__name__)


CRASHED = "crashed: "  # a launched process's last line when it crashed (its traceback is in the log file)


def should_prepare() -> bool:
    """True in the process the user started (it checks inputs and makes shared data before any launch)."""
    return not in_launched_process()


def process_index() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return process_index() == 0


def wait_for_everyone() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def accelerate_config_path(name: str) -> Path:
    if name in ACCELERATE_CONFIGS:
        return config_dir() / "accelerate" / f"{name}.yaml"
    path = Path(name).expanduser()
    if not path.is_file():
        raise UserError(
            f"unknown launcher.accelerate_config {name!r}; valid: {', '.join(ACCELERATE_CONFIGS)} or a file"
        )
    return path


def refuse_sharded_parameters(cfg, what: str) -> None:
    """PPO and the PCM generate from, and save, the unwrapped model, which FSDP and ZeRO-3 leave holding only
    this process's shard of the parameters: refuse those configs (one line, before anything is launched)."""
    import yaml

    lc = cfg.launcher
    if lc.num_processes <= 1 or not lc.accelerate_config:
        return
    data = yaml.safe_load(accelerate_config_path(lc.accelerate_config).read_text()) or {}
    kind = data.get("distributed_type")
    stage = (data.get("deepspeed_config") or {}).get("zero_stage")
    if kind == "FSDP" or (kind == "DEEPSPEED" and stage == 3):
        name = "FSDP" if kind == "FSDP" else "ZeRO-3"
        raise UserError(
            f"{what} does not run under {name} (it generates from the unwrapped model, which holds only a "
            "shard of the parameters): use launcher.accelerate_config=ddp or zero2"
        )


def command(cfg, target: str) -> list[str]:
    """The `accelerate launch` command line that runs `target` ("module:function") in N processes."""
    lc = cfg.launcher
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(lc.num_processes)]
    cmd += ["--num_machines", "1", "--dynamo_backend", "no"]
    if lc.accelerate_config:
        if lc.accelerate_config.startswith("zero") and importlib.util.find_spec("deepspeed") is None:
            raise UserError(
                f"launcher.accelerate_config={lc.accelerate_config} needs DeepSpeed: pip install deepspeed"
            )
        cmd += ["--config_file", str(accelerate_config_path(lc.accelerate_config))]
    else:
        # `--multi_gpu` is DDP: on GPUs one process per GPU, without GPUs gloo on the CPU
        # (`--cpu` would silently start a single process).
        cmd += ["--multi_gpu", "--mixed_precision", "no"]
    if lc.main_process_port:
        cmd += ["--main_process_port", str(lc.main_process_port)]
    return [*cmd, "-m", "rlphf_cli.launcher", target]


def relaunch(cfg, target: str) -> bool:
    """Run `target` in `launcher.num_processes` processes and wait; False (nothing done) for one process."""
    from omegaconf import OmegaConf

    n = cfg.launcher.num_processes
    if n < 1:
        raise UserError(f"launcher.num_processes must be at least 1, got {n}")
    if n == 1 or in_launched_process():
        return False
    cmd = command(cfg, target)
    env = dict(os.environ)
    env[GUARD_ENV] = "1"
    env[CONFIG_ENV] = OmegaConf.to_yaml(cfg, resolve=True)
    env.setdefault("OMP_NUM_THREADS", "1")
    log.info("launching %d processes: accelerate launch ... -m rlphf_cli.launcher %s", n, target)
    sys.stdout.flush()
    sys.stderr.flush()
    code, tail = _run_echoing_stderr(cmd, env)
    if code != 0:
        raise launch_error(tail, n, code)
    return True


def _run_echoing_stderr(cmd: list[str], env: dict) -> tuple[int, str]:
    """Run `cmd`, passing its stderr through as it comes (progress bars too); return its exit code and last 64 KiB."""
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    tail = b""
    while chunk := os.read(proc.stderr.fileno(), 65536):
        sys.stderr.buffer.write(chunk)
        sys.stderr.flush()
        tail = (tail + chunk)[-65536:]
    return proc.wait(), tail.decode("utf-8", errors="replace")


def launch_error(stderr_tail: str, n: int, code: int) -> RlphfError:
    """The launched processes' own last error: bad input (exit 2) as they said it, a crash as a failure (exit 1)."""
    lines = [line.split("] ", 1)[-1].strip() for line in stderr_tail.splitlines()]  # drop "[rank i] "
    errors = [line for line in lines if line.startswith("error: ")]
    if errors:
        return UserError(errors[-1].removeprefix("error: "))
    crashes = [line for line in lines if line.startswith(CRASHED)]
    if crashes:
        return Failure(f"a training process crashed: {crashes[-1].removeprefix(CRASHED)}")
    last = next((line for line in reversed(lines) if line), "no error message")
    return Failure(f"the {n} training processes failed (exit code {code}): {last}")


def _load_config():
    from omegaconf import OmegaConf

    register()
    text = os.environ.get(CONFIG_ENV)
    if not text:
        raise UserError(f"{CONFIG_ENV} is not set: start training through `rlphf`, not this module")
    return OmegaConf.merge(OmegaConf.structured(RootConfig), OmegaConf.create(text))


def main(argv: list[str] | None = None) -> None:
    """Entry point of each launched process: `python -m rlphf_cli.launcher module:function`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    path = os.environ.get(logs.LOG_FILE_ENV)
    logs.setup(Path(path) if path else None, prefix=f"[rank {process_index()}] ")
    try:
        if len(argv) != 1 or ":" not in argv[0]:
            raise UserError("usage: python -m rlphf_cli.launcher module:function")
        module, func = argv[0].split(":")
        getattr(importlib.import_module(module), func)(_load_config())
    except RlphfError as exc:
        print(f"error: {exc}" if isinstance(exc, UserError) else f"{CRASHED}{exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Exception as exc:
        logs.keep_traceback(f"rank {process_index()} crashed")
        print(f"{CRASHED}{type(exc).__name__}: {first_line(exc)}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
