#!/usr/bin/python3
"""test_backup_restore - a Redis backup taken mid-day and restored into a fresh back office gives
the same reports, and the registers' journals fill in what came after the backup by themselves.

Two registers (posnode R01 and R02) ring N tickets each; once every sale is acknowledged and
applied, the backup is taken the way docs/operations.md tells an operator to: BGSAVE, wait for it,
copy dump.rdb. The harness's Redis runs with the append-only file on; the RDB written by BGSAVE is
one file holding one moment, so it is the backup taken here (copying the AOF directory is only
consistent with Redis stopped). Both registers ring M more tickets. Then the disaster: every
service stops, Redis is SIGKILLed, and a fresh Redis starts from a data directory holding only the
copied dump; busd, sales, inventory and reporting start again while the registers keep running.
Before devices starts (it is what notices a register holding more than sales has and asks for a
resend), the day report and the stock equal what they were at the backup, to the fen. Then devices
starts and the registers resend what came after the backup: the day report equals the journals'
N+M tickets per register, stock is the opening stock minus everything sold, no ticket counts twice,
and `posctl node list` shows each register with nothing unsynced and everything committed."""
import json
import os
import re
import shutil
import signal
import subprocess
import time

from harness import BIN, Checks, SRC, Stack, journal_sales, wait_for as poll

STORE = "S1"
N = 6  # tickets per register before the backup
M = 4  # tickets per register after it
OPENING = {"MILK1": 1000, "RICE5": 200}
WAIT = 30

c = Checks("test_backup_restore")
st = Stack("backup_restore")


def wait_for(cond, timeout, what):
    """Poll cond; a timeout is a failed check."""
    ok = poll(cond, timeout, what)
    if not ok:
        c.fail(f"{what}: not within {timeout} s")
    return ok


def start_back_office(with_devices=True):
    st.start_busd()
    services = ["sales", "inventory", "reporting"] + (["devices"] if with_devices else [])
    for s in services:
        st.start_service(s, s)
    return st.wait_healthy(services)


st.start_redis()
c.check(start_back_office(), "back office healthy")
st.posctl("store", "add", STORE, "Backup store", check=True)
st.posctl("catalog", "import", os.path.join(SRC, "scripts", "sample", "catalog.csv"), check=True)
for sku, qty in OPENING.items():
    st.posctl("stock", "receive", "--store", STORE, sku, str(qty), "--ref", "OPEN",
              "--move-id", "open-" + sku, check=True)
subprocess.run([f"{BIN}/posctl", *st.conn_args(), "cashier", "add", "--store", STORE, "--id",
                "ann", "--name", "Ann", "--role", "cashier"], input="1111\n", text=True,
               capture_output=True, check=True)

tills = {reg: st.start_posnode(reg.lower(), STORE, reg) for reg in ("R01", "R02")}
for reg, till in tills.items():
    wait_for(lambda: till.cmd("state")["config_version"] >= 1, WAIT, f"{reg} has the cashiers")
    c.check(till.cmd("login ann 1111")["ok"], f"Ann logs in at {reg}")


def ring(count):
    """count tickets at each register: milk (1..3) and every third one a bag of rice, cash."""
    for reg, till in tills.items():
        for i in range(count):
            lines = [f"scan MILK1 {i % 3 + 1}"] + (["scan RICE5"] if i % 3 == 0 else [])
            for line in lines:
                r = till.cmd(line)
                if not r["ok"]:
                    c.fail(f"{reg} {line}: {r.get('error')} {r.get('message')}")
            r = till.cmd("pay cash")
            if not r["ok"]:
                c.fail(f"{reg} pay cash: {r.get('error')} {r.get('message')}")


def journals():
    return {reg: journal_sales(till.journal) for reg, till in tills.items()}


def day():
    r = st.posctl("report", "day", "--store", STORE, "--format", "json")
    try:
        return json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else None
    except (ValueError, IndexError):
        return None


def totals():
    d = day()
    return d["totals"] if d else None


def stock():
    r = st.posctl("stock", "get", "--store", STORE, "--format", "json")
    try:
        got = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else None
    except (ValueError, IndexError):
        return None
    return got


def expected(js):
    """(total fen, tickets, {sku: stock}) the journals' sales give."""
    sales = [s for ss in js.values() for s in ss]
    sold = {}
    for s in sales:
        for line in s["lines"]:
            if not line.get("voided"):
                sold[line["sku"]] = sold.get(line["sku"], 0) + line["qty"]
    return (sum(s["total"] for s in sales), len(sales),
            {sku: qty - sold.get(sku, 0) for sku, qty in OPENING.items()})


def unsynced():
    return sum(t.cmd("state")["unsynced"] for t in tills.values())


def books_match(js):
    """True when the day report's total and tickets are what the journals js give."""
    t = totals()
    total, tickets, _ = expected(js)
    return t is not None and t.get("total") == total and t.get("tickets") == tickets


def stock_of(got):
    """{sku: qty} of the opening SKUs in posctl stock get's JSON (a map, or a list of rows)."""
    if isinstance(got, dict) and "stock" in got:
        got = got["stock"]
    if isinstance(got, list):
        got = {row.get("sku"): row.get("qty", row.get("on_hand")) for row in got}
    return {sku: (got or {}).get(sku) for sku in OPENING}


# --- 1. the morning: N tickets per register, all acknowledged and applied ----------------------
ring(N)
wait_for(lambda: unsynced() == 0, WAIT, "morning sales acknowledged")
morning = journals()
c.eq({r: len(s) for r, s in morning.items()}, {"R01": N, "R02": N}, "sales in the journals")
wait_for(lambda: books_match(morning), WAIT, "morning sales in the day report")
wait_for(lambda: stock_of(stock()) == expected(morning)[2], WAIT, "morning sales in stock")

# --- 2. the backup: BGSAVE, wait for it, copy dump.rdb -----------------------------------------
info = st.redis_cli("CONFIG", "GET", "appendonly").stdout.split()
print(f"harness redis: appendonly {info[-1]}; backup = the RDB written by BGSAVE", flush=True)
data_dir = st.redis_cli("CONFIG", "GET", "dir").stdout.split("\n")[1].strip()
dbfile = st.redis_cli("CONFIG", "GET", "dbfilename").stdout.split("\n")[1].strip()
before = int(st.redis_cli("LASTSAVE").stdout.strip())
t0 = time.time()
st.redis_cli("BGSAVE")


def saved():
    persistence = st.redis_cli("INFO", "persistence").stdout
    return int(st.redis_cli("LASTSAVE").stdout.strip()) != before or \
        ("rdb_bgsave_in_progress:0" in persistence and
         "rdb_last_bgsave_status:ok" in persistence and
         os.path.exists(os.path.join(data_dir, dbfile)) and
         os.path.getmtime(os.path.join(data_dir, dbfile)) >= t0 - 1)


c.check(wait_for(saved, WAIT, "BGSAVE done"), "BGSAVE finished (LASTSAVE moved)")
c.check("rdb_last_bgsave_status:ok" in st.redis_cli("INFO", "persistence").stdout,
        "BGSAVE succeeded (rdb_last_bgsave_status:ok)")
backup = os.path.join(st.tmp, "backup")
os.makedirs(backup)
shutil.copy2(os.path.join(data_dir, dbfile), os.path.join(backup, "dump.rdb"))
dump_size = os.path.getsize(os.path.join(backup, "dump.rdb"))
at_dump = totals()
stock_at_dump = stock_of(stock())
print(f"backup: {dump_size} bytes in {time.time() - t0:.2f} s; day totals {at_dump}; "
      f"stock {stock_at_dump}", flush=True)

# --- 3. the afternoon: M more tickets per register, acknowledged --------------------------------
ring(M)
wait_for(lambda: unsynced() == 0, WAIT, "afternoon sales acknowledged")
day_end = journals()
c.eq({r: len(s) for r, s in day_end.items()}, {"R01": N + M, "R02": N + M},
     "sales in the journals after the afternoon")
wait_for(lambda: books_match(day_end), WAIT, "afternoon sales in the day report")

# --- 4. the disaster: every service stops, Redis is SIGKILLed -----------------------------------
for tag in ("sales", "inventory", "reporting", "devices", "busd"):
    st.kill(tag, signal.SIGTERM)
st.kill("redis")

# --- 5. the restore: a fresh Redis from a data directory holding only the dump ------------------
t_restore = time.time()
restored = os.path.join(st.tmp, "restored")
os.makedirs(restored)
shutil.copy2(os.path.join(backup, "dump.rdb"), os.path.join(restored, "dump.rdb"))
# With appendonly yes and no AOF in its directory, Redis 7.0 starts empty and ignores dump.rdb:
# it starts with the AOF off to load the dump, and turning it on writes the AOF from the data.
st.start_redis(f"dir {restored}", "appendonly no")
keys = int(st.redis_cli("DBSIZE").stdout.strip())
c.check(keys > 0, f"the restored Redis loaded the dump ({keys} keys)")
st.redis_cli("CONFIG", "SET", "appendonly", "yes")


def aof_written():
    p = st.redis_cli("INFO", "persistence").stdout
    return "aof_enabled:1" in p and "aof_rewrite_in_progress:0" in p and \
        "aof_rewrite_scheduled:0" in p and "aof_last_bgrewrite_status:ok" in p


c.check(wait_for(aof_written, WAIT, "the AOF written from the restored data"),
        "append-only file on again, written from the restored data")
c.check(start_back_office(with_devices=False), "busd, sales, inventory, reporting healthy again")
restore_s = time.time() - t_restore

# before devices asks the registers to resend: exactly the books at the backup
c.eq(totals(), at_dump, "day report totals right after the restore = at the backup (fen)")
c.eq(stock_of(stock()), stock_at_dump, "stock right after the restore = at the backup")

# --- 6. the registers fill in what came after the backup ---------------------------------------
t_heal = time.time()
st.start_service("devices", "devices")
c.check(st.wait_healthy(["sales", "inventory", "reporting", "devices"]), "devices healthy")
healed = wait_for(lambda: books_match(day_end), 60,
                  "the day report reaches the journals' N+M tickets per register")
heal_s = time.time() - t_heal
total, tickets, want_stock = expected(day_end)
got = totals() or {}
c.eq(got.get("total"), total, "day report total after healing = the journals' sales (fen)")
c.eq(got.get("tickets"), tickets, "day report tickets after healing (none counted twice)")
wait_for(lambda: stock_of(stock()) == want_stock, WAIT, "stock reaches opening - sold")
c.eq(stock_of(stock()), want_stock, "stock after healing = opening - everything sold")
regs = (day() or {}).get("registers", {})
for reg, js in day_end.items():
    row = regs.get(reg, {})
    c.check(row.get("first") == 1 and row.get("last") == len(js) and
            row.get("records") == len(js) and row.get("complete") is True,
            f"{reg}'s sequence 1..{len(js)} complete in the day report: {row}")


def node_list():
    r = subprocess.run([f"{BIN}/posctl", *st.conn_args(), "node", "list", "--store", STORE,
                        "--format", "json"], capture_output=True, text=True, timeout=60)
    try:
        return {n["register"]: n for n in json.loads(r.stdout)["nodes"]}
    except (ValueError, KeyError):
        return {}


nodes = node_list()
c.eq({r: (n.get("last_seq"), n.get("committed_seq"), n.get("unsynced")) for r, n in nodes.items()},
     {r: (N + M, N + M, 0) for r in tills}, "posctl node list: last_seq, committed_seq, unsynced "
     "per register after healing")
c.eq(unsynced(), 0, "sales the registers hold unacknowledged after healing")
with open(os.path.join(st.tmp, "devices.log"), encoding="utf-8", errors="replace") as f:
    asked = re.findall(r"devices\.resend: store=(\S+) register=(\S+) missing=(\d+)\.\.(\d+)",
                       f.read())
c.check(all((STORE, r, str(N + 1)) in {a[:3] for a in asked} for r in tills),
        f"devices asked each register to resend from sale {N + 1} on (its log: {asked})")
print(f"timings: dump {dump_size} bytes; restore (Redis + busd + 3 services healthy) "
      f"{restore_s:.2f} s; heal {heal_s:.2f} s", flush=True)
c.finish()
