"""Imports run one way: a module imports only modules of its own layer or of the layers below it, and no two
modules import each other, directly or through others (function-level imports count too). Run by `make lint`.

The layer table below is the one place that says where a module belongs. A module is placed by the longest
entry that is its name or one of its packages; a module no entry names (a new package, a new top-level module)
falls in the stage layer, where most new code goes. Config dataclass modules (`*_config`) belong with the
config, whatever their package, since rlphf_cli/config.py gathers them.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "rlphf_cli"

# lowest first: each layer may import its own and the layers before it
LAYERS = {
    "foundation": (
        "rlphf_cli.errors",
        "rlphf_cli.process",
        "rlphf_cli.preferences",
        "rlphf_cli.runs",
        "rlphf_cli.config",
        "rlphf_cli.logs",
        "rlphf_cli.launcher",
        "rlphf_cli.tracking",
    ),
    "engine and models": (
        "rlphf_cli.modeling",
        "rlphf_cli.adapters",
        "rlphf_cli.reward_models",
        "rlphf_cli.rewards",
        "rlphf_cli.benchmarks",
        "rlphf_cli.judges",
        "rlphf_cli.decoding.engine",
        "rlphf_cli.decoding.stacked_lora",
        "rlphf_cli.decoding.soups",
        "rlphf_cli.decoding.prompts",
        "rlphf_cli.pcm",
    ),
    "stages": (
        "rlphf_cli.training",
        "rlphf_cli.decoding",
        "rlphf_cli.evaluation",
        "rlphf_cli.personalize",
        "rlphf_cli.serving",
        "rlphf_cli.methods",
        "rlphf_cli.judges.human",  # reads a study's answers (rlphf annotate)
        "rlphf_cli.generations",
        "rlphf_cli.validate",
    ),
    "commands": ("rlphf_cli.pipeline",),
    "cli": ("rlphf_cli.cli", "rlphf_cli.__main__"),
}
DEFAULT_LAYER = "stages"
RANK = {name: i for i, name in enumerate(LAYERS)}


def layer_of(module: str) -> str:
    if module.rsplit(".", 1)[-1].endswith("_config"):
        return "foundation"
    best, layer = -1, DEFAULT_LAYER
    for name, prefixes in LAYERS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, layer = len(prefix), name
    return layer


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """The package's modules that `path` imports (anywhere in it), with the line of each import."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out += [(n, node.lineno) for n in names if n in known and n != "rlphf_cli"]
    return out


def graph() -> dict[str, list[tuple[str, int]]]:
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def test_no_module_imports_a_higher_layer():
    wrong = [
        f"{m} ({layer_of(m)}) imports {t} ({layer_of(t)}) at line {line}"
        for m, targets in graph().items()
        for t, line in targets
        if RANK[layer_of(t)] > RANK[layer_of(m)]
    ]
    assert not wrong, "imports against the layers (see LAYERS in tests/test_layering.py):\n" + "\n".join(
        wrong
    )


def test_no_import_circles():
    edges = {m: sorted({t for t, _ in targets if t != m}) for m, targets in graph().items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    circles = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in edges[m]:
            if state.get(t) == 1:
                circles.append(" -> ".join([*path[path.index(t) :], t]))
            elif t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_layer_table_places_modules_as_intended(tmp_path):
    assert layer_of("rlphf_cli.decoding.engine") == "engine and models"
    assert layer_of("rlphf_cli.decoding.generate") == "stages"
    assert layer_of("rlphf_cli.decoding.generate_config") == "foundation"
    assert layer_of("rlphf_cli.pcm.provider") == "engine and models"
    assert layer_of("rlphf_cli.methods.parm") == "stages"  # a new module: by its package
    assert layer_of("rlphf_cli.something_new") == DEFAULT_LAYER
    assert layer_of("rlphf_cli.cli") == "cli"
    # function-level imports count
    source = tmp_path / "m.py"
    source.write_text("import os\n\n\ndef f():\n    from rlphf_cli.pipeline import pipeline\n")
    assert imports(source, {"rlphf_cli.pipeline": source}) == [("rlphf_cli.pipeline", 5)]
