"""Devices, placement, resources and mapping on virtual GPUs (issue 4).

Every test builds its own ``Parla(virtual_gpus=N)``; conftest.py unsets PARLA_VIRTUAL_GPUS and friends, and
the tests below also delete them explicitly so the device count never comes from the caller's shell.
Variants (``@specialize``) are not implemented yet and are not tested here.
"""
import collections
import threading
import time

import numpy as np
import pytest

from parla import Parla, TaskSpace, get_current_context, get_current_devices, spawn
from parla.array import asarray
from parla.devices import cpu, get_all_devices, gpu

GPU_COUNTS = [1, 2, 4]



def _record():
    """Body helper: what the running task sees about its devices."""
    ctx = get_current_context()
    return {"devices": list(get_current_devices()), "context": list(ctx.devices), "len": len(ctx),
            "iter": list(iter(ctx))}


def _run_one(placement, n_gpus, **kw):
    with Parla(virtual_gpus=n_gpus):
        @spawn(placement=placement, **kw)
        def t():
            return _record()
    return t


# ------------------------------------------------------------------ placement forms --

@pytest.mark.timeout(30)
@pytest.mark.parametrize("n_gpus", GPU_COUNTS)
def test_single_device_placement_forms(n_gpus):
    gpus = [gpu(i) for i in range(n_gpus)]
    cases = [
        (cpu, [cpu(0)]),
        (cpu(0), [cpu(0)]),
        (None, [cpu(0)]),
        (gpu, gpus),
        ([gpu], gpus),
        ([cpu, gpu], [cpu(0)] + gpus),
        ([gpu(n_gpus - 1), cpu], [gpu(n_gpus - 1), cpu(0)]),
        (gpu[{"vcus": 0.5, "memory": 2**20}], gpus),
        (gpu(0)[{"vcus": 0.5, "memory": 2**20}], [gpu(0)]),
        (cpu[{"vcus": 0.25}], [cpu(0)]),
        ([gpu(0)[{"vcus": 0.5}], cpu[{"vcus": 0.5}]], [gpu(0), cpu(0)]),
    ] + [(gpu(i), [gpu(i)]) for i in range(n_gpus)]
    with Parla(virtual_gpus=n_gpus):
        tasks = []
        for placement, allowed in cases:
            @spawn(placement=placement)
            def t():
                return _record()
            tasks.append((placement, allowed, t))
    for placement, allowed, t in tasks:
        seen = t.result
        assert len(seen["devices"]) == 1, placement
        dev = seen["devices"][0]
        assert dev in allowed, (placement, dev)
        assert seen["context"] == seen["devices"] == seen["iter"]
        assert seen["len"] == 1
        # task.devices agrees with what the body saw.
        assert t.devices == [dev], (placement, t.devices)
        if placement is not None and placement is not cpu and placement != cpu(0):
            reason = t.placement_reason
            assert reason is not None and reason["devices"] == [dev]
            assert reason["score"] == pytest.approx(reason["locality"] - reason["transfer"] - reason["load"])


@pytest.mark.timeout(30)
def test_device_objects_parla_style():
    with Parla(virtual_gpus=2):
        @spawn(placement=gpu(1))
        def t():
            d = get_current_devices()[0]
            return d.architecture, d.index, repr(d), str(d), d.id
    arch, index, r, s, ident = t.result
    assert arch is gpu and index == 1 and r == s == "gpu(1)" and ident == 1
    assert gpu(1) == gpu(1) and gpu(1) is gpu(1) and gpu(0) != gpu(1) and cpu(0) != gpu(0)
    assert get_current_devices() == [cpu(0)]  # outside tasks


@pytest.mark.timeout(30)
@pytest.mark.parametrize("n_gpus", [2, 4])
def test_multi_device_tuples(n_gpus):
    forms = [(gpu, gpu), gpu * 2, 2 * gpu, (gpu(0), gpu(1)), (gpu(1), gpu), (cpu, gpu),
             (gpu[{"vcus": 0.5}], gpu[{"vcus": 0.5}]), [(gpu, gpu)], gpu * n_gpus]
    with Parla(virtual_gpus=n_gpus):
        tasks = []
        for form in forms:
            @spawn(placement=form)
            def t():
                ctx = get_current_context()
                entered = []
                for i in range(len(ctx)):
                    with ctx[i] as sub:
                        entered.append(list(sub.devices))
                return _record(), entered
            tasks.append((form, t))
    for form, t in tasks:
        seen, entered = t.result
        devs = seen["devices"]
        want = len(form[0]) if isinstance(form, list) else len(form)
        assert len(devs) == want, (form, devs)
        assert len(set(devs)) == want, f"{form}: devices not distinct: {devs}"
        assert entered == [[d] for d in devs]
        assert len(t.devices) == want
        members = form[0] if isinstance(form, list) else form
        for member, dev in zip(members, devs):
            target = getattr(member, "target", member)
            if target is gpu:
                assert dev.architecture is gpu
            elif target is cpu:
                assert dev == cpu(0)
        if form == (gpu(0), gpu(1)):
            assert devs == [gpu(0), gpu(1)]
        if form == (gpu(1), gpu):
            assert devs[0] == gpu(1)


@pytest.mark.timeout(30)
def test_multi_device_needs_enough_gpus():
    with Parla(virtual_gpus=1):
        for form in [(gpu, gpu), gpu * 2]:
            with pytest.raises(ValueError, match=r"task two#\d+"):
                @spawn(placement=form)
                def two():
                    pass


# -------------------------------------------------------------- resources enforced --

def _peak_run(n_gpus, placement, n_tasks, sleep=0.05, n_workers=8, meet=None):
    """The peak number of tasks running at once per device. With meet=k, the tasks on one device meet k at a
    time (a barrier) once running, so a limit of k is reached however slowly the workers start (a sleep alone
    left that to timing); a limit that let more run at once still shows in the peak."""
    lock = threading.Lock()
    running = collections.Counter()
    peak = collections.Counter()
    barriers = collections.defaultdict(lambda: threading.Barrier(meet, timeout=20))

    with Parla(n_workers=n_workers, virtual_gpus=n_gpus):
        tasks = []
        for _ in range(n_tasks):
            @spawn(placement=placement)
            def busy():
                dev = get_current_devices()[0]
                with lock:
                    running[dev] += 1
                    peak[dev] = max(peak[dev], running[dev])
                    barrier = barriers[dev] if meet else None
                if barrier is not None:
                    barrier.wait()
                time.sleep(sleep)
                with lock:
                    running[dev] -= 1
            tasks.append(busy)
    assert all(t.state == "done" for t in tasks)
    return peak


@pytest.mark.timeout(30)
@pytest.mark.parametrize("n_gpus", GPU_COUNTS)
def test_vcus_limit_concurrency_per_device(n_gpus):
    peak = _peak_run(n_gpus, gpu(0)[{"vcus": 0.5}], 8, meet=2)
    assert peak[gpu(0)] == 2, peak
    peak = _peak_run(n_gpus, gpu[{"vcus": 0.5}], 4 * n_gpus)
    assert max(peak.values()) <= 2, peak
    assert set(peak) <= {gpu(i) for i in range(n_gpus)}


@pytest.mark.timeout(30)
def test_vcus_limit_other_fractions_and_cpu():
    assert _peak_run(1, gpu(0)[{"vcus": 1.0}], 4)[gpu(0)] == 1
    assert _peak_run(1, gpu(0)[{"vcus": 0.25}], 8, meet=4)[gpu(0)] == 4
    assert _peak_run(0, cpu[{"vcus": 0.5}], 6, meet=2)[cpu(0)] == 2
    # vcus= keyword applies to every option without its own resources
    lock = threading.Lock()
    state = {"run": 0, "peak": 0}
    pair = threading.Barrier(2, timeout=20)  # two at a time reach the limit, however slowly workers start
    with Parla(n_workers=8, virtual_gpus=2):
        for _ in range(6):
            @spawn(placement=gpu(1), vcus=0.5)
            def b():
                with lock:
                    state["run"] += 1
                    state["peak"] = max(state["peak"], state["run"])
                pair.wait()
                time.sleep(0.05)
                with lock:
                    state["run"] -= 1
    assert state["peak"] == 2


@pytest.mark.timeout(30)
def test_multi_device_reservation_is_atomic():
    """(gpu(0), gpu(1)) with vcus 1 each excludes single tasks on either device while it runs."""
    lock = threading.Lock()
    busy = collections.Counter()
    violations = []

    def enter(devs):
        with lock:
            for d in devs:
                busy[d] += 1
                if busy[d] > 1:
                    violations.append(list(devs))

    def leave(devs):
        with lock:
            for d in devs:
                busy[d] -= 1

    with Parla(n_workers=8, virtual_gpus=2):
        for i in range(12):
            placement = (gpu(0)[{"vcus": 1}], gpu(1)[{"vcus": 1}]) if i % 3 == 0 else gpu[{"vcus": 1}]

            @spawn(placement=placement)
            def t():
                devs = get_current_devices()
                enter(devs)
                time.sleep(0.02)
                leave(devs)
    assert not violations


@pytest.mark.timeout(30)
def test_memory_need_larger_than_capacity_fails_at_spawn():
    with Parla(virtual_gpus=2, gpu_memory=2**20):
        with pytest.raises(ValueError, match=r"task huge#\d+") as info:
            @spawn(placement=gpu[{"memory": 2**21}])
            def huge():
                pass
        assert "capacity" in str(info.value)
        with pytest.raises(ValueError, match=r"task huge2#\d+"):
            @spawn(placement=gpu(1), memory=2**21)
            def huge2():
                pass
        # falls back to an option that fits
        @spawn(placement=[gpu(0)[{"memory": 2**21}], cpu[{"memory": 2**21}]])
        def fits():
            return get_current_devices()
    assert fits.result == [cpu(0)]


@pytest.mark.timeout(30)
def test_memory_needs_that_fit_one_at_a_time_serialise():
    lock = threading.Lock()
    state = {"run": 0, "peak": 0, "reserved": []}
    with Parla(n_workers=6, virtual_gpus=1, gpu_memory=2**20) as p:
        rt = p.runtime
        for _ in range(5):
            @spawn(placement=gpu(0)[{"memory": 600 * 1024}])
            def m():
                with lock:
                    state["run"] += 1
                    state["peak"] = max(state["peak"], state["run"])
                    state["reserved"].append(rt.devices()[1]["memory_reserved"])
                time.sleep(0.03)
                with lock:
                    state["run"] -= 1
        rt.wait_all()
        # two of these fit together
        for _ in range(4):
            @spawn(placement=gpu(0)[{"memory": 400 * 1024}])
            def m2():
                with lock:
                    state["run"] += 1
                    state["peak2"] = max(state.get("peak2", 0), state["run"])
                time.sleep(0.05)
                with lock:
                    state["run"] -= 1
    assert state["peak"] == 1
    assert all(r == 600 * 1024 for r in state["reserved"]), state["reserved"]
    assert state["peak2"] <= 2


# --------------------------------------------------------------- invalid placements --

@pytest.mark.timeout(30)
@pytest.mark.parametrize("placement,exc,words", [
    (lambda: gpu(7), ValueError, "gpu(7)"),
    (lambda: gpu[{"vcus": 1001}], ValueError, "vcus"),
    (lambda: gpu[{"vcus": 1.5}], ValueError, "vcus"),
    (lambda: gpu(0)[{"vcus": -0.5}], ValueError, "vcus"),
    (lambda: gpu[{"memory": -1}], ValueError, "memory"),
    (lambda: [], ValueError, "empty"),
    (lambda: "gpu", TypeError, "placement"),
    (lambda: 3, TypeError, "placement"),
    (lambda: [gpu, "cpu"], TypeError, "placement"),
    (lambda: (gpu(0), gpu(0)), ValueError, "twice"),
    (lambda: gpu * 3, ValueError, "3"),
])
def test_invalid_placements_name_task(placement, exc, words):
    with Parla(virtual_gpus=2):
        T = TaskSpace("Bad")
        with pytest.raises(exc) as info:
            @spawn(T[0], placement=placement())
            def bad():
                pass
        assert "Bad[0]" in str(info.value)
        assert words in str(info.value)
        # the task id was not consumed by the failed spawn... or if it was, nothing runs; other tasks still do
        @spawn(placement=gpu)
        def ok():
            return 1
    assert ok.result == 1


@pytest.mark.timeout(30)
def test_invalid_resource_keywords():
    with Parla(virtual_gpus=1):
        with pytest.raises(ValueError, match=r"task v#\d+.*vcus"):
            @spawn(placement=gpu, vcus=2.5)
            def v():
                pass
        with pytest.raises(ValueError, match=r"task w#\d+.*memory"):
            @spawn(placement=gpu, memory=-5)
            def w():
                pass
    with pytest.raises(TypeError):
        gpu["vcus"]
    with pytest.raises(ValueError, match="unknown"):
        gpu[{"cores": 1}]
    with pytest.raises(ValueError):
        gpu * 0


@pytest.mark.timeout(30)
def test_gpu_placement_without_gpus():
    with Parla(virtual_gpus=0):
        with pytest.raises(ValueError, match=r"task g#\d+"):
            @spawn(placement=gpu)
            def g():
                pass
        with pytest.raises(ValueError, match=r"task g0#\d+.*gpu\(0\)"):
            @spawn(placement=gpu(0))
            def g0():
                pass


# --------------------------------------------------------------------------- mapping --

@pytest.mark.timeout(60)
def test_load_spreading_1000_tasks_on_4_gpus():
    with Parla(virtual_gpus=4):
        tasks = []
        for _ in range(1000):
            @spawn(placement=gpu)
            def t():
                pass
            tasks.append(t)
    counts = collections.Counter(tuple(t.devices) for t in tasks)
    assert set(counts) <= {(gpu(i),) for i in range(4)}
    for i in range(4):
        assert 200 <= counts[(gpu(i),)] <= 300, counts


@pytest.mark.timeout(60)
def test_load_spreading_with_busy_bodies():
    with Parla(n_workers=4, virtual_gpus=4):
        tasks = []
        for _ in range(200):
            @spawn(placement=gpu)
            def t():
                time.sleep(0.0005)
            tasks.append(t)
    counts = collections.Counter(tuple(t.devices) for t in tasks)
    for i in range(4):
        assert 40 <= counts[(gpu(i),)] <= 60, counts


@pytest.mark.timeout(30)
@pytest.mark.parametrize("wait_for_writer", [False, True])
def test_locality_follows_valid_copy(wait_for_writer):
    with Parla(virtual_gpus=4) as p:
        A = asarray(np.arange(1 << 16, dtype=np.float64))
        @spawn(placement=gpu(2), inout=[A])
        def writer():
            A.array[:] += 1
        if wait_for_writer:
            p.runtime.wait_all()
        @spawn(placement=gpu, input=[A])
        def reader():
            return get_current_devices(), float(A.array[5])
    devs, value = reader.result
    assert devs == [gpu(2)]
    assert reader.devices == [gpu(2)]
    reason = reader.placement_reason
    assert reason["devices"] == [gpu(2)]
    assert reason["locality"] == 1.0 and reason["transfer"] == 0.0
    assert value == 6.0


@pytest.mark.timeout(30)
def test_locality_among_alternatives_includes_cpu():
    with Parla(virtual_gpus=4) as p:
        A = asarray(np.zeros(1 << 16))
        B = asarray(np.zeros(1 << 16))
        @spawn(placement=gpu(3), output=[A])
        def wa():
            A.array[:] = 1
        @spawn(placement=gpu(1), output=[B])
        def wb():
            B.array[:] = 2
        p.runtime.wait_all()
        @spawn(placement=[cpu, gpu(0), gpu(1), gpu(2), gpu(3)], input=[A])
        def ra():
            return get_current_devices()
        @spawn(placement=[cpu, gpu], input=[B])
        def rb():
            return get_current_devices()
    assert ra.result == [gpu(3)]
    assert rb.result == [gpu(1)]


# --------------------------------------------------------------------------- devices --

@pytest.mark.timeout(30)
@pytest.mark.parametrize("n_gpus", GPU_COUNTS)
def test_get_all_devices_memory_fields(n_gpus):
    with Parla(virtual_gpus=n_gpus, gpu_memory=8 * 2**20) as p:
        devices = get_all_devices()
        assert devices == [cpu(0)] + [gpu(i) for i in range(n_gpus)]
        assert gpu.devices == [gpu(i) for i in range(n_gpus)]
        assert cpu.devices == [cpu(0)]
        assert devices[0].virtual is False and devices[0].memory_capacity > 0
        for d in devices[1:]:
            assert d.virtual is True
            assert d.memory_capacity == 8 * 2**20
            assert d.memory_resident == 0 and d.memory_reserved == 0
            assert d.memory_free == 8 * 2**20
        A = asarray(np.zeros(2**18))  # 2 MiB
        @spawn(placement=gpu(n_gpus - 1), inout=[A])
        def t():
            A.array[:] += 1
            d = gpu(n_gpus - 1)
            return d.memory_resident, d.memory_free
        p.runtime.wait_all()
        resident, free = t.result
        assert resident == 2 * 2**20 and free == 6 * 2**20
        assert gpu(n_gpus - 1).memory_resident == 2 * 2**20
        table = p.runtime.devices()
        assert len(table) == n_gpus + 1
        assert table[n_gpus]["bytes_in"] == 2 * 2**20
    # Outside a context the devices are those of a default context (as Parla.py knows them at import);
    # their live counters need a runtime.
    outside = get_all_devices()
    assert outside[0] == cpu(0)
    with pytest.raises(RuntimeError):
        outside[0].memory_capacity


@pytest.mark.timeout(30)
def test_virtual_gpus_from_env(monkeypatch):
    monkeypatch.setenv("PARLA_VIRTUAL_GPUS", "3:16MiB")
    with Parla():
        assert [d.memory_capacity for d in gpu.devices] == [16 * 2**20] * 3
    monkeypatch.delenv("PARLA_VIRTUAL_GPUS")
    with Parla(virtual_gpus=2, gpu_memory="4MiB"):
        assert [d.memory_capacity for d in gpu.devices] == [4 * 2**20] * 2


@pytest.mark.timeout(30)
def test_dev_config_file(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "devices.yaml"
    path.write_text("CPU:\n  num_cores: 2\n  mem_sz: 1GiB\nGPU:\n  num_devices: 2\n  mem_sz: 32MiB\n")
    with Parla(dev_config_file=str(path)) as p:
        assert p.runtime.num_workers == 2
        assert [d.memory_capacity for d in gpu.devices] == [32 * 2**20] * 2
        assert cpu(0).memory_capacity == 2**30


@pytest.mark.timeout(30)
def test_numpy_integer_device_indices_and_no_bools():
    """gpu(np.int64(1)) was refused ("a device index is a non-negative integer") although an index from a NumPy
    loop is the usual spelling; gpu(True) was gpu(1) once gpu(1) existed, and gpu * True was (gpu,)."""
    gpu(1)  # cached: True == 1 must not find it
    assert gpu(np.int64(1)) is gpu(1) and gpu[np.int32(0)] is gpu(0)
    assert gpu[[np.int64(0), 1]] == [gpu(0), gpu(1)]
    assert gpu * np.int64(2) == (gpu, gpu)
    for bad in (True, np.True_, 1.0):
        with pytest.raises(ValueError, match="a device index is a non-negative integer"):
            gpu(bad)
    with pytest.raises(TypeError, match="index with a device number"):
        gpu[True]
    with pytest.raises(ValueError, match="need a positive number of devices"):
        gpu * True
    with Parla(virtual_gpus=2):
        tasks = []
        for i in np.arange(4):
            @spawn(placement=gpu(i % 2))
            def body():
                return get_current_devices()
            tasks.append(body)
    assert [t.result for t in tasks] == [[gpu(0)], [gpu(1)], [gpu(0)], [gpu(1)]]
