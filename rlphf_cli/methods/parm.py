"""parm: PARM (Lin et al., ICML 2025), the base guided by one preference-conditioned autoregressive reward model.

log p_base + beta x log p_PARM(. | x, w), renormalised: GenARM's formula with one ARM conditioned on the
row's weights w (beta = `generate.parm_beta`). The PARM (`rlphf train-expert algo=parm`, `parm/`) is a
preference-aware bilinear LoRA whose update is linear in w; its K + 1 LoRA-shaped parts are installed once
as adapters and each row blends them with its own scales (`stacked_lora.Blend`): a token costs the base plus
one ARM whatever the number of poles, and rows with different weights share one forward.
"""

from rlphf_cli.decoding.engine import BASE
from rlphf_cli.errors import UserError
from rlphf_cli.methods.base import Method
from rlphf_cli.pblora import SHARED, add_parm_adapters, parm_blend, read_config, slot_name
from rlphf_cli.runs import RunDir, input_hash

ARTIFACT = "parm"


def parm_active(poles, combination, weights) -> tuple:
    """A row's experts: the base, and the PARM at the preference's weights (poles it was trained on)."""
    missing = [p for p in combination if p not in poles]
    if missing:
        raise UserError(f"the run's PARM was trained on poles {', '.join(poles)}, not {', '.join(missing)}")
    return (BASE, parm_blend(list(poles), dict(zip(combination, map(float, weights), strict=True))))


def parm_weights(beta: float) -> list[float]:
    """The log-space weights over [base, PARM]."""
    return [1.0, float(beta)]


class PARM(Method):
    name = "parm"
    help = "PARM: the base guided by one preference-conditioned ARM in log space (generate.parm_beta)"
    mixing = "log"
    settings_keys = {"parm_beta": "parm_beta"}
    evaluate_against = ("genarm",)

    def inputs(self, cfg):
        root = RunDir(cfg.run_dir).root
        return {"base": input_hash(root / "base"), ARTIFACT: input_hash(root / ARTIFACT)}

    def servable_poles(self, run, poles):
        art = run.artifact(ARTIFACT)
        if not art.is_complete():
            return []
        known = read_config(art.path)["poles"]
        return [p for p in poles if p in known]

    def load(self, runtime, poles):
        art = RunDir(runtime.cfg.run_dir).artifact(ARTIFACT)
        if not art.is_complete():
            raise UserError(f"no PARM in {art.path}: run `rlphf train-expert algo=parm` first")
        from rlphf_cli.adapters import check_adapter_base

        check_adapter_base(runtime.cfg, art, "PARM")
        self.poles = read_config(art.path)["poles"]
        runtime.install(
            slot_name(ARTIFACT, SHARED),
            f"the PARM in {art.path}",
            lambda m: add_parm_adapters(m, art.path)[0],
        )

    def experts(self, runtime, pref):
        return parm_active(self.poles, pref.combination, pref.weights)

    def weights(self, runtime, pref):
        return parm_weights(runtime.cfg.generate.parm_beta)


METHOD = PARM()
