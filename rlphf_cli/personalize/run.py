"""`rlphf personalize`: the mode picks fit, interactive, web or simulate."""

from __future__ import annotations

import sys

from rlphf_cli.errors import UserError
from rlphf_cli.personalize.fit import fit_mode
from rlphf_cli.personalize.interactive import interactive
from rlphf_cli.personalize.simulate import simulate

MODES = ("fit", "interactive", "web", "simulate")


def personalize(cfg):
    mode = cfg.personalize.mode
    if cfg.personalize.l2 <= 0:
        raise UserError(f"personalize.l2 must be positive (the prior's precision), got {cfg.personalize.l2}")
    if mode == "fit":
        return fit_mode(cfg)
    if mode == "interactive":
        return interactive(cfg, sys.stdin)
    if mode == "web":
        from rlphf_cli.personalize.web import web

        return web(cfg)
    if mode == "simulate":
        return simulate(cfg)
    raise UserError(f"unknown personalize.mode {mode!r}; valid: {', '.join(MODES)}")
