"""The tutorial lessons and the mini-apps of examples/, on small sizes, with their result checks.

Lessons run as programs (a subprocess each, as a user runs them); they assert what they show, so exit
status 0 means every claim held. The mini-apps are imported and their main(argv) called with and without
virtual GPUs; main returns the verification values, checked here.
"""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import clean_env

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
TUTORIAL = EXAMPLES / "tutorial"
_VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PYTHON = str(_VENV_PYTHON) if _VENV_PYTHON.exists() else sys.executable

LESSONS = sorted(p.name for p in TUTORIAL.glob("[0-9][0-9]_*.py"))


def _load(name):
    """Imports examples/<name>.py as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(args, timeout, **env):
    return subprocess.run([PYTHON, *args], capture_output=True, text=True, timeout=timeout,
                          env=clean_env(**env), cwd=str(REPO))


# --- tutorial --------------------------------------------------------------------------------------------------

@pytest.mark.timeout(5)
def test_tutorial_is_complete():
    expected = ["01_hello", "02_dependencies", "03_out_of_order", "04_async_await", "05_errors", "06_devices",
                "07_parray", "08_subarrays", "09_variants", "10_tracing", "11_sharing_and_barriers",
                "12_partitioning"]
    assert [name[:-3] for name in LESSONS] == expected
    readme = (TUTORIAL / "README.md").read_text()
    for name in LESSONS:
        assert name in readme, f"{name} is not explained in examples/tutorial/README.md"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("lesson", LESSONS)
def test_tutorial_lesson_runs(lesson, tmp_path):
    args = [str(TUTORIAL / lesson)]
    if lesson.startswith("10_"):
        args += ["--out", str(tmp_path)]
    result = _run(args, timeout=25)
    assert result.returncode == 0, f"{lesson} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    number = int(lesson[:2])
    assert f"lesson {number} OK" in result.stdout
    if lesson.startswith("10_"):
        assert (tmp_path / "run.json").exists() and (tmp_path / "run.dot").exists()
        assert "critical path" in result.stdout   # the summary printed at exit


# --- mini-apps, called in this process -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def jacobi():
    return _load("jacobi")


@pytest.fixture(scope="module")
def matmul():
    return _load("matmul")


@pytest.fixture(scope="module")
def reduction():
    return _load("reduction")


@pytest.mark.timeout(20)
@pytest.mark.parametrize("gpus,placement,partitions", [(0, "round-robin", 4), (2, "round-robin", 5),
                                                       (2, "any", 6), (3, "round-robin", 1)])
def test_jacobi(jacobi, gpus, placement, partitions):
    out = jacobi.main(["--n", "66", "--partitions", str(partitions), "--iterations", "12", "--workers", "2",
                       "--virtual-gpus", str(gpus), "--placement", placement, "--quiet"])
    assert out["ok"] is True
    assert out["max_error"] <= 1e-12
    assert out["tasks"] == 12 * partitions + (12 * partitions if partitions > 1 else 0)   # sweeps + halo refreshes
    used = sorted({d for devices in out["devices"].values() for d in devices})
    if placement == "round-robin":
        expected = ["cpu(0)"] + [f"gpu({i})" for i in range(gpus)]
        assert used == sorted(expected[:partitions])
        assert all(len(devices) == 1 for devices in out["devices"].values())


@pytest.mark.timeout(20)
@pytest.mark.parametrize("gpus,placement,partitions", [(0, "round-robin", 4), (2, "round-robin", 5), (2, "any", 6)])
def test_jacobi_replayed_equals_spawned(jacobi, gpus, placement, partitions):
    # The replayed variant (iteration 0 captured, the others replayed) gives the spawned variant's grid to
    # the last bit, and both the NumPy reference's.
    grid = jacobi.make_grid(34, seed=3)
    results = []
    for replay in (False, True):
        with jacobi.Parla(n_workers=2, virtual_gpus=gpus):
            state = jacobi.jacobi_parla(grid, 9, partitions, placement, replay=replay)
        results.append(jacobi.assemble(grid, state["bands"], state["bounds"]))
        assert len(state["sweep"]) == (1 if replay else 9) * partitions   # replays are not named in TaskSpaces
    assert jacobi.np.array_equal(results[0], results[1])
    assert jacobi.np.allclose(results[1], jacobi.jacobi_reference(grid, 9), rtol=0.0, atol=1e-12)
    assert not jacobi.np.array_equal(results[1], grid)


@pytest.mark.timeout(10)
def test_jacobi_reference_changes_the_grid(jacobi):
    # Guards the check itself: the reference must actually relax the interior (a no-op would compare equal
    # to a runtime that did nothing) and keep the boundary.
    grid = jacobi.make_grid(20)
    after = jacobi.jacobi_reference(grid, 3)
    assert not jacobi.np.allclose(after[1:-1, 1:-1], grid[1:-1, 1:-1])
    assert jacobi.np.array_equal(after[0], grid[0]) and jacobi.np.array_equal(after[:, -1], grid[:, -1])


@pytest.mark.timeout(20)
@pytest.mark.parametrize("gpus", [0, 2])
@pytest.mark.parametrize("mode", ["tile", "chain"])
def test_matmul(matmul, gpus, mode):
    out = matmul.main(["--m", "80", "--k", "72", "--n", "96", "--block", "32", "--mode", mode, "--workers", "2",
                       "--virtual-gpus", str(gpus), "--quiet"])
    assert out["ok"] is True
    assert out["max_rel_error"] < 1e-12
    c_tiles = 3 * 3                       # 80 and 96 in tiles of 32: 3 x 3 C tiles; k = 72: 3 products each
    assert out["tasks"] == (c_tiles if mode == "tile" else c_tiles * 3)
    assert sum(out["devices"].values()) == out["tasks"]


@pytest.mark.timeout(20)
def test_matmul_round_robin_uses_every_device(matmul):
    out = matmul.main(["--n", "64", "--block", "16", "--placement", "round-robin", "--workers", "2",
                       "--virtual-gpus", "3", "--quiet"])
    assert out["ok"] is True
    assert out["devices"] == {"cpu(0)": 4, "gpu(0)": 4, "gpu(1)": 4, "gpu(2)": 4}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("gpus", [0, 2])
@pytest.mark.parametrize("mode", ["await", "parray"])
@pytest.mark.parametrize("chunks", [1, 7, 16])
def test_reduction(reduction, gpus, mode, chunks):
    out = reduction.main(["--n", "20000", "--chunks", str(chunks), "--mode", mode, "--workers", "2",
                          "--virtual-gpus", str(gpus), "--quiet"])
    assert out["ok"] is True
    assert out["rel_error"] <= 1e-12
    assert out["leaves"] == chunks
    assert out["combines"] == chunks - 1
    assert out["levels"] == {1: 0, 7: 3, 16: 4}[chunks]


@pytest.mark.timeout(20)
def test_reduction_any_placement(reduction):
    out = reduction.main(["--n", "5000", "--chunks", "9", "--mode", "parray", "--placement", "any",
                          "--workers", "2", "--virtual-gpus", "3", "--quiet"])
    assert out["ok"] is True and out["rel_error"] <= 1e-12


# --- mini-apps as programs -----------------------------------------------------------------------------------

@pytest.mark.timeout(30)
@pytest.mark.parametrize("script,args", [
    ("jacobi.py", ["--n", "40", "--partitions", "3", "--iterations", "5"]),
    ("matmul.py", ["--n", "64", "--block", "32"]),
    ("reduction.py", ["--n", "10000", "--chunks", "5"]),
])
def test_mini_app_script_exits_zero(script, args, tmp_path):
    trace = tmp_path / "trace.json"
    result = _run([str(EXAMPLES / script), *args, "--virtual-gpus", "2", "--workers", "2", "--trace", str(trace)],
                  timeout=25)
    assert result.returncode == 0, f"{script}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert "OK" in result.stdout and "MISMATCH" not in result.stdout
    assert trace.exists()
