#!/usr/bin/python3
"""test_retail - the retail core end to end through real Redis, busd and the services.

Imports a catalog, receives stock, rings 1,000 mixed tickets (sales, returns, voids, discounts,
cash rounding) from 3 simulated registers while one of two reporting and one of two inventory
instances are killed with SIGKILL and replaced, then checks: stock = initial - sold + returned for every SKU; the Z report
equals the simulator's own sum of its receipts to the fen; re-uploading every sale changes
nothing; bad input is refused with clear errors and counted; sequence gaps are announced; a parked
ticket is recalled once; the resuming consumer from docs/protocol.md gets exactly the sales
committed while it was away, in order, then follows live."""
import json
import os
import subprocess
import time

import msgpack
import zmq

from harness import Bus, Checks, Stack, extract_doc_block, load_cert, SRC

c = Checks("test_retail")
st = Stack("retail")
st.start_redis()
st.start_busd()
st.start_service("sales", "sales")
for i in (1, 2):
    st.start_service(f"inventory{i}", "inventory", "--claim-idle-ms", "1000")
    st.start_service(f"reporting{i}", "reporting", "--claim-idle-ms", "1000")
c.check(st.wait_healthy(["sales", "inventory", "reporting"]), "sales, 2 inventory and 2 "
        "reporting instances healthy")
st.posctl("store", "add", "S001", "Test store", check=True)
bus = Bus(st)


def subscriber(prefix):
    """A CURVE SUB socket on busd for prefix, given time to propagate its subscription."""
    me = load_cert(os.path.join(st.keys, "py.cert_secret"))
    srv = load_cert(os.path.join(st.keys, "busd.cert"))
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = (me["public"],
                                                                      me["secret"],
                                                                      srv["public"])
    sock.connect(st.sub)
    sock.setsockopt_string(zmq.SUBSCRIBE, prefix)
    time.sleep(0.5)
    return sock


def next_event(sock, timeout_ms=3000):
    if not sock.poll(timeout_ms):
        return None
    return msgpack.unpackb(sock.recv_multipart()[1], raw=False)


events = subscriber("")

# --- catalog ------------------------------------------------------------------------------
sample = os.path.join(SRC, "scripts", "sample", "catalog.csv")
r = st.posctl("catalog", "import", sample)
c.check(r.returncode == 0 and "20 applied (20 changed), 0 rejected" in r.stdout,
        "sample catalog imported: " + r.stdout.strip())
r = st.posctl("catalog", "import", sample)
c.check("20 applied (0 changed)" in r.stdout, "re-importing the same file changes nothing")
bad_csv = os.path.join(st.tmp, "bad.csv")
with open(bad_csv, "w", encoding="utf-8") as f:
    f.write("sku,barcode,name,price,tax_rate,unit,category\n"
            "GOOD1,,Good item,1.00,13,pcs,misc\n"
            "BADPRICE,,Bad price,12.505,13,pcs,misc\n"
            "BADBC,6901234500012,Bad barcode,1.00,13,pcs,misc\n"
            "SHORT,,Too few fields\n"
            "BADUNIT,,Bad unit,1.00,13,box,misc\n"
            "BADTAX,,Bad tax,1.00,130,pcs,misc\n"
            ",,No sku,1.00,13,pcs,misc\n"
            "GOOD2,,\"Quoted, with comma\",2.50,9%,kg,misc\n")
r = st.posctl("catalog", "import", bad_csv)
lines = r.stdout
c.check("line 3: price '12.505'" in lines and "line 4: barcode 6901234500012: wrong check digit"
        in lines and "line 5: wrong number of fields" in lines and "line 6: unit" in lines
        and "line 7: tax_rate" in lines and "line 8: sku" in lines,
        "CSV garbage reported by line and reason:\n" + lines)
c.check("2 applied (2 changed), 6 rejected" in lines, "valid rows of a bad file applied")
changed = None
while True:
    e = next_event(events, 2000)
    if e is None or e["type"] == "catalog.changed" and e["body"]["changed"] == 2:
        changed = e
        break
c.check(changed is not None and changed["body"]["version"] == 2,
        f"catalog.changed published with the new version ({changed and changed['body']})")
events.close()
item = st.posctl_json("catalog", "get", "GOOD2")["item"]
c.check(item["name"] == "Quoted, with comma" and item["price"] == 250 and
        item["tax_rate_bp"] == 900 and item["unit"] == "kg", "quoted CSV field and 9% parsed")
c.check(st.posctl_json("catalog", "get", "6901234500011")["item"]["sku"] == "RICE5",
        "catalog get by barcode")

# --- initial stock ------------------------------------------------------------------------
snap = bus.call("inventory", "catalog.snapshot", {"count": 1000})["body"]
initial = {}
for it in snap["items"]:
    qty = 500000 if it["unit"] == "kg" else 5000
    st.posctl("stock", "receive", "--store", "S001", it["sku"], str(qty), "--ref", "INIT",
              "--move-id", "init-" + it["sku"], check=True)
    initial[it["sku"]] = qty
again = st.posctl_json("stock", "receive", "--store", "S001", "MILK1", "5000", "--ref", "INIT",
                       "--move-id", "init-MILK1")
c.check(again["duplicate"] and again["balance"] == 5000,
        "a resent movement (same move id) moves nothing")

# --- stock operations ---------------------------------------------------------------------
st.posctl("store", "add", "S002", "Second store", check=True)
t = st.posctl_json("stock", "transfer", "--store", "S001", "SOAP", "40", "--to", "S002",
                   "--move-id", "tr-1")
initial["SOAP"] -= 40
c.check(t["from"]["balance"] == 4960 and t["to"]["balance"] == 40,
        "transfer 40 SOAP S001 -> S002: 4960 and 40")
t2 = st.posctl_json("stock", "transfer", "--store", "S001", "SOAP", "40", "--to", "S002",
                    "--move-id", "tr-1")
c.check(t2["from"]["duplicate"] and t2["to"]["duplicate"] and t2["from"]["balance"] == 4960,
        "a resent transfer moves nothing on either side")
cnt = st.posctl_json("stock", "count", "--store", "S002", "SOAP", "37", "--move-id", "cnt-1")
c.check(cnt["balance"] == 37 and cnt["variance"] == -3, "count sets 37 and records variance -3")
adj = st.posctl_json("stock", "adjust", "--store", "S002", "SOAP", "-2", "--reason", "damaged",
                     "--move-id", "adj-1")
c.check(adj["balance"] == 35, "adjust -2 damaged: 35")
bad = st.posctl("stock", "adjust", "--store", "S002", "SOAP", "-2", "--reason", "stolen?")
c.check(bad.returncode != 0 and "reason" in bad.stderr, "an unknown adjust reason is refused")
hist = st.posctl_json("stock", "history", "--store", "S002", "SOAP")["moves"]
c.check([m["kind"] for m in hist] == ["adjust", "count", "transfer_in"] and
        hist[0]["reason"] == "damaged" and hist[2]["ref"] == "S001",
        "movement history, newest first, with reasons and references")
lowsub = subscriber("stock.low")
st.posctl("stock", "adjust", "--store", "S002", "SOAP", "-30", "--reason", "lost", "--move-id",
          "adj-2", check=True)
low = next_event(lowsub)
c.check(low and low["body"] == {"store": "S002", "sku": "SOAP", "balance": 5, "threshold": 12},
        f"stock.low when SOAP falls below its threshold: {low and low['body']}")
reorder = st.posctl_json("stock", "reorder", "--store", "S002")["rows"]
c.check(any(r["sku"] == "SOAP" and r["stock"] == 5 and r["suggested"] == 7 for r in reorder),
        f"below its threshold (12) SOAP gets a reorder suggestion of 7: {reorder}")

# --- 1,000 tickets, one reporting instance killed mid-stream ---------------------------------
sim = subprocess.Popen([f"{os.environ['POSBUS_BIN']}/posctl", *st.conn_args(), "sim", "--store",
                        "S001", "--registers", "3", "--sales", "1000", "--seed", "42",
                        "--returns-pct", "8"], stdout=subprocess.PIPE, text=True)


def day_total():
    return st.posctl_json("report", "day", "--store", "S001")["totals"].get("total", 0)


# kill as soon as reporting has applied something: it is then in the middle of the stream
deadline = time.time() + 30
while time.time() < deadline and day_total() == 0:
    time.sleep(0.01)
st.kill("reporting1")
st.kill("inventory1")
killed_at = day_total()
st.start_service("reporting3", "reporting", "--claim-idle-ms", "1000")
st.start_service("inventory3", "inventory", "--claim-idle-ms", "1000")
out, _ = sim.communicate(timeout=600)
summary = json.loads(out.strip().splitlines()[-1])
c.check(summary["tickets"] == 1000 and summary["refused"] == 0 and summary["returns"] > 0,
        f"1000 tickets rung up and acknowledged ({summary['sales']} sales, "
        f"{summary['returns']} returns, {summary['elapsed_ms']} ms)")
c.check(0 < killed_at < summary["total_fen"],
        f"a reporting and an inventory instance were killed mid-stream (at {killed_at} of "
        f"{summary['total_fen']})")

deadline = time.time() + 60
while time.time() < deadline and day_total() != summary["total_fen"]:
    time.sleep(0.2)
c.check(day_total() == summary["total_fen"],
        "after the SIGKILL, reporting caught up to the simulator's total")
expect = {sku: initial[sku] - summary["net_qty"].get(sku, 0) for sku in initial}
deadline = time.time() + 60
stock = {}
while time.time() < deadline:
    stock = st.posctl_json("stock", "get", "--store", "S001")["stock"]
    if all(stock.get(s) == q for s, q in expect.items()):
        break
    time.sleep(0.2)
wrong = {s: (stock.get(s), q) for s, q in expect.items() if stock.get(s) != q}
c.check(not wrong, f"stock = initial - sold + returned for all {len(expect)} SKUs "
        f"(wrong: {wrong})")

z = st.posctl_json("report", "z", "--store", "S001")
tot = z["totals"]
c.check(tot["total"] == summary["total_fen"], f"Z total {tot['total']} = sum of receipts "
        f"{summary['total_fen']}")
c.check(tot["tickets"] == 1000 and tot["sale_tickets"] == summary["sales"] and
        tot["return_tickets"] == summary["returns"], "Z counts every ticket once")
c.check(z["expected_cash"] == summary["cash_expected_fen"],
        f"Z expected cash {z['expected_cash']} = cash taken - change")
c.check(sum(r["gross"] for r in z["tax"].values()) == tot["total"] and
        all(r["net"] == r["gross"] - r["tax"] for r in z["tax"].values()),
        "tax by rate adds up to the total")
c.check(sum(z["tenders"].values()) - tot["change"] == tot["total"] + tot.get("cash_rounding", 0),
        "tenders - change = total + cash rounding")
c.check(tot["gross"] - tot["discounts"] + tot["returns"] == tot["total"],
        "gross - discounts + returns = total")
regs = z["registers"]
c.check(len(regs) == 3 and all(r["complete"] and r["first"] == 1 for r in regs.values()) and
        sum(r["records"] for r in regs.values()) == 1000,
        "per register the Z covers sequence 1..last with no hole")
closed_day = z["day"]
x = st.posctl_json("report", "x", "--store", "S001", "--register", "R02", "--date", closed_day)
c.check(x["shift"]["tickets"] == regs["R02"]["tickets"] and
        x["expected_cash"] == x["tenders"].get("cash", 0) - x["shift"]["change"],
        "X report of R02: its tickets and expected cash")
csv = st.posctl("report", "items", "--store", "S001", "--date", closed_day, "--top", "2",
                "--format", "csv", check=True).stdout.splitlines()
c.check(len(csv) == 3 and csv[0] == "key,amount,qty", f"CSV report: header and 2 rows: {csv}")

# --- re-upload everything: nothing changes -------------------------------------------------
out = st.posctl("sim", "--store", "S001", "--registers", "3", "--sales", "1000", "--seed", "42",
                "--returns-pct", "8", check=True).stdout
again = json.loads(out.strip().splitlines()[-1])
c.check(again["duplicates"] == 1000 and again["refused"] == 0,
        "re-uploading all 1000 sales: every one acknowledged as a duplicate")
time.sleep(1.5)
day = st.posctl_json("report", "day", "--store", "S001", "--date", closed_day)
stock2 = st.posctl_json("stock", "get", "--store", "S001")["stock"]
c.check(day["totals"] == tot and stock2 == stock, "report and stock unchanged by the re-upload")
items = st.posctl_json("report", "items", "--store", "S001", "--date", closed_day, "--top", "3")
c.check(len(items["rows"]) == 3 and items["rows"][0]["amount"] >= items["rows"][1]["amount"],
        "top items sorted by amount")
baskets = st.posctl_json("report", "baskets", "--store", "S001", "--date", closed_day)
c.check(len(baskets["rows"]) > 0 and "|" in baskets["rows"][0]["key"], "basket pairs reported")
hours = st.posctl_json("report", "hours", "--store", "S001", "--date", closed_day)
c.check(sum(r["total"] for r in hours["rows"]) == tot["total"], "sales by hour add up")


# --- bad input ------------------------------------------------------------------------------
def tax(amount, rate):
    q, r = divmod(abs(amount) * rate, 10000 + rate)
    q += 1 if 2 * r >= 10000 + rate else 0
    return q if amount >= 0 else -q


def sale(reg, seq, qty=1, store="S001", **over):
    amount = 300 * qty
    s = {"sale_id": f"{store}-{reg}-{seq:06d}", "store": store, "register": reg, "seq": seq,
         "cashier": "C1", "ts": int(time.time() * 1000), "kind": "sale",
         "lines": [{"sku": "COLA", "qty": qty, "unit": "pcs", "unit_price": 300,
                    "gross": amount, "promo_discount": 0, "ticket_discount": 0,
                    "amount": amount, "tax": tax(amount, 1300), "tax_rate_bp": 1300}],
         "tenders": [{"kind": "card", "amount": amount}], "total": amount, "change": 0,
         "cash_rounding": 0}
    s.update(over)
    return s


def committed():
    stats = bus.call("sales", "stats", {})["body"]["counters"]
    return stats["sales_committed"], stats["sales_refused"], stats["rejected_requests"]


before = committed()
r = bus.call_raw("sales", b"\x93\x01\x02")
c.check(r and r["type"] == "error" and r["body"]["code"] == "bad_request",
        "malformed MessagePack refused: " + str(r and r["body"]))
r = bus.call("sales", "sale.upload", sale("R07", 1, store="NOPE"))
c.check(r["type"] == "error" and r["body"]["code"] == "unknown_store",
        "unknown store refused: " + r["body"]["message"])
neg = sale("R07", 1)
neg["lines"][0].update(qty=-1, gross=-300, amount=-300, tax=-35)
neg["total"], neg["tenders"][0]["amount"] = -300, -300
r = bus.call("sales", "sale.upload", neg)
c.check(r["type"] == "error" and r["body"]["code"] == "bad_sale" and
        "quantity" in r["body"]["message"], "negative quantity refused: " + r["body"]["message"])
r = bus.call("sales", "sale.upload", sale("R07", 1, cashier="X" * 5000))
c.check(r["type"] == "error" and r["body"]["code"] == "bad_sale", "oversize field refused: " +
        r["body"]["message"])
r = bus.call("sales", "sale.upload", sale("R07", 1, total=999))
c.check(r["type"] == "error" and "not the sum" in r["body"]["message"],
        "a total that does not add up refused: " + r["body"]["message"])
ret = sale("R07", 1, kind="return")
ret["lines"][0].update(qty=-5000, gross=-1500000, amount=-1500000, tax=tax(-1500000, 1300),
                       return_of="S001-R01-000001")
ret["total"], ret["tenders"] = -1500000, [{"kind": "cash", "amount": -1500000}]
r = bus.call("sales", "sale.upload", ret)
c.check(r["type"] == "error" and r["body"]["code"] == "bad_return",
        "returning more than was sold refused: " + r["body"]["message"])
after = committed()
c.check(after[0] == before[0] and after[1] >= before[1] + 5 and after[2] == before[2] + 1,
        f"nothing committed by bad input, refusals counted ({before} -> {after})")
c.check(st.posctl_json("report", "day", "--store", "S001", "--date", closed_day)["totals"] == tot,
        "the committed day is untouched by bad input")

# --- review flags: a sale that happened is never refused ----------------------------------------
odd = sale("R08", 1)
odd["lines"][0]["sku"] = "NOT-IN-CATALOG"
r = bus.call("sales", "sale.upload", odd)
pricey = sale("R08", 2)
pricey["lines"][0].update(unit_price=299, gross=299, amount=299, tax=tax(299, 1300))
pricey["total"], pricey["tenders"][0]["amount"] = 299, 299
r2 = bus.call("sales", "sale.upload", pricey)
c.check(r["type"] == "reply" and r["body"].get("review") == "unknown_sku:NOT-IN-CATALOG" and
        r2["type"] == "reply" and r2["body"].get("review") == "price_mismatch:COLA",
        "unknown SKU and wrong price committed and flagged for review")

# --- a no-sale drawer open counts in the day it happened --------------------------------------
nosale = sale("R08", 3, kind="nosale", lines=[], tenders=[], total=0)
r = bus.call("sales", "sale.upload", nosale)
deadline = time.time() + 10
day_now = {}
while time.time() < deadline:
    day_now = st.posctl_json("report", "day", "--store", "S001")
    if day_now["totals"].get("nosale") == 1:
        break
    time.sleep(0.1)
c.check(r["type"] == "reply" and day_now["totals"].get("nosale") == 1 and
        day_now["registers"]["R08"]["nosale"] == 1,
        "a no-sale drawer open is counted for the day and the register")

# --- posctl tail --from: replay then live ----------------------------------------------------
mark = bus.call("sales", "sale.get", {"store": "S001", "sale_id": "S001-R08-000001"})
since = mark["body"]["sale"]["stream_id"]
tail = subprocess.Popen([f"{os.environ['POSBUS_BIN']}/posctl", *st.conn_args(), "--count", "1",
                         "tail", "sale.", "--from", since], stdout=subprocess.PIPE, text=True)
time.sleep(1.0)
bus.call("sales", "sale.upload", sale("R08", 4))
out, _ = tail.communicate(timeout=30)
ids = [json.loads(line)["sale_id"] for line in out.splitlines()]
c.check(ids == ["S001-R08-000002", "S001-R08-000003", "S001-R08-000004"],
        f"posctl tail --from replays what came after the id, then follows live: {ids}")

# --- sequence gap ---------------------------------------------------------------------------
gapsub = subscriber("sale.gap")
r1 = bus.call("sales", "sale.upload", sale("R09", 1))
r3 = bus.call("sales", "sale.upload", sale("R09", 3))
gap = next_event(gapsub)
gap = gap and gap["body"]
c.check(r1["type"] == "reply" and r3["type"] == "reply" and gap and gap["register"] == "R09" and
        gap["missing_from"] == 2 and gap["missing_to"] == 2,
        f"seq 1 then 3 from R09: sale.gap announces 2..2 ({gap})")
r2 = bus.call("sales", "sale.upload", sale("R09", 2))
c.check(r2["type"] == "reply" and not r2["body"]["duplicate"], "the missing sale fills the gap")

# --- parked tickets -------------------------------------------------------------------------
p = bus.call("sales", "sale.park", {"store": "S001", "register": "R01",
                                    "ticket": {"lines": [{"sku": "COLA", "qty": 2}]}})
pid = p["body"]["park_id"]
listed = bus.call("sales", "sale.parked", {"store": "S001"})["body"]["parked"]
got = bus.call("sales", "sale.recall", {"store": "S001", "park_id": pid})
twice = bus.call("sales", "sale.recall", {"store": "S001", "park_id": pid})
c.check(pid in listed and got["type"] == "reply" and got["body"]["ticket"]["lines"][0]["qty"] == 2
        and got["body"]["parked_by"] == "R01" and twice["type"] == "error" and
        twice["body"]["code"] == "not_found",
        "parked at R01, recalled once at another register, a second recall refused")

# --- the resuming consumer from docs/protocol.md ---------------------------------------------
script = extract_doc_block("resume-consumer", os.path.join(st.tmp, "resume_consumer.py"))
state = os.path.join(st.tmp, "consumer.state")
py_args = ["/usr/bin/python3", script, st.sub, st.req, os.path.join(st.keys, "py.cert_secret"),
           os.path.join(st.keys, "busd.cert"), state]


def ring(n, first_seq, seed):
    out = st.posctl("sim", "--store", "S001", "--registers", "1", "--sales", str(n), "--seed",
                    str(seed), "--returns-pct", "0", "--first-seq", str(first_seq), check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


first = subprocess.Popen(py_args + ["10"], stdout=subprocess.PIPE, text=True)
out, _ = first.communicate(timeout=120)  # replays every sale so far, then 10 was reached
checkpoint = open(state, encoding="utf-8").read().strip()
ring(500, 100001, 7)  # committed while the consumer is stopped
log = os.path.join(st.tmp, "consumer2.out")
second = subprocess.Popen(py_args + ["510"], stdout=open(log, "w"), text=True)
deadline = time.time() + 60
while time.time() < deadline and sum(1 for _ in open(log, encoding="utf-8")) < 500:
    time.sleep(0.2)
ring(10, 200001, 8)  # live
second.wait(timeout=60)
got = [json.loads(line) for line in open(log, encoding="utf-8")]
expected, after = [], checkpoint
while True:
    page = bus.call("sales", "sale.replay", {"after": after, "count": 1000})["body"]
    expected += [s["sale_id"] for s in page["sales"]]
    after = page["last"]
    if not page["more"]:
        break
c.check(len(expected) == 510 and [g["sale_id"] for g in got] == expected,
        f"restarted consumer got exactly the 500 missed sales in order, then 10 live "
        f"({len(got)} lines, {len(expected)} expected)")
c.check(len({g["stream_id"] for g in got}) == len(got), "no duplicates at the seam")
c.finish()
