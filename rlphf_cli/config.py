"""Typed configuration: dataclasses registered with Hydra, YAML groups in the top-level `conf/` folder.

Every subcommand composes the same root config (`conf/config.yaml`), so that one set of overrides works
for a single stage and for the whole pipeline: `rlphf train-sft run_dir=runs/x sft.max_steps=200`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from rlphf_cli.annotate.annotate_config import AnnotateConfig
from rlphf_cli.decoding.generate_config import GenerateConfig
from rlphf_cli.errors import UserError
from rlphf_cli.evaluation.eval_config import EvalConfig
from rlphf_cli.evaluation.headroom_config import HeadroomConfig
from rlphf_cli.evaluation.pareto_config import ParetoConfig
from rlphf_cli.personalize.personalize_config import PersonalizeConfig
from rlphf_cli.runs import redact
from rlphf_cli.serving.serve_config import ServeConfig
from rlphf_cli.training.expert_config import ExpertConfig, LauncherConfig
from rlphf_cli.training.pcm_config import PCMConfig
from rlphf_cli.training.rm_config import PairsConfig, RewardModelConfig

CORE_POLES = ["P1A", "P1B", "P2A", "P2B", "P3A", "P3B"]


@dataclass
class BenchmarkConfig:
    name: str = "synthetic"  # synthetic | psoups
    poles: list[str] = field(default_factory=lambda: list(CORE_POLES))
    data_dir: str | None = None  # psoups: a folder laid out as the P-Soups data release
    # psoups: training instructions from a Hugging Face dataset id or a local dataset folder (alpaca columns
    # instruction/input/output, or prompt) instead of <data_dir>/alpaca_gpt4_10k.json, e.g. vicgalle/alpaca-gpt4
    train_prompts: str | None = None
    train_prompts_split: str = "train"
    sft_examples: int = 6000  # synthetic: size of the SFT corpus
    prompted_fraction: float = 0.25  # synthetic: share of SFT examples that carry one pole's preference text
    tie_margin: float = 0.05  # synthetic judge: score differences at most this are ties
    max_eval_prompts: int | None = None  # cap on evaluation prompts (None: all)


@dataclass
class ModelConfig:
    name_or_path: str | None = None  # hub id or local folder; None builds the tiny synthetic model
    trust_remote_code: bool = False
    dtype: str = "float32"  # float32 | bfloat16 | float16
    # auto (the tokenizer's chat template when it has one, else tulu) | chat | tulu (Tulu's format, as P-Soups
    # used) | alpaca | a string holding {prompt}
    prompt_template: str = "auto"
    # Architecture of the tiny LLaMA-style model built for the synthetic benchmark.
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    max_position_embeddings: int = 256


@dataclass
class SFTConfig:
    max_steps: int = 800
    learning_rate: float = 5e-3
    batch_size: int = 32
    warmup_steps: int = 30
    save_steps: int = 200
    logging_steps: int = 25


@dataclass
class TrackingConfig:
    backend: str = "none"  # none | wandb
    project: str = "rlphf"
    entity: str | None = None
    mode: str = "online"  # wandb mode: online | offline | disabled


@dataclass
class RootConfig:
    run_dir: str = "runs/demo"
    seed: int = 0
    seeds: str = ""  # pipeline only: several seeds, e.g. 0,1,2 -> one run directory per seed under run_dir
    device: str = "auto"  # auto | cpu | cuda
    # redo the command's artifacts even when complete (`--force`); without it an artifact made from other
    # settings stops the command with one line naming what changed
    force: bool = False
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    rm: RewardModelConfig = field(default_factory=RewardModelConfig)
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    pcm: PCMConfig = field(default_factory=PCMConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    headroom: HeadroomConfig = field(default_factory=HeadroomConfig)
    pareto: ParetoConfig = field(default_factory=ParetoConfig)
    personalize: PersonalizeConfig = field(default_factory=PersonalizeConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="root_schema", node=RootConfig)


def config_dir() -> Path:
    """`rlphf_cli/conf` inside an installed wheel, else the checkout's top-level `conf/`."""
    packaged = Path(__file__).resolve().parent / "conf"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "conf"


def group_options(group: str) -> list[str]:
    folder = config_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _valid_keys(cfg: Any, dotted: str) -> list[str]:
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            break
        node = node[part]
    return list(node.keys()) if isinstance(node, DictConfig) else []


def _explain(exc: Exception, overrides: list[str]) -> str:
    """Turn a Hydra/OmegaConf error into one line that names the key and the valid choices."""
    parts, e = [], exc
    while e is not None:
        parts.append(str(e))
        e = e.__cause__ or e.__context__
    msg = " ".join(" ".join(parts).split())
    m = re.search(r"Could not find '([^/']+)/([^']+)'", msg)
    if m:
        group, option = m.groups()
        return f"unknown {group} {option!r}; valid choices: {', '.join(group_options(group))}"
    m = re.search(r"Could not override '([\w.]+)'", msg) or re.search(
        r"Key '[^']+' is not in struct.*?full_key: ([\w.]+)", msg
    )
    if m:
        full = m.group(1)
        parent = full.rsplit(".", 1)[0] if "." in full else ""
        schema = OmegaConf.structured(RootConfig)
        keys = _valid_keys(schema, parent) if parent else list(schema.keys())
        where = f" in {parent}" if parent else ""
        return f"unknown config key {full!r}; valid keys{where}: {', '.join(keys)}"
    m = re.search(
        r"Value '([^']*)' (?:of type '\w+' )?could not be converted to (\w+).*?full_key: ([\w.]+)", msg
    )
    if m:
        value, typ, key = m.groups()
        return f"bad value {value!r} for {key}: expected {typ}"
    m = re.search(r"full_key: ([\w.]+)", msg)
    if m:
        return f"bad value for {m.group(1)}: {msg.split(' full_key')[0]}"
    m = re.search(r"Error parsing override '([^']*)'", msg)
    if m:
        return f"cannot parse override {m.group(1)!r}: expected key=value"
    return f"bad config or override ({' '.join(overrides)}): {msg}"


def _quote_lists(override: str) -> str:
    """`preference=P1A,P2B` means the string "P1A,P2B" here (Hydra would read a sweep, which compose refuses)."""
    key, eq, value = override.partition("=")
    if eq and re.search(r"[,;]", value) and value[:1] not in "[{'\"" and "'" not in value:
        return f"{key}='{value}'"
    return override


def compose(overrides: list[str] | None = None) -> DictConfig:
    """Compose the root config with `key=value` overrides; raise UserError on any bad override."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = [_quote_lists(o) for o in overrides or []]
    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=overrides)
    except Exception as exc:  # Hydra raises several unrelated types; all mean a bad override here
        raise UserError(_explain(exc, overrides)) from None
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(redact(OmegaConf.to_container(cfg, resolve=True))))


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
