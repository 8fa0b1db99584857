"""mod: MOD (Shi et al. 2024), the preference's experts at its weights, mixed in log space."""

from rlphf_cli.methods.base import Mixture


class MOD(Mixture):
    name = "mod"
    help = "MOD: the preference's experts at its weights, mixed in log space"
    mixing = "log"

    def weights(self, runtime, pref):
        return list(pref.weights)


METHOD = MOD()
