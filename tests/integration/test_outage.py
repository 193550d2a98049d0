#!/usr/bin/python3
"""test_outage - Redis dies and its disk fills up under load; no sale is lost or doubled.

3,000 tickets from 4 simulated registers are uploaded while Redis is killed with SIGKILL and kept
down for 2 s, and later while the disk under its append-only file is full (a small tmpfs filled
with a file; when this test cannot mount one it makes Redis refuse writes by memory instead, and
says so). The sales service must answer those failures as `unavailable` (retry), never as a
refusal; the simulator resends until acknowledged. At the end: the simulator gave up on nothing,
every sale it rang up is in the sales stream exactly once, and reports and stock agree with the
sums the test computes from those sale documents."""
import atexit
import os
import subprocess
import time

from harness import (Bus, Checks, Stack, SRC, check_books, receive_opening_stock,
                     sim_finished, wait_for as poll)

TICKETS = 3000
REGISTERS = 4
TMPFS_MB = 128

c = Checks("test_outage")
st = Stack("outage")

# Redis's data directory on a small file system of its own, so the test can fill it
data = os.path.join(st.tmp, "redis-data")
os.makedirs(data)
mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", data],
                         capture_output=True).returncode == 0
if mounted:
    atexit.register(lambda: subprocess.run(["umount", "-l", data], capture_output=True))
print(f"redis data on {'a ' + str(TMPFS_MB) + ' MB tmpfs' if mounted else 'the test directory'}",
      flush=True)
REDIS_CONF = (f"dir {data}", "appendfsync everysec", "auto-aof-rewrite-percentage 0")
st.start_redis(*REDIS_CONF)
st.start_busd()
st.start_service("sales", "sales")
st.start_service("inventory", "inventory", "--claim-idle-ms", "1000")
st.start_service("reporting", "reporting", "--claim-idle-ms", "1000")
c.check(st.wait_healthy(["sales", "inventory", "reporting"]), "back office healthy")
st.posctl("store", "add", "S1", "Outage store", check=True)
st.posctl("catalog", "import", os.path.join(SRC, "scripts", "sample", "catalog.csv"), check=True)
bus = Bus(st)

initial = receive_opening_stock(st, bus, "S1", 50_000, 5_000_000)


def counter(service, name):
    r = bus.call(service, "stats", {}, allow_timeout=True)
    return (r or {}).get("body", {}).get("counters", {}).get(name, -1) if r else -1


def wait_for(cond, timeout, what):
    """Poll cond; a timeout is a failed check."""
    ok = poll(cond, timeout, what, step=0.05)
    if not ok:
        c.fail(f"{what}: not within {timeout} s")
    return ok


sim = st.posctl_popen("sim", "sim", "--store", "S1", "--registers", str(REGISTERS), "--sales",
                      str(TICKETS), "--seed", "7", "--deadline-ms", "300000")

# --- Redis killed and kept down for 2 s -------------------------------------------------------
wait_for(lambda: counter("sales", "sales_committed") >= 500, 120, "500 sales committed")
before_kill = counter("sales", "sales_committed")
st.kill("redis")
time.sleep(2.0)  # the outage itself: 2 s without Redis
st.start_redis(*REDIS_CONF)
c.check(wait_for(lambda: counter("sales", "sales_committed") >= before_kill + 200, 60,
                 "sales committed again after Redis came back"),
        f"Redis SIGKILLed at {before_kill} committed sales, down 2 s, and sales resumed")

# --- the disk fills up, then is freed ---------------------------------------------------------
wait_for(lambda: counter("sales", "sales_committed") >= 1500, 120, "1500 sales committed")
filler = os.path.join(data, "filler")
refused_by = None
if mounted:
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
    refused_by = "disk full"
else:
    used = st.redis_cli("INFO", "memory").stdout
    used = int([l for l in used.splitlines() if l.startswith("used_memory:")][0].split(":")[1])
    st.redis_cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
    st.redis_cli("CONFIG", "SET", "maxmemory", str(used))
    refused_by = "out of memory (no tmpfs could be mounted)"


def refusing():
    r = st.redis_cli("SET", "outage:{probe}", "x", check=False)
    return "MISCONF" in r.stdout or "OOM" in r.stdout or "ERR" in r.stdout


c.check(wait_for(refusing, 30, "Redis refuses writes"), f"Redis refuses writes: {refused_by}")
stalled = counter("sales", "sales_committed")
time.sleep(2.0)  # keep it refusing for 2 s under load
still = counter("sales", "sales_committed")
c.check(still - stalled <= 1, f"no sale committed while Redis refused writes ({stalled} -> "
        f"{still})")
if mounted:
    os.unlink(filler)
else:
    st.redis_cli("CONFIG", "SET", "maxmemory", "0")
c.check(wait_for(lambda: not refusing(), 30, "Redis writes again"), "space freed: Redis writes "
        "again")

# --- the simulator finishes: nothing given up -------------------------------------------------
summary = sim_finished(c, st, sim, TICKETS, "a transient failure must never be a refusal")

# --- every sale exactly once in the stream, and the books agree -------------------------------
docs = check_books(c, st, bus, TICKETS, summary, initial)
want_ids = {f"S1-R{r:02d}-{s:06d}" for r in range(1, REGISTERS + 1)
            for s in range(1, TICKETS // REGISTERS + 1)}
c.eq(sorted(want_ids - {d["sale_id"] for d in docs}), [],
     "sale ids the registers rang up but the stream lacks")
c.finish()
