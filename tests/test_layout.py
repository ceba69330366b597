"""The package's layout (README "Layout"): rooms import downwards only, the root stays small, files stay short,
and the import paths of the public API from before the model and evaluation packages still resolve."""

import ast
import importlib
from pathlib import Path

import scorekit

PACKAGE = Path(scorekit.__file__).parent


def _room(module: str) -> str:
    """The room of a dotted module name: its sub-package, or the root module itself."""
    parts = module.split(".")
    if len(parts) < 2:
        return parts[0]
    return parts[1] if (PACKAGE / parts[1]).is_dir() else ".".join(parts[:2])


def _imports(path: Path) -> set[str]:
    """Every scorekit module a file imports, lazily inside functions too."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("scorekit"):
                out.add(target)
                out.update(f"{target}.{a.name}" for a in node.names if (PACKAGE.parent / target.replace(".", "/")
                                                                       / f"{a.name}.py").is_file())
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("scorekit"))
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "__init__.py" and path.parent == PACKAGE:
            continue  # the package's face re-exports the public API
        me = _room(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        rooms = {_room(m) for m in _imports(path)} - {me, "scorekit"}
        graph.setdefault(me, set()).update(rooms)
    return graph


def test_the_rooms_import_each_other_without_a_circle():
    graph = _graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(room: str) -> None:
        state[room] = 1
        path.append(room)
        for nxt in sorted(graph.get(room, ())):
            assert state.get(nxt) != 1, f"import circle: {' -> '.join(path[path.index(nxt):] + [nxt])}"
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[room] = 2

    for room in sorted(graph):
        if room not in state:
            visit(room)
    # the model side does not know its users
    assert not graph["model"] & {"samplers", "evaluation", "training", "scorekit.run", "cli", "studies"}
    assert not graph["samplers"] & {"evaluation", "training", "scorekit.run"}


def test_the_root_is_small_and_no_file_is_long():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= 10, root
    files = [*PACKAGE.rglob("*.py"), *PACKAGE.parent.glob("benchmarks/*.py")]
    long = [f"{p.relative_to(PACKAGE.parent)}: {n}" for p in files if (n := len(p.read_text().splitlines())) > 400]
    assert not long, long


def test_the_old_import_paths_of_the_public_api_resolve():
    from scorekit.denoiser import Denoiser
    from scorekit.evaluate import bits_per_dim, generate
    from scorekit.factory import build
    from scorekit.guidance import conditional
    from scorekit.likelihood import ode_bpd

    assert Denoiser is scorekit.model.denoiser.Denoiser is scorekit.Denoiser
    assert generate is scorekit.generate and build is scorekit.build and conditional is scorekit.conditional
    assert bits_per_dim is scorekit.evaluation.bpd.bits_per_dim
    assert ode_bpd is importlib.import_module("scorekit.evaluation.likelihood").ode_bpd
    assert importlib.import_module("scorekit.quality") is scorekit.evaluation.quality
    assert not hasattr(scorekit.Denoiser, "conditional")  # a denoiser does not know its wrappers
