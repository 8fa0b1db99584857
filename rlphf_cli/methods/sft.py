"""sft: the base model alone (the supervised fine-tuned base of the synthetic benchmark, or the real base)."""

from rlphf_cli.methods.base import Method


class SFT(Method):
    name = "sft"
    help = "the base alone"
    takes_weights = False

    def notes(self, prefs):
        return []  # reads no preference at all: nothing to say about weights


METHOD = SFT()
