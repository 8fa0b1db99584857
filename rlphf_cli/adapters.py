"""The run's base model and the LoRA adapters trained on it (experts, reward models).

Every stage that loads or trains an adapter asks here where the base lives, whether an adapter belongs to
it, and how a LoRA is configured; nothing here imports a stage, so imports run one way.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path

from rlphf_cli.errors import UserError, first_line
from rlphf_cli.runs import Artifact, RunDir


def base_model_path(cfg) -> str:
    """Where the run's base model is loaded from: the trained tiny model or the recorded real one."""
    base = RunDir(cfg.run_dir).artifact("base")
    if not base.is_complete():
        raise UserError(f"no base model in {base.path}: run `rlphf train-sft run_dir={cfg.run_dir}` first")
    source = base.manifest().get("source")
    return source or str(base.path)


def base_fingerprint(cfg) -> dict:
    """What identifies the run's base: its path and a hash (of the weights we trained, or of a real base's name)."""
    path = base_model_path(cfg)
    manifest = RunDir(cfg.run_dir).artifact("base").manifest()
    if manifest.get("source"):
        h = hashlib.sha256(manifest["source"].encode())
        config = Path(manifest["source"]).expanduser() / "config.json"
        if config.is_file():
            h.update(config.read_bytes())
        digest = h.hexdigest()
    else:
        digest = manifest.get("content_hash") or ""
    return {"path": path, "fingerprint": digest}


def check_adapter_base(cfg, art: Artifact, what: str) -> None:
    """One-line error when a complete adapter (expert or reward model) was trained on another base."""
    recorded = art.manifest().get("base") or {}
    current = base_fingerprint(cfg)
    if recorded.get("fingerprint") and recorded["fingerprint"] != current["fingerprint"]:
        raise UserError(
            f"{what} {art.path} was trained on another base ({recorded.get('path')}), not this run's base "
            f"({current['path']}); delete it and train it again"
        )


def lora_config(section, task_type: str = "CAUSAL_LM"):
    """peft's LoraConfig from a config section with lora_r, lora_alpha, lora_dropout, lora_target_modules."""
    from peft import LoraConfig

    return LoraConfig(
        task_type=task_type,
        r=section.lora_r,
        lora_alpha=section.lora_alpha,
        lora_dropout=section.lora_dropout,
        target_modules=list(section.lora_target_modules) if section.lora_target_modules else None,
    )


@contextmanager
def explain_load_failure(what: str, base: str):
    """A load error means the adapter was made for another base; running out of memory is said as such."""
    import torch

    try:
        yield
    except torch.OutOfMemoryError:
        raise  # not a mismatch: the CLI reports it as running out of memory
    except (RuntimeError, ValueError) as exc:  # e.g. size mismatch: made for another base
        raise UserError(
            f"{what} does not fit the base {base} (trained on another base?): {first_line(exc)}"
        ) from None


def load_experts(cfg, base, poles: list[str], folder: str = "experts"):
    """The base with one LoRA adapter per pole from `<folder>/<pole>/`, named by the pole.

    `folder="arms"` loads GenARM's autoregressive reward models (`rlphf train-expert algo=arm`) instead.
    """
    from peft import PeftModel

    run = RunDir(cfg.run_dir)
    what, algo = ("ARM", " algo=arm") if folder == "arms" else ("expert", "")
    model = None
    for pole in poles:
        art = run.artifact(f"{folder}/{pole}")
        if not art.is_complete():
            raise UserError(
                f"no {what} for {pole} in {art.path}: run `rlphf train-expert pole={pole}{algo}` first"
            )
        with explain_load_failure(f"{what} {pole} ({art.path})", base_model_path(cfg)):
            if model is None:
                model = PeftModel.from_pretrained(base, str(art.path), adapter_name=pole)
            else:
                model.load_adapter(str(art.path), adapter_name=pole)
    return model.eval()
