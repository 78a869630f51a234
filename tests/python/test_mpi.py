"""Distributed programs (parla.mpi) under mpirun with 2 ranks and with 4 (--oversubscribe on small machines).

Each test starts one mpirun of tests/python/mpi/programs.py and reads what every rank printed. Skipped, with
the reason, when mpirun or mpi4py is missing (make test installs both: Debian's OpenMPI and mpi4py).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

import parla._core  # noqa: F401  (an editable install rebuilds the extension here, not in every rank at once)
from conftest import REPO, clean_env

PROGRAMS = REPO / "tests" / "python" / "mpi" / "programs.py"
MPIRUN = shutil.which("mpirun")


def _mpi4py_missing():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return True
    return False


pytestmark = [
    pytest.mark.skipif(os.environ.get("PARLA_SKIP_MPI_TESTS", "") not in ("", "0"),
                       reason="PARLA_SKIP_MPI_TESTS is set (make test runs them on the main Python only)"),
    pytest.mark.skipif(MPIRUN is None, reason="mpirun not found (Debian: apt-get install openmpi-bin libopenmpi-dev)"),
    pytest.mark.skipif(_mpi4py_missing(), reason="mpi4py is not installed (pip install 'parla-c[mpi]')"),
]


def _env(**extra):
    # mpirun refuses root without these; the test machines run as root. No BLAS threads: ranks share cores.
    return clean_env(OMPI_ALLOW_RUN_AS_ROOT=1, OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1, OMPI_MCA_rmaps_base_oversubscribe=1,
                     OPENBLAS_NUM_THREADS=1, OMP_NUM_THREADS=1, **extra)


def mpirun(n, *args, timeout=60, out_dir=None, **env):
    """Runs the program on n ranks. With out_dir, the ranks write their result lines there
    (PARLA_MPI_TEST_OUT) and ``.lines`` of the result holds them all (mpirun interleaves stdout)."""
    cmd = [MPIRUN, "-n", str(n), "--oversubscribe", sys.executable, *map(str, args)]
    if out_dir is not None:
        env["PARLA_MPI_TEST_OUT"] = str(out_dir)
    # A session of its own: on a timeout the whole job (mpirun, its daemons, every rank) is killed, not only
    # mpirun, so no rank outlives the test.
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(**env),
                             cwd=str(REPO), start_new_session=True)
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        stdout, stderr = child.communicate()
        pytest.fail(f"{' '.join(cmd)} did not finish within {timeout} s:\n{stdout[-3000:]}\n{stderr[-3000:]}")
    proc = subprocess.CompletedProcess(cmd, child.returncode, stdout, stderr)
    proc.lines = "".join(p.read_text() for p in sorted(out_dir.glob("rank*.txt"))) if out_dir is not None else ""
    return proc


def results(output):
    """{(scenario, rank): details or None for FAIL}."""
    out = {}
    for m in re.finditer(r"^(OK|FAIL) (\w+) rank=(\d+) ?(.*)$", output, re.M):
        out[m.group(2), int(m.group(3))] = json.loads(m.group(4)) if m.group(1) == "OK" else m.group(4)
    return out


SUITE = ("basic", "cholesky", "cholesky_equal", "cholesky_virtual_gpus", "jacobi", "random", "owns_nothing", "nothing_at_all",
         "remote_deps", "two_contexts", "nested")


@pytest.mark.timeout(200)
@pytest.mark.parametrize("n", [2, 4])
def test_suite(n, tmp_path):
    """Owner computes with one send/receive; tiled Cholesky (residual, and bit-equal to one process) and Jacobi
    (equal to one process) on 2-D block-cyclic tiles; random programs against a sequential model; a rank that
    owns nothing; explicit dependencies across ranks (order checked on rank 0); two contexts in a row; task
    bodies cannot spawn distributed tasks (but can spawn local ones)."""
    proc = mpirun(n, PROGRAMS, "suite", timeout=180, out_dir=tmp_path)
    found = results(proc.lines)
    failed = {k: v for k, v in found.items() if not isinstance(v, dict)}
    assert not failed, f"{failed}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    missing = [(s, r) for s in SUITE for r in range(n) if (s, r) not in found]
    assert not missing, f"missing {missing}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Every rank counted the same transfers; what was sent equals what was received.
    basic = [found["basic", r] for r in range(n)]
    assert sum(b["messages_sent"] for b in basic) == sum(b["messages_received"] for b in basic) == 3
    assert {b["transfers_total"] for b in basic} == {3}
    assert found["cholesky", 0]["residual"] < 1e-12
    # The rank that owns nothing sent and received nothing, and ran nothing.
    assert found["nothing_at_all", n - 1]["tasks_run"] == 0
    # One signal per (remote dependency, rank): every one sent was received.
    deps = [found["remote_deps", r] for r in range(n)]
    assert sum(d["signals_sent"] for d in deps) == sum(d["signals_received"] for d in deps) == \
        deps[0]["expected_signals"] > 0, deps
    assert found["nested", 0]["errors"] == 3
    assert [found["two_contexts", r]["second"] for r in range(n)] == [1] + [0] * (n - 1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("n", [2, 4])
def test_failure_on_one_rank_stops_every_rank(n, tmp_path):
    proc = mpirun(n, PROGRAMS, "failure", timeout=50, out_dir=tmp_path)
    caught = dict(re.findall(r"^CAUGHT rank=(\d+) (.*)$", proc.lines, re.M))
    assert sorted(caught) == [str(r) for r in range(n)], proc.stdout + proc.stderr[-3000:]
    assert caught["1"].startswith("ValueError boom at 13"), caught
    assert "on MPI rank 1" in caught["1"], caught
    for r in range(n):
        if r != 1:
            assert caught[str(r)].startswith("RemoteTaskError from=1 rank 1, task T[13]: ValueError: boom at 13"), caught
    # No distributed context can start after a failed one: a clear error on every rank, not a hang.
    second = dict(re.findall(r"^SECOND rank=(\d+) (.*)$", proc.lines, re.M))
    assert sorted(second) == [str(r) for r in range(n)], proc.lines
    for r in range(n):
        assert second[str(r)].startswith("RuntimeError no distributed context can start after a failed one (rank 1, "
                                         "task T[13]"), second
    assert proc.returncode != 0  # a job with a failure ends with MPI_Abort


@pytest.mark.timeout(60)
def test_failure_outside_tasks_stops_every_rank(tmp_path):
    proc = mpirun(2, PROGRAMS, "failure_outside", timeout=50, out_dir=tmp_path)
    caught = dict(re.findall(r"^CAUGHT rank=(\d+) (.*)$", proc.lines, re.M))
    assert caught.get("1", "").startswith("KeyError"), proc.stdout + proc.stderr[-2000:]
    assert caught.get("0", "").startswith("RemoteTaskError from=1 rank 1: the program raised KeyError"), caught
    assert proc.returncode != 0


MISMATCHES = {
    # scenario: (step, what the odd rank runs, what the others run) for n ranks (programs.py's mismatch_*)
    "mismatch_wait": lambda n: (5, n - 1, f"task T[2] on rank {n - 1} (input x)", f"task T[3] on rank {n - 1} (inout y)"),
    "mismatch_order": lambda n: (3, 1, f"task T[1] on rank {n - 1} (inout q)", "task T[0] on rank 0 (inout p)"),
    "mismatch_count": lambda n: (7, n - 1, f"task one_more on rank {n - 1} (inout z)", "the end of the Parla block"),
    "mismatch_array": lambda n: (1, 1, "DistArray D0 (id 0, owner 1, shape (1,), dtype <f8)",
                                 "DistArray x (id 0, owner 0, shape (4,), dtype <f8)"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scenario,n", [("mismatch_wait", 2), ("mismatch_wait", 4), ("mismatch_order", 4),
                                        ("mismatch_count", 2), ("mismatch_array", 4)])
def test_ranks_running_different_programs_stop_with_an_error(scenario, n, tmp_path):
    """Ranks that do not run the same program (a task more in the middle, waited for: it would wait for ever;
    two tasks in another order; one task more at the end; one DistArray more) all stop, each with the same
    ProgramMismatchError naming the first differing step and what it is on which ranks."""
    proc = mpirun(n, PROGRAMS, scenario, timeout=50, out_dir=tmp_path)
    caught = dict(re.findall(r"^CAUGHT rank=(\d+) (.*)$", proc.lines, re.M))
    assert sorted(caught) == [str(r) for r in range(n)], proc.stdout + proc.stderr[-3000:]
    assert len(set(caught.values())) == 1, caught   # the same error on every rank
    step, odd, odd_step, other_step = MISMATCHES[scenario](n)
    others = [r for r in range(n) if r != odd]
    label = f"rank {others[0]}" if len(others) == 1 else f"ranks {', '.join(map(str, others))}"
    text = caught["0"]
    assert text.startswith(f"ProgramMismatchError step={step} the ranks do not run the same distributed program: "
                           f"step {step} "), text
    assert f"rank {odd}: {odd_step}" in text, text
    assert f"{label}: {other_step}" in text, text
    assert proc.returncode != 0


@pytest.mark.timeout(60)
def test_rank_opening_fewer_contexts_is_named(tmp_path):
    """The last rank opens one distributed context fewer and ends: the others, waiting at that context's entry,
    raise an error naming it (its departure message at exit), and the job ends."""
    proc = mpirun(4, PROGRAMS, "mismatch_contexts", timeout=50, out_dir=tmp_path)
    caught = dict(re.findall(r"^CAUGHT rank=(\d+) (.*)$", proc.lines, re.M))
    assert sorted(caught) == ["0", "1", "2"], proc.stdout + proc.stderr[-3000:]
    for r, text in caught.items():
        assert text == (f"RuntimeError rank 3 ended its program after 1 distributed context(s); rank {r} is entering "
                        f"context #1: the ranks do not run the same program"), caught
    assert proc.returncode != 0


@pytest.mark.timeout(60)
def test_long_task_is_a_stall_not_a_divergence(tmp_path):
    """A long task before a send (2.5 s, with PARLA_MPI_STALL_WARN=1): the waiting rank names the request on
    stderr, and the program completes with the right values (long tasks are never taken for a divergence)."""
    proc = mpirun(2, PROGRAMS, "slow_peer", timeout=50, out_dir=tmp_path, PARLA_MPI_STALL_WARN=1)
    found = results(proc.lines)
    assert found.get(("slow_peer", 0)) == {"y": 2.0} and found.get(("slow_peer", 1)) == {"y": 2.0}, \
        proc.lines + proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"rank 1: task 'recv x@1 from 0' has waited 1 s for MPI \(the receive from rank 0", proc.stderr), \
        proc.stderr[-3000:]


@pytest.mark.timeout(60)
def test_ctrl_c_under_mpirun_stops_every_rank():
    cmd = [MPIRUN, "-n", "2", "--oversubscribe", sys.executable, str(PROGRAMS), "forever"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            cwd=str(REPO), start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        line = ""
        while "READY" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert "READY" in line, proc.stderr.read() if proc.poll() is not None else "no READY"
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    # No rank is left behind.
    left = subprocess.run(["pgrep", "-f", f"{PROGRAMS} forever"], capture_output=True, text=True).stdout.split()
    assert not left, left


@pytest.mark.timeout(60)
def test_trace_per_rank_merges_into_one_timeline(tmp_path):
    base = tmp_path / "run.json"
    proc = mpirun(2, PROGRAMS, "trace", timeout=50, PARLA_MPI_TEST_TRACE=str(base))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    for r in range(2):
        assert (tmp_path / f"run.rank{r}.json").exists()
        assert (tmp_path / f"run.rank{r}.mpi.json").exists()
    merged = tmp_path / "merged.json"
    out = subprocess.run([sys.executable, "-m", "parla.mpi.trace", "merge", str(base), "-o", str(merged)],
                         capture_output=True, text=True, timeout=30, env=clean_env(), cwd=str(REPO))
    assert out.returncode == 0, out.stderr
    events = json.loads(merged.read_text())["traceEvents"]
    names = {e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    assert any(n.startswith("rank 0") for n in names) and any(n.startswith("rank 1") for n in names), names
    starts = [e for e in events if e.get("ph") == "s" and e.get("cat") == "mpi"]
    ends = [e for e in events if e.get("ph") == "f" and e.get("cat") == "mpi"]
    # Rank 0 sends a to rank 1 once: one flow, from a rank-0 process to a rank-1 process.
    assert len(starts) == len(ends) == 1, (starts, ends)
    assert starts[0]["id"] == ends[0]["id"]
    assert starts[0]["pid"] != ends[0]["pid"]
    assert ends[0]["ts"] >= starts[0]["ts"]


@pytest.mark.timeout(60)
def test_cholesky_example_mpi():
    proc = mpirun(2, REPO / "examples" / "cholesky.py", "--mpi", "--n", "256", "--block", "64", "--check",
                  "--workers", "1", timeout=50)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    m = re.search(r"relative residual .* = ([0-9.e+-]+)", proc.stdout)
    assert m and float(m.group(1)) < 1e-10, proc.stdout
