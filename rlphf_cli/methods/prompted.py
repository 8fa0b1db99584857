"""prompted: the base with the preference texts after the instruction.

It cannot state numbers to the model: it puts the text of every pole with a weight above zero in the
prompt, heaviest first.
"""

from rlphf_cli.methods.base import Method


class Prompted(Method):
    name = "prompted"
    help = "the base with the preference texts in the prompt (heaviest pole first)"
    takes_weights = False
    reads_preference = True

    def notes(self, prefs):
        if any(p.weighted for p in prefs):
            return [
                "prompted states no weights: the texts of the poles with weight above zero, heaviest first"
            ]
        return []


METHOD = Prompted()
