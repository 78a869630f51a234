"""Engine settings from ``Parla()``'s arguments, Parla's ``dev_config_file`` and the ``PARLA_*`` environment
variables: sizes (``"256MiB"``), worker counts, virtual GPUs. Pure functions of their inputs and the
environment; errors are ValueError naming the setting (TypeError for a wrong kind of value).
"""
from __future__ import annotations

import os
import re
import warnings
from typing import Any, Dict, Optional, Tuple

__all__ = ["parse_size", "engine_settings", "virtual_gpus_from_env", "env_int", "env_switch"]


MAX_WORKERS = 4096  # PARLA_MAX_WORKERS of include/parla.h


def env_int(name: str) -> Optional[int]:
    """The positive integer in environment variable name, None when unset or empty. ValueError otherwise."""
    text = os.environ.get(name)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a positive integer") from None
    if value <= 0:
        raise ValueError(f"{name}={text!r} is not a positive integer")
    return value


_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


def env_switch(name: str) -> Optional[bool]:
    """The on/off value of environment variable name (1/true/yes/on, 0/false/no/off; any case), None when unset
    or empty. ValueError otherwise."""
    text = os.environ.get(name, "").strip().lower()
    if text == "":
        return None
    if text in _ON:
        return True
    if text in _OFF:
        return False
    raise ValueError(f"{name}={os.environ[name]!r}: expected 1 or 0 (true/false, yes/no, on/off)")


def _switch(options: Dict[str, Any], key: str, env: str) -> Optional[bool]:
    """Parla(key=...) (a bool), else the environment variable env, else None (the engine's default: on)."""
    value = options.get(key)
    if value is None:
        return env_switch(env)
    if not isinstance(value, bool):
        raise TypeError(f"Parla({key}={value!r}): expected True or False")
    return value


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: Any, what: str) -> int:
    """Bytes from an int or a string like ``"256MiB"``, ``"1GB"``, ``"4096"``. Raises ValueError naming what."""
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise ValueError(f"{what}={text!r} is not a size (examples: 268435456, '256MiB', '1GB')")
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.match(text)
        if not match:
            raise ValueError(f"{what}={text!r} is not a size (examples: 268435456, '256MiB', '1GB')")
        value = int(float(match.group(1)) * _UNITS[(match.group(2) or "B").lower()])
    if not 0 < value < 2**63:
        raise ValueError(f"{what}={text!r} must be between 1 byte and 2**63 bytes")
    return value


def cupy_memory_from_env() -> Optional[int]:
    """PARLA_CUPY_MEMORY: the bytes CuPy may take in a CUDA GPU task that reserved no memory= (unset or empty:
    None, no limit). ValueError when it is not a byte count; checked when a context is entered, so that a bad
    value is reported there and not first in a GPU task's body."""
    text = os.environ.get("PARLA_CUPY_MEMORY", "").strip()
    return parse_size(text, "PARLA_CUPY_MEMORY") if text else None


def virtual_gpus_from_env() -> Dict[str, Any]:
    text = os.environ.get("PARLA_VIRTUAL_GPUS", "").strip()
    if not text:
        return {}
    count, _, size = text.partition(":")
    try:
        n = int(count)
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError(f"PARLA_VIRTUAL_GPUS={text!r}: expected N or N:SIZE, e.g. 4 or 4:256MiB")
    out: Dict[str, Any] = {"virtual_gpus": n}
    if size:
        out["gpu_memory"] = parse_size(size, "PARLA_VIRTUAL_GPUS size")
    return out


def _positive(value: Any, what: str, zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1):
        raise ValueError(f"{what}={value!r} must be an integer >= {0 if zero else 1}")
    return value


def _read_dev_config(path: str) -> Dict[str, int]:
    """Reads a Parla ``dev_config_file`` (YAML: ``CPU: {num_cores, mem_sz}``, ``GPU: {num_devices, mem_sz}``)."""
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a declared dependency of the yaml extra
        raise ImportError("reading dev_config_file needs PyYAML: pip install pyyaml") from None
    with open(path) as f:
        config = yaml.safe_load(f) or {}
    if not isinstance(config, dict):
        raise ValueError(f"dev_config_file {path!r}: expected a mapping with CPU and GPU sections")
    out: Dict[str, int] = {}
    cpu_section = config.get("CPU") or {}
    gpu_section = config.get("GPU") or {}
    for name, section in (("CPU", cpu_section), ("GPU", gpu_section)):
        if not isinstance(section, dict):
            raise ValueError(f"dev_config_file {path!r}: {name} must be a mapping like "
                             f"{{num_devices: 2, mem_sz: 1GiB}}, not {section!r}")
    if "num_cores" in cpu_section:
        out["n_workers"] = _positive(cpu_section["num_cores"], f"{path}: CPU.num_cores")
    if "mem_sz" in cpu_section:
        out["cpu_memory"] = parse_size(cpu_section["mem_sz"], "CPU.mem_sz")
    if "num_devices" in gpu_section:
        out["virtual_gpus"] = _positive(gpu_section["num_devices"], f"{path}: GPU.num_devices", zero=True)
    if "mem_sz" in gpu_section:
        sizes = gpu_section["mem_sz"]
        if isinstance(sizes, list):  # parla-experimental: one size per GPU
            n = out.get("virtual_gpus", len(sizes))
            if len(sizes) != n or not sizes:
                raise ValueError(f"dev_config_file {path!r}: GPU.mem_sz lists {len(sizes)} sizes for "
                                 f"{n} GPUs (num_devices)")
            parsed = [parse_size(x, f"GPU.mem_sz[{i}]") for i, x in enumerate(sizes)]
            if len(set(parsed)) > 1:
                warnings.warn(f"dev_config_file {path!r}: GPU.mem_sz differs per GPU {parsed}; every virtual GPU "
                              f"gets the smallest, {min(parsed)} bytes", stacklevel=5)
            out["gpu_memory"] = min(parsed)
        else:
            out["gpu_memory"] = parse_size(sizes, "GPU.mem_sz")
    return out


def engine_settings(n_workers: Any, options: Dict[str, Any]) -> Tuple[int, Dict[str, Any]]:
    """The worker count (0: the engine's default) and the keyword arguments of ``parla._core.Runtime`` for a
    context made with ``Parla(n_workers, **options)``: ``dev_config_file`` first, then ``PARLA_VIRTUAL_GPUS``,
    then the ``virtual_gpus``/``gpu_memory`` arguments; ``n_workers``, else the file's ``CPU.num_cores``,
    else ``PARLA_NUM_THREADS``. CUDA memory: ``pin_host_memory`` (else ``PARLA_PIN_HOST_MEMORY``) and
    ``memory_pool`` (else ``PARLA_MEMORY_POOL``), on unless turned off; ``PARLA_CUPY_MEMORY`` is checked. Raises
    ValueError for a bad value,
    naming it; TypeError for a switch that is not a bool, or a dev_config_file that is not a path."""
    config: Dict[str, Any] = {}
    path = options.get("dev_config_file")
    if path is not None and path != "":
        # open() takes an int as a file descriptor: dev_config_file=5 would read, then close, the program's fd 5.
        if not isinstance(path, (str, bytes, os.PathLike)):
            raise TypeError(f"dev_config_file={path!r}: expected a path to a YAML file")
        config.update(_read_dev_config(os.fsdecode(path)))
    config.update(virtual_gpus_from_env())
    cupy_memory_from_env()  # read again by each GPU task (parla._cuda)
    if options.get("virtual_gpus") is not None:
        n_gpus = options["virtual_gpus"]
        if isinstance(n_gpus, bool) or not isinstance(n_gpus, int) or not 0 <= n_gpus <= 63:
            raise ValueError(f"Parla(virtual_gpus={n_gpus!r}): expected a number of GPUs from 0 to 63")
        config["virtual_gpus"] = n_gpus
    if options.get("gpu_memory") is not None:
        config["gpu_memory"] = parse_size(options["gpu_memory"], "gpu_memory")
    for key, env in (("pin_host_memory", "PARLA_PIN_HOST_MEMORY"), ("memory_pool", "PARLA_MEMORY_POOL")):
        value = _switch(options, key, env)
        if value is not None:
            config[key] = value
    n = n_workers or config.pop("n_workers", None) or env_int("PARLA_NUM_THREADS") or 0
    config.pop("n_workers", None)
    if isinstance(n, int) and n > MAX_WORKERS:  # the engine's own check takes a C int
        raise ValueError(f"n_workers={n} is more than the limit of {MAX_WORKERS}")
    return n, config
