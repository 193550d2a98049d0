#!/usr/bin/python3
"""test_top - `posctl top`, the operator's live screen: with the back office and a register up it
lists every service instance as ok with its counters, the register online and no alert; while
sales flow it shows inventory and reporting applying them (applied/s above 0); an instance that
stops answering (SIGSTOP) is an alert and its service has no healthy instance (exit 1 with
--once); a register that stops is shown offline, an alert too."""
import re
import signal
import time

from harness import Checks, SRC, Stack, wait_for

STORE = "S1"
EXPECT = "sales,inventory,reporting,devices"
c = Checks("test_top")
st = Stack("top")
try:
    st.start_redis()
    st.start_busd()
    for s in ("sales", "inventory", "reporting", "devices"):
        st.start_service(s, s)
    c.check(st.wait_healthy(EXPECT.split(",")), "back office healthy")
    st.posctl("store", "add", STORE, "Top store", check=True)
    st.posctl("catalog", "import", f"{SRC}/scripts/sample/catalog.csv", check=True)
    r01 = st.start_posnode("r01", STORE, "R01")
    wait_for(lambda: r01.cmd("state")["config_version"] >= 1, 15)

    def top(*extra):
        return st.posctl("top", "--once", "--interval-ms", "500", "--store", STORE, "--expect",
                         EXPECT, *extra)

    r = top()
    out = r.stdout
    c.eq(r.returncode, 0, f"all well: exit 0\n{out}")
    for s in EXPECT.split(","):
        c.check(re.search(rf"^{s}\s+\S+\s+ok\s", out, re.M), f"{s}: an instance, ok")
    c.check(re.search(r"^busd: \d+ services, \d+ instances", out, re.M), "busd's line")
    c.check("registers: 1 online, 0 offline" in out and re.search(r"^S1\s+R01\s+online", out,
                                                                     re.M),
            "the register, online")
    c.check("alerts: none" in out, "no alert")
    c.check(re.search(r"^inventory\s+\S+\s+ok\s+\S+\s+\S+\s+\d+\s+\S+\s+0\s+0$", out, re.M),
            "inventory: lag 0 and nothing parked once caught up")

    # posctl ping --instance-prefix: one instance asked (a container's healthcheck)
    r = st.posctl("ping", "--instance-prefix", "inventory-")
    rows = [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    c.check(r.returncode == 0 and rows == ["busd", "inventory"],
            f"ping --instance-prefix inventory-: busd and inventory's instance only: {rows}")
    r = st.posctl("ping", "--instance-prefix", "-")
    c.check(r.returncode == 0 and [line.split()[0] for line in r.stdout.splitlines()] == ["busd"],
            "ping --instance-prefix -: busd alone")

    # sales flowing: inventory and reporting apply them
    sim = st.posctl_popen("sim", "sim", "--store", STORE, "--registers", "2", "--sales", "400",
                          "--first-seq", "1", "--seed", "7")
    rates = {}

    def applying():
        o = st.posctl("top", "--once", "--interval-ms", "1000", "--store", STORE).stdout
        for s in ("inventory", "reporting"):
            m = re.search(rf"^{s}\s+\S+\s+ok\s+\S+\s+\S+\s+\d+\s+(\d+\.\d)\s+\d+\s", o,
                          re.M)
            rates[s] = float(m.group(1)) if m else 0.0  # a display rate, not money
        return all(v > 0 for v in rates.values())
    c.check(wait_for(applying, 30), f"while sales flow: applied/s above 0: {rates}")
    sim.wait(timeout=120)

    # an instance that stops answering
    inv = st.procs["inventory"]
    inv.send_signal(signal.SIGSTOP)
    try:
        r = st.posctl("top", "--once", "--interval-ms", "500", "--store", STORE, "--expect",
                      EXPECT, "--timeout-ms", "300", "--retries", "0")
    finally:
        inv.send_signal(signal.SIGCONT)
    c.eq(r.returncode, 1, "inventory stopped: exit 1")
    c.check(re.search(r"! inventory@\S+ is silent", r.stdout) and
            "! inventory: no healthy instance" in r.stdout,
            f"the alerts name it:\n{r.stdout[-600:]}")
    c.check(wait_for(lambda: top().returncode == 0, 15), "inventory back: no alert")

    # a register that stops
    st.kill("r01", signal.SIGTERM)
    seen = {}

    def offline():
        seen["out"] = top().stdout
        return "! S1 R01 offline" in seen["out"]
    c.check(wait_for(offline, 30), f"the register stopped: offline, an alert:\n"
            f"{seen.get('out', '')[-400:]}")
finally:
    st.stop_all(c)
c.finish()
