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
