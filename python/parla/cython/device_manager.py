"""Compatibility module for ``parla.cython.device_manager``: the architectures ``cpu``, ``gpu`` (also
``cuda``, its other name there) and the device list. parla-experimental's ``PyDeviceManager`` internals do
not exist; :func:`get_all_devices` gives the devices."""
from ..devices import cpu, get_all_devices, gpu

cuda = gpu

__all__ = ["cpu", "gpu", "cuda", "get_all_devices"]
