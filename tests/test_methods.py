"""The method registry: one module per decoding method, one table; nothing outside a method's module
branches on a method's name."""

import ast
from pathlib import Path

import pytest

import rlphf_cli
from rlphf_cli.decoding.runtime import ADAPTER_FOLDERS
from rlphf_cli.errors import UserError
from rlphf_cli.methods import NAMES, TABLE, all_methods, evaluation_plan, get_method

PACKAGE = Path(rlphf_cli.__file__).parent


def name_branches(source: str, names) -> list[int]:
    """Lines comparing something with a method's name: `x == "pcm"`, `x != "sft"`, `x in ("sft", ...)`."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        for op, right in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.Eq | ast.NotEq) and any(
                isinstance(s, ast.Constant) and s.value in names for s in sides
            ):
                lines.append(node.lineno)
            if isinstance(op, ast.In | ast.NotIn) and isinstance(right, ast.Tuple | ast.List | ast.Set):
                if any(isinstance(e, ast.Constant) and e.value in names for e in right.elts):
                    lines.append(node.lineno)
    return lines


def test_no_method_name_branch_outside_the_methods_modules():
    names = set(NAMES) | {"soups-merged"}
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "methods" and path.parent.parent == PACKAGE:
            continue  # a method's own module may name itself
        lines = name_branches(path.read_text(), names)
        if lines:
            found[str(path.relative_to(PACKAGE))] = lines
    assert not found, f"method-name branches outside rlphf_cli/methods/: {found}"


def test_the_check_finds_a_branch():
    assert name_branches('if method == "pcm":\n    pass\n', {"pcm"}) == [1]
    assert name_branches('if m not in ("sft", "prompted"):\n    pass\n', {"sft"}) == [1]
    assert name_branches('if "uniform" in mean:\n    pass\n', {"uniform"}) == []


def test_every_registered_module_loads_its_method():
    assert NAMES == tuple(TABLE)
    for m in all_methods():
        assert m.help and m.mixing in (None, "prob", "log")
        assert set(m.adapters) <= set(ADAPTER_FOLDERS)  # folders the runtime knows how to name
    weights = {m.name: m.takes_weights for m in all_methods()}
    assert weights == {
        "sft": False,
        "prompted": False,
        "soups": True,
        "mod": True,
        "uniform": False,
        "genarm": True,
        "parm": True,
        "pcm": True,
    }
    with pytest.raises(UserError, match="unknown method 'nope'; valid: sft, prompted"):
        get_method("nope")


def test_the_pipelines_evaluation_plan_comes_from_the_registry():
    plan = evaluation_plan()
    assert plan == [
        *[("pcm", b) for b in ("sft", "prompted", "soups", "mod", "uniform", "genarm", "parm")],
        ("soups", "prompted"),
        ("genarm", "soups"),
        ("parm", "genarm"),
    ]


@pytest.mark.slow
def test_a_new_method_is_one_module_and_one_line(tmp_path, monkeypatch):
    """A method registered from outside the package decodes through generate like a built-in one."""
    import json
    import sys

    from conftest import make_random_expert_run
    from rlphf_cli import methods
    from rlphf_cli.config import compose
    from rlphf_cli.decoding.generate import ensure_generations

    (tmp_path / "first_pole.py").write_text(
        "from rlphf_cli.methods.base import Mixture\n"
        "class FirstPole(Mixture):\n"
        "    name = 'first-pole'\n"
        "    help = 'the first chosen pole expert alone'\n"
        "    mixing = 'prob'\n"
        "    def weights(self, runtime, pref):\n"
        "        return [1.0] + [0.0] * (len(pref.combination) - 1)\n"
        "METHOD = FirstPole()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(methods.TABLE, "first-pole", "first_pole")
    monkeypatch.setattr(methods, "NAMES", (*methods.NAMES, "first-pole"))
    monkeypatch.setattr(methods, "_loaded", {})
    run = tmp_path / "run"
    make_random_expert_run(run)
    common = [
        f"run_dir={run}",
        "model.hidden_size=32",
        "model.intermediate_size=64",
        "model.num_hidden_layers=2",
        "benchmark.max_eval_prompts=2",
        "generate.max_new_tokens=6",
        "generate.greedy=true",
    ]
    mine = ensure_generations(compose([*common, "generate.preference=P1A,P2B"]), "first-pole")
    alone = ensure_generations(compose([*common, "generate.preference=P1A:1.0,P2B:0.0"]), "mod")
    texts = lambda p: [json.loads(x)["text"] for x in p.read_text().splitlines()]  # noqa: E731
    assert texts(mine) == texts(alone) and len(texts(mine)) == 2
    sys.modules.pop("first_pole", None)
