#!/usr/bin/python3
"""test_sim - posctl sim never gives up on a sale silently; posctl dead shows dead letters.

A real redis-server (password in a 0600 config file, AOF fsynced on every write so a SIGKILL
loses nothing acknowledged), busd, sales and inventory. The oracle for "committed exactly once"
is the sales stream itself, read with sale.replay by this test's own client and compared with
the sale ids the test expects (store-register-sequence), not with the simulator's summary:
- sales is down when the simulator starts: it resends until an instance registers;
- Redis is SIGKILLed for 2 s while three registers upload: every sale committed exactly once;
- a sale the sales service refuses is listed with its error code, and the exit code is 1;
- a sale that cannot be delivered before --deadline-ms is listed, not dropped;
- a parked (dead-letter) entry is shown by `posctl dead` with its sale_id and reason."""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("POSBUS_SRC", "."), "tests", "integration"))
from harness import Bus, Checks, Stack, wait_for as poll  # noqa: E402

BIN = os.environ.get("POSBUS_BIN", "build/bin")
SRC = os.environ.get("POSBUS_SRC", ".")
STORE = "S001"

c = Checks("test_sim")
st = Stack("sim")
password = st.password
REDIS_CONF = ("appendfsync always",)  # a SIGKILL of Redis loses nothing acknowledged


def start_redis():
    st.start_redis(*REDIS_CONF)


def redis_cli(*args):
    return st.redis_cli(*args, check=False).stdout


def wait_for(cond, timeout, step=0.05):
    return poll(cond, timeout, step=step)


def committed(bus):
    """sale_id -> times it appears in the sales stream (sale.replay from the start)."""
    seen, after = {}, "0-0"
    while True:
        r = bus.call("sales", "sale.replay", {"after": after, "count": 500}, timeout=10)
        if not r or r["type"] != "reply":
            raise RuntimeError(f"sale.replay failed: {r}")
        for sale in r["body"]["sales"]:
            seen[sale["sale_id"]] = seen.get(sale["sale_id"], 0) + 1
            after = sale["stream_id"]
        if not r["body"]["more"]:
            return seen


def sim(*args, stderr_path=None):
    argv = [f"{BIN}/posctl", *st.conn_args(), "sim", "--store", STORE, *args]
    err = open(stderr_path, "w", encoding="utf-8") if stderr_path else subprocess.PIPE
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True)


def summary_of(proc, timeout):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        print(f"FAIL the simulator did not finish within {timeout} s")
    lines = out.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def expected_ids(base, registers, sales, first_seq=1):
    return {f"{STORE}-R{base + n % registers + 1:02d}-{first_seq + n // registers:06d}"
            for n in range(sales)}


start_redis()
st.start_busd()
st.start_service("sales1", "sales")
st.start_service("inventory1", "inventory")
c.check(st.wait_healthy(["sales", "inventory"]), "stack healthy")
st.posctl("store", "add", STORE, check=True)
st.posctl("catalog", "import", os.path.join(SRC, "scripts", "sample", "catalog.csv"), check=True)
bus = Bus(st)
ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
c.check(password not in ps, "the Redis password is on no command line that ps shows")

# --- sales is down when the simulator starts ------------------------------------------------
st.kill("sales1", signal.SIGTERM)
c.check(wait_for(lambda: st.posctl("--expect", "sales", "ping").returncode != 0, 20),
        "sales instance gone")
log = os.path.join(st.tmp, "sim-late.err")
p = sim("--registers", "1", "--register-base", "0", "--sales", "20", "--seed", "7",
        "--timeout-ms", "300", "--retries", "0", stderr_path=log)
c.check(wait_for(lambda: "resending until acknowledged" in open(log, encoding="utf-8").read(),
                 20), "the simulator reports its first failed upload and keeps resending")
st.start_service("sales1", "sales")
s = summary_of(p, 120)
c.check(st.wait_healthy(["sales", "inventory"]), "sales back")
want = expected_ids(0, 1, 20)
got = committed(bus)
late = {k: v for k, v in got.items() if k in want}
c.check(p.returncode == 0 and s.get("acknowledged") == 20 and s.get("unacknowledged") == [],
        f"every sale acknowledged once sales is back: exit {p.returncode}, acknowledged "
        f"{s.get('acknowledged')} of 20, unacknowledged {s.get('unacknowledged')}")
c.check(s.get("retries", 0) > 0, f"resends counted: {s.get('retries')}")
c.check(set(late) == want and all(v == 1 for v in late.values()),
        f"the stream holds each of the 20 sales exactly once: {len(late)} distinct, "
        f"{sum(late.values())} entries, missing {sorted(want - set(late))[:5]}")

# --- Redis SIGKILLed for 2 s under load -----------------------------------------------------
N, REGS, BASE = 600, 3, 10
before = sum(committed(bus).values())
log = os.path.join(st.tmp, "sim-outage.err")
p = sim("--registers", str(REGS), "--register-base", str(BASE), "--sales", str(N), "--seed",
        "11", "--returns-pct", "5", "--timeout-ms", "1000", "--retries", "1", stderr_path=log)


def stream_len():
    out = redis_cli("XLEN", "sales:stream").strip()
    return int(out) if out.isdigit() else 0


c.check(wait_for(lambda: stream_len() >= before + 100, 60),
        f"100 sales committed before the outage ({stream_len() - before})")
st.kill("redis", signal.SIGKILL)
at_kill = time.time()
time.sleep(2.0)  # the outage itself, not a synchronisation
start_redis()
print(f"     redis down for {time.time() - at_kill:.1f} s")
s = summary_of(p, 300)
want = expected_ids(BASE, REGS, N)
got = committed(bus)
mine = {k: v for k, v in got.items() if k in want}
c.check(p.returncode == 0 and s.get("tickets") == N and s.get("acknowledged") == N and
        s.get("unacknowledged") == [] and s.get("refused") == 0,
        f"simulator: exit {p.returncode}, {s.get('acknowledged')} of {N} acknowledged, "
        f"refused {s.get('refused')}, unacknowledged {str(s.get('unacknowledged'))[:300]}")
c.check(set(mine) == want,
        f"all {N} sales committed after the outage: {len(mine)} distinct, missing "
        f"{len(want - set(mine))} e.g. {sorted(want - set(mine))[:5]}")
c.check(all(v == 1 for v in mine.values()),
        f"no sale committed twice: {sum(mine.values())} stream entries for {len(mine)} sales")
c.check(s.get("retries", 0) > 0 and "acknowledged after" in open(log, encoding="utf-8").read(),
        f"the outage was felt and ridden out by resending: retries {s.get('retries')}")

# --- a refusal for good is reported, never dropped ------------------------------------------
r = st.posctl("sim", "--store", "NOPE", "--registers", "1", "--sales", "3", "--seed", "3")
s = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
listed = {u["sale_id"]: u for u in s.get("unacknowledged", [])}
c.check(r.returncode == 1 and set(listed) == {f"NOPE-R01-{i:06d}" for i in (1, 2, 3)} and
        s.get("refused") == 3 and s.get("acknowledged") == 0,
        f"an unknown store's 3 sales are listed as refused, exit 1: exit {r.returncode}, "
        f"{s.get('unacknowledged')}")
c.check(all(u["code"] not in ("timeout", "no_service", "unavailable") and u["attempts"] == 1
            for u in listed.values()),
        "a refusal is not retried and carries the service's error code: "
        + ", ".join(f"{k}={u['code']}" for k, u in listed.items()))

# --- a sale that cannot be delivered before the deadline is listed -------------------------
st.kill("sales1", signal.SIGTERM)
c.check(wait_for(lambda: st.posctl("--expect", "sales", "ping").returncode != 0, 20),
        "sales instance gone again")
t0 = time.time()
r = st.posctl("sim", "--store", STORE, "--registers", "1", "--register-base", "50", "--sales",
              "2", "--deadline-ms", "1500", "--timeout-ms", "200", "--retries", "0")
took = time.time() - t0
s = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
listed = {u["sale_id"]: u for u in s.get("unacknowledged", [])}
c.check(r.returncode == 1 and set(listed) == {f"{STORE}-R51-000001", f"{STORE}-R51-000002"} and
        all(u["attempts"] > 1 for u in listed.values()),
        f"undeliverable sales listed after their deadline with their attempts: exit "
        f"{r.returncode}, {s.get('unacknowledged')}")
c.check(3.0 <= took < 30,
        f"each sale was retried until its --deadline-ms: {took:.1f} s for 2 x 1.5 s")
st.start_service("sales1", "sales")
c.check(st.wait_healthy(["sales", "inventory"]), "sales back")

# --- posctl dead ----------------------------------------------------------------------------
ts = int(time.time() * 1000)
redis_cli("XADD", "dead:{inventory}", "*", "entry", "1700000000000-7", "reason",
          "qty is not a whole number", "consumer", "inventory-test", "ts", str(ts), "sale_id",
          "S001-R09-000042", "store", STORE, "payload", "not msgpack")
redis_cli("XADD", "dead:{inventory}", "*", "entry", "1700000000001-0", "reason", "malformed",
          "consumer", "inventory-test", "ts", str(ts), "store", STORE)
r = st.posctl("dead", "inventory")
rows = [ln for ln in r.stdout.splitlines() if ln.strip()]
c.check(r.returncode == 0 and len(rows) == 3 and "SALE_ID" in rows[0] and
        "1700000000000-7" in rows[1] and "S001-R09-000042" in rows[1] and
        "qty is not a whole number" in rows[1] and time.strftime("%Y-%m-%d") in rows[1] and
        "1700000000001-0" in rows[2] and "malformed" in rows[2],
        "posctl dead lists each parked entry with its original id, sale_id, time and reason:\n"
        + r.stdout + r.stderr)
c.check("2 dead letters in all" in r.stderr, "and how many there are: " + r.stderr.strip())
r = st.posctl("dead", "inventory", "--count", "1", "--format", "json")
page = json.loads(r.stdout) if r.returncode == 0 else {}
c.check(len(page.get("entries", [])) == 1 and page.get("more") is True and
        page.get("total") == 2 and "--after" in r.stderr,
        f"--count 1 gives one entry and says where the next page starts: {r.stdout} {r.stderr}")
r = st.posctl("dead", "inventory", "--after", page.get("last", ""), "--format", "csv")
c.check(r.returncode == 0 and r.stdout.splitlines()[0] == "id,entry,sale_id,time,reason" and
        len(r.stdout.splitlines()) == 2 and "1700000000001-0" in r.stdout,
        "--after the last id gives the second page, as CSV: " + r.stdout)
r = st.posctl("dead", "reporting")
c.check(r.returncode != 0 and "reporting" in r.stderr,
        "a service that is not running: exit 1 and the reason: " + r.stderr.strip())
c.finish()
