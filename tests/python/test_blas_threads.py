"""Parla(blas_threads=...): one BLAS thread per call inside a context by default (threadpoolctl), restored at
exit; None (or PARLA_BLAS_THREADS=none) leaves BLAS alone."""
import numpy as np  # noqa: F401  (its OpenBLAS must be loaded)
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from parla import Parla, spawn


def _blas_threads():
    return sorted({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"})


@pytest.fixture
def two_blas_threads():
    if not _blas_threads():
        pytest.skip("no BLAS library visible to threadpoolctl")
    with threadpool_limits(2, user_api="blas"):
        yield


def test_default_one_thread_inside_restored_after(two_blas_threads):
    seen = []
    with Parla(n_workers=2):
        @spawn()
        def body():
            seen.append(_blas_threads())
    assert seen == [[1]]
    assert _blas_threads() == [2]


def test_other_count_and_off(two_blas_threads, monkeypatch):
    with Parla(n_workers=1, blas_threads=3):
        assert _blas_threads() == [3]
    with Parla(n_workers=1, blas_threads=None):
        assert _blas_threads() == [2]
    monkeypatch.setenv("PARLA_BLAS_THREADS", "none")
    with Parla(n_workers=1):
        assert _blas_threads() == [2]
    monkeypatch.setenv("PARLA_BLAS_THREADS", "4")
    with Parla(n_workers=1):
        assert _blas_threads() == [4]
    assert _blas_threads() == [2]


def test_bad_values_named(monkeypatch):
    with pytest.raises(ValueError, match=r"blas_threads=0"):
        with Parla(n_workers=1, blas_threads=0):
            pass
    monkeypatch.setenv("PARLA_BLAS_THREADS", "many")
    with pytest.raises(ValueError, match="PARLA_BLAS_THREADS='many'"):
        with Parla(n_workers=1):
            pass
    monkeypatch.delenv("PARLA_BLAS_THREADS")
    with Parla(n_workers=1):  # nothing left behind by the refused contexts
        pass
