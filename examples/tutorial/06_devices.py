"""Lesson 6: placing tasks on devices (CPU and GPUs), and sharing a device with vcus.

`placement=` says where a task may run:

- an architecture: `cpu` or `gpu` (any GPU);
- one device: `gpu(1)`;
- a list of alternatives: `[cpu, gpu]` (the runtime picks one, looking at data locality and load);
- a tuple: `(gpu(0), gpu(1))`, one task that gets both devices at once.

Inside the body, `get_current_devices()` says where the task actually runs. `placement_reason` on the task
records why the runtime chose that device.

Resources: `vcus` is the fraction of a device a task needs (1.0 = the whole device), given as `vcus=0.5` or
in the placement: `gpu(0)[{"vcus": 0.5}]`. Tasks run on a device only while their fractions fit, so at most
two tasks of 0.5 share a device at any moment. (`memory=` bytes works the same way.)

This lesson needs no GPU: `Parla(virtual_gpus=2)` adds two virtual GPUs, devices of the `gpu` architecture
whose memory is host memory. The same program runs on real GPUs without change.

    python examples/tutorial/06_devices.py
"""
from typing import List

import threading
import time

from parla import Parla, get_current_devices, spawn
from parla.devices import Device, cpu, get_all_devices, gpu


def main() -> None:
    with Parla(n_workers=4, virtual_gpus=2):
        devices = get_all_devices()
        print("devices of this runtime:", devices)
        assert devices == [cpu(0), gpu(0), gpu(1)]
        assert all(d.virtual for d in gpu.devices)

        @spawn(placement=cpu)
        def on_cpu() -> List[Device]:
            return get_current_devices()

        @spawn(placement=gpu(1))
        def on_gpu1() -> List[Device]:
            return get_current_devices()

        @spawn(placement=gpu)
        def on_any_gpu() -> List[Device]:
            return get_current_devices()

        @spawn(placement=[cpu, gpu])
        def anywhere() -> List[Device]:
            return get_current_devices()

        @spawn(placement=(gpu(0), gpu(1)))
        def on_both() -> List[Device]:
            return get_current_devices()

        # vcus: six tasks of half a GPU each, all on gpu(0). Count how many run at the same time.
        lock = threading.Lock()
        running = [0]
        peak = [0]

        def half_gpu() -> List[Device]:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1
            return get_current_devices()

        halves = [spawn(placement=gpu(0)[{"vcus": 0.5}])(half_gpu) for _ in range(6)]

    print("placement=cpu           ran on", on_cpu.result)
    print("placement=gpu(1)        ran on", on_gpu1.result)
    print("placement=gpu           ran on", on_any_gpu.result)
    print("placement=[cpu, gpu]    ran on", anywhere.result, "because", anywhere.placement_reason)
    print("placement=(gpu0, gpu1)  ran on", on_both.result)
    print(f"six tasks with vcus=0.5 on gpu(0): at most {peak[0]} ran at once")

    assert on_cpu.result == [cpu(0)]
    assert on_gpu1.result == [gpu(1)]
    assert on_any_gpu.result[0] in (gpu(0), gpu(1))
    assert anywhere.result[0] in (cpu(0), gpu(0), gpu(1))
    assert on_both.result == [gpu(0), gpu(1)]
    assert all(task.result == [gpu(0)] for task in halves)
    assert 1 <= peak[0] <= 2, "two halves fill the device"
    assert get_current_devices() == [cpu(0)]     # outside any task: the CPU


if __name__ == "__main__":
    main()
    print("lesson 6 OK")
