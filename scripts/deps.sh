#!/bin/sh
# Install the Debian packages posbus needs to build, test and run its demo and benchmarks
# (clang and libclang-rt-14-dev build the libFuzzer targets: scripts/fuzz.sh, make test;
# python3-pil and fonts-wqy-microhei render the printer simulator's receipts: devices/sim;
# libcurl4-openssl-dev and libjansson-dev: the payments service's HTTPS and JSON;
# libmicrohttpd-dev: its HTTPS endpoint for refund notifications).
# As root it runs apt-get itself; otherwise it prints the exact command and stops.
set -e
PKGS="build-essential cmake pkg-config libzmq3-dev libczmq-dev libmsgpack-dev libhiredis-dev
libserialport-dev libssl-dev redis-server redis-tools python3 python3-zmq python3-msgpack
python3-cryptography socat procps clang libclang-rt-14-dev tmux libncurses-dev
python3-pil fonts-wqy-microhei libcurl4-openssl-dev libjansson-dev libmicrohttpd-dev"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "posbus needs these Debian packages:$missing" >&2
    echo "run: sudo apt-get update && sudo apt-get install -y$missing" >&2
    exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing
