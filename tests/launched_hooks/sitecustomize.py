"""Imported at start-up by the processes that test_launcher.py launches (this folder is put on PYTHONPATH).

With RLPHF_TEST_KL_RANK1 set, process 1 of a launched PPO run sees a huge approx. KL on every minibatch
and process 0 sees its own: the processes disagree, and only a decision on the KL averaged over processes
keeps them in step.
"""

import os

if os.environ.get("RLPHF_LAUNCHED") == "1" and os.environ.get("RLPHF_TEST_KL_RANK1"):
    from rlphf_cli.training import ppo

    if os.environ.get("RANK") == "1":
        value = float(os.environ["RLPHF_TEST_KL_RANK1"])
        ppo._kl_for_stop = lambda approx_kl: approx_kl.detach() * 0 + value
