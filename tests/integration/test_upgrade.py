#!/usr/bin/python3
"""test_upgrade - each service upgraded under load loses no sale and applies none twice.

2,400 tickets from 4 simulated registers are uploaded while, one after the other, every service
on the sales path is replaced by a new process the way docs/operations.md tells an operator to:
sales rolling (the new instance started and healthy before the old one gets SIGTERM: busd sends
requests only to instances that are there), then inventory and reporting stopped (SIGTERM) and
started again (their consumer group keeps its place in the stream; what the old process had
read and not acknowledged is claimed by the new one). At the end the simulator gave up on
nothing, every sale is in the stream once, and the day report and the stock agree with the sums
the test computes from the sale documents, to the fen and the piece, with no dead letter."""
import os
import signal

from harness import (Bus, Checks, Stack, SRC, check_books, receive_opening_stock,
                     sim_finished, wait_for as poll)

TICKETS = 2400
REGISTERS = 4

c = Checks("test_upgrade")
st = Stack("upgrade")


def wait_for(cond, timeout, what):
    ok = poll(cond, timeout, what, step=0.05)
    if not ok:
        c.fail(f"{what}: not within {timeout} s")
    return ok


st.start_redis()
st.start_busd()
st.start_service("sales", "sales")
st.start_service("inventory", "inventory", "--claim-idle-ms", "1000")
st.start_service("reporting", "reporting", "--claim-idle-ms", "1000")
c.check(st.wait_healthy(["sales", "inventory", "reporting"]), "back office healthy")
st.posctl("store", "add", "S1", "Upgrade store", check=True)
st.posctl("catalog", "import", os.path.join(SRC, "scripts", "sample", "catalog.csv"), check=True)
bus = Bus(st)
initial = receive_opening_stock(st, bus, "S1", 50_000, 5_000_000)


def committed():
    """Sales committed so far: the length of the sales stream."""
    out = st.redis_cli("XLEN", "sales:stream").stdout.strip()
    return int(out) if out.isdigit() else -1


sim = st.posctl_popen("sim", "sim", "--store", "S1", "--registers", str(REGISTERS), "--sales",
                      str(TICKETS), "--seed", "11", "--deadline-ms", "300000")

# --- sales, rolling: the new instance first, then the old one leaves ----------------------------
wait_for(lambda: committed() >= 400, 120, "400 sales committed")
st.start_service("sales-new", "sales")
c.check(wait_for(lambda: len([i for i in bus.call("busd", "services", {})["body"]["instances"]
                              if i["service"] == "sales"]) == 2, 20, "two sales instances"),
        "the new sales instance registered beside the old one")
before = committed()
st.kill("sales", signal.SIGTERM)
c.check(wait_for(lambda: committed() >= before + 300, 60, "sales committed by the new instance"),
        f"old sales stopped at {before} committed sales; the new one goes on")

# --- inventory and reporting: stopped and started again under load -----------------------------
for svc in ("inventory", "reporting"):
    before = committed()
    st.kill(svc, signal.SIGTERM)
    st.start_service(svc, svc, "--claim-idle-ms", "1000")
    c.check(st.wait_healthy([svc]), f"{svc} replaced (SIGTERM, a new process) and healthy")
    wait_for(lambda: committed() >= before + 200, 60, f"sales flowing after {svc}'s upgrade")

summary = sim_finished(c, st, sim, TICKETS, "an upgrade must never be a refusal")

check_books(c, st, bus, TICKETS, summary, initial)
c.finish()
