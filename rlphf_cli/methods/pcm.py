"""pcm: the Preference Control Model's weights over the preference's experts, token by token (prob space)."""

from rlphf_cli.methods.base import Mixture


class PCM(Mixture):
    name = "pcm"
    help = "the Preference Control Model's per-token weights over the preference's experts"
    evaluate_against = ("*",)
    mixing = "prob"
    needs_pcm = True
    baseline = False

    def provider(self, runtime, prefs, active):
        return runtime.pcm(runtime.cfg.benchmark.poles).provider(prefs, active)


METHOD = PCM()
