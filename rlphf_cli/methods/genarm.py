"""genarm: GenARM (ICLR 2025), the base guided by the preference's autoregressive reward models.

log p_base + sum_i alpha_i log p_ARM_i, renormalised, with alpha_i the preference's weight i times
`generate.genarm_alpha`. GenARM's released code samples that mixture at temperature 1; here every method
samples at `generate.temperature`, so that the table compares methods, not temperatures.
"""

from rlphf_cli.decoding.engine import BASE
from rlphf_cli.decoding.runtime import adapter_name
from rlphf_cli.methods.base import Method


def genarm_weights(pref_weights, strength: float) -> list[float]:
    """GenARM's weights over [base, ARM_1, ...] in log space: the base at 1, ARM i at alpha_i = w_i x strength."""
    return [1.0, *(float(w) * strength for w in pref_weights)]


class GenARM(Method):
    name = "genarm"
    help = "GenARM: the base guided by the preference's ARMs in log space (generate.genarm_alpha)"
    evaluate_against = ("soups",)
    adapters = ("arms",)
    mixing = "log"
    settings_keys = {"genarm_alpha": "genarm_alpha"}

    def experts(self, runtime, pref):
        return (BASE, *(adapter_name("arms", p) for p in pref.combination))

    def weights(self, runtime, pref):
        return genarm_weights(pref.weights, runtime.cfg.generate.genarm_alpha)


METHOD = GenARM()
