# Shared by compose/up, compose/down and tests/compose: how the stack is named and reached.
# COMPOSE_PROJECT_NAME (default posbus) names containers, networks and volumes; POSBUS_LOCK, when
# set, is a file that heavy steps (debootstrap, image builds) hold with flock, for shared machines.
COMPOSE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-posbus}
# POSBUS_COMPOSE=v1 (docker-compose 1.29) or v2 (the `docker compose` plugin) chooses; unset,
# docker-compose when there is one, else the plugin
case "${POSBUS_COMPOSE:-}" in
v1) DC=(docker-compose -f "$COMPOSE_DIR/compose.yaml") ;;
v2) DC=(docker compose -f "$COMPOSE_DIR/compose.yaml") ;;
"")
    DC=(docker-compose -f "$COMPOSE_DIR/compose.yaml")
    command -v docker-compose >/dev/null 2>&1 || DC=(docker compose -f "$COMPOSE_DIR/compose.yaml")
    ;;
*) echo "compose: POSBUS_COMPOSE is v1 or v2, not '$POSBUS_COMPOSE'" >&2; return 2 ;;
esac

# start_dockerd: dockerd in its own session, logging to /var/log/dockerd.log, holding none of
# our descriptors beyond 0-2 (a lock our caller holds, e.g. flock's, must not live on in the
# daemon and block everyone after us)
start_dockerd() {
    setsid bash -c 'for f in /proc/$$/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done
                    exec dockerd' >/var/log/dockerd.log 2>&1 </dev/null &
}

heavy() { # run a heavy step, under the lock when there is one
    if [ -n "${POSBUS_LOCK:-}" ]; then flock "$POSBUS_LOCK" "$@"; else "$@"; fi
}

# wait_healthy SECONDS: until every running container of the project that has a healthcheck is
# healthy (one-shot containers must have exited 0); prints the laggards and fails on a timeout
wait_healthy() {
    local deadline=$((SECONDS + $1)) bad c line
    while :; do
        bad=()
        for c in $(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME"); do
            line=$(docker inspect -f '{{.Name}} {{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$c")
            set -- $line
            case "$2/$4" in
            running/healthy | running/none) ;;
            exited/none) [ "$3" = 0 ] || bad+=("$1:exited($3)") ;;
            *) bad+=("$1:$2/$4") ;;
            esac
        done
        [ ${#bad[@]} = 0 ] && return 0
        if [ $SECONDS -ge $deadline ]; then
            echo "compose: not healthy after $1 s: ${bad[*]}" >&2
            return 1
        fi
        sleep 2
    done
}
