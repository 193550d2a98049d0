#!/usr/bin/python3
"""bench_sales - end-to-end sales throughput of the whole back office on this machine.

Starts redis-server (AOF, fsync every second), busd, 2 sales, 1 inventory and 1 reporting
instance from an optimised build, imports the sample catalog, then runs simulated registers (in
parallel processes) that upload 5-line sales as fast as the stack acknowledges them. Prints
`name: value` lines:
  sales.e2e.sales_per_s      sales committed AND applied by reporting, per second of wall time
  sales.e2e.ack_p99_ms       upload -> acknowledged (worst register's p99)
  sales.e2e.report_p99_ms    upload -> applied in reporting (p99)
  redis.set_per_s            redis-benchmark SET on a scratch Redis with the same settings,
                             for scale (redis-benchmark 7.0 takes a password only with -a, which
                             ps would show, so it gets an instance that holds no data)
  redis.bytes_per_sale       Redis memory growth (used_memory) per committed sale
  sales.e2e.redis_cmds_per_sale  Redis commands executed per sale (all services)
  <service>.rss_mb           peak resident memory of each service
usage: bench_sales.py BUILD_DIR [SALES [PROCESSES]]"""
import json
import resource
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
os.environ.setdefault("POSBUS_SRC", os.path.join(HERE, ".."))
os.environ["POSBUS_BIN"] = os.path.abspath(os.path.join(sys.argv[1] if len(sys.argv) > 1
                                                        else "build", "bin"))
from harness import Stack, free_port  # noqa: E402

SALES = int(sys.argv[2]) if len(sys.argv) > 2 else 30000
PROCS = int(sys.argv[3]) if len(sys.argv) > 3 else 6
BIN = os.environ["POSBUS_BIN"]

st = Stack("bench")
st.start_redis()
st.start_busd()
services = {"sales1": "sales", "sales2": "sales", "inventory1": "inventory",
            "reporting1": "reporting"}
for tag, prog in services.items():
    st.start_service(tag, prog, "--log-level", "warn")
if not st.wait_healthy(["sales", "inventory", "reporting"]):
    sys.exit("bench_sales: the stack did not come up")
st.posctl("store", "add", "B001", check=True)
st.posctl("catalog", "import", os.path.join(os.environ["POSBUS_SRC"], "scripts", "sample",
                                            "catalog.csv"), check=True)
# the password reaches redis-cli through the environment, never through its command line
password = open(st.password_file, encoding="utf-8").read().strip()
redis_env = dict(os.environ, REDISCLI_AUTH=password)
redis_cli = ["redis-cli", "-p", str(st.redis_port)]


def redis_info(section, key):
    out = subprocess.run(redis_cli + ["INFO", section], capture_output=True, text=True,
                         env=redis_env).stdout
    return int(re.search(key + r":(\d+)", out).group(1))


def redis_commands():
    return redis_info("stats", "total_commands_processed")


def redis_set_per_s():
    """redis-benchmark SET on a scratch redis-server configured like the stack's (AOF, fsync
    every second) but without a password: it holds no data and lives only for the benchmark."""
    port = free_port()
    scratch = os.path.join(st.tmp, "bench-redis")
    os.makedirs(scratch, mode=0o700)
    conf = os.path.join(scratch, "redis.conf")
    with open(conf, "w", encoding="utf-8") as f:
        f.write(f"bind 127.0.0.1\nport {port}\ndir {scratch}\nsave \"\"\nappendonly yes\n"
                "appendfsync everysec\n")
    srv = subprocess.Popen(["redis-server", conf], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while time.time() < deadline and subprocess.run(
                ["redis-cli", "-p", str(port), "PING"], capture_output=True,
                text=True).stdout.strip() != "PONG":
            time.sleep(0.05)
        out = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "set",
                              "-n", "200000", "-q"], capture_output=True, text=True).stdout
    finally:
        srv.terminate()
        srv.wait()
    m = re.search(r"SET: ([\d.]+) requests per second", out)
    return float(m.group(1)) if m else 0.0


def day_tickets():
    r = st.posctl_json("report", "day", "--store", "B001")
    return r["totals"].get("tickets", 0)


# warm up (connections, script caches), not measured
st.posctl("sim", "--store", "B001", "--registers", "1", "--sales", "200", "--register-base",
          "90", "--lines", "5", "--returns-pct", "0", check=True)
while day_tickets() < 200:
    time.sleep(0.1)

per = SALES // PROCS
cmds0 = redis_commands()
mem0 = redis_info("memory", "used_memory")
ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
t0 = time.time()
sims = [subprocess.Popen([f"{BIN}/posctl", *st.conn_args(), "sim", "--store", "B001",
                          "--registers", "2", "--register-base", str(2 * p), "--sales", str(per),
                          "--seed", str(p + 1), "--lines", "5", "--returns-pct", "0",
                          "--timeout-ms", "10000"], stdout=subprocess.PIPE, text=True)
        for p in range(PROCS)]
results = [json.loads(s.communicate()[0].strip().splitlines()[-1]) for s in sims]
ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the sims are the only children waited for
sims_cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
t_acked = time.time()
want = 200 + per * PROCS
while day_tickets() < want and time.time() - t_acked < 120:
    time.sleep(0.05)
t_applied = time.time()
cmds = redis_commands() - cmds0
mem = redis_info("memory", "used_memory") - mem0
stats = subprocess.run(redis_cli + ["INFO", "commandstats"], capture_output=True, text=True,
                       env=redis_env).stdout
usec = sorted(((int(m.group(3)), m.group(1), int(m.group(2))) for m in
               re.finditer(r"cmdstat_(\w+):calls=(\d+),usec=(\d+)", stats)), reverse=True)
refused = sum(r["refused"] for r in results)
unacked = sum(len(r.get("unacknowledged", [])) for r in results)
acked = sum(r.get("acknowledged", r["uploaded"]) for r in results)
rep_stats = json.loads(st.posctl("stats", "reporting", check=True).stdout)["counters"]

cpu = {}
tick = os.sysconf("SC_CLK_TCK")
for tag, p in st.procs.items():
    fields = open(f"/proc/{p.pid}/stat", encoding="utf-8").read().rsplit(")", 1)[1].split()
    cpu[tag] = (int(fields[11]) + int(fields[12])) / tick
rss = {}
for tag, p in st.procs.items():
    if tag in services or tag in ("busd", "redis"):
        status = open(f"/proc/{p.pid}/status", encoding="utf-8").read()
        kb = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))
        name = services.get(tag, tag)
        rss[name] = max(rss.get(name, 0), kb / 1024)
set_per_s = redis_set_per_s()

# a 100,000-row catalog import (20,000 new items, every row valid), timed end to end
big = os.path.join(st.tmp, "catalog-100k.csv")
with open(big, "w", encoding="utf-8") as f:
    f.write("sku,barcode,name,price,tax_rate,unit,category\n")
    for i in range(100000):
        f.write(f"BULK{i % 20000:06d},,Bulk item {i % 20000},{1 + i % 997}.{i % 100:02d},13,pcs,"
                f"bulk\n")
t_imp = time.time()
imp = st.posctl("catalog", "import", big, check=True).stdout
imp_s = time.time() - t_imp

print(f"catalog.import_100k_rows_s: {imp_s:.2f}")
print(f"catalog.import_rows_per_s: {100000 / imp_s:.0f}")
print(f"sales.e2e.sales: {per * PROCS}")
print(f"sales.e2e.registers: {2 * PROCS}")
print(f"sales.e2e.refused: {refused}")
print(f"sales.e2e.unacknowledged: {unacked}")
print(f"sales.e2e.upload_sales_per_s: {per * PROCS / (t_acked - t0):.0f}")
print(f"sales.e2e.sales_per_s: {per * PROCS / (t_applied - t0):.0f}")
print(f"sales.e2e.ack_p50_ms: {max(r['ack_p50_us'] for r in results) / 1000:.2f}")
print(f"sales.e2e.ack_p99_ms: {max(r['ack_p99_us'] for r in results) / 1000:.2f}")
print(f"sales.e2e.report_p50_ms: {rep_stats.get('apply_lag_p50_ms', -1)}")
print(f"sales.e2e.report_p99_ms: {rep_stats.get('apply_lag_p99_ms', -1)}")
print(f"sales.e2e.redis_cmds_per_sale: {cmds / max(per * PROCS, 1):.1f}")
print(f"redis.set_per_s: {set_per_s:.0f}")
print(f"redis.bytes_per_sale: {mem / max(acked, 1):.0f}")
for name, mb in sorted(rss.items()):
    print(f"{name}.rss_mb: {mb:.1f}")
for tag, secs in sorted(cpu.items()):
    print(f"{tag}.cpu_s: {secs:.2f}")
print(f"sims.cpu_s: {sims_cpu:.2f}")
print(f"sales.e2e.wall_s: {t_applied - t0:.2f}")
for us, name, calls in usec[:6]:
    print(f"redis.cmd.{name}.usec_per_sale: {us / (per * PROCS):.1f}")
    print(f"redis.cmd.{name}.calls_per_sale: {calls / (per * PROCS):.2f}")
