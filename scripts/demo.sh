#!/bin/bash
# Run the whole posbus system locally, without Docker: a private redis-server, busd and every
# service that exists, all under var/demo (POSBUS_DEMO_VAR). Shows their health, then waits;
# Ctrl-C stops everything cleanly in reverse order. Usage: scripts/demo.sh [BUILD_DIR]
# BUILD_DIR (default build): absolute, or relative to the current directory or to the
# repository's root. Every port is on 127.0.0.1 and overridable, so that a second demo (or a
# test, tests/integration/test_demo.sh) runs beside one already running:
#   POSBUS_DEMO_SECONDS=N  stop by itself after N seconds (for unattended runs)
#   POSBUS_DEMO_TICKETS=N, POSBUS_DEMO_SALES=N  tickets per register, simulated sales
#   POSBUS_DEMO_CODE_TICKETS=N  tickets R01 takes by WeChat payment code (default 2)
#   POSBUS_DEMO_STORE=S  the store's id (default S001)
#   POSBUS_DEMO_VAR=DIR  where keys, data, logs and receipts live (default var/demo; a relative
#                        DIR is taken from the repository's root)
#   POSBUS_DEMO_REDIS_PORT=P  redis-server's port (default 6390)
#   POSBUS_DEMO_PUB_PORT=P, POSBUS_DEMO_SUB_PORT=P, POSBUS_DEMO_REQ_PORT=P  busd's three
#                        sockets (default 5560, 5561, 5562)
#   POSBUS_DEMO_WECHAT_PORT=P  the WeChat Pay emulator's HTTPS port (default 5563)
set -euo pipefail
BUILD=${1:-build}
# resolved before the cd below, which would change what a relative BUILD_DIR means
case "$BUILD" in
    /*) ;;
    *) [ -d "$BUILD/bin" ] && BUILD="$PWD/$BUILD" ;;
esac
cd "$(dirname "$0")/.."
case "$BUILD" in
    /*) BIN="$BUILD/bin" ;;
    *) BIN="$PWD/$BUILD/bin" ;;
esac
[ -x "$BIN/busd" ] || { echo "demo: no $BIN/busd; build first (make build)" >&2; exit 1; }
VAR=${POSBUS_DEMO_VAR:-var/demo}
case "$VAR" in /*) ;; *) VAR="$PWD/$VAR" ;; esac
KEYS="$VAR/keys"
LOGS="$VAR/log"
mkdir -p "$VAR" "$LOGS"
chmod 700 "$VAR"

PIDS=()
STOP_WAIT_S=15 # a program still there this long after SIGTERM is killed (and named)
SLEEP_PID=
s_alive() { # our child $1 has not exited (a zombie, exited but not yet waited for, has)
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat:0:1}" != Z ]
}
stop_all() {
    trap - INT TERM EXIT
    local i k pid
    [ -z "$SLEEP_PID" ] || kill "$SLEEP_PID" 2>/dev/null || true
    echo
    echo "== stopping (reverse order)"
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[$i]}
        kill -TERM "$pid" 2>/dev/null || true
        for ((k = 0; k < STOP_WAIT_S * 10; k++)); do
            s_alive "$pid" || break
            sleep 0.1
        done
        if s_alive "$pid"; then
            echo "demo: $(tr '\0' ' ' < "/proc/$pid/cmdline" | cut -c1-80) did not stop; killed" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    echo "== stopped; logs in $LOGS"
}
# sleep that a signal to this script alone (kill PID, not Ctrl-C) interrupts at once: bash runs
# a trap only after the foreground command, but at once during wait
pause() {
    sleep "$1" &
    SLEEP_PID=$!
    wait "$SLEEP_PID" || true
    SLEEP_PID=
}
# Ctrl-C or SIGTERM in the middle of the store day stops everything and ends the script there
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap stop_all EXIT

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
for svc in sales inventory reporting devices payments; do
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

# The WeChat Pay API v3 emulator (devices/sim/wechatpay.py: HTTPS with its own CA, signed
# requests and answers) stands in for api.mch.weixin.qq.com. The merchant's RSA key pair and
# API v3 key are made once, 0600, in $VAR/wechat-merchant; the emulator keeps its CA, server
# certificate and platform keys in $VAR/wechatpay. No key is ever printed.
WX_PORT=${POSBUS_DEMO_WECHAT_PORT:-5563}
WX_DIR="$VAR/wechatpay"
WX_MERCHANT="$VAR/wechat-merchant"
WX_MCHID=1900000001 WX_APPID=wx0000000000000001 WX_SERIAL=3775B6A45ACD588826D15E583A95F5DD
echo "== WeChat Pay emulator on https://127.0.0.1:$WX_PORT (keys in $WX_MERCHANT, $WX_DIR)"
mkdir -p "$WX_MERCHANT"
chmod 700 "$WX_MERCHANT"
if [ ! -f "$WX_MERCHANT/merchant.pub" ]; then
    (umask 077; /usr/bin/python3 -c 'import os, secrets, string, sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
d = sys.argv[1]
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
with open(os.path.join(d, "merchant.key"), "wb") as f:
    f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
with open(os.path.join(d, "apiv3.key"), "w") as f:
    f.write("".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32)))
with open(os.path.join(d, "merchant.pub.tmp"), "wb") as f:  # last: marks the set complete
    f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo))
os.replace(os.path.join(d, "merchant.pub.tmp"), os.path.join(d, "merchant.pub"))' "$WX_MERCHANT")
fi
rm -f "$WX_DIR/port"
/usr/bin/python3 devices/sim/wechatpay.py --listen "127.0.0.1:$WX_PORT" --dir "$WX_DIR" \
    --mchid "$WX_MCHID" --appid "$WX_APPID" --merchant-serial "$WX_SERIAL" \
    --merchant-public-key "$WX_MERCHANT/merchant.pub" --api-v3-key-file "$WX_MERCHANT/apiv3.key" \
    --control "$VAR/wechatpay.ctl" > "$LOGS/wechatpay.log" 2>&1 &
PIDS+=($!)
WX_PID=$!
for _ in $(seq 100); do # the first run makes its CA and two platform RSA keys
    [ -f "$WX_DIR/port" ] && [ -S "$VAR/wechatpay.ctl" ] && break
    kill -0 "$WX_PID" 2>/dev/null || break
    sleep 0.1
done
[ -f "$WX_DIR/port" ] || { echo "demo: the WeChat Pay emulator did not start; see $LOGS/wechatpay.log" >&2; exit 1; }
# payments trusts the emulator's CA and answers signed with either platform key
PAY_ARGS=(--wechat-base-url "https://127.0.0.1:$WX_PORT" --wechat-mchid "$WX_MCHID"
    --wechat-appid "$WX_APPID" --wechat-serial "$WX_SERIAL"
    --wechat-key-file "$WX_MERCHANT/merchant.key" --wechat-apiv3-key-file "$WX_MERCHANT/apiv3.key"
    --wechat-platform-keys "PUB_KEY_ID_0000000000000001=$WX_DIR/platform-1.pem,5157F09EFDC096DE15EBE81A47057A7232F1B8E1=$WX_DIR/platform-2.pem"
    --wechat-ca-file "$WX_DIR/ca.pem" --query-interval-ms 1000)

echo "== services: sales, inventory, reporting, devices, payments"
for svc in sales inventory reporting devices payments; do
    extra=()
    [ "$svc" = payments ] && extra=("${PAY_ARGS[@]}")
    "$BIN/$svc" --pub-endpoint "$PUB" --sub-endpoint "$SUB" --req-endpoint "$REQ" \
        --cert "$KEYS/service-$svc.cert_secret" --server-cert "$KEYS/busd.cert" \
        --redis-port "$REDIS_PORT" --redis-password-file "$VAR/redis.pass" \
        "${extra[@]}" > "$LOGS/$svc.log" 2>&1 &
    PIDS+=($!)
done
EXPECT="sales,inventory,reporting,devices,payments"

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
# simulated registers R11-R13 (not R01/R02: those are the posnodes below, whose sequences
# sales would take these for and ask them to resend); they continue their sequences across
# demo runs
FIRST=$(( $(date +%s) % 100000 * 10 + 1 ))
"${POSCTL[@]}" sim --store "$STORE" --registers 3 --register-base 10 \
    --sales "${POSBUS_DEMO_SALES:-300}" --first-seq "$FIRST" --seed "$FIRST" > "$VAR/sim.json"
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
    else
        # R02 also drives a line of two canteen terminals (消费机, simulator on a pty): a card
        # tap there is sold by R02 as a stored-value sale (docs/posnode.md "Canteen terminals")
        /usr/bin/python3 devices/sim/canteen_terminal.py --pty "$VAR/R02-canteen.tty" \
            --control "$VAR/R02-canteen.ctl" --terminals 1,2 > "$LOGS/canteen-R02.log" 2>&1 &
        PIDS+=($!)
        for _ in $(seq 50); do [ -e "$VAR/R02-canteen.ctl" ] && break; sleep 0.1; done
        echo "canteen canteen serial:$VAR/R02-canteen.tty,baud=9600 terminals=1,2" \
            >> "$VAR/R02-devices.conf"
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
ctl() { # a simulator's control socket (or a till's socket): one line, one JSON answer
    /usr/bin/python3 -c 'import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
f.write(sys.argv[2] + "\n"); f.flush(); print(f.readline().strip())' "$1" "$2"
}
r01_state() { # R01's last sale number and its code payment's state ("none" without one)
    ctl "$VAR/R01.sock" state | /usr/bin/python3 -c 'import json, sys
s = json.load(sys.stdin)
print(s.get("last_sale", 0), (s.get("wallet") or {}).get("state", "none"))'
}
# R01 takes tickets by WeChat payment code (付款码): posnode pays them through the payments
# service, which charges the emulator; the sale completes by itself once the intent succeeds,
# so each ticket waits (at most 30 s) until R01's last sale grows before the next one. A code
# payment that ends unpaid, or never ends, leaves the ticket to cash, so the next one starts empty.
wait_wallet_gone() { # at most $1 polls of 0.2 s until R01 has no code payment under way
    local k last wallet
    for ((k = 0; k < $1; k++)); do
        read -r last wallet < <(r01_state)
        [ "$wallet" = none ] && return 0
        sleep 0.2
    done
    return 1
}
code_tickets() {
    local n=$1 i k last0 last wallet seen paid
    # a payment left by an interrupted run is resolved by posnode first (docs/posnode.md)
    wait_wallet_gone 150 || true
    echo "login ann 1111"
    for ((i = 0; i < n; i++)); do
        read -r last0 _ < <(r01_state)
        echo "scan 6901234500011"
        echo "scan COLA $((i + 1))"
        echo "pay code 1345678901234567$((10 + i % 90))"
        seen=0 paid=0
        for ((k = 0; k < 150; k++)); do
            sleep 0.2
            read -r last wallet < <(r01_state)
            [ "$last" -gt "$last0" ] && { paid=1; break; } # paid: the sale completed
            [ "$wallet" != none ] && seen=1
            [ "$seen" = 1 ] && [ "$wallet" = none ] && break # ended unpaid (R01's answers say why)
        done
        if [ "$paid" = 0 ]; then
            [ "$wallet" != none ] && echo "pay-cancel" && { wait_wallet_gone 50 || true; }
            echo "pay cash"
        fi
    done
    echo "logout"
}
CODE_TICKETS=${POSBUS_DEMO_CODE_TICKETS:-2}
code_tickets "$CODE_TICKETS" | socat -t 2 - "UNIX-CONNECT:$VAR/R01.sock" > "$VAR/R01-code.answers" || true
wechat_summary() { # what R01 asked (its answers) and what the emulator booked (its status)
    /usr/bin/python3 -c 'import json, sys
asked = {}
for line in open(sys.argv[1]):
    a = json.loads(line)
    if a.get("ok") and a.get("cmd") == "pay" and isinstance(a.get("wallet"), dict) \
            and a["wallet"].get("intent"):
        asked.setdefault(a["wallet"]["intent"], a["wallet"])
asked = list(asked.values())
emu = json.loads(sys.argv[2])
trades = {t["out_trade_no"]: t for t in emu.get("trades", [])}
parts, paid = [], 0
for w in asked:
    t = trades.get(w.get("intent"), {})
    if t.get("state") == "SUCCESS":
        paid += t["amount"]
    parts.append("%s %s %s" % (w.get("intent"), t.get("state", "not at the emulator"),
                               t.get("transaction_id") or ""))
print("%d asked, %d fen charged: %s (emulator: %d charges, %d bad signatures since it started;"
      " the day report below counts them in tenders.wechat, with the simulated registers\x27)"
      % (len(asked), paid, "; ".join(p.strip() for p in parts) or "none",
         emu.get("charges", 0), emu.get("bad_signatures", 0)))' "$1" "$2"
}
echo "-- R01's WeChat code payments: $(wechat_summary "$VAR/R01-code.answers" \
    "$(ctl "$VAR/wechatpay.ctl" '{"cmd": "status"}')")"
# canteen cards (stored value at payments) tapped on R02's canteen terminals: R02 asks
# payments (card.pay) while the terminal waits and answers with the balance left
for card in 20240001 20240002; do
    "${POSCTL[@]}" card create "$card" --holder "Diner $card" --offline-cap 20 >/dev/null 2>&1 || true
done
"${POSCTL[@]}" card topup 20240001 100 >/dev/null
"${POSCTL[@]}" card topup 20240002 5 >/dev/null
canteen_tap() { # terminal card fen: tap, wait for the terminal's verdict, print it
    local seq k out
    seq=$(ctl "$VAR/R02-canteen.ctl" "{\"cmd\": \"tap\", \"terminal\": $1, \"card\": $2, \"amount\": $3}" |
        /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin).get("seq", 0))')
    for ((k = 0; k < 40; k++)); do
        out=$(ctl "$VAR/R02-canteen.ctl" "{\"cmd\": \"status\"}" | /usr/bin/python3 -c 'import json, sys
t = json.load(sys.stdin)["terminals"][sys.argv[1]]
v = t["settled"].get(sys.argv[2])
print(v + " (" + t["text"] + ")" if v else "")' "$1" "$seq")
        [ -n "$out" ] && break
        sleep 0.1
    done
    echo "   terminal $1, card $2, $(($3 / 100)).$(printf %02d $(($3 % 100))): ${out:-no answer}"
}
echo "-- R02's canteen terminals:"
canteen_tap 1 20240001 1250
canteen_tap 2 20240002 800
canteen_tap 2 20240001 650
echo "   card 20240001: $("${POSCTL[@]}" card get 20240001 | grep -E "^balance" | head -1)"
sleep 2
last=$(ls "$VAR/receipts/R02"/receipt-*.txt 2>/dev/null | tail -1)
echo "-- R02's last receipt, as its printer printed it ($last, and the .png beside it):"
[ -n "$last" ] && cat "$last"
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
echo "== the live view (posctl top --once; run posctl top for the live screen)"
"${POSCTL[@]}" top --once --interval-ms 1000 --store "$STORE" \
    --expect "sales,inventory,reporting,devices,payments" || true

echo
echo "posbus is running. Try, in another terminal:"
echo "  $BIN/posctl ${CLIENT[*]} top           # the live screen: instances, rates, registers, alerts"
echo "  $BIN/posctl ${CLIENT[*]} ping          # health of every instance"
echo "  $BIN/posctl ${CLIENT[*]} stats busd    # busd's counters"
echo "  $BIN/posctl ${CLIENT[*]} tail          # every event as a JSON line"
echo "  $BIN/posctl ${CLIENT[*]} report z --store $STORE   # close the day"
echo "  $BIN/posctl ${CLIENT[*]} sim --store $STORE --register-base 10 --sales 100 --first-seq $((FIRST + 1000))"
echo "  $BIN/posctl ${CLIENT[*]} keys list      # enrolled keys with their roles"
echo "  $BIN/posctl ${CLIENT[*]} node list      # registers: online, unsynced, devices"
echo "  socat - UNIX-CONNECT:$VAR/R01.sock     # ring a ticket at R01 (docs/posnode.md)"
if [ -n "${POSBUS_DEMO_SECONDS:-}" ]; then
    pause "$POSBUS_DEMO_SECONDS"
else
    echo "Ctrl-C stops everything."
    while true; do pause 3600; done
fi
