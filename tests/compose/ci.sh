#!/bin/bash
# CI (.ci/run): the compose end-to-end test (test_compose.sh) wherever this machine can run a
# Docker engine, with docker-compose 1.29 and then with Compose v2 (compose-v2.sh). It installs docker.io, docker-compose and debootstrap if they are missing and
# starts dockerd (as compose/up does); a machine where that cannot work (not root, no package
# archive, a container without the privileges dockerd needs) is reported and skipped, never
# counted as a pass of the test. Once the engine runs, the test's exit code is CI's.
set -uo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
skip() { echo "compose e2e: SKIPPED on this machine: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "not root"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    echo "compose e2e: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        >/tmp/posbus-ci-docker-apt.log 2>&1 || skip "cannot install ${missing[*]} (see /tmp/posbus-ci-docker-apt.log)"
fi
if ! docker info >/dev/null 2>&1; then
    echo "compose e2e: starting dockerd"
    if [ -d /run/systemd/system ]; then
        systemctl start docker >/dev/null 2>&1 || true
    else
        source "$SRC/compose/lib.sh" && start_dockerd
    fi
    for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 ||
        skip "dockerd does not start here: $(tail -n 3 /var/log/dockerd.log 2>/dev/null | tr '\n' ' ')"
fi
echo "compose e2e: Docker $(docker version -f '{{.Server.Version}}' 2>/dev/null) runs: the test counts"
export POSBUS_COMPOSE_TEST=1
echo "compose e2e: with docker-compose $(docker-compose version --short 2>/dev/null)"
POSBUS_COMPOSE=v1 bash "$SRC/tests/compose/test_compose.sh" || exit
# the same test with Compose v2 (the `docker compose` plugin): Debian 12 has none, so
# compose-v2.sh takes Debian 13's package from the archive into a private DOCKER_CONFIG
if v2=$(bash "$SRC/tests/compose/compose-v2.sh"); then
    echo "compose e2e: with Compose v2 ($v2)"
    DOCKER_CONFIG=$v2 POSBUS_COMPOSE=v2 exec bash "$SRC/tests/compose/test_compose.sh"
fi
echo "compose e2e: Compose v2: SKIPPED on this machine: no docker compose plugin to be had"
