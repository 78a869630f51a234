"""Parla.py's task environments: components entered around task bodies, chosen by device and tags."""
import threading

import pytest

from parla import Parla, TaskEnvironment, get_current_devices, spawn
from parla.devices import cpu
from parla.environments import EnvironmentComponentDescriptor, EnvironmentComponentInstance

pytestmark = pytest.mark.timeout(20)
local = threading.local()


class Instance(EnvironmentComponentInstance):
    def __init__(self, descriptor, env):
        super().__init__(descriptor)
        self.value = descriptor.value

    def initialize_thread(self):
        local.initialized = True

    def __enter__(self):
        local.value = self.value
        return self

    def __exit__(self, *exc):
        del local.value
        return False


class Component(EnvironmentComponentDescriptor):
    def __init__(self, value):
        self.value = value

    def __call__(self, env):
        return Instance(self, env)


def test_components_wrap_task_bodies():
    envs = [TaskEnvironment(placement=[cpu(0)], components=[Component("test")])]
    with Parla(envs):
        @spawn()
        def t():
            return get_current_devices(), local.value, local.initialized
    assert t.result == ([cpu(0)], "test", True)


def test_tags_choose_the_environment():
    envs = [TaskEnvironment(placement=[cpu(0)], components=[Component("foo")], tags=("a",)),
            TaskEnvironment(placement=[cpu(0)], components=[Component("bar")], tags=("b",))]
    with Parla(environments=envs, n_workers=1):
        a = spawn(tags=("a",))(lambda: local.value)
        b = spawn(tags=("b",))(lambda: local.value)
        with pytest.raises(ValueError, match="tags"):
            spawn(tags=("c",))(lambda: None)
    assert (a.result, b.result) == ("foo", "bar")
