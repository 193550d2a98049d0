#!/bin/bash
# The annotated example configurations in docs/examples are exactly what the programs print,
# and each loads back into its program without error.
set -u
BIN=${POSBUS_BIN:?}
SRC=${POSBUS_SRC:?}
passed=0 failed=0
check() {
    if eval "$2"; then passed=$((passed + 1)); echo "ok   $1"; else failed=$((failed + 1)); echo "FAIL $1"; fi
}
for prog in busd posctl sales inventory reporting devices payments posnode; do
    check "docs/examples/$prog.conf is current" \
        "diff <(\"$BIN/$prog\" --example-config) \"$SRC/docs/examples/$prog.conf\""
    check "docs/examples/$prog.conf loads into $prog" \
        "\"$BIN/$prog\" --config \"$SRC/docs/examples/$prog.conf\" --example-config >/dev/null"
done
tmp=$(mktemp)
echo "bogus-option = 1" > "$tmp"
check "an unknown option in a file is refused with its line" \
    "\"$BIN/busd\" --config \"$tmp\" 2>&1 | grep -q \"$tmp:1: unknown option 'bogus-option'\""
rm -f "$tmp"
echo "test_docs: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
