"""Compatibility package for parla-experimental's ``parla.cython.*`` module paths.

parla-experimental implements its runtime in Cython modules under ``parla.cython``; programs import public
names from there (``from parla.cython.device_manager import cpu, gpu``,
``from parla.cython.tasks import AtomicTaskSpace``). Here those modules re-export the public API; the
scheduler's internals (inner C++ task objects, the scheduler and worker classes, stream pools, the device
manager's registries) do not exist. See docs/parla-compatibility.md.
"""
