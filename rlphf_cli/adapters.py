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


def model_skeleton(name_or_path: str, trust_remote_code: bool = False, task_type: str = "CAUSAL_LM"):
    """The base's architecture built on the meta device (no weights read, no memory): its layers' names and
    types. One line naming the architecture when transformers has no model of it for the task."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the model config of {name_or_path}: {first_line(exc)}") from None
    seq_cls = task_type == "SEQ_CLS"
    auto = AutoModelForSequenceClassification if seq_cls else AutoModelForCausalLM
    if seq_cls:
        config.num_labels = 1
    try:
        with torch.device("meta"):
            return auto.from_config(config, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError) as exc:
        what = "sequence classifier (reward model)" if seq_cls else "causal language model"
        raise UserError(
            f"architecture {config.model_type!r} ({name_or_path}) is not supported: transformers has no "
            f"{what} for it ({first_line(exc)})"
        ) from None


def _heads(model) -> set[str]:
    """The output layers a LoRA must leave alone: the LM head, a sequence classifier's score head."""
    import torch

    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    heads = [
        m for m in (out, getattr(model, "score", None), getattr(model, "classifier", None)) if m is not None
    ]
    heads = [m for m in heads if isinstance(m, torch.nn.Module)]
    return {name for name, m in model.named_modules() if any(m is h for h in heads)}


def _matches(name: str, target: str) -> bool:
    """peft's rule for a list of target names: the module's full name, or its last dotted parts."""
    return name == target or name.endswith("." + target)


def lora_targets(model, wanted=None) -> list[str]:
    """The layers a LoRA adapts, by name as peft matches them: `wanted`, checked (only linear layers: decoding
    adds every row's LoRA update to linear outputs), or by default every linear layer of the transformer
    blocks (nn.Linear, or GPT-2's Conv1D), not the embeddings, the LM head or a score head."""
    import torch
    from transformers.pytorch_utils import Conv1D

    arch = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    heads = _heads(model)
    modules = _layers(model)
    linear = [n for n, m in modules.items() if isinstance(m, torch.nn.Linear | Conv1D) and n not in heads]
    if wanted:
        for target in wanted:
            hit = [n for n in modules if n and _matches(n, target)]
            if not hit:
                raise UserError(
                    f"LoRA target module {target!r} names no layer of {arch}; its linear layers: "
                    f"{', '.join(_leaves(linear))}"
                )
            bad = [n for n in hit if n not in linear]
            if bad:
                kind = "an output head" if bad[0] in heads else type(modules[bad[0]]).__name__
                raise UserError(
                    f"LoRA on {bad[0]} ({kind}) of {arch} is not supported: LoRA adapters here go on the "
                    f"linear layers of the transformer blocks ({', '.join(_leaves(linear))})"
                )
        return list(wanted)
    if not linear:
        raise UserError(f"architecture {arch!r} is not supported: its blocks have no linear layer for LoRA")
    # by last name (short, and the same in the causal LM and the sequence classifier); a name a head shares
    # is spelt out in full
    targets = []
    for leaf in _leaves(linear):
        if any(_matches(h, leaf) for h in heads):
            targets += [n for n in linear if _matches(n, leaf)]
        else:
            targets.append(leaf)
    return targets


def _layers(model) -> dict:
    """Every named module; a layer that already carries adapters stands as its base layer (a model that
    adapters were added to gets the same targets again), and the adapters' own modules are left out."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    out, inside = {}, ()
    for name, module in model.named_modules():
        if not name or (inside and name.startswith(inside)):
            continue
        if isinstance(module, BaseTunerLayer):
            out[name], inside = module.get_base_layer(), (name + ".",)
        else:
            out[name] = module
    return out


def _leaves(names) -> list[str]:
    return sorted({n.rsplit(".", 1)[-1] for n in names})


def lora_config(section, task_type: str = "CAUSAL_LM", cfg=None, model=None):
    """peft's LoraConfig from a config section with lora_r, lora_alpha, lora_dropout, lora_target_modules.

    `lora_target_modules: null` adapts every linear layer of the blocks, whatever the architecture (peft has
    defaults for some architectures only); the layers are read from `model`, or from the run's base (`cfg`)
    built on the meta device. Without either, peft's `all-linear` picks the same layers when it wraps the
    model. GPT-2's Conv1D layers store their weights transposed: peft's fan_in_fan_out is set for them.
    """
    from peft import LoraConfig
    from transformers.pytorch_utils import Conv1D

    if model is None and cfg is not None:
        model = model_skeleton(base_model_path(cfg), cfg.model.trust_remote_code, task_type)
    wanted = list(section.lora_target_modules) if section.lora_target_modules else None
    if model is None:
        targets, conv1d = wanted or "all-linear", False
    else:
        targets = lora_targets(model, wanted)
        conv1d = any(isinstance(m, Conv1D) for n, m in _layers(model).items() if _targeted(n, targets))
    return LoraConfig(
        task_type=task_type,
        r=section.lora_r,
        lora_alpha=section.lora_alpha,
        lora_dropout=section.lora_dropout,
        target_modules=targets,
        fan_in_fan_out=conv1d,
    )


def _targeted(name: str, targets) -> bool:
    return any(_matches(name, t) for t in targets)


def check_lora_targets(cfg, sections: tuple[str, ...] = ("rm", "expert")) -> None:
    """Refuse, in one line and before anything is written, a base whose architecture the adapters of
    `sections` (rm: reward models, expert: experts and ARMs) cannot be trained on, or target modules that
    are no linear layer of it."""
    from rlphf_cli.modeling import looks_local

    if RunDir(cfg.run_dir).artifact("base").is_complete():
        base = base_model_path(cfg)
    elif cfg.model.name_or_path:
        base = cfg.model.name_or_path
    else:
        return  # the synthetic benchmark's tiny LLaMA, trained by train-sft
    if not looks_local(base) and not _cached_config(base):
        return  # a hub id not downloaded yet: the stage that loads it reports what is wrong
    for section in sections:
        task = "SEQ_CLS" if section == "rm" else "CAUSAL_LM"
        lora_targets(
            model_skeleton(base, cfg.model.trust_remote_code, task), cfg[section].lora_target_modules
        )


def _cached_config(hub_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - an odd id: the stage that loads it says what is wrong
        return False


def adapted_modules(folder: Path) -> list[str]:
    """The layers a saved adapter adapts, by last name (read from its adapter_config.json), for manifests."""
    import json

    config = Path(folder) / "adapter_config.json"
    if not config.is_file():
        return []
    targets = json.loads(config.read_text()).get("target_modules") or []
    if isinstance(targets, str):
        return [targets]
    return _leaves(targets)


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
