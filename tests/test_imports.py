"""srood_lib's imports run one way: no module reaches back up to a module that imports it, directly or through
others. Read from the source (``ast``), function-level imports included, so a lazy import cannot hide a cycle."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "srood_lib"

# The README's layers (*Layout*), bottom first: a module may import its own layer and those before it. Every module
# must be placed, so a new one is placed on purpose. (Issue 11 undid one inversion: baselines -> pipeline.)
LAYERS = {
    "foundations": ["srood_lib.config", "srood_lib.runtime", "srood_lib.progress", "srood_lib.atomic",
                    "srood_lib.safe_pickle", "srood_lib.distributed", "srood_lib.metrics", "srood_lib.erosion",
                    "srood_lib.compression", "srood_lib.outliers", "srood_lib.lpips_weights", "srood_lib.perceptual",
                    "srood_lib.data"],
    "models and training": ["srood_lib.models", "srood_lib.train_prior", "srood_lib.train_repair"],
    "the method": ["srood_lib.health", "srood_lib.detector", "srood_lib.levers"],
    "results": ["srood_lib.report", "srood_lib.rows", "srood_lib.paper", "srood_lib.summary", "srood_lib.controls",
                "srood_lib.shipped"],
    "baselines": ["srood_lib.baselines"],
    "notebook glue": ["srood_lib.pipeline", "srood_lib.experiment", "srood_lib.ablations", "srood_lib.explore",
                      "srood_lib.__main__"],
}


def layer_of(module: str) -> int:
    """Index in LAYERS of the name that is ``module`` or a package above it (the package's own ``__init__`` is a
    foundation: it imports nothing)."""
    if module == "srood_lib":
        return 0
    for i, names in enumerate(LAYERS.values()):
        if any(module == name or module.startswith(name + ".") for name in names):
            return i
    raise KeyError(f"{module} is in no layer of tests/test_imports.py (and the README's Layout): place it")


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: srood_lib modules it imports}``; ``from srood_lib import x`` counts as importing the module x
    where x is one, else the package."""
    modules = {module_name(p, package): p for p in package.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.split(".")[0] == "srood_lib"}
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: up level - 1 packages from here
                    target = ".".join([here.rsplit(".", node.level - 1)[0]] + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] == "srood_lib":
                    deps |= {f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_srood_lib_has_no_import_cycle(graph):
    assert len(graph) > 30 and "srood_lib.pipeline" in graph["srood_lib.experiment"]  # the graph is really read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_module_imports_only_its_own_layer_and_those_below(graph):
    names = list(LAYERS)
    upward = [f"{m} ({names[layer_of(m)]}) imports {d} ({names[layer_of(d)]})"
              for m, deps in sorted(graph.items()) for d in sorted(deps) if layer_of(d) > layer_of(m)]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_layer_of_places_submodules_and_refuses_an_unplaced_module():
    assert layer_of("srood_lib.data.cache") == 0 and layer_of("srood_lib.baselines.run") == 4
    assert layer_of("srood_lib") == 0
    with pytest.raises(KeyError, match="place it"):
        layer_of("srood_lib.newcomer")


def test_find_cycle_finds_a_cycle_through_a_lazy_import(tmp_path):
    pkg = tmp_path / "srood_lib"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from srood_lib import b\n")
    (pkg / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "c.py").write_text("import srood_lib.a\n")
    graph = import_graph(pkg)
    assert graph["srood_lib.b"] == {"srood_lib.c"}
    assert find_cycle(graph) == ["srood_lib.a", "srood_lib.b", "srood_lib.c", "srood_lib.a"]
