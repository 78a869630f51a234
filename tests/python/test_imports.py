"""The import surface: both layouts Parla has shipped."""
import inspect

import pytest

pytestmark = pytest.mark.timeout(20)


def test_top_level_names():
    from parla import Parla, spawn, TaskSpace  # noqa: F401
    import parla
    for name in ("Parla", "spawn", "TaskSpace", "get_current_task", "get_current_devices",
                 "get_current_context", "get_current_stream"):
        assert hasattr(parla, name), name


def test_parla_tasks_layout():
    from parla.tasks import (spawn, TaskSpace, get_current_task, get_current_devices,  # noqa: F401
                             get_current_context, get_current_stream, TaskID)
    import parla
    import parla.tasks
    assert parla.tasks.spawn is parla.spawn
    assert parla.tasks.TaskSpace is parla.TaskSpace
    assert TaskID is not None
    # A task handle from a TaskSpace is a TaskID.
    with parla.Parla(n_workers=1):
        T = TaskSpace("T")
        assert isinstance(T[0], TaskID)

        @spawn(T[0])
        def body():
            return 1


def test_parla_devices_layout():
    from parla.devices import cpu, gpu
    assert repr(cpu) == "cpu" and repr(gpu) == "gpu"
    assert cpu(0) == cpu(0) and hash(cpu(0)) == hash(cpu(0))
    assert cpu(0) != gpu(0)


def test_old_layout():
    from parla.cpu import cpu as old_cpu
    from parla.cuda import gpu as old_gpu
    from parla.devices import cpu, gpu
    assert old_cpu is cpu
    assert old_gpu is gpu


def test_py_typed_and_docstrings():
    import parla
    import parla.tasks
    import parla.devices
    from pathlib import Path
    assert (Path(parla.__file__).parent / "py.typed").exists()
    for module in (parla, parla.tasks, parla.devices):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                assert inspect.getdoc(obj), f"{module.__name__}.{name} has no docstring"


def test_spawn_has_type_hints():
    import typing
    from parla import spawn, Parla
    hints = typing.get_type_hints(spawn)
    assert "return" in hints
    assert inspect.getdoc(Parla.__init__) or inspect.getdoc(Parla)


# Imports a module of the package may make inside functions: optional dependencies (absent on some machines)
# and heavy ones only some programs use.
_LAZY_IMPORTS = {"cupy", "mpi4py", "yaml", "tqdm", "tqdm.auto", "threadpoolctl", "matplotlib", "matplotlib.figure",
                 "matplotlib.patches", "matplotlib.lines",
                 # parla.native: SciPy's Cython BLAS/LAPACK and cffi are optional (native.blas, cffi pointers)
                 "scipy.linalg.cython_blas", "scipy.linalg.cython_lapack", "_cffi_backend"}


def _package_imports():
    """{module: set of package modules it imports at module level}, and the function-level imports as
    (module, line, imported name), for every .py file of the installed package. Imports under
    ``if TYPE_CHECKING:`` are for type checkers only and are left out."""
    import ast
    from pathlib import Path
    import parla
    root = Path(parla.__file__).parent
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    known = set(modules) | {"parla._core", "parla._version"}

    def targets(node, name, is_package):
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if not node.level:
            base = node.module
        else:
            package = name.split(".") if is_package else name.split(".")[:-1]
            package = package[:len(package) - node.level + 1]
            base = ".".join(package + ([node.module] if node.module else []))
        subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
        return subs or [base]

    graph, lazy = {}, []
    for name, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        top = set()
        module_level = set()
        stack = list(tree.body)
        while stack:  # module level: the body, and the bodies of module-level if/try/with blocks
            node = stack.pop()
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                module_level.update(id(n) for n in ast.walk(node))
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                module_level.add(id(node))
                top.update(t for t in targets(node, name, is_package) if t.split(".")[0] == "parla")
            elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For)):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, field, []):
                        stack.extend(child.body if isinstance(child, ast.ExceptHandler) else [child])
        graph[name] = top
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in module_level:
                lazy.extend((name, node.lineno, t) for t in targets(node, name, is_package))
    return graph, lazy


def _check_acyclic(graph):
    """Raises AssertionError naming an import cycle of graph, if it has one."""
    state = {}  # 1: on the path being explored, 2: done

    def visit(name, path):
        state[name] = 1
        for dep in sorted(graph.get(name, ())):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if dep not in state:
                visit(dep, path + [dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_package_imports_go_downward_only():
    # The package's modules imported each other in a cycle, broken by imports inside functions; now every
    # module imports only modules below it, at module level.
    graph, lazy = _package_imports()
    assert {"parla", "parla.tasks", "parla.array", "parla.devices", "parla._runtime"} <= set(graph)
    assert {"parla._context", "parla.array"} <= graph["parla.tasks"]
    _check_acyclic(graph)
    assert [x for x in lazy if x[2] not in _LAZY_IMPORTS] == []


def test_import_check_sees_cycles_and_lazy_imports(tmp_path, monkeypatch):
    # The check itself: a package whose modules import each other, one of them inside a function, is caught.
    import sys
    import types
    pkg = tmp_path / "parla"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("from . import b\nif TYPE_CHECKING:\n    from . import c\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n    import numpy\n")
    (pkg / "c.py").write_text("")
    fake = types.ModuleType("parla")
    fake.__file__ = str(pkg / "__init__.py")
    monkeypatch.setitem(sys.modules, "parla", fake)
    graph, lazy = _package_imports()
    assert graph == {"parla": {"parla.a"}, "parla.a": {"parla.b"}, "parla.b": set(), "parla.c": set()}
    assert sorted(lazy) == [("parla.b", 2, "parla.a"), ("parla.b", 3, "numpy")]
    _check_acyclic(graph)
    (pkg / "b.py").write_text("try:\n    from .a import x\nexcept ImportError:\n    pass\n")
    with pytest.raises(AssertionError, match=r"import cycle: parla.a -> parla.b -> parla.a"):
        _check_acyclic(_package_imports()[0])
