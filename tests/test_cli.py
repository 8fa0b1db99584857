import subprocess
import sys
import zipfile

import pytest
import yaml

from rlphf_cli.config import compose, config_dir, group_options
from rlphf_cli.errors import UserError

COMMANDS = [
    "train-sft",
    "train-rm",
    "train-expert",
    "train-pcm",
    "generate",
    "eval",
    "pipeline",
    "annotate",
    "personalize",
]


def rlphf(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "rlphf_cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_help_lists_every_subcommand():
    out = rlphf("--help")
    assert out.returncode == 0
    for cmd in COMMANDS:
        assert cmd in out.stdout


@pytest.mark.slow
def test_cfg_prints_resolved_config_from_any_directory(tmp_path):
    out = rlphf("train-sft", "--cfg", "sft.max_steps=7", "max_steps=9", f"run_dir={tmp_path}/r", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert cfg["sft"]["max_steps"] == 9  # a command's own keys may be given bare; the last one wins
    assert cfg["benchmark"]["name"] == "synthetic"
    assert not (tmp_path / "r").exists()  # --cfg runs nothing


@pytest.mark.parametrize(
    "override,expected",
    [
        ("bogus=1", "unknown config key 'bogus'; valid keys: run_dir"),
        ("sft.nope=1", "unknown config key 'sft.nope'; valid keys in sft: max_steps"),
        ("sft.max_steps=abc", "bad value 'abc' for sft.max_steps: expected Integer"),
        ("benchmark=nope", "unknown benchmark 'nope'; valid choices: "),
        ("model=nope", "unknown model 'nope'; valid choices: hf, tiny"),
    ],
)
@pytest.mark.slow
def test_bad_overrides_give_one_line_and_exit_2(override, expected):
    out = rlphf("train-sft", override)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert expected in lines[0]


GROUPS = (
    "benchmark",
    "model",
    "pcm",
    "tracking",
)  # conf/accelerate/ holds launcher files, tested in test_launcher


def _leaves(data, path=()):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*path, key))
        elif key != "defaults":
            yield (*path, key), value


def test_every_config_folder_is_a_tested_group():
    assert {p.name for p in config_dir().iterdir() if p.is_dir()} == {*GROUPS, "accelerate"}


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in group_options(g)])
def test_every_shipped_config_option_composes_to_its_values(group, option):
    from omegaconf import OmegaConf

    text = (config_dir() / group / f"{option}.yaml").read_text()
    cfg = OmegaConf.to_container(compose([f"{group}={option}"]), resolve=True)
    root = cfg if "@package _global_" in text.splitlines()[0] else cfg[group]
    leaves = list(_leaves(yaml.safe_load(text) or {}))
    assert leaves  # an empty option file would test nothing
    for path, value in leaves:
        node = root
        for key in path:
            node = node[key]
        assert node == value, f"{group}={option}: {'.'.join(path)} is {node!r}, the file says {value!r}"


def test_bare_override_word_is_refused():
    with pytest.raises(UserError, match="cannot parse override 'seed'"):
        compose(["seed"])


def test_the_run_seed_seeds_generation_and_evaluation_unless_they_have_their_own():
    cfg = compose(["seed=3"])
    assert (cfg.generate.seed, cfg.eval.seed) == (3, 3)
    cfg = compose(["seed=3", "generate.seed=5", "eval.seed=6"])
    assert (cfg.seed, cfg.generate.seed, cfg.eval.seed) == (3, 5, 6)


@pytest.mark.slow
def test_wheel_ships_the_configs(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {out.stderr.strip().splitlines()[-1:]}")
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "rlphf_cli/conf/config.yaml" in names and "rlphf_cli/conf/benchmark/synthetic.yaml" in names
    # the installed wheel composes its own configs, away from the checkout
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = "import rlphf_cli.config as c; print(c.config_dir()); print(c.compose(['seed=5']).seed)"
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {code}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    conf_dir, seed = out.stdout.split()
    assert conf_dir.startswith(str(target)) and seed == "5"
