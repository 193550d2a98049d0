#!/bin/bash
# Make Docker Compose v2 (the `docker compose` CLI plugin) available for the compose test on a
# Debian 12 machine, which packages only docker-compose 1.29: takes the docker-compose package
# of Debian 13 (trixie: a Go program that needs only libc6 >= 2.34) from Debian's own
# archive through apt, which checks the archive's signature, without touching apt's sources or
# installing anything system-wide. Prints the directory to use as DOCKER_CONFIG (its
# cli-plugins/docker-compose is the plugin); exits non-zero when it cannot.
#   POSBUS_COMPOSE_V2_DIR=DIR  where to keep it (default /var/cache/posbus/compose-v2)
#   POSBUS_DEBIAN_MIRROR=URL   the archive (default: the one in this machine's apt sources)
set -euo pipefail
DIR=${POSBUS_COMPOSE_V2_DIR:-/var/cache/posbus/compose-v2}
PLUGIN=$DIR/docker/cli-plugins/docker-compose
if [ -x "$PLUGIN" ] && DOCKER_CONFIG=$DIR/docker docker compose version >/dev/null 2>&1; then
    echo "$DIR/docker"
    exit 0
fi
mirror=${POSBUS_DEBIAN_MIRROR:-$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' \
    /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | awk '{print $2; exit}' || true)}
mirror=${mirror:-http://deb.debian.org/debian}
# one fetch at a time in DIR (two CI jobs on one machine share it)
mkdir -p "$DIR"
exec 9>"$DIR/.lock"
flock 9
if [ -x "$PLUGIN" ] && DOCKER_CONFIG=$DIR/docker docker compose version >/dev/null 2>&1; then
    echo "$DIR/docker"
    exit 0
fi
rm -rf "$DIR/apt" "$DIR/deb"
mkdir -p "$DIR/apt/lists/partial" "$DIR/apt/cache/archives/partial" "$DIR/deb" "$(dirname "$PLUGIN")"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" \
    > "$DIR/apt/sources.list"
APT=(-o Dir::Etc::SourceList="$DIR/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent
     -o Dir::State::Lists="$DIR/apt/lists" -o Dir::Cache="$DIR/apt/cache"
     -o APT::Sandbox::User=root -o Debug::NoLocking=1)
{
    apt-get "${APT[@]}" update -qq &&
        (cd "$DIR/deb" && apt-get "${APT[@]}" download -qq docker-compose/trixie)
} >"$DIR/apt.log" 2>&1 || { echo "compose-v2: apt could not fetch trixie's docker-compose (see $DIR/apt.log)" >&2; exit 1; }
deb=$(ls "$DIR"/deb/docker-compose_2*.deb 2>/dev/null | head -1)
[ -n "$deb" ] || { echo "compose-v2: trixie's docker-compose is not version 2" >&2; exit 1; }
dpkg-deb -x "$deb" "$DIR/deb/x"
install -m 0755 "$DIR/deb/x/usr/libexec/docker/cli-plugins/docker-compose" "$PLUGIN"
rm -rf "$DIR/apt" "$DIR/deb"
DOCKER_CONFIG=$DIR/docker docker compose version >&2
echo "$DIR/docker"
