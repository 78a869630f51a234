#!/bin/bash
# check-exports.sh LIB HEADER: the dynamic symbols LIB defines are exactly the functions HEADER declares
# (parla_*): nothing of the engine's internals (parla__*) leaks out of libparla.so, and nothing public is
# missing. Prints the differences and exits 1 when there are any.
set -euo pipefail
lib=$1 header=$2
exported=$(nm -D --defined-only "$lib" | awk '$2 == "T" { sub(/@.*/, "", $3); print $3 }' | sort -u)
declared=$(grep -oE '\bparla_[a-z_0-9]+[[:space:]]*\(' "$header" | tr -d ' (' | sort -u)
extra=$(comm -23 <(echo "$exported") <(echo "$declared"))
missing=$(comm -13 <(echo "$exported") <(echo "$declared"))
others=$(nm -D --defined-only "$lib" | awk '$2 != "T" && $2 != "A" { print $3 }')
if [ -n "$extra$missing$others" ]; then
    [ -z "$extra" ] || echo "exported but not declared in $header:" $extra
    [ -z "$missing" ] || echo "declared in $header but not exported:" $missing
    [ -z "$others" ] || echo "other exported symbols:" $others
    exit 1
fi
echo "$lib exports the $(echo "$declared" | wc -l) functions of $header, nothing else"
