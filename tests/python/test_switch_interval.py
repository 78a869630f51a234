"""Parla(switch_interval=...): the interpreter's switch interval is lowered inside a context (100 us by default),
so that a worker whose GIL-releasing kernel returned gets the GIL back from the spawning thread soon, and is
restored at exit; None (or PARLA_SWITCH_INTERVAL=none) leaves it alone; a shorter interval of the program's,
or one it sets inside the context, is kept."""
import sys

import pytest

from parla import Parla, spawn


@pytest.fixture
def interval_5ms():
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield
    sys.setswitchinterval(before)


def test_default_lowered_inside_restored_after(interval_5ms):
    seen = []
    with Parla(n_workers=1):
        inside = sys.getswitchinterval()

        @spawn()
        def body():
            seen.append(sys.getswitchinterval())
    assert inside == pytest.approx(1e-4)
    assert seen == [inside]
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_other_value_and_off(interval_5ms, monkeypatch):
    with Parla(n_workers=1, switch_interval=0.001):
        assert sys.getswitchinterval() == pytest.approx(0.001)
    with Parla(n_workers=1, switch_interval=None):
        assert sys.getswitchinterval() == pytest.approx(0.005)
    monkeypatch.setenv("PARLA_SWITCH_INTERVAL", "none")
    with Parla(n_workers=1):
        assert sys.getswitchinterval() == pytest.approx(0.005)
    monkeypatch.setenv("PARLA_SWITCH_INTERVAL", "0.0002")
    with Parla(n_workers=1):
        assert sys.getswitchinterval() == pytest.approx(0.0002)
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_never_raised_and_program_changes_kept(interval_5ms):
    sys.setswitchinterval(2e-5)
    with Parla(n_workers=1):  # the program's shorter interval stays
        assert sys.getswitchinterval() == pytest.approx(2e-5)
    assert sys.getswitchinterval() == pytest.approx(2e-5)
    sys.setswitchinterval(0.005)
    with Parla(n_workers=1):
        sys.setswitchinterval(0.003)  # set by the program inside the context: not undone at exit
    assert sys.getswitchinterval() == pytest.approx(0.003)


def test_restored_when_the_block_raises(interval_5ms):
    with pytest.raises(KeyError):
        with Parla(n_workers=1):
            raise KeyError("x")
    assert sys.getswitchinterval() == pytest.approx(0.005)


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), True, "fast"])
def test_bad_values_named(value):
    with pytest.raises(ValueError, match=r"switch_interval="):
        Parla(n_workers=1, switch_interval=value)


@pytest.mark.parametrize("text", ["fast", "0", "-3", "nan"])
def test_bad_environment_named(monkeypatch, text):
    monkeypatch.setenv("PARLA_SWITCH_INTERVAL", text)
    with pytest.raises(ValueError, match=f"PARLA_SWITCH_INTERVAL='{text}'"):
        Parla(n_workers=1)
