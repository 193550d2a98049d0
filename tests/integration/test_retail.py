#!/usr/bin/python3
"""test_retail - the retail core end to end through real Redis, busd and the services.

Imports a catalog, receives stock, rings 1,000 mixed tickets (sales, returns, voids, discounts,
cash rounding) from 3 simulated registers while one of two reporting and one of two inventory
instances are killed with SIGKILL and replaced, then checks everything against an oracle the
test computes itself from the sale documents it reads back with sale.replay (its own tax formula,
its own sums): stock = initial - sold + returned for every SKU; the Z report (totals, tenders,
tax by rate, registers, expected cash), the X report and the item ranking to the fen.
Re-uploading every sale changes nothing (checked once both consumer groups have acknowledged the
whole stream, not after a sleep); bad input is refused with clear errors and counted; sequence
gaps are announced; a parked ticket is recalled once; the resuming consumer from
docs/protocol.md gets exactly the sales committed while it was away, in order, then follows
live."""
import json
import os
import queue
import subprocess
import threading
import time
from collections import defaultdict

import msgpack
import zmq

from harness import (Bus, Checks, Failure, Stack, extract_doc_block, load_cert,
                     receive_opening_stock, SRC)

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
shown = [t for t, p in st.procs.items()
         if st.password.encode() in open(f"/proc/{p.pid}/cmdline", "rb").read()]
c.check(not shown, f"the Redis password is on no command line ps shows ({len(st.procs)} "
        f"processes; shown by: {shown})")


def subscriber(prefix):
    """A CURVE SUB socket on busd for prefix, returned once its handshake with busd is done."""
    me = load_cert(st.key("operator", "py"))
    srv = load_cert(st.server_cert())
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = (me["public"],
                                                                      me["secret"],
                                                                      srv["public"])
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    sock.setsockopt_string(zmq.SUBSCRIBE, prefix)
    sock.connect(st.sub)
    shaken = monitor.poll(5000)
    sock.disable_monitor()
    monitor.close()
    if not shaken:
        raise Failure(f"subscriber {prefix!r}: no CURVE handshake with busd within 5 s")
    # libzmq sends the subscription right after the handshake and busd passes it on to the
    # publishers; give that one hop a moment (a lost event fails a check, it cannot pass one)
    time.sleep(0.2)
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
initial = receive_opening_stock(st, bus, "S001", 5000, 500000)
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

# --- the oracle: sums computed by the test from the sale documents it reads back -------------
def tax(amount, rate):
    """Tax inside a tax-inclusive amount, half away from zero: the test's own formula."""
    q, r = divmod(abs(amount) * rate, 10000 + rate)
    q += 1 if 2 * r >= 10000 + rate else 0
    return q if amount >= 0 else -q


def line_gross(line):
    """unit_price x qty, per kg x grams / 1000 rounded half away from zero."""
    if line["unit"] != "kg":
        return line["unit_price"] * line["qty"]
    q, r = divmod(abs(line["unit_price"] * line["qty"]), 1000)
    q += 1 if 2 * r >= 1000 else 0
    return q if line["qty"] >= 0 else -q


def replay(after="0"):
    """Every committed sale document after a stream id, in commit order, and the last id."""
    docs = []
    while True:
        page = bus.call("sales", "sale.replay", {"after": after, "count": 200})["body"]
        docs += page["sales"]
        if page["sales"]:
            after = page["last"]
        if not page["more"]:
            return docs, after


def doc_errors(d):
    """What does not add up in one document, by the test's own arithmetic ('' if all does)."""
    live = [ln for ln in d["lines"] if not ln.get("voided")]
    for ln in live:
        if ln["gross"] != line_gross(ln) or \
                ln["amount"] != ln["gross"] - ln["promo_discount"] - ln["ticket_discount"]:
            return f"line {ln['sku']}: gross {ln['gross']} amount {ln['amount']}"
        if ln["tax"] != tax(ln["amount"], ln["tax_rate_bp"]):
            return f"line {ln['sku']}: tax {ln['tax']}, want {tax(ln['amount'], ln['tax_rate_bp'])}"
    if d["total"] != sum(ln["amount"] for ln in live):
        return f"total {d['total']} is not the sum of its lines"
    paid = sum(t["amount"] for t in d["tenders"])
    if paid != d["total"] + d["cash_rounding"] + d["change"]:
        return f"tenders {paid} != total {d['total']} + rounding + change {d['change']}"
    return ""


def oracle(docs):
    """What the day report must say about these documents, summed here."""
    t = dict.fromkeys(("tickets", "sale_tickets", "return_tickets", "gross", "discounts",
                       "returns", "total", "change", "cash_rounding", "voided_lines", "nosale"),
                      0)
    tenders, qty, amount = defaultdict(int), defaultdict(int), defaultdict(int)
    rates = defaultdict(lambda: {"gross": 0, "tax": 0})
    regs = defaultdict(lambda: {"seqs": [], "tickets": 0, "total": 0, "change": 0,
                                "cash": 0})
    for d in docs:
        reg = regs[d["register"]]
        reg["seqs"].append(d["seq"])
        if d["kind"] == "nosale":
            t["nosale"] += 1
            continue
        t["tickets"] += 1
        t["return_tickets" if d["kind"] == "return" else "sale_tickets"] += 1
        for ln in d["lines"]:
            if ln.get("voided"):
                t["voided_lines"] += 1
                continue
            if "return_of" in ln:
                t["returns"] += ln["amount"]
            else:
                t["gross"] += ln["gross"]
                t["discounts"] += ln["promo_discount"] + ln["ticket_discount"]
            t["total"] += ln["amount"]
            rates[ln["tax_rate_bp"]]["gross"] += ln["amount"]
            rates[ln["tax_rate_bp"]]["tax"] += tax(ln["amount"], ln["tax_rate_bp"])
            qty[ln["sku"]] += ln["qty"]
            amount[ln["sku"]] += ln["amount"]
        for tn in d["tenders"]:
            tenders[tn["kind"]] += tn["amount"]
            reg["cash"] += tn["amount"] if tn["kind"] == "cash" else 0
        t["change"] += d["change"]
        t["cash_rounding"] += d["cash_rounding"]
        reg["tickets"] += 1
        reg["total"] += d["total"]
        reg["change"] += d["change"]
    tax_rows = {r: dict(v, net=v["gross"] - v["tax"]) for r, v in rates.items()}
    return {"totals": t, "tenders": dict(tenders), "tax": tax_rows, "regs": dict(regs),
            "qty": dict(qty), "amount": dict(amount),
            "expected_cash": tenders["cash"] - t["change"]}


_rdb = []


def rdb():
    """One binary-safe Redis client for the whole test (Redis is not restarted here)."""
    if not _rdb:
        _rdb.append(st.redis())
    return _rdb[0]


def stream_groups():
    """{group name: {field: value}} of the sales stream's consumer groups, read with the
    binary-safe client (redis-cli's JSON output mangles the binary payloads XINFO STREAM shows)."""
    out = {}
    for g in rdb().call("XINFO", "GROUPS", "sales:stream") or []:
        f = {k.decode(): (v.decode() if isinstance(v, bytes) else v)
             for k, v in zip(g[::2], g[1::2])}
        out[f["name"]] = f
    return out


def stream_drained():
    """Both consumer groups have acknowledged every entry of the sales stream."""
    newest = rdb().call("XREVRANGE", "sales:stream", "+", "-", "COUNT", 1)
    last = newest[0][0].decode() if newest else "0-0"
    groups = stream_groups()
    return all(g in groups and groups[g]["pending"] == 0 and
               groups[g]["last-delivered-id"] == last for g in ("inventory", "reporting"))


def wait_drained(what, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if stream_drained():
            return c.check(True, f"{what}: inventory and reporting acknowledged the whole stream")
        time.sleep(0.1)
    groups = stream_groups()
    return c.fail(f"{what}: the sales stream not drained within {timeout} s: {groups}")


# --- 1,000 tickets, one reporting instance killed mid-stream ---------------------------------
sim = st.posctl_popen("sim", "sim", "--store", "S001", "--registers", "3", "--sales", "1000",
                      "--seed", "42", "--returns-pct", "8")


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
c.eq(sim.returncode, 0, "posctl sim exit code")
summary = json.loads(out.strip().splitlines()[-1])
c.check(summary["tickets"] == 1000 and summary["refused"] == 0 and summary["returns"] > 0,
        f"1000 tickets rung up and acknowledged ({summary['sales']} sales, "
        f"{summary['returns']} returns, {summary['refused']} refused, "
        f"{summary['elapsed_ms']} ms)")
wait_drained("after the SIGKILL and 1000 tickets")

docs, stream_last = replay()
c.eq(len(docs), 1000, "sale.replay returns every committed sale once")
c.eq(len({d["sale_id"] for d in docs}), len(docs), "distinct sale ids in the replay")
bad_docs = [(d["sale_id"], doc_errors(d)) for d in docs if doc_errors(d)]
c.check(not bad_docs, f"every replayed document adds up by the test's own arithmetic "
        f"(lines, tax, total, tenders; wrong: {bad_docs[:3]})")
want = oracle(docs)
c.check(0 < killed_at < want["totals"]["total"],
        f"a reporting and an inventory instance were killed mid-stream (at {killed_at} of "
        f"{want['totals']['total']})")
c.eq({k: summary[k] for k in ("total_fen", "sales", "returns")},
     {"total_fen": want["totals"]["total"], "sales": want["totals"]["sale_tickets"],
      "returns": want["totals"]["return_tickets"]},
     "the simulator's own summary agrees with the documents committed")

expect = {sku: initial[sku] - want["qty"].get(sku, 0) for sku in initial}
stock = st.posctl_json("stock", "get", "--store", "S001")["stock"]
wrong = {s: (stock.get(s), q) for s, q in expect.items() if stock.get(s) != q}
c.check(not wrong and set(want["qty"]) <= set(initial),
        f"stock = initial - sold + returned from the documents for all {len(expect)} SKUs "
        f"(wrong, as (got, expected): {wrong})")

z = st.posctl_json("report", "z", "--store", "S001")
closed_day = z["day"]
c.eq({d["business_day"] for d in docs}, {closed_day}, "all 1000 sales belong to the closed day")
tot = z["totals"]
for key, value in want["totals"].items():
    c.eq(tot.get(key, 0), value, f"Z {key}")
c.eq({k: v for k, v in z["tenders"].items() if v}, {k: v for k, v in want["tenders"].items() if v},
     "Z tenders by kind")
c.eq(z["expected_cash"], want["expected_cash"], "Z expected cash = cash handed over - change")
c.eq({int(r): {k: row.get(k, 0) for k in ("gross", "tax", "net")} for r, row in z["tax"].items()},
     want["tax"], "Z tax by rate (gross, tax by the test's formula per line, net)")
regs = z["registers"]
want_regs = {r: {"first": 1, "last": len(v["seqs"]), "records": len(v["seqs"]), "complete": True,
                 "tickets": v["tickets"], "total": v["total"], "change": v["change"]}
             for r, v in want["regs"].items()}
c.check(all(sorted(v["seqs"]) == list(range(1, len(v["seqs"]) + 1))
            for v in want["regs"].values()), "each register's documents are seq 1..n")
c.eq({r: {k: v.get(k) for k in ("first", "last", "records", "complete", "tickets", "total",
                                "change")} for r, v in regs.items()}, want_regs,
     "Z per register: sequence 1..last with no hole, tickets, total, change")
x = st.posctl_json("report", "x", "--store", "S001", "--register", "R02", "--date", closed_day)
r02 = want["regs"]["R02"]
c.eq((x["shift"]["tickets"], x["expected_cash"]), (r02["tickets"], r02["cash"] - r02["change"]),
     "X report of R02: (tickets, expected cash)")
csv = st.posctl("report", "items", "--store", "S001", "--date", closed_day, "--top", "2",
                "--format", "csv", check=True).stdout.splitlines()
top2 = sorted(want["amount"].values(), reverse=True)[:2]
rows = [line.split(",") for line in csv[1:]]
c.check(len(csv) == 3 and csv[0] == "key,amount,qty" and
        [int(r[1]) for r in rows] == top2 and
        all(int(r[2]) == want["qty"][r[0]] and int(r[1]) == want["amount"][r[0]] for r in rows),
        f"CSV report: header and the 2 best-selling items with their amount and qty "
        f"(got {csv}, expected amounts {top2})")

# --- re-upload everything: nothing changes -------------------------------------------------
out = st.posctl("sim", "--store", "S001", "--registers", "3", "--sales", "1000", "--seed", "42",
                "--returns-pct", "8", check=True).stdout
again = json.loads(out.strip().splitlines()[-1])
c.check(again["duplicates"] == 1000 and again["refused"] == 0,
        f"re-uploading all 1000 sales: every one acknowledged as a duplicate "
        f"({again['duplicates']} duplicates, {again['refused']} refused)")
more, _ = replay(stream_last)
c.eq(len(more), 0, "the re-upload committed no new stream entry")
wait_drained("after the re-upload")
day = st.posctl_json("report", "day", "--store", "S001", "--date", closed_day)
stock2 = st.posctl_json("stock", "get", "--store", "S001")["stock"]
c.check(day["totals"] == tot and stock2 == stock, "report and stock unchanged by the re-upload",
        expected=(tot, stock), actual=(day["totals"], stock2))
items = st.posctl_json("report", "items", "--store", "S001", "--date", closed_day, "--top", "3")
c.eq([r["amount"] for r in items["rows"]], sorted(want["amount"].values(), reverse=True)[:3],
     "top 3 items sorted by amount")
baskets = st.posctl_json("report", "baskets", "--store", "S001", "--date", closed_day)
c.check(len(baskets["rows"]) > 0 and "|" in baskets["rows"][0]["key"],
        f"basket pairs reported ({baskets['rows'][:2]})")
hours = st.posctl_json("report", "hours", "--store", "S001", "--date", closed_day)
c.eq(sum(r["total"] for r in hours["rows"]), want["totals"]["total"], "sales by hour add up")


# --- bad input ------------------------------------------------------------------------------
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


def refused(r, code, what, word=""):
    """Check that r is an error reply with this code (and word in its message)."""
    body = r["body"] if r else None
    return c.check(r is not None and r["type"] == "error" and body.get("code") == code and
                   word in body.get("message", ""),
                   f"{what}: {body and body.get('message')}",
                   expected=f"error {code}" + (f" mentioning {word!r}" if word else ""),
                   actual=r and {"type": r["type"], "body": body})


before = committed()
r = bus.call_raw("sales", b"\x93\x01\x02")
if r is None:
    c.fail("malformed MessagePack: no reply within 5 s")
else:
    refused(r, "bad_request", "malformed MessagePack refused")
refused(bus.call("sales", "sale.upload", sale("R07", 1, store="NOPE")), "unknown_store",
        "unknown store refused")
neg = sale("R07", 1)
neg["lines"][0].update(qty=-1, gross=-300, amount=-300, tax=-35)
neg["total"], neg["tenders"][0]["amount"] = -300, -300
refused(bus.call("sales", "sale.upload", neg), "bad_sale", "negative quantity refused",
        "quantity")
refused(bus.call("sales", "sale.upload", sale("R07", 1, cashier="X" * 5000)), "bad_sale",
        "oversize field refused")
refused(bus.call("sales", "sale.upload", sale("R07", 1, total=999)), "bad_sale",
        "a total that does not add up refused", "not the sum")
# (a return beyond what its original sold is committed and flagged, not refused: test_sales)
ret = sale("R07", 1, kind="return")
ret["lines"][0].update(qty=-1, gross=-300, amount=-300, tax=tax(-300, 1300),
                       return_of="S001-R01-000001")
kg = dict(ret["lines"][0], unit="kg", qty=-1000)  # 1 kg of COLA at 3.00 per kg
ret["lines"].append(kg)
ret["total"], ret["tenders"] = -600, [{"kind": "cash", "amount": -600}]
refused(bus.call("sales", "sale.upload", ret), "bad_return",
        "a return mixing pieces and kilograms of one SKU refused", "mixes pcs and kg")
after = committed()
c.check(after[0] == before[0] and after[1] >= before[1] + 5 and after[2] == before[2] + 1,
        "nothing committed by bad input, refusals counted (committed, refused, rejected)",
        expected=f"({before[0]}, >= {before[1] + 5}, {before[2] + 1})", actual=after)
c.eq(st.posctl_json("report", "day", "--store", "S001", "--date", closed_day)["totals"], tot,
     "the committed day is untouched by bad input")

# --- review flags: a sale that happened is never refused ----------------------------------------
odd = sale("R08", 1)
odd["lines"][0]["sku"] = "NOT-IN-CATALOG"
r = bus.call("sales", "sale.upload", odd)
pricey = sale("R08", 2)
pricey["lines"][0].update(unit_price=299, gross=299, amount=299, tax=tax(299, 1300))
pricey["total"], pricey["tenders"][0]["amount"] = 299, 299
r2 = bus.call("sales", "sale.upload", pricey)
c.eq([(r["type"], r["body"].get("review")), (r2["type"], r2["body"].get("review"))],
     [("reply", "unknown_sku:NOT-IN-CATALOG"), ("reply", "price_mismatch:COLA")],
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
c.eq((r["type"], day_now["totals"].get("nosale"),
      day_now.get("registers", {}).get("R08", {}).get("nosale")), ("reply", 1, 1),
     "a no-sale drawer open is counted for the day and the register (reply, day, register)")

# --- posctl tail --from: replay then live ----------------------------------------------------
mark = bus.call("sales", "sale.get", {"store": "S001", "sale_id": "S001-R08-000001"})
since = mark["body"]["sale"]["stream_id"]
tail = st.posctl_popen("tail", "--count", "1", "tail", "sale.", "--from", since)
lines = queue.Queue()
threading.Thread(target=lambda: [lines.put(x) for x in tail.stdout], daemon=True).start()


def tail_line(timeout=10):
    try:
        return json.loads(lines.get(timeout=timeout))["sale_id"]
    except queue.Empty:
        return None


ids = [tail_line(), tail_line()]  # the replay: it is following live once these are out
bus.call("sales", "sale.upload", sale("R08", 4))
ids.append(tail_line())
c.eq(ids, ["S001-R08-000002", "S001-R08-000003", "S001-R08-000004"],
     "posctl tail --from replays what came after the id, then follows live")
try:
    tail.wait(10)
except subprocess.TimeoutExpired:
    pass
c.eq(tail.poll(), 0, "posctl tail --count 1 exits by itself after one live event")

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
c.eq((r2["type"], r2["body"].get("duplicate")), ("reply", False),
     "the missing sale fills the gap (reply, duplicate)")

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
        "parked at R01, recalled once at another register, a second recall refused",
        expected="listed, recalled (qty 2, parked_by R01), then not_found",
        actual=(pid in listed, got["body"], twice["body"]))

# --- the resuming consumer from docs/protocol.md ---------------------------------------------
script = extract_doc_block("resume-consumer", os.path.join(st.tmp, "resume_consumer.py"))
state = os.path.join(st.tmp, "consumer.state")
py_args = ["/usr/bin/python3", script, st.sub, st.req, st.key("consumer", "resume"),
           st.server_cert(), state]


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
try:
    second.wait(timeout=60)
except subprocess.TimeoutExpired:
    raise Failure("the restarted consumer did not reach 510 sales within 60 s")
printed = [json.loads(line) for line in open(log, encoding="utf-8")]
got = [p["sale_id"] for p in printed]
expected = [d["sale_id"] for d in replay(checkpoint)[0]]
first_diff = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), None)
c.check(len(expected) == 510 and got == expected,
        f"restarted consumer got exactly the 500 missed sales in order, then 10 live "
        f"({len(got)} lines, {len(expected)} expected, first difference at {first_diff})")
c.eq(len({p["stream_id"] for p in printed}), len(printed), "no duplicates at the seam")
c.finish()
