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
