"""`generate method=parm`: the base guided by PARM's one preference-conditioned ARM (Lin et al., ICML 2025).

Next-token log-probs log p_base + beta x log p_PARM(. | x, w), renormalised (GenARM's formula with one ARM
conditioned on the row's weights w; beta = `generate.parm_beta`), sampled at `generate.temperature` like
every method. A row is [BASE, the PARM at w]: the PARM's K + 1 LoRA-shaped parts are installed once as
adapters and each row blends them with its own scales (`stacked_lora.Blend`), so rows with different weights
share one forward and a token costs the base plus one ARM whatever the number of poles.
"""

from __future__ import annotations

from rlphf_cli.errors import UserError
from rlphf_cli.runs import RunDir

ARTIFACT = "parm"


def load_parm(cfg, base):
    """The base with the run's PARM installed as blendable adapters; returns (model, the PARM's poles)."""
    from rlphf_cli.adapters import base_model_path, check_adapter_base, explain_load_failure
    from rlphf_cli.pblora import add_parm_adapters

    art = RunDir(cfg.run_dir).artifact(ARTIFACT)
    if not art.is_complete():
        raise UserError(f"no PARM in {art.path}: run `rlphf train-expert algo=parm` first")
    check_adapter_base(cfg, art, "PARM")
    with explain_load_failure(f"the PARM in {art.path}", base_model_path(cfg)):
        model, config = add_parm_adapters(base, art.path)
    return model, config["poles"]


def parm_active(poles: list[str], combination, weights) -> list:
    """A row's expert list: the base, and the PARM at the preference's weights."""
    from rlphf_cli.decoding.engine import BASE
    from rlphf_cli.pblora import parm_blend

    missing = [p for p in combination if p not in poles]
    if missing:
        raise UserError(f"the run's PARM was trained on poles {', '.join(poles)}, not {', '.join(missing)}")
    return [BASE, parm_blend(poles, dict(zip(combination, map(float, weights), strict=True)))]


def parm_weights(beta: float) -> list[float]:
    """The log-space weights over [base, PARM]."""
    return [1.0, float(beta)]
