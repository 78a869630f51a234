"""Reliability: races between threads, spawns that fail, interrupts, forks and lifetimes (issue 16).

Each test names the fault it guards against; each failed on the runtime before its fix.
"""
import os
import threading

import pytest

from parla import Parla, spawn, TaskSpace


def _threads():
    """Threads of this process (Python's and the engine's workers)."""
    return len(os.listdir("/proc/self/task"))


@pytest.mark.timeout(60)
def test_spawning_thread_while_context_exits_gets_a_clear_error():
    # One thread leaves the block while another keeps spawning into the context: each spawn either runs or
    # raises RuntimeError in the spawning thread; the exit never fails, no task is lost and no worker leaks.
    before = _threads()
    for rep in range(30):
        stop = threading.Event()
        outcome = {"spawned": [], "error": None}

        def spammer():
            try:
                while not stop.is_set():
                    @spawn()
                    def t():
                        return 1
                    outcome["spawned"].append(t)
            except RuntimeError as e:
                outcome["error"] = str(e)

        with Parla(n_workers=2):
            th = threading.Thread(target=spammer)
            th.start()
            while len(outcome["spawned"]) < 50 * (rep % 3) + 1 and th.is_alive():
                threading.Event().wait(0.001)
        th.join(timeout=30)
        stop.set()
        assert not th.is_alive()
        assert outcome["error"] is not None
        assert any(w in outcome["error"] for w in ("closing", "closed", "not active", "no Parla runtime"))
        assert [t.result for t in outcome["spawned"]] == [1] * len(outcome["spawned"])
    assert _threads() == before


@pytest.mark.timeout(30)
def test_second_thread_context_says_one_per_process_not_nested():
    # Nothing is nested: the message says a context is active on another thread, and which.
    errors = []

    def other():
        try:
            with Parla(n_workers=1):
                pass
        except RuntimeError as e:
            errors.append(str(e))

    with Parla(n_workers=1):
        th = threading.Thread(target=other)
        th.start()
        th.join(timeout=20)
    assert len(errors) == 1
    assert "nested" not in errors[0]
    assert "one context runs at a time per process" in errors[0]
    assert threading.main_thread().name in errors[0]
