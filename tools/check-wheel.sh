#!/usr/bin/env bash
# Installs a built wheel into a new venv (as a user would: pip install <wheel>) and checks that the package
# works from it and that a C program builds and runs against the libparla and parla.h it carries (pkg-config).
#   tools/check-wheel.sh PYTHON WHEEL
set -euo pipefail
py=$1 wheel=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$py" -m venv "$dir/venv"
"$dir/venv/bin/pip" install -q "$wheel"
cd "$dir"
"$dir/venv/bin/python" - <<'PY'
import parla
from parla import Parla, spawn, TaskSpace
with Parla(n_workers=2):
    T = TaskSpace("T")
    @spawn(T[0])
    def one():
        return 1
    T[0].wait(timeout=30)
    assert T[0].result == 1
print("wheel: parla", parla.__version__, "from", parla.__file__)
PY
cat > "$dir/hello.c" <<'C'
#include <parla.h>
#include <stdio.h>
static int body(parla_task_t *t, void *arg) { (void)t; *(int *)arg = 42; return 0; }
int main(void) {
    parla_config_t cfg; parla_config_init(&cfg); cfg.n_workers = 1;
    parla_runtime_t *rt; if (parla_runtime_create(&cfg, &rt)) return 1;
    int x = 0; parla_task_t *t; parla_task_create(rt, body, &x, &t); parla_task_submit(t);
    int rc = parla_task_wait(t); parla_task_release(t); parla_runtime_destroy(rt);
    printf("C against the wheel's libparla: %d\n", x);
    return rc || x != 42;
}
C
PKG_CONFIG_PATH=$("$dir/venv/bin/python" -m parla.config --pkgconfigdir) \
  sh -c 'cc hello.c -o hello $(pkg-config --cflags --libs parla)'
./hello
