"""uniform: the unpersonalised mixture, equal weights over the preference's experts (probability space).

It ignores given weights by definition; its records keep the preference's name, so that eval pairs them
with the weighted methods.
"""

from rlphf_cli.methods.base import Mixture


class Uniform(Mixture):
    name = "uniform"
    help = "equal weights over the preference's experts, mixed in probability space (ignores weights)"
    mixing = "prob"
    takes_weights = False

    def weights(self, runtime, pref):
        n = len(pref.combination)
        return [1.0 / n] * n

    def notes(self, prefs):
        if any(p.weighted for p in prefs):
            return [
                "uniform ignores preference weights by definition: equal weights over each preference's poles"
            ]
        return []


METHOD = Uniform()
