#!/bin/bash
# Build and run the libFuzzer targets in tests/fuzz/ (clang, libclang-rt-14-dev: scripts/deps.sh).
#
# usage: scripts/fuzz.sh [--time SECONDS] [--out DIR] [TARGET...]
#   TARGET      fuzz_msg, fuzz_csv, ... (default: every tests/fuzz/fuzz_*.c)
#   --time S    run each target S seconds (default 60)
#   --out DIR   build and scratch directory (default build-fuzz)
#
# Each target names what it links in its header comment:
#   fuzz-sources: libbus/src/val.c libbus/src/msg.c     (paths from the repository root; globs ok)
#   fuzz-libs: msgpack libcrypto                        (pkg-config names)
# Seeds in tests/fuzz/corpus/<target>/ are read, never written; inputs the fuzzer finds go to
# DIR/corpus/<target>/ and are kept between runs. Prints one line per target:
#   <target>: N execs in S s, no finding
# or, on a crash, leak, timeout or sanitizer report, the input that triggers it (replay it with
# DIR/<target> INPUT) and exits 1. Exits 77 when clang cannot build a fuzzer (ctest: skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

TIME=60
OUT=build-fuzz
TARGETS=()
while [ $# -gt 0 ]; do
    case "$1" in
    --time) TIME=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) TARGETS+=("${1%.c}"); shift ;;
    esac
done
case "$TIME" in '' | *[!0-9]*) echo "fuzz.sh: --time needs whole seconds" >&2; exit 2 ;; esac
if [ ${#TARGETS[@]} -eq 0 ]; then
    for src in tests/fuzz/fuzz_*.c; do
        [ -e "$src" ] && TARGETS+=("$(basename "$src" .c)")
    done
fi

CC=${FUZZ_CC:-clang}
# shellcheck disable=SC2054 # the commas belong to -fsanitize's value
CFLAGS=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
    -fno-omit-frame-pointer -std=gnu11 -D_GNU_SOURCE -Ilibbus/include -Ilibpos/include)
mkdir -p "$OUT"
if ! command -v "$CC" >/dev/null ||
    ! echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n){(void)d;(void)n;return 0;}' |
    "$CC" -fsanitize=fuzzer -x c - -o "$OUT/.probe" 2>/dev/null; then
    echo "fuzz.sh: $CC cannot build libFuzzer targets (install clang libclang-rt-14-dev)" >&2
    exit 77
fi
rm -f "$OUT/.probe"

# The value of a "key: value" line in the target's header comment.
header_value() {
    sed -n "s/^[ *]*$2:[[:space:]]*//p" "$1" | head -n 1
}

failed=0
for t in "${TARGETS[@]}"; do
    src="tests/fuzz/$t.c"
    if [ ! -f "$src" ]; then
        echo "$t: no such target ($src)" >&2
        failed=1
        continue
    fi
    # word splitting and globbing are wanted here: the lines list paths and patterns
    # shellcheck disable=SC2207
    sources=($(header_value "$src" fuzz-sources))
    libs=$(header_value "$src" fuzz-libs)
    incs=()
    for s in "${sources[@]}"; do
        [ -f "$s" ] || { echo "$t: fuzz-sources names $s, which does not exist" >&2; exit 1; }
        incs+=("-I$(dirname "$s")")
    done
    pkg=()
    # shellcheck disable=SC2207,SC2086
    [ -n "$libs" ] && pkg=($(pkg-config --cflags --libs $libs))
    if ! "$CC" "${CFLAGS[@]}" "${incs[@]}" "$src" "${sources[@]}" "${pkg[@]}" -o "$OUT/$t" \
        2>"$OUT/$t.build.log"; then
        cat "$OUT/$t.build.log" >&2
        echo "$t: build failed" >&2
        failed=1
        continue
    fi
    scratch="$OUT/corpus/$t"
    artifacts="$OUT/findings/$t"
    mkdir -p "$scratch" "$artifacts"
    seeds=()
    [ -d "tests/fuzz/corpus/$t" ] && seeds=("tests/fuzz/corpus/$t")
    start=$(date +%s%N)
    rc=0
    "$OUT/$t" -max_total_time="$TIME" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "$scratch" "${seeds[@]}" >"$OUT/$t.log" 2>&1 || rc=$?
    secs=$((($(date +%s%N) - start) / 1000000000))
    execs=$(sed -n 's/^stat::number_of_executed_units:[[:space:]]*//p' "$OUT/$t.log" | tail -n 1)
    if [ "$rc" -ne 0 ]; then
        input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$OUT/$t.log" | tail -n 1)
        grep -m 1 -E "ERROR: |runtime error|SUMMARY" "$OUT/$t.log" >&2 || true
        echo "$t: FINDING after ${execs:-?} execs in $secs s: input ${input:-(none written)}," \
            "log $OUT/$t.log" >&2
        failed=1
        continue
    fi
    echo "$t: ${execs:-?} execs in $secs s, no finding"
done
exit $failed
