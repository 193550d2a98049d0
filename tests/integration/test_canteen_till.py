#!/usr/bin/python3
"""test_canteen_till - canteen consumption terminals (消费机) on a register: posnode drives a
line of two simulated terminals (devices/sim/canteen_terminal.py, over TCP) with the canteen
driver. A tap is sold online while the terminal waits (card.pay; the terminal shows the balance)
or declined with a reason; while the cashier's ticket holds the next sale number a tap is left to
the terminal's offline rule and collected once that ticket is sold; with payments stopped a tap
is taken under the card's offline cap or refused over it, and uploaded when payments is back; a
burst of offline transactions is collected, each sold once and the terminal acknowledged only up
to what the journal holds, also across a restart of posnode; a card blocked at payments reaches
the terminals' blocklist. Every tap is a sale with the stored_value tender, and the register's X
report adds them up to the fen."""
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

from harness import (BIN, Checks, SRC, Stack, free_port, journal_audits, journal_sales,
                     wait_for)

sys.path.insert(0, os.path.join(SRC, "devices", "sim"))
from canteen_terminal import CanteenLine  # noqa: E402

STORE = "S1"
MILK = "6901234500035"  # 3.50
WAIT = 15
c = Checks("test_canteen_till")
st = Stack("canteen_till")
line = None
try:
    st.start_redis()
    st.start_busd()
    for s in ("sales", "inventory", "devices", "payments"):
        st.start_service(s, s)
    c.check(st.wait_healthy(["sales", "inventory", "devices", "payments"]),
            "back office healthy")
    st.posctl("store", "add", STORE, "Canteen", check=True)
    st.posctl("catalog", "import", os.path.join(SRC, "scripts", "sample", "catalog.csv"),
              check=True)
    for cid, name, role, pin in (("ann", "Ann", "cashier", "1111"),
                                 ("max", "Max", "manager", "3333")):
        subprocess.run([f"{BIN}/posctl", *st.conn_args(), "cashier", "add", "--store", STORE,
                        "--id", cid, "--name", name, "--role", role], input=pin + "\n",
                       text=True, capture_output=True, check=True)
    for card, cap, topup in (("1001", "20", "100"), ("1002", "20", "1"), ("1003", "20", "50"),
                             ("1004", "20", "50")):
        st.posctl("card", "create", card, "--holder", "Holder " + card, "--offline-cap", cap,
                  check=True)
        st.posctl("card", "topup", card, topup, check=True)

    def balance(card):
        return st.posctl_json("card", "get", card)["balance"]

    line = CanteenLine(tcp="127.0.0.1:0", terminals=(1, 2)).start()
    devices_file = os.path.join(st.tmp, "devices.conf")
    with open(devices_file, "w") as f:
        f.write(f"line1 canteen tcp:127.0.0.1:{line.port} terminals=1,2,poll_ms=50\n")

    fees_file = os.path.join(st.tmp, "canteen-fees")
    with open(fees_file, "w") as f:
        f.write("params 3000 1500\nmeal 1 06:00-10:00\nmeal 2 10:30-14:00\n"
                "fee 1 0 500\nfee 2 0 1250\n")

    metrics_port = free_port()

    def start():
        return st.start_posnode("r01", STORE, "R01", "--devices", devices_file,
                                "--request-timeout-ms", "500", "--canteen-fees", fees_file,
                                "--metrics-listen", f"127.0.0.1:{metrics_port}",
                                "--metrics-refresh-ms", "200")

    def metric(name, **labels):
        """posnode's metric posbus_posnode_NAME{labels} from GET /metrics, or None."""
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                          timeout=2).read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            m = re.match(r"posbus_posnode_(\w+)(?:\{(.*)\})? (\S+)$", line)
            if not m or m.group(1) != name:
                continue
            got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            if all(got.get(k) == v for k, v in labels.items()):
                return int(m.group(3))
        return None

    r01 = start()
    wait_for(lambda: r01.cmd("state")["config_version"] >= 1, WAIT)

    def sales():
        return journal_sales(r01.journal)

    def tap_sales():
        return [s for s in sales() if s.get("cashier") == "line1"]

    def settled(t, seq):
        return line.terminal(t)["settled"].get(str(seq))

    c.check(wait_for(lambda: line.terminal(1)["clock"] and line.terminal(2)["clock"], WAIT),
            "both terminals were given the time")
    c.check(wait_for(lambda: all(line.terminal(t)["offline_max"] == 1500 and
                                 line.terminal(t)["fees"] == [[1, 0, 500], [2, 0, 1250]] and
                                 len(line.terminal(t)["meals"]) == 2 for t in (1, 2)), WAIT),
            f"--canteen-fees pushed to both: offline limit 15.00, two meals, two fee rules: "
            f"{line.terminal(1)['meals']} {line.terminal(1)['fees']}")

    # 1. an online tap: sold while the terminal waits, the balance shown, the card charged once
    seq = line.tap(1, card=1001, amount=1250)["seq"]
    c.eq(wait_for(lambda: settled(1, seq), WAIT) and settled(1, seq), "approved",
         "tap of 12.50 on card 1001: approved online")
    c.eq(line.terminal(1)["text"], "余额 87.50", "the terminal shows the balance left")
    c.eq(balance("1001"), 8750, "card 1001: 100.00 - 12.50")
    ts = tap_sales()
    c.eq(len(ts), 1, "one sale for the tap")
    c.check(wait_for(lambda: metric("canteen_taps_total", what="approved") == 1, WAIT),
            "posnode's metrics: canteen_taps_total{what=approved} 1")
    c.eq(metric("device_health", device="line1", kind="canteen"), 0,
         "device_health{device=line1,kind=canteen} 0 (ok)")
    c.check(wait_for(lambda: metric("unsynced_sales", register="R01") == 0 and
                     metric("last_sale", register="R01") == 1, WAIT),
            "last_sale 1, unsynced_sales 0 once sales acknowledged it")
    c.check(ts and ts[0]["tenders"] == [{"kind": "stored_value", "amount": 1250}] and
            ts[0]["lines"][0]["sku"] == "CANTEEN" and ts[0]["total"] == 1250,
            f"a CANTEEN line of 12.50 paid by stored_value: {ts[:1]}")
    req = [a for a in journal_audits(r01.journal, "sv_request") if a.get("tap")]
    c.eq([a["tap"] for a in req], [f"tap:line1:1:{seq}"],
         "the sv_request is journaled with the tap's key before card.pay")

    # 2. declined: a short balance and a blocked card, nothing sold
    seq = line.tap(2, card=1002, amount=500)["seq"]
    c.eq(wait_for(lambda: settled(2, seq), WAIT) and settled(2, seq), "declined",
         "5.00 on card 1002 (1.00 left): declined")
    c.eq(line.terminal(2)["text"], "余额不足", "the terminal says the balance is short")
    c.eq(balance("1002"), 100, "card 1002 not charged")
    st.posctl("card", "block", "1003", "--reason", "lost", check=True)
    c.check(wait_for(lambda: all(1003 in line.terminal(t)["blocklist"] for t in (1, 2)), WAIT),
            "card 1003 blocked at payments reaches both terminals' blocklist")
    seq = line.tap(1, card=1003, amount=300)["seq"]
    c.eq(wait_for(lambda: settled(1, seq), WAIT) and settled(1, seq), "declined",
         "a tap of the blocked card is declined")
    c.eq(line.terminal(1)["text"], "卡已挂失", "the terminal says the card is blocked")
    st.posctl("card", "unblock", "1003", "--reason", "found", check=True)
    c.check(wait_for(lambda: all(1003 not in line.terminal(t)["blocklist"] for t in (1, 2)),
                     WAIT), "unblocked: removed from both terminals' blocklist (an update)")
    c.eq(len(tap_sales()), 1, "still one tap sale")

    # 3. the cashier's ticket holds the next sale number: the tap is left to the terminal,
    #    collected and sold after the cashier's sale
    c.check(r01.cmd("login ann 1111")["ok"], "Ann logs in")
    r01.cmd(f"scan {MILK}")
    r = r01.cmd("pay cash 1")
    c.check(r["ok"] and r["ticket"]["tenders"], "a partial cash tender on Ann's ticket")
    seq = line.tap(2, card=1004, amount=800)["seq"]
    c.eq(wait_for(lambda: settled(2, seq), WAIT) and settled(2, seq), "offline_approved",
         "the tap waits out the terminal's online wait: approved offline (8.00 <= 15.00)")
    time.sleep(1)
    c.eq(len(tap_sales()), 1, "not sold while Ann's ticket holds the next sale number")
    r = r01.cmd("pay cash")
    c.check(r["ok"] and r.get("sale_id"), "Ann's sale completes")
    c.check(wait_for(lambda: len(tap_sales()) == 2, WAIT), "then the offline tap is sold")
    all_sales = sales()
    c.check(all_sales[-1].get("cashier") == "line1" and all_sales[-2].get("cashier") == "ann",
            "after Ann's sale, with the next sale number")
    c.check(wait_for(lambda: line.terminal(2)["offline"] == [], WAIT),
            "the terminal is acknowledged once the sale is journaled")
    off = [a for a in journal_audits(r01.journal, "sv_offline") if a.get("tap")]
    c.eq([(a["tap"], a["amount"], a["card"]) for a in off], [(f"tap:line1:2:{seq}", 800, "1004")],
         "journaled as an offline deduction with the tap's key")
    c.check(wait_for(lambda: balance("1004") == 4200, WAIT),
            "uploaded: card 1004 50.00 - 8.00 = 42.00")

    # 4. payments stopped: taken under the card's offline cap, refused over it, uploaded later
    st.kill("payments", signal.SIGTERM)
    seq = line.tap(1, card=1001, amount=500)["seq"]
    c.eq(wait_for(lambda: settled(1, seq), WAIT) and settled(1, seq), "approved",
         "payments down: 5.00 on card 1001 approved within its offline cap of 20.00")
    seq2 = line.tap(1, card=1001, amount=1800)["seq"]
    c.eq(wait_for(lambda: settled(1, seq2), WAIT) and settled(1, seq2), "declined",
         "5.00 + 18.00 over the cap: declined")
    c.eq(line.terminal(1)["text"], "余额不足", "the terminal says so")
    c.eq(len(tap_sales()), 3, "one more tap sale")
    c.check(wait_for(lambda: metric("card_deductions_pending") == 1, WAIT),
            "metrics: 1 card deduction waits for payments")
    st.start_service("payments", "payments")
    c.check(st.wait_healthy(["payments"]), "payments back")
    c.check(wait_for(lambda: balance("1001") == 8250, WAIT),
            "the offline deduction is uploaded once: 87.50 - 5.00 = 82.50")
    c.check(wait_for(lambda: metric("card_deductions_pending") == 0, WAIT),
            "card_deductions_pending back to 0")

    # 5. a burst of offline transactions, then posnode restarted with more waiting
    line.queue_offline(2, 5, 1001, 100)
    c.check(wait_for(lambda: len(tap_sales()) == 8, WAIT), "5 offline transactions: 5 sales")
    c.check(wait_for(lambda: line.terminal(2)["offline"] == [], WAIT), "and acknowledged")
    st.kill("r01", signal.SIGTERM)
    line.queue_offline(2, 3, 1001, 200)
    r01 = start()
    c.check(wait_for(lambda: len(tap_sales()) == 11, WAIT),
            "after a restart, 3 more collected and sold")
    c.check(wait_for(lambda: line.terminal(2)["offline"] == [], WAIT), "and acknowledged")
    time.sleep(1.5)
    c.eq(len(tap_sales()), 11, "nothing sold twice")
    keys = [a["tap"] for a in journal_audits(r01.journal, "sv_offline") if a.get("tap")]
    c.eq(len(keys), len(set(keys)), "every offline tap's key once in the journal")
    c.check(wait_for(lambda: balance("1001") == 8250 - 500 - 600, WAIT),
            "uploaded: 82.50 - 5 x 1.00 - 3 x 2.00 = 71.50")

    # 6. the X report adds the taps up as stored_value
    want = sum(s["total"] for s in tap_sales())
    c.check(r01.cmd("login max 3333")["ok"], "Max (manager) logs in")
    x = r01.cmd("x")
    c.eq(x.get("report", {}).get("tenders", {}).get("stored_value"), want,
         f"X report: stored_value = the taps' sales ({want} fen): {x}")
    c.eq(want, 1250 + 800 + 500 + 500 + 600, "12.50 + 8.00 + 5.00 + 5.00 + 6.00")

    # 7. a declined tap's attempt on the next sale number is not made again after a Z and a
    #    restart (payments keeps every attempt's answer: the same attempt would be refused again)
    seq = line.tap(1, card=1002, amount=500)["seq"]
    c.eq(wait_for(lambda: settled(1, seq), WAIT) and settled(1, seq), "declined",
         "5.00 on card 1002 (1.00): declined")
    z = r01.cmd("z")
    c.check(z.get("ok") and z.get("report", {}).get("type") == "z", f"Z report: {z.get('error')}")
    st.kill("r01", signal.SIGTERM)
    r01 = start()
    st.posctl("card", "topup", "1002", "10", check=True)
    seq = line.tap(1, card=1002, amount=500)["seq"]
    c.eq(wait_for(lambda: settled(1, seq), WAIT) and settled(1, seq), "approved",
         "topped up, after the Z and a restart: the same tap approved (a new attempt)")
    c.check(wait_for(lambda: balance("1002") == 600, WAIT), "card 1002: 1.00 + 10.00 - 5.00")
finally:
    if line:
        line.stop()
    st.stop_all(c)
c.finish()
