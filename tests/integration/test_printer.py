#!/usr/bin/python3
"""test_printer - posnode prints receipts on an ESC/POS printer (the simulator on a pty).

A real back office, posnode with a printer (devices/sim/escpos_printer.py on a pseudo-terminal,
opened by the driver through the termios fallback) and its control socket:
  - the receipt bytes the printer received decode back to the sale: every line, the total, the tax
    and the change match the journal to the fen, Chinese names included; the QR code carries the
    sale id;
  - paper out in the middle of a receipt: a status event and health error, then after paper is
    loaded the receipt completes, not duplicated;
  - a no-sale pulses the drawer; garbage and a disconnect: the driver recovers and prints on;
  - a device command sent twice with the same key prints once;
  - the device's health reaches `posctl node list`; its statistics match what the printer saw."""
import hashlib
import json
import os
import signal
import subprocess
import time
import unicodedata

import msgpack
import zmq

from harness import (BIN, SRC, Checks, Stack, journal_records, load_cert, sim_control,
                     wait_for)

STORE = "S1"
c = Checks("test_printer")
st = Stack("printer")
st.start_redis()
st.start_busd()
for s in ("sales", "inventory", "devices"):
    st.start_service(s, s)
c.check(st.wait_healthy(["sales", "inventory", "devices"]), "back office healthy")
st.posctl("store", "add", STORE, "Printer store", check=True)
st.posctl("catalog", "import", os.path.join(SRC, "scripts", "sample", "catalog.csv"), check=True)
for pin, cid, role in (("1111", "ann", "cashier"), ("2222", "sue", "supervisor")):
    subprocess.run([f"{BIN}/posctl", *st.conn_args(), "cashier", "add", "--store", STORE, "--id",
                    cid, "--name", cid.title(), "--role", role], input=pin + "\n", text=True,
                   capture_output=True, check=True)
st.posctl("config", "set", "--store", STORE, "--header", "示范超市 Demo Mart|Main St 1",
          "--footer", "谢谢惠顾 Thank you", check=True)

link = os.path.join(st.tmp, "printer.tty")
control = os.path.join(st.tmp, "printer.ctl")
out = os.path.join(st.tmp, "receipts")
st.spawn("printer-sim", ["/usr/bin/python3", os.path.join(SRC, "devices", "sim",
                                                          "escpos_printer.py"),
                         "--pty", link, "--control", control, "--out", out, "--width", "80"])
wait_for(lambda: os.path.exists(link) and os.path.exists(control), 10, "the printer simulator")


def sim(cmd, **kw):
    return sim_control(control, cmd, **kw)


devices_file = os.path.join(st.tmp, "devices.conf")
with open(devices_file, "w") as f:
    f.write(f"# the register's peripherals\nprinter escpos serial:{link},baud=19200\n")

# a consumer watching the register's device events
ctx = zmq.Context()
watch = ctx.socket(zmq.SUB)
me = load_cert(st.key("consumer", "watch"))
watch.curve_publickey, watch.curve_secretkey = me["public"], me["secret"]
watch.curve_serverkey = load_cert(st.server_cert())["public"]
watch.connect(st.sub)
watch.setsockopt(zmq.SUBSCRIBE, b"device.S1.R01.")
time.sleep(0.5)

r01 = st.start_posnode("r01", STORE, "R01", "--devices", devices_file)


def printer_row():
    rows = r01.cmd("devices").get("devices", [])
    return rows[0] if rows else {}


c.check(wait_for(lambda: printer_row().get("health") == "ok", 15),
        f"the printer is found and ok: {printer_row()}")
wait_for(lambda: r01.cmd("state")["config_version"] >= 3, 15)
c.check(r01.cmd("login ann 1111")["ok"], "Ann logs in")
for line in ("scan 6901234500011", "scan COLA 3", "weigh APPLE 1234"):
    c.check(r01.cmd(line)["ok"], line)
r = r01.cmd("pay cash 100")
c.check(r["ok"] and r.get("sale_id") == "S1-R01-000001", f"sale 1 paid: {r.get('message')}")


def receipts():
    return sim("receipts").get("receipts", [])


c.check(wait_for(lambda: len(receipts()) == 1, 15), "one receipt printed")
c.check(wait_for(lambda: sim("status").get("drawer_kicks", 0) == 1, 10),
        "a cash sale opens the drawer")
text = receipts()[0]["text"] if receipts() else ""
sale = [msgpack.unpackb(p) for (_, kind, _, p) in journal_records(r01.journal) if kind == 1][0]


def yuan(fen):
    return f"{'-' if fen < 0 else ''}{abs(fen) // 100}.{abs(fen) % 100:02d}"


for ln in sale["lines"]:
    c.check(ln["name"] in text and yuan(ln["gross"]) in text,
            f"the receipt has {ln['name']} at {yuan(ln['gross'])}")
taxes = {}
for ln in sale["lines"]:
    taxes[ln["tax_rate_bp"]] = taxes.get(ln["tax_rate_bp"], 0) + ln["tax"]
rows = text.splitlines()
c.check(any(r.startswith("TOTAL") and r.rstrip().endswith(yuan(sale["total"])) for r in rows),
        f"TOTAL {yuan(sale['total'])} as journaled")
c.check(any(r.startswith("Change") and r.rstrip().endswith(yuan(sale["change"])) for r in rows),
        f"change {yuan(sale['change'])} as journaled")
for rate, tax in taxes.items():
    c.check(any(r.startswith(f"Tax {rate // 100}.{rate % 100:02d}%") and
                r.rstrip().endswith(yuan(tax)) for r in rows), f"tax at {rate} bp: {yuan(tax)}")
c.check("示范超市 Demo Mart" in text and "谢谢惠顾 Thank you" in text,
        "header and footer from the store's configuration, in Chinese")
qr = receipts()[0].get("qr", []) if receipts() else []
data = open(r01.journal, "rb").read()
off, record_hash = 0, ""
while off < len(data):  # the record of sale 1 (docs/journal.md: kind at byte 5)
    size = 124 + int.from_bytes(data[off + 8:off + 12], "big")
    if data[off + 5] == 1:
        record_hash = hashlib.sha256(data[off:off + size]).hexdigest()
        break
    off += size
c.eq(qr, [f"S1-R01-000001 {record_hash[:16]}"],
     "the QR code: the sale id and its journal record's hash, exactly")
c.eq(sim("status").get("status_inside_commands"), 0, "no status request inside a command")

# --- paper out in the middle of a receipt ---------------------------------------------------------
events = []


def drain_events():
    while watch.poll(50):
        topic, payload = watch.recv_multipart()[:2]
        events.append((topic.decode(), msgpack.unpackb(payload)))


drain_events()
sim("paper_out_after_lines", n=6)
r01.cmd("scan BEER")
r01.cmd("scan CHIPS 2")
r = r01.cmd("pay cash 50")
c.check(r["ok"] and r.get("sale_id") == "S1-R01-000002", "sale 2 paid (the till never waits)")
c.check(wait_for(lambda: printer_row().get("health") == "error" and
                 "paper" in printer_row().get("detail", ""), 15),
        f"the printer reports paper out: {printer_row()}")
drain_events()
c.check(any(t == "device.S1.R01.printer.status" and e["body"].get("health") == "error"
            for t, e in events), f"a status event on the bus: {[t for t, _ in events]}")
c.check(r01.cmd("scan WATER")["ok"], "the till keeps selling while the printer waits")
sim("paper", state="ok")
c.check(wait_for(lambda: len(receipts()) == 2, 20), "paper loaded: the receipt completes")
second = receipts()[1]["text"] if len(receipts()) > 1 else ""
c.check(second.count("SALE S1-R01-000002") == 1 and second.count("TOTAL") == 1 and
        second.count("青岛啤酒") == 1, f"not duplicated:\n{second}")
c.check(wait_for(lambda: printer_row().get("health") == "ok", 10), "health back to ok")
r01.cmd("cancel approve sue 2222")

# --- drawer, garbage, disconnect -------------------------------------------------------------------
kicks = sim("status").get("drawer_kicks", 0)
r = r01.cmd("no-sale change approve sue 2222")
c.check(r["ok"], "a no-sale")
c.check(wait_for(lambda: sim("status").get("drawer_kicks", 0) == kicks + 1, 10),
        "the drawer is pulsed")
sim("garbage", bytes="ff00aa5510")
sim("disconnect")
r01.cmd("scan TEA")
c.check(r01.cmd("pay cash")["ok"], "sale 4 (after garbage and a disconnect)")
c.check(wait_for(lambda: len(receipts()) == 4, 30),
        f"the driver recovers and prints it: {len(receipts())} receipts (the no-sale has one)")
stats = {}


def settled_stats():
    stats.update(printer_row().get("stats", {}))
    return stats.get("jobs") == 8 and stats.get("queued") == 0


c.check(wait_for(settled_stats, 10) and stats.get("reconnects", 0) >= 1,
        f"statistics: a reconnect and 8 jobs (4 receipts, 3 cash sales' and a no-sale's drawer "
        f"pulses): {stats}")
pair = []


def bytes_agree():
    """The driver's count and the printer's, read back to back (a status question may be on
    its way between two reads: ask again)."""
    pair[:] = [printer_row().get("stats", {}).get("bytes_out"),
               sim("status").get("bytes_received")]
    return pair[0] == pair[1]


c.check(wait_for(bytes_agree, 10, step=0.05),
        f"bytes sent = bytes the printer received: {pair}")

# --- a device command twice with the same key prints once --------------------------------------------
for _ in range(2):
    p = subprocess.run([f"{BIN}/posctl", *st.conn_args(), "device", "command", "--store", STORE,
                        "--register", "R01", "--device", "printer", "--command", "print",
                        "--key", "note-1", "--wait-ms", "10000", "text=盘点通知 stock count 18:00"],
                       capture_output=True, text=True, timeout=60)
    c.check(p.returncode == 0, f"device command answered: {p.stdout.strip()} {p.stderr.strip()}")
c.check(wait_for(lambda: len(receipts()) == 5, 15), "the note is printed")
time.sleep(1.5)
c.eq(sum("盘点通知" in r["text"] for r in receipts()), 1, "once")

c.eq(sim("status").get("status_inside_commands"), 0,
     "after everything: still no status request inside a command")

# --- a reprint, and a receipt owed across a restart ----------------------------------------------------
n = len(receipts())
r = r01.cmd("reprint S1-R01-000001")
c.check(r.get("ok") is True, f"reprint of sale 1: {r}")
c.check(wait_for(lambda: len(receipts()) == n + 1, 15), "a copy is printed")
copy = receipts()[-1]["text"] if receipts() else ""
c.check("REPRINT" in copy and "SALE S1-R01-000001" in copy and "TOTAL" in copy,
        f"marked as a copy, with the sale:\n{copy[:300]}")
c.check(not r01.cmd("reprint S1-R02-000001").get("ok"), "another register's sale: refused")
sim("paper", state="out")
c.check(wait_for(lambda: printer_row().get("health") == "error", 10), "paper out again")
r01.cmd("login ann 1111")
r = r01.cmd("scan SALT")
r = r01.cmd("pay cash")
owed = r.get("sale_id", "")
c.check(r.get("ok") and owed, f"a sale while the printer has no paper: {owed}")
st.kill("r01", signal.SIGKILL)  # its receipt was never sent: nothing held in the printer
sim("paper", state="ok")
n = len(receipts())
r01 = st.start_posnode("r01", STORE, "R01", "--devices", devices_file)
c.check(wait_for(lambda: len(receipts()) == n + 1, 20),
        "after the restart the owed receipt is printed")
last = receipts()[-1]["text"] if receipts() else ""
c.check(f"SALE {owed}" in last and "REPRINT" in last, f"once, marked as a copy:\n{last[:200]}")
time.sleep(2)
c.eq(len(receipts()), n + 1, "and only once")


def columns(text):
    """The widest line of a receipt in printer columns (a CJK character takes two), without
    the margins the simulator adds to centred lines (it centres on its own paper) and the
    simulator's [QR:...] stand-in for the code."""
    return max((sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in line.strip())
                for line in text.splitlines() if not line.startswith("[QR:")), default=0)


# --- a 58 mm printer: the printer's option width=58 ----------------------------------------------------
c.check(columns(last) > 32, f"80 mm receipts use more than 32 columns: {columns(last)}")
with open(devices_file, "w") as f:
    f.write(f"printer escpos serial:{link},baud=19200 width=58\n")
st.kill("r01", signal.SIGTERM)
r01 = st.start_posnode("r01", STORE, "R01", "--devices", devices_file)
c.check(wait_for(lambda: printer_row().get("health") == "ok", 15), "the 58 mm printer is ok")
r01.cmd("login ann 1111")
r01.cmd("scan 6901234500011")
r = r01.cmd("pay cash 100")
n = len(receipts())
c.check(r.get("ok") and wait_for(lambda: len(receipts()) > n - 1 and
                                 f"SALE {r.get('sale_id')}" in receipts()[-1]["text"], 15),
        f"a sale on the 58 mm printer: {r.get('sale_id')}")
narrow = receipts()[-1]["text"] if receipts() else ""
c.check(0 < columns(narrow) <= 32 and "TOTAL" in narrow,
        f"laid out in 32 columns ({columns(narrow)}):\n{narrow}")

# --- health in the back office --------------------------------------------------------------------
nl = None


def listed_ok():
    global nl
    nl = subprocess.run([f"{BIN}/posctl", *st.conn_args(), "node", "list", "--store", STORE],
                        capture_output=True, text=True, timeout=30)
    return "printer:ok" in nl.stdout


c.check(wait_for(listed_ok, 10), f"posctl node list shows the printer's health:\n{nl.stdout}")



def device_row():
    r = subprocess.run([f"{BIN}/posctl", *st.conn_args(), "node", "devices", "--store", STORE,
                        "--format", "json"], capture_output=True, text=True, timeout=30)
    nodes = json.loads(r.stdout).get("nodes", []) if r.returncode == 0 else []
    rows = [d for n in nodes for d in n.get("devices", [])]
    return rows[0] if rows else {}


c.check(wait_for(lambda: device_row().get("stats", {}).get("bytes_out") ==
                 printer_row().get("stats", {}).get("bytes_out") and
                 device_row()["stats"].get("jobs") == printer_row()["stats"].get("jobs") >= 1,
                 15),
        f"posctl node devices: the statistics the register reports (checked against the "
        f"printer's own count above): {device_row()}")
table = subprocess.run([f"{BIN}/posctl", *st.conn_args(), "node", "devices", "--store", STORE],
                       capture_output=True, text=True, timeout=30)
c.check(table.returncode == 0 and "printer" in table.stdout and "bytes_out" in table.stdout,
        f"and as a table:\n{table.stdout}")

watch.close()
ctx.term()
st.stop_all(c)
c.finish()
