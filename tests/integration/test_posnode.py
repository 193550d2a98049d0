#!/usr/bin/python3
"""test_posnode - the register sells offline, journals every sale and forwards it exactly once.

A real stack (redis, busd with identities, sales, inventory, reporting, devices) and posnode
processes driven through their line interface:
  - cashiers and a promotion come from the devices service (posctl cashier/promo add); a
    running register applies a new promotion within seconds and sales accepts what it priced;
  - a qty_break, a category amount in a time window around now (and one tomorrow) and a
    buy_x_get_y added with posctl promo add are priced by the running register as worked out
    by hand, and sales accepts each sale without a review flag;
  - permissions: a cashier cannot void, override a price, discount over the store's cap or
    open the drawer alone; with a supervisor's PIN it goes through and both names are in the
    journal; every decision, refusals included, is published as a node.audit event;
  - 500 sales rung while busd and sales are stopped arrive exactly once, in order, once they
    start; the day report and posctl report z (which closes the day) match the journal to the
    fen;
  - SIGKILL after the journal write and before the acknowledgement: uploaded once after restart;
    a torn last record (a crash inside a write) is cut and selling resumes at the right number;
  - Redis restored from a copy taken earlier: heartbeats ask for what it lost and the journals
    fill it in; the Z report matches the journals again;
  - posctl journal verify passes on the real journal; a node refuses a certificate that is not
    its register's, and sales refuses another register's journal uploaded with a foreign key;
  - a register restarted while busd and the services are down sells at the price it learnt
    last; the sale uploads once when they are back."""
import os
import shutil
import signal
import subprocess
import time

import msgpack
import zmq

from harness import (BIN, SRC, Bus, Checks, Stack, journal_audits, journal_records, journal_sales,
                     load_cert, wait_for)

STORE = "S1"
c = Checks("test_posnode")
st = Stack("posnode")
st.start_redis()
st.start_busd()
SERVICES = ["sales", "inventory", "reporting", "devices"]
for s in SERVICES:
    st.start_service(s, s)
c.check(st.wait_healthy(SERVICES), "back office healthy")
st.posctl("store", "add", STORE, "Posnode store", check=True)
st.posctl("catalog", "import", os.path.join(SRC, "scripts", "sample", "catalog.csv"), check=True)
ops = Bus(st)


def posctl_in(stdin, *args):
    r = subprocess.run([f"{BIN}/posctl", *st.conn_args(), *args], input=stdin,
                       capture_output=True, text=True, timeout=60)
    c.check(r.returncode == 0, f"posctl {' '.join(args)} ({r.stderr.strip()})")
    return r


posctl_in("1111\n", "cashier", "add", "--store", STORE, "--id", "ann", "--name", "Ann",
          "--role", "cashier")
posctl_in("2222\n", "cashier", "add", "--store", STORE, "--id", "sue", "--name", "Sue",
          "--role", "supervisor")

r01 = st.start_posnode("r01", STORE, "R01")
wait_for(lambda: r01.cmd("state")["config_version"] >= 2, 15, "R01 runs the configuration")
r = r01.cmd("login ann 1111")
c.check(r["ok"] and r["cashier"]["id"] == "ann", f"Ann logs in with her PIN: {r.get('message')}")
c.check(not r01.cmd("login sue 2222")["ok"], "a second login while Ann is logged in is refused")


def sale(till, *lines, tender="pay cash"):
    for line in lines:
        r = till.cmd(line)
        if not r["ok"]:
            c.fail(f"{line}: {r.get('error')} {r.get('message')}")
            return r
    return till.cmd(tender)


closed_days = []  # days closed by posctl report z (their sales are no longer the current day's)


def merge_reports(reports):
    """Day reports (or Z reports) of consecutive days as one: totals added, each register's
    sequence joined (complete when every day's is and they follow each other)."""
    out = {"totals": {}, "registers": {}}
    for rep in reports:
        for k, v in rep.get("totals", {}).items():
            out["totals"][k] = out["totals"].get(k, 0) + v
        for reg, row in rep.get("registers", {}).items():
            if not row.get("records"):
                continue
            have = out["registers"].get(reg)
            if not have:
                out["registers"][reg] = dict(row)
                continue
            have["complete"] = (have["complete"] and row["complete"] and
                                have["last"] + 1 == row["first"])
            for k, v in row.items():
                if type(v) is int and k not in ("first", "last"):
                    have[k] = have.get(k, 0) + v
            have["last"] = row["last"]
    return out


def day_report():
    """The store's report over every day this test rang sales on (closed days, then today)."""
    return merge_reports([st.posctl_json("report", "day", "--store", STORE, "--date", d)
                          for d in closed_days] +
                         [st.posctl_json("report", "day", "--store", STORE)])


def config_version():
    return st.posctl_json("promo", "list", "--store", STORE)["version"]


def z_matches(label, journals, z=None):
    """The day's (or a Z report's) totals and per-register proof equal the journals' sales, to
    the fen."""
    sales = [s for j in journals for s in journal_sales(j)]
    z = z or day_report()
    tot = z.get("totals", {})
    want_total = sum(s["total"] for s in sales)
    c.eq(tot.get("total"), want_total, f"{label}: Z total = sum of the journals' sales (fen)")
    c.eq(tot.get("tickets", 0) + tot.get("nosale", 0), len(sales),
         f"{label}: Z tickets = sales in the journals")
    regs = z.get("registers", {})
    for j in journals:
        js = journal_sales(j)
        if not js:
            continue
        reg = js[0]["register"]
        row = regs.get(reg, {})
        c.check(row.get("first") == 1 and row.get("last") == len(js) and
                row.get("records") == len(js) and row.get("complete") is True,
                f"{label}: {reg}'s sequence 1..{len(js)} is complete in the Z report: {row}")


def synced(till, timeout=60):
    return wait_for(lambda: till.cmd("state")["unsynced"] == 0, timeout)


# --- selling and the configuration ----------------------------------------------------------------
r = sale(r01, "scan 6901234500011", "scan COLA 3", "weigh APPLE 1234")
c.check(r["ok"] and r.get("sale_id") == "S1-R01-000001" and "receipt" in r,
        f"a sale is journaled as S1-R01-000001 and answered with its receipt: {r.get('message')}")
c.check(synced(r01, 20), "the sale is uploaded (unsynced 0)")
got = ops.call("sales", "sale.get", {"store": STORE, "sale_id": "S1-R01-000001"})
c.check(got["type"] == "reply" and got["body"]["sale"]["total"] == 4990 + 900 + 1580,
        f"sales holds it with the register's total: {got['body']}")

st.posctl("promo", "add", "--store", STORE, "--id", "COLA10", "--kind", "percent", "--sku",
          "COLA", "--percent", "10", check=True)
t0 = time.time()
c.check(wait_for(lambda: r01.cmd("state")["config_version"] >= 3, 10),
        "the running register takes the new promotion")
c.check(time.time() - t0 < 5, f"within seconds ({time.time() - t0:.1f} s)")
hb = Bus(st, st.key("register", "S1.R09")).call(
    "devices", "node.heartbeat", {"last_seq": 0, "unsynced": 0, "config_version": 0})
c.check(hb["type"] == "reply" and hb["body"].get("config_version") == 3,
        f"a heartbeat answers the store's latest configuration version (a node that missed "
        f"the event converges): {hb['body']}")
r = r01.cmd("scan COLA 2")
line = r["ticket"]["lines"][-1] if r.get("ticket") else {}
c.check(line.get("promo_id") == "COLA10" and line.get("promo_discount") == 60,
        f"COLA x2 at 3.00 gets 10% off (0.60): {line}")
r = r01.cmd("pay cash 10")
c.check(r["ok"] and r.get("change") == 460, f"paid 10.00 for 5.40, change 4.60: {r.get('message')}")
c.check(synced(r01, 20), "the promoted sale is uploaded")
got = ops.call("sales", "sale.get", {"store": STORE, "sale_id": r.get("sale_id", "")})
c.check(got["type"] == "reply" and "review" not in got["body"]["sale"],
        f"sales accepted the promoted sale without a review flag: {got['body']}")

# --- the other promotion kinds, rung through the running register --------------------------------
# MILK1 3.50, CHIPS 7.50 and NOODLE 4.50 (snacks), WATER 2.00 (scripts/sample/catalog.csv)
now = time.time()


def local(t):
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


PROMOS = [("MILK3", "--kind", "qty_break", "--sku", "MILK1", "--qty", "3", "--amount", "9.00"),
          ("SNACKNOW", "--kind", "amount", "--category", "snacks", "--amount", "1.00", "--from",
           local(now - 3600), "--to", local(now + 3600)),
          ("SNACKLATER", "--kind", "amount", "--category", "snacks", "--amount", "3.00", "--from",
           local(now + 86400), "--to", local(now + 2 * 86400)),
          ("WATER21", "--kind", "buy_x_get_y", "--sku", "WATER", "--qty", "2", "--free", "1"),
          ("TEAMEMBER", "--kind", "member_price", "--sku", "TEA", "--price", "2.80")]
for promo_id, *args in PROMOS:
    st.posctl("promo", "add", "--store", STORE, "--id", promo_id, *args, check=True)
v = config_version()
c.check(wait_for(lambda: r01.cmd("state")["config_version"] == v, 10),
        f"R01 runs configuration {v}: 3 for 9.00, snacks 1.00 off this hour (3.00 off tomorrow), "
        "buy 2 WATER get 1, TEA 2.80 for members")
promo_sales = []
for label, scans, want_lines, want_total in (
        ("MILK1 x4 at 3 for 9.00: one set, 10.50 -> 9.00", ["scan MILK1 4"],
         [("MILK1", "MILK3", 150)], 1250),
        ("CHIPS x2 and NOODLE: 1.00 off each piece within the hour, not tomorrow's 3.00",
         ["scan CHIPS 2", "scan NOODLE"], [("CHIPS", "SNACKNOW", 200), ("NOODLE", "SNACKNOW", 100)],
         1500 - 200 + 450 - 100),
        ("WATER x7 at buy 2 get 1: two sets, two free", ["scan WATER 7"],
         [("WATER", "WATER21", 400)], 1400 - 400),
        ("TEA x2 for a member at the promotion's member price 2.80 (the catalog has none)",
         ["member on", "scan TEA 2"], [("TEA", None, 0)], 2 * 280)):
    for line in scans:
        r = r01.cmd(line)
        c.check(r["ok"], f"{line}: {r.get('message')}")
    got = [(x["sku"], x.get("promo_id"), x["promo_discount"]) for x in r["ticket"]["lines"]]
    c.eq(got, want_lines, f"{label}: (sku, promotion, discount in fen) per line")
    c.eq(r["ticket"]["total"], want_total, f"{label}: the ticket's total (fen)")
    r = r01.cmd("pay cash 100")
    c.check(r["ok"] and r.get("sale_id"), f"{label}: paid as {r.get('sale_id')}")
    promo_sales.append((label, r.get("sale_id", ""), want_total))
c.check(synced(r01, 20), "the four promoted sales are uploaded")
for label, sale_id, want_total in promo_sales:
    got = ops.call("sales", "sale.get", {"store": STORE, "sale_id": sale_id})
    body = got["body"].get("sale", {}) if got["type"] == "reply" else got["body"]
    c.check(got["type"] == "reply" and body.get("total") == want_total and "review" not in body,
            f"sales accepted {sale_id} ({label}) at {want_total} fen without a review flag: "
            f"total {body.get('total')}, review {body.get('review')}")
for promo_id, *_ in PROMOS:  # the rest of the test prices without them
    st.posctl("promo", "end", "--store", STORE, "--id", promo_id, check=True)
v = config_version()
c.check(wait_for(lambda: r01.cmd("state")["config_version"] == v, 10),
        f"R01 runs configuration {v} with the five promotions ended")

# --- permissions and approvals ----------------------------------------------------------------------
# a consumer watching the register's node events (as test_printer watches its device events)
watch = zmq.Context.instance().socket(zmq.SUB)
me = load_cert(st.key("consumer", "watch"))
watch.curve_publickey, watch.curve_secretkey = me["public"], me["secret"]
watch.curve_serverkey = load_cert(st.server_cert())["public"]
watch.setsockopt(zmq.LINGER, 0)
watch.connect(st.sub)
watch.setsockopt(zmq.SUBSCRIBE, b"node.S1.R01.")
events = []


def drain_events():
    while watch.poll(50):
        topic, payload = watch.recv_multipart()[:2]
        events.append((topic.decode(), msgpack.unpackb(payload)))
    return events


def audits_published(pred, n=1, timeout=10):
    """The audit events (bodies) published so far that satisfy pred, once there are n of them
    (waiting up to timeout s); what there is on a timeout."""
    def found():
        return [e["body"] for t, e in drain_events() if t == "node.S1.R01.audit" and
                e.get("type") == "node.audit" and pred(e.get("body", {}))]
    wait_for(lambda: len(found()) >= n, timeout)
    return found()


def subscribed():
    """An X report refused to Ann is a permission decision, published: once one arrives, the
    subscription has reached busd."""
    r01.cmd("x")
    return wait_for(lambda: audits_published(lambda b: b.get("action") == "x_report", 1, 0), 1)


c.check(wait_for(subscribed, 20), "a consumer subscribed to node.S1.R01. receives R01's audit "
        "events")
events.clear()
r01.cmd("scan BEER")
r01.cmd("scan CHIPS")
for line, what in (("void 1", "void"), ("price 2 5.00", "price override")):
    r = r01.cmd(line)
    c.check(not r["ok"] and r["error"] == "not_permitted", f"a cashier alone: {what} refused ({r})")
r = r01.cmd("void 1 approve sue 9999")
c.check(not r["ok"] and r["error"] == "not_permitted", "a wrong supervisor PIN approves nothing")
r = r01.cmd("void 1 approve sue 2222")
c.check(r["ok"] and r["ticket"]["lines"][0]["voided"] and r.get("approved_by") == "sue",
        "with Sue's PIN the void goes through")
voids = audits_published(lambda b: b.get("action") == "void_line", 3)
c.eq([(b.get("cashier"), b.get("approver"), b.get("approved")) for b in voids],
     [("ann", None, False), ("ann", "sue", False), ("ann", "sue", True)],
     "node.audit events of the three void attempts (cashier, approver, approved): alone, a "
     "wrong PIN, Sue's PIN")
ok_void = voids[-1] if len(voids) == 3 else {}
c.check(ok_void.get("cashier_name") == "Ann" and ok_void.get("approver_name") == "Sue" and
        ok_void.get("sku") == "BEER" and ok_void.get("line") == 1 and
        ok_void.get("store") == STORE and ok_void.get("register") == "R01" and
        ok_void.get("reason") == "approved by supervisor",
        f"the approved void's event names both people and the line: {ok_void}")
c.check(voids and all("2222" not in str(b) and "9999" not in str(b) and "scrypt" not in str(b)
                     for b in voids), "no PIN or PIN hash in any audit event")
r = r01.cmd("price 2 5.00 approve sue 2222")
c.check(r["ok"] and r["ticket"]["total"] == 500, f"price override approved: {r.get('message')}")
# the store's discount cap is the default 10%
r = r01.cmd("discount 20%")
c.check(not r["ok"] and r["error"] == "not_permitted" and r["ticket"]["total"] == 500,
        f"a cashier alone: 20% off (over the 10% cap) refused: {r.get('error')} "
        f"{r.get('message')}, total {r['ticket']['total']}")
r = r01.cmd("discount 20% approve sue 2222")
c.check(r["ok"] and r.get("approved_by") == "sue" and r["ticket"]["ticket_discount"] == 100 and
        r["ticket"]["total"] == 400, f"with Sue's PIN 20% off goes through: 5.00 -> 4.00 "
        f"({r.get('message')}, total {r['ticket']['total']})")
r = r01.cmd("discount 10%")
c.check(r["ok"] and r["ticket"]["total"] == 450, f"10% (the cap) needs nobody: 4.50 "
        f"({r.get('message')}, total {r['ticket']['total']})")
r = r01.cmd("discount 0.40")
c.check(r["ok"] and r["ticket"]["total"] == 460, f"0.40 (8%) needs nobody: 4.60 "
        f"({r.get('message')}, total {r['ticket']['total']})")
over = journal_audits(r01.journal, "audit")
over = [(a.get("cashier"), a.get("approver"), a.get("approved"), a.get("percent_bp"))
        for a in over if a.get("action") == "discount_over_cap"]
c.eq(over, [("ann", None, False, 2000), ("ann", "sue", True, 2000)],
     "the journal's discount_over_cap records (cashier, approver, approved, percent_bp): the "
     "refusal and Sue's approval; the discounts under the cap need none")
pub = audits_published(lambda b: b.get("action") == "discount_over_cap", 2)
c.eq([(b.get("cashier"), b.get("approver"), b.get("approved")) for b in pub],
     [("ann", None, False), ("ann", "sue", True)],
     "and both are published as node.audit events")
r = r01.cmd("pay cash")
c.check(r["ok"] and r.get("change") == 0, f"the discounted ticket is paid: {r.get('message')}")
discounted = r.get("sale_id", "")
r = r01.cmd("no-sale change for a customer")
c.check(not r["ok"] and r["error"] == "not_permitted", "no-sale drawer open refused alone")
r = r01.cmd("no-sale change for a customer approve sue 2222")
c.check(r["ok"] and r.get("drawer_open"), "no-sale with approval opens the drawer (a nosale sale)")
audits = [msgpack.unpackb(p) for (_, kind, _, p) in journal_records(r01.journal) if kind == 2]
approved = [a for a in audits if a.get("approver") == "sue" and a.get("approved")]
c.check(synced(r01, 20), "the discounted sale is uploaded")
got = ops.call("sales", "sale.get", {"store": STORE, "sale_id": discounted})
c.check(got["type"] == "reply" and got["body"]["sale"]["total"] == 460 and
        got["body"]["sale"].get("review") == "price_mismatch:CHIPS",
        f"sales holds {discounted} at 4.60; only the overridden price is flagged for review, "
        f"not the discount: {got['body']}")
c.check({a.get("action") for a in approved} >= {"void_line", "price_override", "no_sale",
                                                  "discount_over_cap"} and
        all(a.get("cashier") == "ann" for a in approved),
        f"the journal names both Ann and Sue on every approved action: {approved}")
c.check(any(a.get("action") == "void_line" and not a.get("approved") for a in audits),
        "the refused attempts are in the journal too")
r01.cmd("logout")
r = r01.cmd("login 3333 ann")  # PIN and id swapped: the PIN must not be recorded as an id
c.check(not r["ok"] and r["error"] == "login_failed", "a login with the fields swapped fails")
c.check(r01.cmd("login ann 1111")["ok"], "Ann logs in again")
c.check("3333" not in open(r01.journal, "rb").read().decode("latin-1"),
        "a failed login does not journal an unknown id (it may be a PIN)")
c.check("2222" not in open(r01.journal, "rb").read().decode("latin-1") and
        "1111" not in open(st.tmp + "/r01.log", errors="replace").read(),
        "no PIN in the journal or the log")

# --- park and recall, a return against an original, cash in and out, the X report --------------------
r01.cmd("scan EGG10")
r01.cmd("scan MILK1 2")
r = r01.cmd("park")
park_id = r.get("park_id", "")
c.check(r["ok"] and park_id and r["ticket"] is None, f"the ticket is parked as {park_id}")
r = r01.cmd(f"recall {park_id}")
c.check(r["ok"] and r["ticket"] and r["ticket"]["total"] == 1290 + 700,
        f"recalled with its lines (19.90): {r.get('message')}")
r = r01.cmd(f"recall {park_id}")
c.check(not r["ok"], "a parked ticket is recalled once")
r = r01.cmd("pay cash 20")
c.check(r["ok"] and r.get("change") == 10, "the recalled ticket is paid, change 0.10")
r = r01.cmd("return S1-R01-000001 COLA 1")
c.check(not r["ok"] and r["error"] == "not_permitted", "a cashier alone cannot take a return")
r = r01.cmd("return S1-R01-000001 COLA 5 approve sue 2222")
c.check(not r["ok"] and r["error"] == "too_many", f"more than was sold is refused: {r}")
r = r01.cmd("return S1-R01-000001 COLA 1 approve sue 2222")
c.check(r["ok"] and r["ticket"]["total"] == -300,
        f"one COLA returned against sale 1 at what was paid (3.00): {r.get('message')}")
r = r01.cmd("pay cash")
c.check(r["ok"] and r.get("sale_id"), f"the refund is paid out in cash: {r.get('message')}")
c.check(synced(r01, 20), "the return is uploaded")
got = ops.call("sales", "sale.get", {"store": STORE, "sale_id": r.get("sale_id", "")})
c.check(got["type"] == "reply" and got["body"]["sale"]["kind"] == "return" and
        got["body"]["sale"]["total"] == -300, f"sales accepted the return: {got['body']}")
got = ops.call("sales", "sale.get", {"store": STORE, "sale_id": "S1-R01-000001"})
c.check(got["type"] == "reply" and got["body"].get("returned") == {"COLA": 1},
        f"sale.get says what was returned of sale 1 so far: {got['body'].get('returned')}")
# sale 1 sold 3 COLA and 1 came back: a return checks what is left, also across its own lines
# (sales would refuse the sale, and a refused sale stops the register's uploads)
r = r01.cmd("return S1-R01-000001 COLA 3 approve sue 2222")
c.check(not r["ok"] and r["error"] == "too_many" and "1 returned already" in r["message"],
        f"3 more of the 3 sold, 1 returned already: refused: {r.get('message')}")
r = r01.cmd("return S1-R01-000001 COLA 1 approve sue 2222")
c.check(r["ok"], f"1 more is fine: {r.get('message')}")
r = r01.cmd("return S1-R01-000001 COLA 2 approve sue 2222")
c.check(not r["ok"] and r["error"] == "too_many" and "1 on this ticket" in r["message"],
        f"2 more beside the 1 on this ticket: refused: {r.get('message')}")
r = r01.cmd("pay cash")
c.check(r["ok"] and r.get("sale_id") and synced(r01, 20),
        f"the second return is paid out and uploaded, nothing blocked: {r.get('message')}")
# sale 1's 1234 g of apples were 15.80 (12.80/kg): returned in five parts, each rounded to the
# fen at 12.80/kg, they would come to 15.81, which sales refuses; the last part is refunded at
# the highest price per kg that keeps the whole within what was paid (12.79/kg: 15.51 for
# 1213 g, where 15.52 is no price per kg's amount)
for grams in (2, 3, 7, 9, 1213):
    r = r01.cmd(f"return S1-R01-000001 APPLE {grams} approve sue 2222")
    c.check(r["ok"], f"return {grams} g of apples: {r.get('message')}")
c.eq(r["ticket"]["total"], -1579, "the five parts refund 15.79 of the 15.80 paid, not 15.81")
r = r01.cmd("return S1-R01-000001 APPLE 1 approve sue 2222")
c.check(not r["ok"] and r["error"] == "too_many", f"and not a gram more: {r.get('message')}")
r = r01.cmd("pay cash")
c.check(r["ok"] and r.get("sale_id") and synced(r01, 20),
        f"paid out and uploaded: sales took it, nothing blocked: {r.get('message')}")
r = r01.cmd("cash-out 20.50 to the bank")
c.check(not r["ok"] and r["error"] == "not_permitted",
        "cash out opens the drawer: a cashier alone may not")
c.check(r01.cmd("cash-in 100 opening float approve sue 2222")["ok"] and
        r01.cmd("cash-out 20.50 to the bank approve sue 2222")["ok"],
        "with a supervisor, cash in and cash out are recorded")
r = r01.cmd("4321")
c.check(not r["ok"] and r["error"] == "unknown_command" and "4321" not in str(r),
        "a PIN typed as a command is not echoed back")
r = r01.cmd("x")
c.check(not r["ok"] and r["error"] == "not_permitted", "a cashier alone cannot print an X report")
r = r01.cmd("x approve sue 2222")
rep = r.get("report", {})
js = journal_sales(r01.journal)
cash = sum(t["amount"] for s_ in js for t in s_["tenders"] if t["kind"] == "cash")
change = sum(s_.get("change", 0) for s_ in js)
c.check(r["ok"] and rep.get("cash_in") == 10000 and rep.get("cash_out") == 2050 and
        rep.get("expected_cash") == cash - change + 10000 - 2050 and
        rep.get("total") == sum(s_["total"] for s_ in js) and
        rep.get("sales") + rep.get("returns") + rep.get("nosales") == len(js),
        f"the X report adds up to the journal: {rep}")
c.check(synced(r01, 20), "all uploaded before the outage")

# --- 500 sales while busd and sales are down ----------------------------------------------------------
before = journal_sales(r01.journal)[-1]["seq"]
st.kill("sales", signal.SIGTERM)
st.kill("busd", signal.SIGTERM)
t0 = time.time()
items = ["COLA", "WATER", "TEA", "NOODLE", "CHIPS", "BREAD", "SALT", "EGG10"]
for i in range(500):
    r = sale(r01, f"scan {items[i % len(items)]} {1 + i % 3}")
    if not r.get("ok"):
        c.fail(f"offline sale {i}: {r}")
        break
offline_s = time.time() - t0
r = r01.cmd("return S1-R01-000001 COLA 1")
c.check(not r["ok"] and r["error"] == "offline" and "receipt" in r["message"],
        f"offline, a return without the receipt's price is refused with how to do it: {r}")
r = r01.cmd("return S1-R01-000001 COLA 1 3.00")
c.check(not r["ok"] and r["error"] == "not_permitted", "an offline return needs a supervisor")
r = r01.cmd("return S1-R01-000001 COLA 1 3.00 approve sue 2222")
c.check(r["ok"] and r["ticket"]["total"] == -300, f"with Sue's approval it goes on: {r}")
c.check(r01.cmd("pay cash")["ok"], "the offline refund is paid out")
c.check(wait_for(lambda: r01.cmd("state")["online"] is False, 10), "the till shows offline")
# with heartbeats unanswered the till does not wait a request timeout out to learn the same
got = {}
r01.cmd("scan COLA")
c.check(wait_for(lambda: got.update(r01.cmd("park")) or
                 "heartbeats go unanswered" in got.get("message", ""), 10),
        f"a request of the till (park) is answered offline at once while heartbeats go "
        f"unanswered: {got.get('error')} {got.get('message')}")
r = r01.cmd("cancel approve sue 2222")
c.check(r.get("ok"), f"that ticket cancelled (with Sue): {r.get('message')}")
r = r01.cmd("state")
c.check(r["online"] is False and r["unsynced"] == 501,
        f"offline, 501 unsynced shown to the cashier: online={r['online']} unsynced={r['unsynced']}")
print(f"node.offline_sales_per_s {500 / offline_s:.0f} (ASan build, through the socket)")
st.start_busd()
st.start_service("sales", "sales")
t0 = time.time()
c.check(synced(r01, 120), "after busd and sales return, the backlog uploads")
c.check(st.wait_healthy(SERVICES), "every service registered again with the new busd")
print(f"node.catchup_500_s {time.time() - t0:.1f} (ASan build, includes reconnecting)")
stats = ops.call("sales", "stats", {})["body"]["counters"]
c.eq(stats.get("sales_committed"), 501,
     "the new sales instance committed exactly the 500 and the return (once each)")
c.eq(stats.get("sequence_gaps", 0), 0, "in order: sales saw no gap")
last = journal_sales(r01.journal)[-1]["seq"]
c.eq(last, before + 501, "the journal holds them gap-free after the earlier sales")
wait_for(lambda: day_report()["registers"].get("R01", {}).get("records") == last, 30)
z_matches("after the outage", [r01.journal])
day = st.posctl_json("report", "day", "--store", STORE)
z = st.posctl_json("report", "z", "--store", STORE)  # closes the day at sales
closed_days.append(z.get("day"))
c.check(z.get("day") == day.get("day") and z.get("totals") == day.get("totals") and
        z.get("tenders") == day.get("tenders"),
        f"posctl report z closes {day.get('day')} with the day report's totals and tenders, to "
        f"the fen: {z.get('totals')} {z.get('tenders')} / {day.get('totals')} "
        f"{day.get('tenders')}")
z_matches("after the outage, posctl report z", [r01.journal], z)

# --- crashes ------------------------------------------------------------------------------------------
st.kill("sales", signal.SIGTERM)
r = sale(r01, "scan WATER")
c.check(r["ok"], "a sale journaled while sales is away")
st.kill("r01", signal.SIGKILL)
st.start_service("sales", "sales")
r01 = st.start_posnode("r01", STORE, "R01")
c.check(synced(r01, 30), "after SIGKILL before the acknowledgement, the sale is uploaded")
# a sale committed but the answer lost: kill at once after paying, before the mark is written
r01.cmd("login ann 1111")
r = sale(r01, "scan TEA")
st.kill("r01", signal.SIGKILL)
r01 = st.start_posnode("r01", STORE, "R01")
c.check(synced(r01, 30), "after SIGKILL right after paying, everything is uploaded")
stats = ops.call("sales", "stats", {})["body"]["counters"]
c.eq(stats.get("sales_committed"), 2, "each of the two sales committed once")
# a torn last record: the crash inside a write
st.kill("r01", signal.SIGKILL)
records = journal_records(r01.journal)
last_seq = records[-1][0]
with open(r01.journal, "ab") as f:
    f.write(open(r01.journal, "rb").read()[-150:-40])  # part of a record: what a crash leaves
r01 = st.start_posnode("r01", STORE, "R01")
c.check(os.path.exists(r01.journal + ".torn"), "the torn record is cut off and kept in .torn")
c.eq(journal_records(r01.journal)[-1][0], last_seq, "earlier records are intact")
r01.cmd("login ann 1111")
r = sale(r01, "scan SALT")
want = journal_sales(r01.journal)[-1]["seq"]
c.check(r["ok"] and r.get("sale_seq") == want and want == last + 3,
        f"selling resumes at the right number: {r.get('sale_id')}")
c.check(synced(r01, 30), "and it is uploaded")

# --- Redis restored from an earlier copy ----------------------------------------------------------------
r02 = st.start_posnode("r02", STORE, "R02")
wait_for(lambda: r02.cmd("state")["config_version"] >= 3, 15)
r02.cmd("login sue 2222")
for i in range(20):
    sale(r02, f"scan {items[i % len(items)]}")
c.check(synced(r02, 30), "R02's first sales uploaded")
time.sleep(1.5)  # reporting applies them before the copy
st.redis_cli("SAVE")
snapshot = os.path.join(st.tmp, "snapshot.rdb")
shutil.copy(os.path.join(st.tmp, "dump.rdb"), snapshot)
for i in range(30):
    sale(r01, f"scan {items[i % len(items)]}")
    sale(r02, f"scan {items[(i + 3) % len(items)]}")
c.check(synced(r01) and synced(r02), "60 more sales uploaded after the copy")
for s in SERVICES:
    st.kill(s, signal.SIGTERM)
st.kill("redis", signal.SIGKILL)
shutil.rmtree(os.path.join(st.tmp, "appendonlydir"), ignore_errors=True)
shutil.copy(snapshot, os.path.join(st.tmp, "dump.rdb"))
st.start_redis("appendonly no")
for s in SERVICES:
    st.start_service(s, s)
c.check(st.wait_healthy(SERVICES), "back office healthy on the restored Redis")


def proof_complete():
    regs = day_report().get("registers", {})
    return all(regs.get(r, {}).get("records") == len(journal_sales(j)) and
               regs.get(r, {}).get("complete") for r, j in (("R01", r01.journal),
                                                             ("R02", r02.journal)))


c.check(wait_for(proof_complete, 60), "heartbeats asked for what Redis lost; the journals "
        "filled it in")
z_matches("after the restore", [r01.journal, r02.journal])
z_matches("the Z reports", [r01.journal, r02.journal],
          merge_reports([st.posctl_json("report", "z", "--store", STORE, "--date", d)
                         for d in closed_days] +
                        [st.posctl_json("report", "z", "--store", STORE)]))

# --- the disk fills up: selling stops with a clear message, nothing is lost --------------------------------
import resource  # noqa: E402
r03 = st.start_posnode("r03", STORE, "R03")
wait_for(lambda: r03.cmd("state")["config_version"] >= 3, 15)
r03.cmd("login ann 1111")
c.check(sale(r03, "scan WATER")["ok"], "R03 sells")
pid = st.procs["r03"].pid
size = os.path.getsize(r03.journal)
resource.prlimit(pid, resource.RLIMIT_FSIZE, (size + 200, resource.RLIM_INFINITY))
r = sale(r03, "scan BREAD")
c.check(not r["ok"] and r["error"] == "stopped" and "journal" in r.get("message", "") and
        r["stopped"] is True, f"the full disk stops the sale with a message: {r.get('message')}")
r = r03.cmd("scan SALT")
c.check(not r["ok"] and r["error"] in ("stopped", "tendering"), "nothing more is sold meanwhile")
c.eq(len(journal_sales(r03.journal)), 1, "no part of the refused sale is in the journal")
resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
r = r03.cmd("pay")
c.check(r["ok"] and r.get("sale_id") == "S1-R03-000002" and r["stopped"] is False,
        f"with space again, pay writes the same sale: {r.get('sale_id')} {r.get('message')}")
c.check(synced(r03, 20), "and it is uploaded once")
got = ops.call("sales", "sale.get", {"store": STORE, "sale_id": "S1-R03-000002"})
c.check(got["type"] == "reply" and got["body"]["sale"]["total"] == 990, "sales holds it")

# --- verify, identity ------------------------------------------------------------------------------------
v = subprocess.run([f"{BIN}/posctl", "journal", "verify", r01.journal, "--journal-key",
                    os.path.join(r01.state, "journal.pub")], capture_output=True, text=True)
c.check(v.returncode == 0 and "ok:" in v.stdout, f"posctl journal verify: {v.stdout.strip()}")
def verify(path):
    return subprocess.run([f"{BIN}/posctl", "journal", "verify", path], capture_output=True,
                          text=True)


data = open(r01.journal, "rb").read()
offsets, off = [], 0
while off < len(data):
    offsets.append(off)
    off += 124 + int.from_bytes(data[off + 8:off + 12], "big")
tampered = os.path.join(st.tmp, "tampered")
for label, blob, seq in (
        ("one byte of record 5 changed",
         data[:offsets[5] + 70] + bytes([data[offsets[5] + 70] ^ 1]) + data[offsets[5] + 71:], 5),
        ("record 7 removed", data[:offsets[7]] + data[offsets[8]:], 7),
        ("records 9 and 10 swapped",
         data[:offsets[9]] + data[offsets[10]:offsets[11]] + data[offsets[9]:offsets[10]] +
         data[offsets[11]:], 9)):
    open(tampered, "wb").write(blob)
    v = verify(tampered)
    c.check(v.returncode == 1 and f"bad record seq {seq} " in v.stdout + v.stderr,
            f"posctl journal verify on R01's real journal, {label}: names record {seq}: "
            f"{(v.stdout + v.stderr).strip()[:160]}")
bad = subprocess.run([f"{BIN}/posnode", *st.conn_args(st.key("register", "S1.R02")), "--store",
                      STORE, "--register", "R01", "--state-dir", os.path.join(st.tmp, "clone"),
                      "--stdin", "false"], capture_output=True, text=True, timeout=30)
c.check(bad.returncode != 0 and "not register S1.R01" in bad.stderr,
        f"posnode refuses to act as R01 with R02's certificate: {bad.stderr.strip()[-200:]}")
clone = Bus(st, st.key("register", "S1.R02"))
doc = journal_sales(r01.journal)[0]
r = clone.call("sales", "sale.upload", doc)
c.check(r["type"] == "error" and r["body"].get("code") == "forbidden",
        f"R01's journal uploaded with R02's key is refused: {r['body']}")

# --- a Z report closes the journal segment; numbering and uploads run on ------------------------------
import glob  # noqa: E402
posctl_in("7777\n", "cashier", "add", "--store", STORE, "--id", "max", "--name", "Max",
          "--role", "manager")
v = config_version()
c.check(wait_for(lambda: r01.cmd("state")["config_version"] == v, 15),
        f"R01 runs configuration {v} with Max")
c.check(synced(r01, 30), "R01 has everything acknowledged")
last = journal_sales(r01.journal)[-1]["seq"]
r = r01.cmd("z approve max 7777")
c.check(r["ok"] and "archived" in r.get("journal", "") and r["report"]["last_sale"] == last,
        f"the Z report closes the segment: {r.get('journal')} {r.get('message')}")
archives = glob.glob(r01.journal + ".*-*")
c.check(len(archives) == 1 and archives[0].endswith(f".000001-{last:06d}"),
        f"archived as journal.000001-{last:06d}: {archives}")
v = subprocess.run([f"{BIN}/posctl", "journal", "verify", archives[0], "--journal-key",
                    os.path.join(r01.state, "journal.pub")], capture_output=True, text=True)
c.check(v.returncode == 0, f"the archive verifies: {v.stdout.strip()}")
r = sale(r01, "scan TEA")
c.check(r["ok"] and r.get("sale_seq") == last + 1, f"the next sale is {last + 1}: {r.get('sale_id')}")
c.check(synced(r01, 20), "and it is uploaded from the new segment")
st.kill("r01", signal.SIGTERM)
r01 = st.start_posnode("r01", STORE, "R01")
r01.cmd("login ann 1111")
r = sale(r01, "scan TEA")
c.check(r["ok"] and r.get("sale_seq") == last + 2, "after a restart numbering runs on")
c.check(synced(r01, 20), "uploaded")
got = ops.call("sales", "sale.get", {"store": STORE, "sale_id": r.get("sale_id", "")})
c.check(got["type"] == "reply", "sales holds it")

# --- device commands from the back office: once per key, also when the register was away ---------------
def device_command(reg, device, command, *args, key, wait_ms=10000):
    return subprocess.run([f"{BIN}/posctl", *st.conn_args(), "device", "command", "--store", STORE,
                           "--register", reg, "--device", device, "--command", command, "--key",
                           key, "--wait-ms", str(wait_ms), "--format", "json", *args],
                          capture_output=True, text=True, timeout=60)


r = device_command("R01", "till", "display", "text=请清点钱箱 count the drawer", key="msg-1")
c.check(r.returncode == 0 and '"shown"' in r.stdout,
        f"a text for R01's cashier is shown and answered: {r.stdout.strip()} {r.stderr.strip()}")
state = r01.cmd("state")
c.check(state.get("office_message", {}).get("text") == "请清点钱箱 count the drawer",
        f"every answer carries it: {state.get('office_message')}")
r = device_command("R01", "till", "display", "text=请清点钱箱 count the drawer", key="msg-1")
c.check(r.returncode == 0, "asked again with the same key: answered, not sent again")
r = device_command("R01", "printer", "print", "text=x", key="print-1")
c.check(r.returncode == 1 and "no_device" in (r.stdout + r.stderr),
        f"a device the register does not have: no_device: {r.stdout.strip()} {r.stderr.strip()}")
st.kill("r02", signal.SIGTERM)
r = device_command("R02", "till", "display", "text=hello R02", key="msg-2", wait_ms=500)
c.check(r.returncode == 1 and "pending" in (r.stdout + r.stderr),
        "R02 is away: the command stays pending")
r02 = st.start_posnode("r02", STORE, "R02")
c.check(wait_for(lambda: r02.cmd("state").get("office_message", {}).get("text") == "hello R02",
                 20), "R02 started: its heartbeat says a command waits; it fetches and shows it")
r = device_command("R02", "till", "display", "text=hello R02", key="msg-2", wait_ms=10000)
c.check(r.returncode == 0, f"and the operator's poll gets the answer: {r.stdout.strip()}")
done = [a for (_, kind, _, p) in journal_records(r01.journal) if kind == 2
        for a in [msgpack.unpackb(p)] if a.get("type") == "device_command"]
c.eq([a.get("key") for a in done], ["msg-1"], "R01 journaled the command once")

# --- started while the back office is down: the last prices it learnt ----------------------------
catalog_before = r01.cmd("state")["catalog_version"]
soap = os.path.join(st.tmp, "soap.csv")
with open(soap, "w", encoding="utf-8") as f:
    f.write("sku,barcode,name,price,tax_rate,unit,category,supplier,threshold,member_price\n"
            'SOAP,6901234500158,"舒肤佳香皂",7.20,13,pcs,household,"Safeguard",12,\n')
st.posctl("catalog", "import", soap, check=True)
c.check(wait_for(lambda: r01.cmd("state")["catalog_version"] > catalog_before, 15),
        "R01 learns the catalog change (SOAP 6.90 -> 7.20)")
for s in SERVICES:
    st.kill(s, signal.SIGTERM)
st.kill("busd", signal.SIGTERM)
st.kill("r01", signal.SIGTERM)
r01 = st.start_posnode("r01", STORE, "R01")
r = r01.cmd("login ann 1111")
c.check(r["ok"] and r["online"] is False,
        f"R01 started with no back office: Ann logs in (the configuration it kept): "
        f"{r.get('message')} online={r.get('online')}")
r = r01.cmd("scan SOAP")
line = r["ticket"]["lines"][-1] if r.get("ticket") else {}
c.check(r["ok"] and line.get("unit_price") == 720,
        f"SOAP sells at the 7.20 it learnt before the restart: {line} {r.get('message')}")
r = r01.cmd("pay cash 10")
offline_sale = r.get("sale_id", "")
c.check(r["ok"] and offline_sale and r.get("change") == 280 and r["unsynced"] == 1,
        f"paid offline as {offline_sale}, change 2.80, 1 unsynced: {r.get('message')}")
st.start_busd()
for s in SERVICES:
    st.start_service(s, s)
c.check(st.wait_healthy(SERVICES), "the back office is back")
c.check(synced(r01, 60), "the offline sale is uploaded")
got = ops.call("sales", "sale.get", {"store": STORE, "sale_id": offline_sale})
c.check(got["type"] == "reply" and got["body"]["sale"]["total"] == 720 and
        "review" not in got["body"]["sale"],
        f"sales holds {offline_sale} at 7.20 without a review flag: {got['body']}")
c.eq(ops.call("sales", "stats", {})["body"]["counters"].get("sales_committed"), 1,
     "the new sales instance committed it once (and nothing else)")

st.stop_all(c)
c.finish()
