"""The CUDA memory switches: ``Parla(pin_host_memory=..., memory_pool=...)`` and ``PARLA_PIN_HOST_MEMORY`` /
``PARLA_MEMORY_POOL`` reach the engine's configuration; bad values are refused naming the setting. (What
the switches do on the CUDA path is tested in C on the driver double: tests/c/test_cuda_path.c.)"""
import pytest

from parla import Parla, _config


def test_defaults_leave_the_engine_default(monkeypatch):
    monkeypatch.delenv("PARLA_PIN_HOST_MEMORY", raising=False)
    monkeypatch.delenv("PARLA_MEMORY_POOL", raising=False)
    _, config = _config.engine_settings(None, {})
    assert "pin_host_memory" not in config and "memory_pool" not in config


def test_arguments_and_environment(monkeypatch):
    monkeypatch.setenv("PARLA_PIN_HOST_MEMORY", "off")
    monkeypatch.setenv("PARLA_MEMORY_POOL", "1")
    _, config = _config.engine_settings(None, {})
    assert config["pin_host_memory"] is False and config["memory_pool"] is True
    # An argument wins over the environment.
    _, config = _config.engine_settings(None, {"pin_host_memory": True, "memory_pool": False})
    assert config["pin_host_memory"] is True and config["memory_pool"] is False


def test_bad_values_name_the_setting(monkeypatch):
    monkeypatch.setenv("PARLA_MEMORY_POOL", "maybe")
    with pytest.raises(ValueError, match="PARLA_MEMORY_POOL"):
        _config.engine_settings(None, {})
    monkeypatch.delenv("PARLA_MEMORY_POOL")
    with pytest.raises(TypeError, match="pin_host_memory"):
        _config.engine_settings(None, {"pin_host_memory": "no"})


def test_a_context_starts_with_them_off():
    # Without a GPU the switches change nothing visible; the engine accepts them and runs tasks.
    with Parla(pin_host_memory=False, memory_pool=False, virtual_gpus=1) as p:
        assert p.runtime is not None


def test_device_memory_from_the_pool_is_counted():
    # Runtime.device_alloc (parla_device_alloc): memory from a GPU's pool, in its account like data copies.
    from parla import _core
    rt = _core.Runtime(1, virtual_gpus=1, gpu_memory=1 << 20)
    try:
        ptr = rt.device_alloc(1, 4096)
        assert ptr != 0
        assert rt.devices()[1]["memory_resident"] == 4096
        with pytest.raises(ValueError, match="do not fit"):
            rt.device_alloc(1, 1 << 20)
        with pytest.raises(ValueError, match="CPU"):
            rt.device_alloc(0, 64)
        rt.device_free(1, ptr, 4096)
        assert rt.devices()[1]["memory_resident"] == 0
    finally:
        rt.close()
