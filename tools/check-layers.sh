#!/bin/bash
# check-layers.sh: checks that the engine's layers call only downward.
#
# The layers are the folders of src/, lowest first:
#     util -> device -> trace -> graph -> data -> sched
# A file may use its own layer and the layers below it. Nothing here lists which calls are allowed: the
# graph is derived from the code every time.
#   1. Symbols: every engine source is compiled to an object file; `nm` gives the symbols each object
#      defines and the ones it needs (undefined). A needed symbol is mapped to the layer of the object that
#      defines it; a reference to a layer above the object's own is a violation.
#   2. Includes: every `#include "..."` of an engine source or header is mapped to the layer of the file it
#      names (include/parla.h is the public API, below every layer); including a header of a layer above is
#      a violation, and so is any cycle among the headers.
#   3. The extension (src/python) sees only the public API: it includes no engine header and needs no
#      engine symbol outside parla_*.
# Usage: tools/check-layers.sh [-v] [CC]   (-v prints the layer graph: who uses whom, and how often)
# Exit status: 0 when layered, 1 on a violation (each one printed with the symbol or include), 2 on a
# usage or build error.
set -euo pipefail

verbose=0
if [ "${1:-}" = "-v" ]; then verbose=1; shift; fi
CC=${1:-${CC:-cc}}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
LAYERS="util device trace graph data sched"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

sources=$(find src -name '*.c' -not -path 'src/python/*' | sort)
[ -n "$sources" ] || { echo "check-layers: no engine sources under src/" >&2; exit 2; }

# 1. Objects and their symbols: "layer file D|U symbol" lines.
: > "$tmp/syms"
: > "$tmp/cc.failed"
for f in $sources; do
    layer=$(echo "$f" | cut -d/ -f2)
    obj="$tmp/$(echo "$f" | tr / _).o"
    if ! "$CC" -std=c11 -D_GNU_SOURCE -O0 -w -Iinclude -Isrc -c "$f" -o "$obj" 2> "$tmp/cc.err"; then
        # Reported after the include check (an upward include often breaks the build first).
        echo "$f" >> "$tmp/cc.failed"
        head -5 "$tmp/cc.err" | sed 's/^/    /' >> "$tmp/cc.failed"
        continue
    fi
    nm --defined-only -g "$obj" | awk -v l="$layer" -v f="$f" 'NF == 3 { print l, f, "D", $3 }' >> "$tmp/syms"
    nm -u "$obj" | awk -v l="$layer" -v f="$f" '{ print l, f, "U", $NF }' >> "$tmp/syms"
done

# 2. Includes: "file included" lines, for the engine's sources and headers.
: > "$tmp/incs"
for f in $(find src -name '*.[ch]' -not -path 'src/python/*' | sort); do
    sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f" |
        while read -r inc; do echo "$f $inc"; done >> "$tmp/incs"
done
: > "$tmp/ext_incs"
for f in $(find src/python -name '*.[ch]' 2>/dev/null | sort); do
    sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f" |
        while read -r inc; do echo "$f $inc"; done >> "$tmp/ext_incs"
done
: > "$tmp/ext_syms"
for f in $(find src/python -name '*.c' 2>/dev/null | sort); do
    obj="$tmp/ext_$(basename "$f").o"
    inc_py=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null || true)
    if [ -n "$inc_py" ] && "$CC" -std=c11 -D_GNU_SOURCE -O0 -w -Iinclude -Isrc -I"$inc_py" -c "$f" -o "$obj" \
        2> /dev/null; then
        nm -u "$obj" | awk -v f="$f" '{ print f, $NF }' >> "$tmp/ext_syms"
    fi
done

python3 - "$tmp" "$verbose" $LAYERS <<'EOF'
import collections, os, sys

tmp, verbose, layers = sys.argv[1], sys.argv[2] == "1", sys.argv[3:]
rank = {name: i for i, name in enumerate(layers)}
bad = []

defined = {}
needs = collections.defaultdict(set)  # file -> symbols
layer_of_file = {}
for line in open(os.path.join(tmp, "syms")):
    layer, f, kind, sym = line.split()
    layer_of_file[f] = layer
    if layer not in rank:
        bad.append(f"{f}: folder src/{layer} is not a layer ({' -> '.join(layers)})")
        continue
    if kind == "D":
        if sym in defined and defined[sym] != f:
            bad.append(f"{sym} is defined twice: {defined[sym]} and {f}")
        defined[sym] = f
    else:
        needs[f].add(sym)

graph = collections.Counter()
for f, syms in sorted(needs.items()):
    lf = layer_of_file[f]
    for sym in sorted(syms):
        g = defined.get(sym)
        if g is None:
            continue  # libc, pthread, libm, libdl
        lg = layer_of_file[g]
        if lg != lf:
            graph[(lf, lg)] += 1
        if rank[lg] > rank[lf]:
            bad.append(f"{f} ({lf}) uses {sym} of {g} ({lg}), a layer above")

def header_layer(path):
    if path == "parla.h":
        return None  # the public API: below every layer
    top = path.split("/")[0]
    return top if top in rank else "?"

incs = collections.defaultdict(list)
for line in open(os.path.join(tmp, "incs")):
    f, inc = line.split()
    lf = f.split("/")[1]
    li = header_layer(inc)
    if li == "?" or (li is None and inc != "parla.h"):
        bad.append(f"{f} includes \"{inc}\", which is neither parla.h nor a layer's header")
        continue
    if li is not None:
        if not os.path.exists(os.path.join("src", inc)):
            bad.append(f"{f} includes \"{inc}\", which does not exist")
            continue
        incs[f].append("src/" + inc)
        if li != lf and (lf, li) not in graph:
            graph[(lf, li)] += 0
        if lf in rank and rank[li] > rank[lf]:
            bad.append(f"{f} ({lf}) includes \"{inc}\" ({li}), a layer above")

# Include cycles among files (headers including each other, directly or not).
state = {}
def visit(f, path):
    state[f] = 1
    for g in incs.get(f, ()):
        if state.get(g) == 1:
            cyc = path[path.index(g):] + [g] if g in path else [f, g]
            bad.append("include cycle: " + " -> ".join(cyc))
        elif g not in state:
            visit(g, path + [g])
    state[f] = 2
for f in sorted(incs):
    if f not in state:
        visit(f, [f])

for line in open(os.path.join(tmp, "ext_incs")):
    f, inc = line.split()
    if header_layer(inc) is not None and not inc.startswith("python/") and "/" in inc:
        bad.append(f"{f} (extension) includes engine header \"{inc}\": it sees only parla.h")
for line in open(os.path.join(tmp, "ext_syms")):
    f, sym = line.split()
    if sym in defined and not sym.startswith("parla_"):
        bad.append(f"{f} (extension) uses engine internal {sym} of {defined[sym]}")

if verbose:
    print("layer graph (A -> B: symbols of B that A uses; 0: an include only):")
    for (a, b), n in sorted(graph.items(), key=lambda kv: (rank[kv[0][0]], rank[kv[0][1]])):
        print(f"  {a:6s} -> {b:6s} {n:4d}{'   UPWARD' if rank[b] > rank[a] else ''}")
failed = open(os.path.join(tmp, "cc.failed")).read()
if failed:
    print("check-layers: these engine files do not compile (their symbols are not checked):\n" + failed)
if bad:
    print(f"check-layers: {len(bad)} violation(s) of the order {' -> '.join(layers)}:")
    for b in bad:
        print("  " + b)
    sys.exit(1)
if failed:
    sys.exit(2)
print(f"check-layers: {len(layer_of_file)} engine files, layers {' -> '.join(layers)}: only downward")
EOF
