#!/bin/bash
# The register's files for a machine without Docker (devices/node/dist/): the example
# configuration loads into posnode, every peripheral line names a driver posnode has and options
# that driver takes, and the systemd unit passes systemd-analyze verify (when systemd is there).
set -u
BIN=${POSBUS_BIN:?}
SRC=${POSBUS_SRC:?}
DIST="$SRC/devices/node/dist"
passed=0 failed=0
check() {
    if eval "$2"; then passed=$((passed + 1)); echo "ok   $1"; else failed=$((failed + 1)); echo "FAIL $1"; fi
}
check "dist/posnode.conf loads into posnode" \
    "\"$BIN/posnode\" --config \"$DIST/posnode.conf\" --example-config >/dev/null"
check "dist/posnode.conf names the register and its certificates" \
    "grep -Eq '^store = ' \"$DIST/posnode.conf\" && grep -Eq '^cert = ' \"$DIST/posnode.conf\" &&
     grep -Eq '^state-dir = /var/lib/posnode$' \"$DIST/posnode.conf\""
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
while read -r name driver transport options; do
    case "$name" in ''|'#'*) continue ;; esac
    # device_tool opens the device with the driver and its options, then runs jobs from stdin:
    # with no job and a closed stdin it stops at once; an unknown driver or option is refused
    out=$(timeout 10 "$BIN/device_tool" "$driver" "tcp:127.0.0.1:9" "${options:-}" </dev/null 2>&1)
    check "dist/devices.conf: $name ($driver ${options:-}) is a driver posnode has, with options it takes" \
        "! grep -Eq 'no driver|unknown option|bad option|option' <<<\"\$out\""
done < "$DIST/devices.conf"
if command -v systemd-analyze >/dev/null; then
    sed "s|/usr/local/bin/posnode|$BIN/posnode|" "$DIST/posnode.service" > "$tmp/posnode.service"
    check "dist/posnode.service passes systemd-analyze verify" \
        "systemd-analyze verify \"$tmp/posnode.service\""
    printf '[Service]\nExecStart=relative/path\nBogusKey=1\n' > "$tmp/bad.service"
    check "and systemd-analyze verify does refuse a broken unit" \
        "! systemd-analyze verify \"$tmp/bad.service\" >/dev/null 2>&1"
else
    echo "skip systemd-analyze: not installed"
fi
echo "test_register_dist: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
