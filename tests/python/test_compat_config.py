"""Configuration spellings: Parla(logfile=...), the device YAML with per-device mem_sz lists."""
import json

import pytest

from parla import Parla, spawn
from parla.devices import gpu

pytestmark = pytest.mark.timeout(30)

SAMPLE = """CPU:
  num_cores: !!int 2
  mem_sz: !!int 180000000
GPU:
  num_devices: 3
  mem_sz: [!!int 11000000, !!int 11000000, !!int 11000000]
"""


def test_yaml_mem_sz_list(tmp_path):
    path = tmp_path / "devices.YAML"
    path.write_text(SAMPLE)
    with Parla(dev_config_file=str(path)):
        assert [d.memory_capacity for d in gpu.devices] == [11000000] * 3


def test_yaml_mem_sz_list_checks(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(SAMPLE.replace("num_devices: 3", "num_devices: 2"))
    with pytest.raises(ValueError, match="3 sizes for 2 GPUs"):
        with Parla(dev_config_file=str(path)):
            pass
    path.write_text(SAMPLE.replace("[!!int 11000000, !!int 11000000", "[!!int 5000000, !!int 11000000"))
    with pytest.warns(UserWarning, match="smallest"):
        with Parla(dev_config_file=str(path)):
            assert [d.memory_capacity for d in gpu.devices] == [5000000] * 3


def test_logfile_writes_the_trace(tmp_path):
    log = tmp_path / "run.blog"
    with Parla(n_workers=1, logfile=str(log)):
        spawn()(lambda: None)
    assert "traceEvents" in json.loads(log.read_text())
    with pytest.raises(TypeError, match="logfile"):
        Parla(logfile=3)


def test_dev_config_file_must_be_a_path(tmp_path):
    """Parla(dev_config_file=5) used to open and then close file descriptor 5 (open() takes an int as a
    descriptor), an unrelated file of the program, and report "Bad file descriptor" or a YAML error."""
    import os
    read_end, write_end = os.pipe()
    try:
        for bad in (read_end, True, 2.5, ["a.yaml"]):
            with pytest.raises(TypeError, match=r"dev_config_file=.*expected a path to a YAML file"):
                Parla(dev_config_file=bad).__enter__()
        os.write(write_end, b"still open")
        assert os.read(read_end, 10) == b"still open"
    finally:
        os.close(read_end)
        os.close(write_end)
    path = tmp_path / "devices.yaml"
    path.write_text(SAMPLE)
    with Parla(dev_config_file=path):  # a PathLike works as a str does
        assert len(gpu.devices) == 3
