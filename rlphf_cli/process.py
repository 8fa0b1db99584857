"""Which process this is: the one the user started, or a training process that `rlphf_cli.launcher` started
(marked by a guard variable in its environment, so that it never relaunches). Kept apart from the launcher so
that the run directory (runs.py) can ask without importing the launcher, which imports the config."""

from __future__ import annotations

import os

GUARD_ENV = "RLPHF_LAUNCHED"


def in_launched_process() -> bool:
    return os.environ.get(GUARD_ENV) == "1"
