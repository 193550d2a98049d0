#!/bin/bash
# Run the whole posbus system locally, without Docker: a private redis-server, busd and every
# service that exists, all under var/demo. Shows their health, then waits; Ctrl-C stops
# everything cleanly in reverse order. Usage: scripts/demo.sh [BUILD_DIR]
#   POSBUS_DEMO_SECONDS=N  stop by itself after N seconds (for unattended runs)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
BIN="$PWD/$BUILD/bin"
VAR="$PWD/var/demo"
KEYS="$VAR/keys"
LOGS="$VAR/log"
mkdir -p "$VAR" "$LOGS"
chmod 700 "$VAR"

PIDS=()
stop_all() {
    trap - INT TERM EXIT
    echo
    echo "== stopping (reverse order)"
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill -TERM "${PIDS[$i]}" 2>/dev/null || true
        wait "${PIDS[$i]}" 2>/dev/null || true
    done
    echo "== stopped; logs in $LOGS"
}
trap stop_all INT TERM EXIT

# Ports: fixed defaults, overridable, all on 127.0.0.1.
REDIS_PORT=${POSBUS_DEMO_REDIS_PORT:-6390}
PUB="tcp://127.0.0.1:${POSBUS_DEMO_PUB_PORT:-5560}"
SUB="tcp://127.0.0.1:${POSBUS_DEMO_SUB_PORT:-5561}"
REQ="tcp://127.0.0.1:${POSBUS_DEMO_REQ_PORT:-5562}"

echo "== certificates in $KEYS (posctl --keys-dir $KEYS keys list)"
# Every key carries a role and a name: each service its own (service-sales, ...), posctl an
# operator key (operator-demo). Keys from before roles existed are revoked (the files stay).
KEYGEN=("$BIN/posctl" --keys-dir "$KEYS")
"${KEYGEN[@]}" keygen >/dev/null
for svc in sales inventory reporting devices; do
    [ -f "$KEYS/service-$svc.cert_secret" ] || "${KEYGEN[@]}" keygen service "$svc" >/dev/null
done
[ -f "$KEYS/operator-demo.cert_secret" ] || "${KEYGEN[@]}" keygen operator demo >/dev/null
for old in posctl sales inventory reporting; do
    rm -f "$KEYS/clients/$old.cert"
done

echo "== redis-server on 127.0.0.1:$REDIS_PORT (data in $VAR/redis, password in $VAR/redis.pass)"
mkdir -p "$VAR/redis"
# The password never appears on a command line (ps shows those to every user): redis-server
# reads it from its config file, redis-cli from REDISCLI_AUTH, the services from
# --redis-password-file. Both files are created 0600 (umask), never readable for a moment.
[ -f "$VAR/redis.pass" ] || (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$VAR/redis.pass")
REDIS_PASS=$(cat "$VAR/redis.pass")
(umask 077; cat > "$VAR/redis.conf") <<CONF
bind 127.0.0.1
port $REDIS_PORT
dir $VAR/redis
appendonly yes
appendfsync everysec
requirepass $REDIS_PASS
CONF
chmod 600 "$VAR/redis.conf"
redis-server "$VAR/redis.conf" > "$LOGS/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
    REDISCLI_AUTH="$REDIS_PASS" redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
done
REDISCLI_AUTH="$REDIS_PASS" redis-cli -p "$REDIS_PORT" ping >/dev/null

echo "== busd on $PUB $SUB $REQ (CURVE)"
"$BIN/busd" --pub-bind "$PUB" --sub-bind "$SUB" --req-bind "$REQ" \
    --cert "$KEYS/busd.cert_secret" --clients-dir "$KEYS/clients" > "$LOGS/busd.log" 2>&1 &
PIDS+=($!)

# posctl's settings in a file, so the commands to try stay short
cat > "$VAR/posctl.conf" <<CONF
pub-endpoint = $PUB
sub-endpoint = $SUB
req-endpoint = $REQ
cert = $KEYS/operator-demo.cert_secret
server-cert = $KEYS/busd.cert
keys-dir = $KEYS
CONF
CLIENT=(--config "$VAR/posctl.conf")
export POSBUS_REDIS_PASSWORD_FILE="$VAR/redis.pass"

echo "== services: sales, inventory, reporting, devices"
for svc in sales inventory reporting devices; do
    "$BIN/$svc" --pub-endpoint "$PUB" --sub-endpoint "$SUB" --req-endpoint "$REQ" \
        --cert "$KEYS/service-$svc.cert_secret" --server-cert "$KEYS/busd.cert" \
        --redis-port "$REDIS_PORT" --redis-password-file "$VAR/redis.pass" \
        > "$LOGS/$svc.log" 2>&1 &
    PIDS+=($!)
done
EXPECT="sales,inventory,reporting,devices"

echo "== health"
ok=0
for _ in $(seq 50); do
    if "$BIN/posctl" "${CLIENT[@]}" --expect "$EXPECT" ping > "$VAR/ping.out" 2>&1; then ok=1; break; fi
    sleep 0.2
done
cat "$VAR/ping.out"
echo "redis: $(REDISCLI_AUTH="$REDIS_PASS" redis-cli -p "$REDIS_PORT" ping)"
[ "$ok" = 1 ] || { echo "demo: something is not healthy; see $LOGS" >&2; exit 1; }

POSCTL=("$BIN/posctl" "${CLIENT[@]}")
STORE=${POSBUS_DEMO_STORE:-S001}
echo
echo "== a store day: store $STORE, sample catalog, opening stock, ${POSBUS_DEMO_SALES:-300} sales"
"${POSCTL[@]}" store add "$STORE" "Demo store" >/dev/null
"${POSCTL[@]}" catalog import scripts/sample/catalog.csv
for sku in $(tail -n +2 scripts/sample/catalog.csv | cut -d, -f1); do
    "${POSCTL[@]}" stock receive --store "$STORE" "$sku" 100000 --ref OPENING \
        --move-id "opening-$STORE-$sku" >/dev/null 2>&1
done
# registers continue their sequences across demo runs
FIRST=$(( $(date +%s) % 100000 * 10 + 1 ))
"${POSCTL[@]}" sim --store "$STORE" --registers 3 --sales "${POSBUS_DEMO_SALES:-300}" \
    --first-seq "$FIRST" --seed "$FIRST" > "$VAR/sim.json"
echo "rang up: $(cat "$VAR/sim.json")"
sleep 1

echo
echo "== two registers (posnode R01, R02): cashiers and a promotion from the devices service"
# a register's key is enrolled like any other (posctl node enroll prints the files to carry)
for reg in R01 R02; do
    [ -f "$KEYS/register-$STORE-$reg.cert_secret" ] ||
        "${KEYGEN[@]}" node enroll "$STORE" "$reg" >/dev/null
done
# PINs go in on stdin and are hashed by posctl: only the hash reaches the bus
echo 1111 | "${POSCTL[@]}" cashier add --store "$STORE" --id ann --name "Ann 安" --role cashier >/dev/null
echo 2222 | "${POSCTL[@]}" cashier add --store "$STORE" --id sue --name "Sue 苏" --role supervisor >/dev/null
"${POSCTL[@]}" promo add --store "$STORE" --id COLA-DEMO --kind qty_break --sku COLA --qty 3 \
    --amount 8.00 >/dev/null 2>&1 || true
"${POSCTL[@]}" config set --store "$STORE" --header "示范超市 posbus demo|$STORE" \
    --footer "谢谢惠顾 Thank you" >/dev/null
for reg in R01 R02; do
    # each register's receipt printer: the ESC/POS simulator on a pseudo-terminal; the receipts
    # it prints land as text and PNG in var/demo/receipts/<register>/
    mkdir -p "$VAR/receipts/$reg"
    /usr/bin/python3 devices/sim/escpos_printer.py --pty "$VAR/$reg-printer.tty" \
        --control "$VAR/$reg-printer.ctl" --out "$VAR/receipts/$reg" \
        > "$LOGS/printer-$reg.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 50); do [ -e "$VAR/$reg-printer.ctl" ] && break; sleep 0.1; done
    echo "printer escpos serial:$VAR/$reg-printer.tty,baud=19200" > "$VAR/$reg-devices.conf"
    if [ "$reg" = R01 ]; then
        # R01 also has a ZVT card terminal and a 2x20 customer display (simulators, ptys)
        /usr/bin/python3 devices/sim/zvt_terminal.py --pty "$VAR/R01-card.tty" \
            --control "$VAR/R01-card.ctl" > "$LOGS/card-R01.log" 2>&1 &
        PIDS+=($!)
        /usr/bin/python3 devices/sim/vfd_display.py --pty "$VAR/R01-vfd.tty" \
            --control "$VAR/R01-vfd.ctl" > "$LOGS/vfd-R01.log" 2>&1 &
        PIDS+=($!)
        for _ in $(seq 50); do
            [ -e "$VAR/R01-card.ctl" ] && [ -e "$VAR/R01-vfd.ctl" ] && break
            sleep 0.1
        done
        { echo "card zvt serial:$VAR/R01-card.tty,baud=9600,data=8,parity=none,stop=2"
          echo "vfd vfd serial:$VAR/R01-vfd.tty"; } >> "$VAR/R01-devices.conf"
    fi
    "$BIN/posnode" --pub-endpoint "$PUB" --sub-endpoint "$SUB" --req-endpoint "$REQ" \
        --cert "$KEYS/register-$STORE-$reg.cert_secret" --server-cert "$KEYS/busd.cert" \
        --store "$STORE" --register "$reg" --state-dir "$VAR/$reg" --socket "$VAR/$reg.sock" \
        --devices "$VAR/$reg-devices.conf" --stdin false > "$LOGS/posnode-$reg.log" 2>&1 &
    PIDS+=($!)
done
# a register takes the store's configuration by itself; wait until both run the latest one
for _ in $(seq 100); do
    behind=$("${POSCTL[@]}" node config --store "$STORE" 2>/dev/null | grep -cE "R0[12].*current" || true)
    [ "$behind" = 2 ] && break
    sleep 0.2
done
# ring tickets through each register's line interface (what a till UI or an integrator sends)
ring() {
    local reg=$1 n=$2 i
    echo "login ann 1111"
    for ((i = 0; i < n; i++)); do
        echo "scan 6901234500011"
        echo "scan COLA 3"
        [ $((i % 4)) = 0 ] && echo "weigh APPLE $((800 + i * 37 % 900))"
        if [ "$reg" = R01 ] && [ $((i % 5)) = 4 ]; then
            echo "pay card" # paid at the terminal; the sale completes on its approval
            sleep 2
        else
            echo "pay cash 100"
        fi
    done
    echo "logout"
}
for reg in R01 R02; do
    ring "$reg" "${POSBUS_DEMO_TICKETS:-20}" |
        socat -t 10 - "UNIX-CONNECT:$VAR/$reg.sock" > "$VAR/$reg.answers" || true
done
echo "R01 and R02 rang $(grep -c '"sale_id"' "$VAR/R01.answers") and $(grep -c '"sale_id"' "$VAR/R02.answers") tickets paid in cash;" \
    "R01 $(grep -c '"state":"at_terminal"' "$VAR/R01.answers") more by card at its terminal"
sleep 2
last=$(ls "$VAR/receipts/R02"/receipt-*.txt 2>/dev/null | tail -1)
echo "-- R02's last receipt, as its printer printed it ($last, and the .png beside it):"
[ -n "$last" ] && cat "$last"
ctl() { # a simulator's control socket: one JSON command, one JSON answer
    /usr/bin/python3 -c 'import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
f.write(sys.argv[2] + "\n"); f.flush(); print(f.readline().strip())' "$1" "$2"
}
echo "-- R01's customer display now: $(ctl "$VAR/R01-vfd.ctl" '{"cmd": "screen"}')"
echo "-- R01's card terminal booked: $(ctl "$VAR/R01-card.ctl" '{"cmd": "status"}' |
    /usr/bin/python3 -c 'import json, sys
t = json.load(sys.stdin)["transactions"]
print(len(t), "card payments,", sum(x["amount"] for x in t), "fen")')"
"${POSCTL[@]}" node list --store "$STORE"

echo
echo "== day report (posctl report day --store $STORE)"
"${POSCTL[@]}" report day --store "$STORE" | grep -E "^(day|totals|tenders|expected_cash|tax\.[0-9]+\.(gross|tax))"
echo
echo "== top items"
"${POSCTL[@]}" report items --store "$STORE" --top 5

echo
echo "posbus is running. Try, in another terminal:"
echo "  $BIN/posctl ${CLIENT[*]} ping          # health of every instance"
echo "  $BIN/posctl ${CLIENT[*]} stats busd    # busd's counters"
echo "  $BIN/posctl ${CLIENT[*]} tail          # every event as a JSON line"
echo "  $BIN/posctl ${CLIENT[*]} report z --store $STORE   # close the day"
echo "  $BIN/posctl ${CLIENT[*]} sim --store $STORE --sales 100 --first-seq $((FIRST + 1000))"
echo "  $BIN/posctl ${CLIENT[*]} keys list      # enrolled keys with their roles"
echo "  $BIN/posctl ${CLIENT[*]} node list      # registers: online, unsynced, devices"
echo "  socat - UNIX-CONNECT:$VAR/R01.sock     # ring a ticket at R01 (docs/posnode.md)"
if [ -n "${POSBUS_DEMO_SECONDS:-}" ]; then
    sleep "$POSBUS_DEMO_SECONDS"
else
    echo "Ctrl-C stops everything."
    while true; do sleep 3600; done
fi
