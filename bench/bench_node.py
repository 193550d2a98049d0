#!/usr/bin/python3
"""bench_node - a real posnode with a 100,000-item catalog: memory, sale commit, catch-up.

Starts redis-server, busd, sales, inventory, reporting and devices from an optimised build (the
harness of the integration tests, as bench_sales.py does), imports a catalog of ITEMS items with
valid EAN-13 barcodes, adds a cashier, and starts posnode, which syncs the catalog and the
configuration at start. Then, through posnode's line interface (its unix socket):
  - SALES sales of 5 scans, each completed with `pay cash`, which journals and fdatasync()s the
    sale (on the disk of the temporary directory) before answering:
      node.sale_commit_p50_ms / _p99_ms   the `pay cash` round trip through the socket
      node.socket_scan_p99_us             a `scan` round trip through the socket (JSON included)
      node.rss_mb / node.rss_peak_mb      posnode's VmRSS and VmHWM after those sales
                                          (node.rss_ready_mb: VmRSS once the catalog is in)
  - sales is stopped, BACKLOG sales (2 scans each) are rung while it is away, sales is started
    again and the time until posnode reports `unsynced` 0 is measured:
      node.catchup_10k_s          sales started -> unsynced 0 (includes the node's retry backoff)
      node.catchup_sales_per_s    BACKLOG / node.catchup_10k_s
      node.catchup_upload_sales_per_s  first acknowledged upload -> unsynced 0 (the upload rate)
      node.catchup_committed      sales_committed of the new sales instance (must be BACKLOG)
usage: bench_node.py BUILD_DIR [ITEMS [SALES [BACKLOG]]]"""
import json
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
os.environ.setdefault("POSBUS_SRC", os.path.join(HERE, ".."))
os.environ["POSBUS_BIN"] = os.path.abspath(os.path.join(sys.argv[1] if len(sys.argv) > 1
                                                        else "build", "bin"))
from harness import Stack, wait_for  # noqa: E402

ITEMS = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
SALES = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
BACKLOG = int(sys.argv[4]) if len(sys.argv) > 4 else 10000
BIN = os.environ["POSBUS_BIN"]
STORE, REG = "S1", "R01"
SCANS_PER_SALE = 5
BACKLOG_SCANS = 2


def ean13(i):
    """"690" + 9 digits of i + the check digit: what bench_node.c makes too."""
    body = f"690{i:09d}"
    s = sum(int(d) * (3 if k % 2 else 1) for k, d in enumerate(body))
    return body + str((10 - s % 10) % 10)


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, len(v) * p // 100)]


def proc_status(pid, key):
    status = open(f"/proc/{pid}/status", encoding="utf-8").read()
    return int(re.search(key + r":\s+(\d+) kB", status).group(1)) / 1024


def cpu_s():
    """CPU seconds (user + system) of every process of the stack, by tag."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tag, p in st.procs.items():
        fields = open(f"/proc/{p.pid}/stat", encoding="utf-8").read().rsplit(")", 1)[1].split()
        out[tag] = (int(fields[11]) + int(fields[12])) / tick
    return out


def fail(what):
    sys.exit(f"bench_node: {what}")


st = Stack("bench-node")
st.start_redis()
st.start_busd()
SERVICES = ["sales", "inventory", "reporting", "devices"]
for s in SERVICES:
    st.start_service(s, s, "--log-level", "warn")
if not st.wait_healthy(SERVICES):
    fail("the back office did not come up")
st.posctl("store", "add", STORE, check=True)

csv = os.path.join(st.tmp, "catalog.csv")
with open(csv, "w", encoding="utf-8") as f:
    f.write("sku,barcode,name,price,tax_rate,unit,category,supplier,threshold,member_price\n")
    for i in range(ITEMS):
        f.write(f"SKU{i:06d},{ean13(i)},Bench item {i},{1 + i % 99}.{i % 100:02d},"
                f"{13 if i % 3 else 9},pcs,bench,Bench supplier,5,\n")
t0 = time.time()
st.posctl("catalog", "import", csv, check=True)
import_s = time.time() - t0
r = subprocess.run([f"{BIN}/posctl", *st.conn_args(), "cashier", "add", "--store", STORE, "--id",
                    "ann", "--name", "Ann", "--role", "cashier"], input="1111\n",
                   capture_output=True, text=True, timeout=60)
if r.returncode != 0:
    fail(f"posctl cashier add: {r.stderr.strip()}")

t0 = time.time()
# posnode's own defaults for the heartbeat and the retry backoff (the harness shortens them for
# tests): the catch-up is measured as a register in a store would do it
till = st.start_posnode("r01", STORE, REG, "--node-heartbeat-ms", "2000", "--backoff-max-ms", "10000")
pid = st.procs["r01"].pid
if not wait_for(lambda: (lambda s: s["config_version"] >= 1 and s["catalog_version"] > 0)(
        till.cmd("state")), 60, "the configuration and the catalog"):
    fail("posnode did not get its configuration and catalog")
ready_s = time.time() - t0
rss_ready_mb = proc_status(pid, "VmRSS")
if not till.cmd("login ann 1111")["ok"]:
    fail("login ann refused")
r = till.cmd(f"scan {ean13(ITEMS - 1)}")
if not r["ok"] or r["ticket"]["lines"][-1]["sku"] != f"SKU{ITEMS - 1:06d}":
    fail(f"a scan of the last item's barcode: {r}")
till.cmd("pay cash")


def ring(n, scans, timed):
    """n sales of scans random items each; fills scan_us and pay_ms when timed."""
    seed = 12345
    for k in range(n):
        for _ in range(scans):
            seed = (seed * 6364136223846793005 + 1442695040888963407) % 2**64
            t = time.perf_counter()
            r = till.cmd(f"scan {ean13((seed >> 33) % ITEMS)}")
            if timed:
                scan_us.append((time.perf_counter() - t) * 1e6)
            if not r["ok"]:
                fail(f"scan refused: {r}")
        t = time.perf_counter()
        r = till.cmd("pay cash")
        if timed:
            pay_ms.append((time.perf_counter() - t) * 1e3)
        if not r["ok"] or "sale_id" not in r:
            fail(f"sale {k}: pay cash refused: {r}")


scan_us, pay_ms = [], []
ring(SALES, SCANS_PER_SALE, True)
rss_mb, hwm_mb = proc_status(pid, "VmRSS"), proc_status(pid, "VmHWM")
if not wait_for(lambda: till.cmd("state")["unsynced"] == 0, 60, "the online sales uploaded"):
    fail("the sales rung online were not uploaded")

# --- the backlog: sales stopped, BACKLOG sales rung, sales started ----------------------------
st.kill("sales", signal.SIGTERM)
t0 = time.time()
ring(BACKLOG, BACKLOG_SCANS, False)
offline_s = time.time() - t0
if not wait_for(lambda: till.cmd("state")["unsynced"] == BACKLOG, 30, "the backlog"):
    fail(f"posnode does not show {BACKLOG} unsynced: {till.cmd('state')}")
rss_backlog_mb = proc_status(pid, "VmRSS")
cpu0 = cpu_s()
t_start = time.time()
st.start_service("sales", "sales", "--log-level", "warn")
t_first = None
while True:
    left = till.cmd("state")["unsynced"]
    now = time.time()
    if t_first is None and left < BACKLOG:
        t_first = now
    if left == 0 or now - t_start > 300:
        break
    time.sleep(0.01)
t_done = time.time()
if left:
    fail(f"{left} sales still unsynced after 300 s")
cpu1 = cpu_s()
counters = json.loads(st.posctl("stats", "sales", check=True).stdout)["counters"]
committed = counters.get("sales_committed", 0)
catchup_s = t_done - t_start
upload_s = t_done - t_first

print(f"node.catalog_items: {ITEMS}")
print(f"node.catalog_import_s: {import_s:.2f}")
print(f"node.start_to_ready_s: {ready_s:.2f}")
print(f"node.sales: {SALES}")
print(f"node.socket_scan_p50_us: {pct(scan_us, 50):.0f}")
print(f"node.socket_scan_p99_us: {pct(scan_us, 99):.0f}")
print(f"node.sale_commit_p50_ms: {pct(pay_ms, 50):.2f}")
print(f"node.sale_commit_p99_ms: {pct(pay_ms, 99):.2f}")
print(f"node.sale_commit_max_ms: {max(pay_ms):.2f}")
print(f"node.rss_ready_mb: {rss_ready_mb:.1f}")
print(f"node.rss_mb: {rss_mb:.1f}")
print(f"node.rss_peak_mb: {hwm_mb:.1f}")
print(f"node.rss_backlog_mb: {rss_backlog_mb:.1f}")
print(f"node.offline_sales_per_s: {BACKLOG / offline_s:.0f}")
print(f"node.catchup_sales: {BACKLOG}")
print(f"node.catchup_committed: {committed}")
print(f"node.catchup_10k_s: {catchup_s:.2f}")
print(f"node.catchup_sales_per_s: {BACKLOG / catchup_s:.0f}")
print(f"node.catchup_first_ack_s: {t_first - t_start:.2f}")
print(f"node.catchup_upload_sales_per_s: {BACKLOG / upload_s:.0f}")
print(f"node.catchup_upload_rtt_ms: {upload_s * 1000 / BACKLOG:.2f}")
for tag in sorted(cpu1):  # sales is a new process: all its CPU is the catch-up's
    used = cpu1[tag] - cpu0.get(tag, 0.0)
    print(f"{'posnode' if tag == 'r01' else tag}.catchup_cpu_us_per_sale: "
          f"{used * 1e6 / BACKLOG:.0f}")
if committed != BACKLOG:
    fail(f"sales committed {committed} of the {BACKLOG} sales of the backlog")
