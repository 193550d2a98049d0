#!/bin/bash
# `make demo` (scripts/demo.sh), the README's first command, run as a user runs it but unattended:
# against the build under test, on free ports and in a private var dir, so that it never meets a
# developer's running demo or another test. The store day must really happen (sales at both
# registers, receipts out of the printer simulators, R01's WeChat code payments, the canteen
# taps approved and declined, a consistent day report, one screen of posctl top); the demo must
# stop by itself leaving nothing running and no port taken; and a second run, interrupted with
# SIGINT to its process group (Ctrl-C) while R01 rings, must end at once (exit 130), again
# leaving nothing. A sanitizer report in any of the demo's logs fails the test.
set -u
BIN=${POSBUS_BIN:?}
SRC=${POSBUS_SRC:?}
BUILD=$(cd "$BIN/.." && pwd) # demo.sh takes the build directory, absolute here
PY=/usr/bin/python3
TICKETS=5 SALES=20 CODE=2 STORE=S001
STOP_S=25 # the interrupted demo must be gone this soon after SIGINT

passed=0 failed=0
check() { # what, then a command: ok when it succeeds
    local what=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
        echo "ok   $what"
    else
        failed=$((failed + 1))
        echo "FAIL $what"
    fi
}
finish() {
    echo "test_demo: $passed passed, $failed failed"
    [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
    exit
}

TMP=$(mktemp -d /tmp/posbus-demo-test.XXXXXX)
VAR="$TMP/var"
DEMO_PID=
cleanup() { # only if the test itself fails half-way: the demo's group, then the files
    if [ -n "$DEMO_PID" ] && kill -0 "$DEMO_PID" 2>/dev/null; then
        kill -TERM -- "-$DEMO_PID" 2>/dev/null
        sleep 2
        kill -KILL -- "-$DEMO_PID" 2>/dev/null
    fi
    if [ "$failed" -eq 0 ]; then rm -rf "$TMP"; else echo "kept for a look: $TMP"; fi
}
trap cleanup EXIT

free_ports() { # N ports nobody listens on now (bound together, so N different ones)
    "$PY" -c 'import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}

# start_demo TAG SECONDS: the demo in its own session and process group (as a terminal would run
# it: the group is what Ctrl-C signals), its output in $TMP/TAG.out. Sets PORTS and DEMO_PID.
# SIGINT back to its default first: bash starts a background command with SIGINT ignored, and a
# script that starts with SIGINT ignored cannot trap it, unlike one started from a terminal.
start_demo() {
    local p
    read -r -a p < <(free_ports 5)
    PORTS=("${p[@]}")
    POSBUS_DEMO_VAR="$VAR" POSBUS_DEMO_SECONDS=$2 POSBUS_DEMO_TICKETS=$TICKETS \
        POSBUS_DEMO_SALES=$SALES POSBUS_DEMO_CODE_TICKETS=$CODE POSBUS_DEMO_STORE=$STORE \
        POSBUS_DEMO_REDIS_PORT=${p[0]} POSBUS_DEMO_PUB_PORT=${p[1]} POSBUS_DEMO_SUB_PORT=${p[2]} \
        POSBUS_DEMO_REQ_PORT=${p[3]} POSBUS_DEMO_WECHAT_PORT=${p[4]} \
        setsid env --default-signal=INT bash "$SRC/scripts/demo.sh" "$BUILD" \
        > "$TMP/$1.out" 2>&1 < /dev/null &
    DEMO_PID=$!
}

# wait_demo LIMIT_S: wait at most LIMIT_S for the demo to end; sets RC (124: still running)
wait_demo() {
    local k
    for ((k = 0; k < $1 * 10; k++)); do
        kill -0 "$DEMO_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$DEMO_PID" 2>/dev/null; then
        RC=124
        return
    fi
    wait "$DEMO_PID"
    RC=$?
}

# the processes that belong to the demo: in its process group or session, or naming its var
# dir on their command line, or its redis-server (which shows only "redis-server 127.0.0.1:PORT":
# matched by port, and only redis-server, so that another test on a port the demo had is not
# taken for one of its own)
leftovers() {
    DEMO_PGID=$DEMO_PID DEMO_VAR=$VAR DEMO_PORTS="${PORTS[*]}" "$PY" -c 'import os, re
me = os.getpid()
pgid, var = os.environ["DEMO_PGID"], os.environ["DEMO_VAR"]
ports = os.environ["DEMO_PORTS"].split()
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) == me:
        continue
    try:
        cmd = open("/proc/%s/cmdline" % pid, "rb").read()
        cmd = cmd.replace(b"\0", b" ").decode(errors="replace")
        stat = open("/proc/%s/stat" % pid).read()
    except OSError:
        continue
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z" and not cmd:
        continue
    if fields[2] == pgid or fields[3] == pgid or var in cmd or ("redis-server" in cmd and
            any(re.search(":%s(?![0-9])" % p, cmd) for p in ports)):
        print(pid, cmd[:160])'
}
no_leftovers() { # and ends (by pid) those found, so that they disturb nothing after the test
    local left pids
    left=$(leftovers)
    [ -n "$left" ] || return 0
    echo "still running:"
    echo "$left"
    mapfile -t pids < <(cut -d' ' -f1 <<<"$left")
    kill -TERM "${pids[@]}" 2>/dev/null
    return 1
}
listening() { # those of the demo's ports something listens on
    local p
    for p in "${PORTS[@]}"; do
        [ -z "$(ss -Hltn "sport = :$p")" ] || echo "$p"
    done
}
ports_free() {
    local busy
    busy=$(listening)
    [ -n "$busy" ] || return 0
    echo "still listened on:" $busy
    ss -ltnp | grep -E ":($(echo $busy | tr ' ' '|')) "
    return 1
}
SANITIZER="ERROR: (LeakSanitizer|AddressSanitizer)|runtime error:|SUMMARY: UndefinedBehavior"
no_sanitizer_report() { # in the demo's logs and its own output (posctl writes there)
    local f bad=0
    for f in "$VAR"/log/*.log "$TMP/$1.out"; do
        if grep -qE "$SANITIZER" "$f"; then
            echo "sanitizer report in $f:"
            grep -m1 -A30 -E "$SANITIZER" "$f"
            bad=1
        fi
    done
    [ "$bad" = 0 ]
}
out_has() { # TAG REGEX: a line of the demo's output matches
    grep -qE -- "$2" "$TMP/$1.out" || { echo "no line like /$2/ in the demo's output"; return 1; }
}

until_demo() { # N CMD...: CMD every 0.1 s, at most N times, until it succeeds or the demo ends
    local k
    for ((k = 0; k < $1; k++)); do
        "${@:2}" && return 0
        kill -0 "$DEMO_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# ---- run 1: a whole store day, stopping by itself --------------------------------------------
start_demo day 12
echo "demo 1: pid $DEMO_PID, ports ${PORTS[*]}, var $VAR"
t0=$SECONDS
# while it waits out POSBUS_DEMO_SECONDS: the day report as JSON, to compare with what it printed
until_demo 1500 grep -q "^posbus is running" "$TMP/day.out" || true
if grep -q "^posbus is running" "$TMP/day.out"; then
    timeout 20 "$BIN/posctl" --config "$VAR/posctl.conf" report day --store "$STORE" \
        --format json > "$TMP/day.json" 2> "$TMP/day-json.err"
    # the checks for leftovers below must see the demo while it runs, or they prove nothing
    check "while it runs, its redis-server, busd, posnode and simulators are seen as its own" \
        eval '[ "$(leftovers | grep -cE "redis-server|bin/(busd|posnode) |devices/sim/")" -ge 10 ]'
    check "and each of its ports as listened on" eval '[ "$(listening | wc -l)" = ${#PORTS[@]} ]'
fi
wait_demo 120
echo "demo 1 ended after $((SECONDS - t0)) s with $RC"
check "the demo ends by itself after POSBUS_DEMO_SECONDS, exit 0" [ "$RC" = 0 ]
[ "$RC" = 0 ] || { echo "--- its output:"; tail -n 40 "$TMP/day.out"; }
check "busd and the five services answered healthy" \
    out_has day "^payments +payments-.* OK "
check "the simulated registers' $SALES tickets were all acknowledged, none refused" \
    "$PY" -c 'import json, sys
s = json.load(open(sys.argv[1]))
assert s["acknowledged"] == s["tickets"] == int(sys.argv[2]) and s["refused"] == 0, s' \
    "$VAR/sim.json" "$SALES"
# the simulated registers have names of their own (R11-R13, which start at a high sequence:
# a gap sales notes for them): sales never takes a posnode's sale for a gap in a simulated
# register's sequence and asks R01 or R02 to resend what it never sold
check "sales saw no sequence gap at R01 or R02" \
    eval '! grep -E "sales\.gap: .*register=R0[12] " "$VAR/log/sales.log"'
check "(and notes the simulated registers' gaps in the same log, as that check expects)" \
    grep -qE "sales\.gap: .*register=R1[1-3] " "$VAR/log/sales.log"
# R01 takes every fifth ticket by card at its terminal, the rest in cash; R02 all in cash
r01_card=$((TICKETS / 5))
rang="^R01 and R02 rang $((TICKETS - r01_card)) and $TICKETS tickets paid in cash;"
check "R01 and R02 rang their $TICKETS tickets each (R01 $r01_card by card at its terminal)" \
    out_has day "$rang R01 $r01_card more by card"
check "R01's card terminal booked the card payment" \
    out_has day "^-- R01's card terminal booked: $r01_card card payments, [1-9][0-9]* fen"
receipts_ok() { # REG MIN: at least MIN receipts, each one sale of REG's, no sale printed twice
    local files n ids
    files=("$VAR/receipts/$1"/receipt-*.txt)
    [ -e "${files[0]}" ] || { echo "no receipt in $VAR/receipts/$1"; return 1; }
    n=${#files[@]}
    ids=$(grep -hE "^SALE $STORE-$1-[0-9]+" "${files[@]}" | sort -u | wc -l)
    [ "$n" -ge "$2" ] && [ "$ids" = "$n" ] && [ -s "${files[0]%.txt}.png" ] ||
        { echo "$1: $n receipts, $ids distinct SALE lines, at least $2 wanted"; return 1; }
}
check "R01's printer simulator printed its tickets' receipts (text and PNG, SALE lines)" \
    receipts_ok R01 $((TICKETS + CODE))
check "R02's printer simulator printed its tickets' receipts (text and PNG, SALE lines)" \
    receipts_ok R02 "$TICKETS"
check "the demo showed R02's last receipt" out_has day "^SALE $STORE-R02-[0-9]+"
check "R01's $CODE WeChat code payments succeeded at the emulator" \
    "$PY" -c 'import re, sys
line = [l for l in open(sys.argv[1]) if l.startswith("-- R01\x27s WeChat code payments:")][0]
n = int(sys.argv[2])
m = re.search(r"payments: (\d+) asked, (\d+) fen charged: (.*) \(emulator: (\d+) charges", line)
assert m and int(m[1]) == n and int(m[2]) > 0 and int(m[4]) == n, line
assert len(re.findall(r"S001-R01-\d+-\d+ SUCCESS 42\d+", m[3])) == n, line' "$TMP/day.out" "$CODE"
check "canteen: card 20240001 approved at terminal 1 for 12.50" \
    out_has day "terminal 1, card 20240001, 12\.50: approved \(余额 87\.50\)"
check "canteen: card 20240002 declined for lack of balance" \
    out_has day "terminal 2, card 20240002, 8\.00: declined \(余额不足\)"
check "canteen: card 20240001 approved again, 81.00 left" \
    out_has day "terminal 2, card 20240001, 6\.50: approved \(余额 81\.00\)"
check "posctl report day --format json answered while the demo ran" \
    "$PY" -c 'import json, sys; json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])' \
    "$TMP/day.json"
# every ticket is in the report: the simulated ones, both registers' (cash, card, code) and the
# two canteen taps approved; tenders add up to total + change + rounding; stored value is the
# taps; the printed report says the same as the JSON one
check "the day report counts every ticket, its totals add up and match what the demo printed" \
    "$PY" -c 'import json, re, sys
d = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
out = open(sys.argv[2]).read()
sales, tickets, code = map(int, sys.argv[3:6])
t, tn = d["totals"], d["tenders"]
print("report:", json.dumps(d["totals"]), json.dumps(tn))
assert t["tickets"] == sales + 2 * tickets + code + 2, "tickets"
assert t["total"] > 0 and t["gross"] > 0 and tn["cash"] > 0 and tn["card"] > 0
assert tn["wechat"] > 0 and tn["stored_value"] == 1250 + 650, "stored value"
assert sum(tn.values()) == t["total"] + t["change"] + t["cash_rounding"], "tenders"
def yuan(f):
    return ("-" if f < 0 else "") + "¥{:,}.{:02d}".format(abs(f) // 100, abs(f) % 100)
for key, fen in (("totals.tickets", None), ("totals.total", t["total"]),
                 ("tenders.wechat", tn["wechat"]), ("tenders.stored_value", tn["stored_value"])):
    want = str(t["tickets"]) if fen is None else yuan(fen)
    assert re.search(r"^%s +%s$" % (re.escape(key), re.escape(want)), out, re.M), key + " printed"
' "$TMP/day.json" "$TMP/day.out" "$SALES" "$TICKETS" "$CODE"
check "the demo printed one screen of posctl top with both registers online" \
    out_has day "^registers: 2 online, 0 offline"
check "posctl top listed the five services ok" \
    [ "$(grep -cE "^(sales|inventory|reporting|devices|payments) +[a-z]+-.* ok " \
        "$TMP/day.out")" = 5 ]
check "the demo stopped everything (and killed nothing)" \
    eval 'out_has day "^== stopped; logs in $VAR/log" &&
          ! out_has day "did not stop; killed" >/dev/null'
check "no process of the demo is left" no_leftovers
check "none of its ports is still listened on" ports_free
check "no sanitizer report in the demo's logs (services stopped cleanly under ASan)" \
    no_sanitizer_report day

# ---- run 2: Ctrl-C while R01 rings ---------------------------------------------------------
# in the same var dir, as a second `make demo` runs: keys, data and registers carry over
rm -f "$VAR/R01.answers"
start_demo ctrl-c 600
echo "demo 2: pid $DEMO_PID, ports ${PORTS[*]}"
t0=$SECONDS
until_demo 1200 grep -qs '"sale_id"' "$VAR/R01.answers" || true
check "the second run got as far as R01 ringing a sale" grep -qs '"sale_id"' "$VAR/R01.answers"
[ -s "$VAR/R01.answers" ] || tail -n 30 "$TMP/ctrl-c.out"
echo "Ctrl-C after $((SECONDS - t0)) s"
t1=$SECONDS
kill -INT -- "-$DEMO_PID"
wait_demo "$STOP_S"
echo "demo 2 ended $((SECONDS - t1)) s after SIGINT with $RC"
check "SIGINT ends the demo within $STOP_S s, exit 130" [ "$RC" = 130 ]
check "it stopped there (no day report after Ctrl-C) and stopped everything" \
    eval 'out_has ctrl-c "^== stopped; logs in" && ! grep -q "^== day report" "$TMP/ctrl-c.out" &&
          ! out_has ctrl-c "did not stop; killed" >/dev/null'
check "no process of the interrupted demo is left" no_leftovers
check "none of its ports is still listened on" ports_free
check "no sanitizer report in the interrupted demo's logs" no_sanitizer_report ctrl-c
DEMO_PID=
finish
