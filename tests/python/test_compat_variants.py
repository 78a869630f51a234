"""specialize from parla.tasks and variant() with parla-experimental's keywords."""
import pytest

from parla import Parla, spawn
from parla.devices import cpu, gpu
from parla.tasks import specialize

pytestmark = pytest.mark.timeout(20)


def test_variant_keywords():
    @specialize
    def f():
        return "default"

    @f.variant(architecture=gpu, max_amount=2)
    def f_gpu():
        return "gpu"

    @f.variant(spec_list=[(cpu, gpu)])
    def f_mix():
        return "mix"

    @f.variant(spec_list=gpu, override=True)
    def f_one():
        return "one gpu"

    with pytest.raises(ValueError, match="override"):
        f.variant(gpu * 2)(lambda: None)
    with pytest.raises(TypeError):
        f.variant(gpu, architecture=gpu)
    with pytest.raises(ValueError, match="max_amount"):
        f.variant(architecture=gpu, max_amount=0)

    with Parla(virtual_gpus=2):
        tasks = {p: spawn(placement=[p])(lambda: f()) for p in (cpu, gpu, gpu * 2, (cpu, gpu))}
    assert {repr(k): t.result for k, t in tasks.items()} == {
        "cpu": "default", "gpu": "one gpu", "(gpu, gpu)": "gpu", "(cpu, gpu)": "mix"}
