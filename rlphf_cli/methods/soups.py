"""soups: Personalized Soups, the chosen experts merged into one adapter per preference (its weights the merge
weights; `generate.soups_merge`: psoups, the P-Soups code's mean of A and of B, delta, mean of B@A, or peft's
TIES / DARE over the weight deltas, ties_svd / dare_linear_svd, keeping `generate.soups_density`)."""

from rlphf_cli.decoding.soups import MERGES, SVD_MERGES, soup_name
from rlphf_cli.errors import UserError
from rlphf_cli.methods.base import Method


class Soups(Method):
    name = "soups"
    help = "Personalized Soups: the preference's experts merged into one adapter (generate.soups_merge)"
    evaluate_against = ("prompted",)
    adapters = ("experts",)
    settings_keys = {"merge": "soups_merge"}

    def merge(self, cfg) -> str:
        merge = cfg.generate.soups_merge
        if merge not in MERGES:
            raise UserError(f"unknown generate.soups_merge {merge!r}; valid: {', '.join(MERGES)}")
        return merge

    def settings(self, cfg) -> dict:
        out = super().settings(cfg)
        if self.merge(cfg) in SVD_MERGES:  # recorded only where it decides the soup (older runs keep theirs)
            out["density"] = cfg.generate.soups_density
        return out

    def prepare(self, runtime, prefs):
        cfg = runtime.cfg
        for pref in sorted(set(prefs), key=lambda p: p.name):
            runtime.add_soup(pref.combination, pref.weights, self.merge(cfg), cfg.generate.soups_density)

    def experts(self, runtime, pref):
        cfg = runtime.cfg
        return (soup_name(pref.combination, self.merge(cfg), pref.weights, cfg.generate.soups_density),)

    def merged_model(self, runtime, pref):
        """The base with this preference's soup merged into its weights: a plain model of its own (served as
        `soups-merged`, the P-Soups paper's one model per combination)."""
        import copy

        (name,) = self.experts(runtime, pref)
        copied = copy.deepcopy(runtime.model)
        copied.set_adapter(name)
        return copied.merge_and_unload().eval()


METHOD = Soups()
