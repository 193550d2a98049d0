#!/usr/bin/python3
"""test_sales - the sales service against bad money, bad refunds, big replays, retries and a Redis
that refuses writes, through real Redis, busd and sales.

Each section is a regression test for one defect of issue 6, written so that it fails on the
code before the fix:
  1. a return with 33 voided lines naming 33 distinct originals is refused (it overflowed a stack
     array);
  2. money bounds: cash rounding beyond 5 fen or without cash, tenders of the wrong sign, change
     without cash, discounts above the gross, amounts beyond 10^12 fen are refused;
  3. a refund above what the original sale paid per unit (after its discounts) is refused, and
     the original's returned quantities are untouched by the refusal;
  4. sale.replay pages over 1,000 sales of 8 lines are each below the 1 MiB payload limit and
     hand out every sale exactly once;
  5. day.close and sale.recall retried with the same request id (the libbus reply cache entry
     removed, so the service's own scripts must recognise the retry) close one day and recall
     the ticket once;
  6. Redis out of memory answers `unavailable` with retry_ms, and the same upload commits once
     when memory is back.
Every expected amount is computed here from what the test sends."""
import secrets
import time

import msgpack

from harness import Bus, Checks, Failure, Stack

MIB = 1024 * 1024
STORE = "S1"

c = Checks("test_sales")
st = Stack("sales")
st.start_redis()
st.start_busd()
st.start_service("sales", "sales")
st.start_service("inventory", "inventory")
c.check(st.wait_healthy(["sales", "inventory"]), "sales and inventory healthy")
st.posctl("store", "add", STORE, "Sales test store", check=True)
bus = Bus(st)


def tax(amount, rate):
    """Tax inside a tax-inclusive amount, half away from zero (independent of libpos)."""
    q, r = divmod(abs(amount) * rate, 10000 + rate)
    q += 1 if 2 * r >= 10000 + rate else 0
    return q if amount >= 0 else -q


def line(sku, qty, unit_price, rate=1300, ticket_discount=0, return_of=None, voided=False,
         name="", category=""):
    """A pieces line priced here: gross = price x qty, amount = gross - discount."""
    gross = 0 if voided else unit_price * qty
    amount = gross - (0 if voided else ticket_discount)
    l = {"sku": sku, "name": name, "category": category, "qty": qty, "unit": "pcs",
         "unit_price": unit_price, "gross": gross, "promo_discount": 0,
         "ticket_discount": 0 if voided else ticket_discount, "amount": amount,
         "tax": 0 if voided else tax(amount, rate), "tax_rate_bp": rate}
    if return_of:
        l["return_of"] = return_of
    if voided:
        l["voided"] = True
    return l


def sale(reg, seq, lines, tenders=None, kind="sale", change=0, rounding=0):
    """A sale document; the total is the sum of the line amounts, tenders default to one card
    tender of the total (negative on a refund)."""
    total = sum(l["amount"] for l in lines)
    if tenders is None:
        tenders = [{"kind": "card", "amount": total}] if total else []
    return {"sale_id": f"{STORE}-{reg}-{seq:06d}", "store": STORE, "register": reg, "seq": seq,
            "cashier": "张伟", "ts": int(time.time() * 1000), "kind": kind, "lines": lines,
            "tenders": tenders, "total": total, "change": change, "cash_rounding": rounding}


def upload(doc):
    return bus.call("sales", "sale.upload", doc, timeout=10.0)


def counters():
    return bus.call("sales", "stats", {})["body"]["counters"]


def refused(r, code, text, what):
    body = r["body"]
    c.check(r["type"] == "error" and body.get("code") == code and text in body.get("message", ""),
            f"{what}: refused with {code} mentioning '{text}'", expected=(code, text),
            actual=(body.get("code"), body.get("message")))


def accepted(r, what):
    body = r["body"]
    return c.check(r["type"] == "reply" and body.get("duplicate") is False,
                   f"{what}: committed", expected="reply, duplicate False",
                   actual=(r["type"], body))


# --- 1. 33 voided lines naming 33 distinct originals ---------------------------------------
before = counters()
voids = [line("COLA", -1, 100, return_of=f"{STORE}-R09-{n:06d}", voided=True)
         for n in range(1, 34)]
r = upload(sale("R01", 1, voids, kind="return"))
refused(r, "bad_sale", "at most 32 original sales", "a return naming 33 originals (voided lines)")
ok = upload(sale("R01", 1, [line("COLA", 2, 250)]))
accepted(ok, "the service is still up and takes the next sale")
after = counters()
c.eq(after["sales_refused"] - before["sales_refused"], 1, "the refusal is counted once")

# --- 2. money bounds -------------------------------------------------------------------------
base = [line("COLA", 3, 333)]  # total 999
cases = [
    ("cash rounding of 11 fen (tenders still add up)",
     sale("R02", 1, base, [{"kind": "cash", "amount": 1000}], change=12, rounding=-11),
     "cash rounding -11 must be within +-5"),
    ("cash rounding without a cash tender",
     sale("R02", 1, base, [{"kind": "card", "amount": 1000}], rounding=1),
     "only with a cash tender"),
    ("a negative tender on a sale",
     sale("R02", 1, base, [{"kind": "card", "amount": -1}, {"kind": "cash", "amount": 1000}]),
     "tender 0: amount -1 must be positive"),
    ("a zero tender",
     sale("R02", 1, base, [{"kind": "wechat", "amount": 0}, {"kind": "card", "amount": 999}]),
     "tender 0: amount 0"),
    ("change without cash",
     sale("R02", 1, base, [{"kind": "card", "amount": 1999}], change=1000),
     "change 1000 must be"),
    ("discounts above the gross of a sale line",
     sale("R02", 1, [line("COLA", 1, 100, ticket_discount=300), line("TEA", 1, 500)]),
     "line 0: discounts 300 exceed the gross 100"),
    ("a line amount beyond 10^12 fen",
     sale("R02", 1, [line("GOLD", 1, 10**13)]), "line 0: unit price"),
    ("line amounts that add up beyond 10^12 fen",
     sale("R02", 1, [line("GOLD", 1, 6 * 10**11), line("GOLD", 1, 6 * 10**11)]),
     "line 1: the line amounts add up"),
    ("an empty return_of on a sale line (consumers would book it as a return)",
     sale("R02", 1, [dict(line("COLA", 3, 333), return_of="")]),
     "return_of and promo_id, when present, must not be empty"),
    ("tenders that wrap around int64",
     sale("R02", 1, base, [{"kind": "card", "amount": 2**63 - 1},
                           {"kind": "cash", "amount": 2**63 - 1},
                           {"kind": "cash", "amount": 3}], change=0),
     "tender 0"),
]
before = counters()
for what, doc, text in cases:
    refused(upload(doc), "bad_sale", text, what)
after = counters()
c.eq((after["sales_refused"] - before["sales_refused"],
      after["sales_committed"] - before["sales_committed"]), (len(cases), 0),
     "every money refusal counted, nothing committed")
# the boundaries themselves are accepted: 9.99 paid with 10.00 cash rounds +1 fen, no change
good = sale("R02", 1, base, [{"kind": "cash", "amount": 1000}], rounding=1)
accepted(upload(good), "cash rounding of +1 fen with cash (9.99 -> 10.00)")
good = sale("R02", 2, [line("TEA", 1, 1234)], [{"kind": "card", "amount": 238},
                                              {"kind": "cash", "amount": 1000}], rounding=4)
accepted(upload(good), "card 2.38 + cash 10.00 for 12.34 with rounding +4 (cash 9.96 -> 10.00)")

# --- 3. returns at the price paid --------------------------------------------------------------
# The original: 3 x COLA at 1.00 and 2 x TEA at 5.00 with a 1.00 ticket discount on the TEA line,
# so TEA was paid 9.00 for 2, 4.50 each.
orig = sale("R03", 1, [line("COLA", 3, 100), line("TEA", 2, 500, ticket_discount=100)])
oid = orig["sale_id"]
accepted(upload(orig), "the original sale (COLA 3 x 1.00, TEA 2 x 5.00 less 1.00)")
paid_tea = (2 * 500 - 100) // 2  # 450 per unit, computed here
returned_key = f"returned:{{{STORE}}}:{oid}"


def refund(seq, lines):
    total = sum(l["amount"] for l in lines)
    return sale("R03", seq, lines, [{"kind": "card", "amount": total}], kind="return")


def flagged(r, flag, what):
    """Committed (never refused: the refund happened) and flagged for review with flag."""
    body = r["body"]
    return c.check(r["type"] == "reply" and body.get("duplicate") is False and
                   flag in body.get("review", "").split(","),
                   f"{what}: committed and flagged {flag}", expected=("reply", flag),
                   actual=(r["type"], body.get("review"), body.get("message")))


before = counters()
accepted(upload(refund(2, [line("COLA", -1, 100, return_of=oid)])),
         "one COLA refunded at the 1.00 paid")
r = upload(refund(2, [line("COLA", -1, 100, return_of=oid)]))
c.check(r["type"] == "reply" and r["body"].get("duplicate") is True and not r["body"].get("review"),
        "the same return again: a duplicate, nothing booked twice", actual=r["body"])
flagged(upload(refund(3, [line("COLA", -1, 100000, return_of=oid)])), "return_price:COLA",
        "a 1.00 COLA refunded at 1,000.00")
flagged(upload(refund(4, [line("TEA", -1, 500, return_of=oid)])), "return_price:TEA",
        "TEA refunded at its list price 5.00 though 4.50 was paid after the discount")
flagged(upload(refund(5, [line("COLA", -1, 100, return_of=oid),
                          line("COLA", -1, 101, return_of=oid)])),
        "return_price:COLA", "one line of two refunding 1 fen too much")
c.eq(st.redis_json("HGET", f"sale:{{{STORE}}}:{refund(5, [])['sale_id']}", "flags"),
     "over_return:COLA,return_price:COLA,over_refund:COLA",
     "that return took 2 COLA of the 1 left and 2.01 of the 1.00 left: all three flags kept on "
     "the sale")
r = upload(refund(6, [line("TEA", -1, 400, return_of=oid)]))
c.check(r["type"] == "reply" and r["body"].get("duplicate") is False and
        not r["body"].get("review"),
        "the second TEA refunded at 4.00, what is left of the 9.00 paid: committed, not flagged",
        actual=r["body"])
flagged(upload(refund(7, [line("TEA", -1, paid_tea, return_of=oid)])), "over_return:TEA",
        "a third TEA of two sold (the one at the list price took one already)")
flagged(upload(refund(8, [line("MILK", -1, 100, return_of=oid)])), "over_return:MILK",
        "a SKU the original never sold")
c.eq(st.redis_json("HGETALL", returned_key),
     {"COLA": "4", "fen:COLA": str(100 + 100000 + 201), "TEA": "3",
      "fen:TEA": str(500 + 400 + paid_tea), "MILK": "1", "fen:MILK": "100"},
     "every return booked against the original once, beyond what it sold included")
review = set(st.redis_json("SMEMBERS", f"review:{{{STORE}}}"))
want = {refund(n, [])["sale_id"] for n in (3, 4, 5, 7, 8)}
c.check(want <= review and refund(2, [])["sale_id"] not in review and
        refund(6, [])["sale_id"] not in review,
        "the five flagged returns are on the store's review list, the two good ones are not",
        expected=sorted(want), actual=sorted(review))
after = counters()
c.eq((after["sales_refused"] - before["sales_refused"],
      after["sales_committed"] - before["sales_committed"],
      after["sales_flagged_for_review"] - before["sales_flagged_for_review"]), (0, 7, 5),
     "no return refused; seven committed, five of them flagged")
# the manager's list: posctl review list (every page), review done takes one off
listed = {r["sale_id"]: r for r in st.posctl_json("review", "list", "--store", STORE)["sales"]}
c.check(want <= set(listed) and
        listed[refund(8, [])["sale_id"]]["flags"] == "over_return:MILK,over_refund:MILK" and
        listed[refund(8, [])["sale_id"]]["business_day"],
        "posctl review list shows the flagged returns with their flags and business day",
        expected=sorted(want), actual={k: v["flags"] for k, v in listed.items()})
done = st.posctl_json("review", "done", "--store", STORE, refund(8, [])["sale_id"])
again = st.posctl_json("review", "done", "--store", STORE, refund(8, [])["sale_id"])
left = {r["sale_id"] for r in st.posctl_json("review", "list", "--store", STORE)["sales"]}
c.check(done["removed"] is True and again["removed"] is False and
        refund(8, [])["sale_id"] not in left and want - {refund(8, [])["sale_id"]} <= left,
        "posctl review done takes that one off the list (once), the others stay",
        actual=(done, again, sorted(left)))
c.eq(st.redis_json("HGET", f"sale:{{{STORE}}}:{refund(8, [])['sale_id']}", "flags"),
     "over_return:MILK,over_refund:MILK", "its flags stay on the sale")
r03 = Bus(st, st.key("register", f"{STORE}.R03"))
for method, body in (("sale.review", {"store": STORE}),
                     ("sale.reviewed", {"store": STORE, "sale_id": refund(3, [])["sale_id"]})):
    r = r03.call("sales", method, body)
    c.check(r["type"] == "error" and r["body"].get("code") == "forbidden",
            f"a register may not call {method}", actual=r["body"])
r03.sock.close(0)
mixed = refund(9, [line("TEA", -1, 450, return_of=oid), line("TEA", -1, 450, return_of=oid)])
mixed["lines"][1].update(unit="kg", qty=-1000)  # 1 kg at 4.50 per kg: adds up on its own
refused(upload(mixed), "bad_return", "mixes pcs and kg",
        "a return mixing pcs and kg lines of one SKU (it contradicts itself)")


# --- 3b. a return that arrives before its original (two registers' uploads cross) --------------
late = sale("R15", 1, [line("COLA", 2, 100)])
early = sale("R16", 1, [line("COLA", -1, 100, return_of=late["sale_id"])], kind="return",
             tenders=[{"kind": "cash", "amount": -100}])
before = counters()
r = upload(early)
body = r["body"]
c.check(r["type"] == "error" and body.get("code") == "unavailable" and
        body.get("retry_ms", 0) >= 1000,
        "a return before its original is 'unavailable, retry' (never a refusal: the refund "
        "happened)", expected=("unavailable", ">= 1000 ms"),
        actual=(body.get("code"), body.get("retry_ms"), body.get("message")))
accepted(upload(late), "then the original arrives")
accepted(upload(early), "and the resent return commits")
after = counters()
c.eq((after["returns_waiting_for_original"] - before["returns_waiting_for_original"],
      after["sales_refused"] - before["sales_refused"],
      after["sales_committed"] - before["sales_committed"]), (1, 0, 2),
     "counted as waiting once, refused never, both committed")
c.eq(st.redis_json("HGETALL", f"returned:{{{STORE}}}:{late['sale_id']}"),
     {"COLA": "1", "fen:COLA": "100"}, "the return is booked against its original")


# --- 4. replay pages bounded by bytes ---------------------------------------------------------
def call_bytes(method, body):
    """Like bus.call, but returns (decoded reply, size in bytes of the reply payload)."""
    env = {"v": 1, "type": method, "id": secrets.token_hex(16), "src": "pytest", "seq": 1,
           "ts": int(time.time() * 1000), "body": body}
    corr = secrets.token_bytes(8)
    bus.sock.send_multipart([b"BUS1C", b"REQ", b"sales", corr, msgpack.packb(env)])
    deadline = time.time() + 30
    while time.time() < deadline:
        if bus.sock.poll(int((deadline - time.time()) * 1000) + 1):
            frames = bus.sock.recv_multipart()
            if len(frames) == 4 and frames[2] == corr:
                return msgpack.unpackb(frames[3], raw=False), len(frames[3])
    raise Failure(f"sales {method}: no reply within 30 s")


NAME = "有机高山乌龙茶 特级 礼盒装 五百克 第{}号"  # 45+ bytes of UTF-8
uploaded = []
t0 = time.time()
for seq in range(1, 1001):
    lines = [line(f"TEA{k}", 1 + k % 3, 1000 + 7 * k, name=NAME.format(k), category="茶叶 饮料")
             for k in range(8)]
    doc = sale("R05", seq, lines)
    r = upload(doc)
    if r["type"] != "reply":
        c.fail(f"uploading sale {seq} of 8 lines: {r['body']}")
        break
    uploaded.append(doc["sale_id"])
c.eq(len(uploaded), 1000, f"1,000 sales of 8 lines uploaded ({time.time() - t0:.1f} s)")
after, pages, sizes, seen = "0", 0, [], []
while True:
    r, size = call_bytes("sale.replay", {"after": after, "count": 1000})
    if r["type"] != "reply":
        c.fail(f"sale.replay after {after}: {r['body']}")
        break
    body = r["body"]
    pages += 1
    sizes.append(size)
    seen += [s["sale_id"] for s in body["sales"]]
    if body["sales"]:
        c.check(body["last"] == body["sales"][-1]["stream_id"],
                f"page {pages}: last is the last included sale's stream id",
                expected=body["sales"][-1]["stream_id"], actual=body["last"])
    after = body["last"]
    if not body["more"] or pages > 100:
        break
big = [s for s in sizes if s >= MIB]
c.check(not big, f"{pages} replay pages, largest {max(sizes)} bytes: every page below 1 MiB",
        expected=f"< {MIB}", actual=big)
mine = [s for s in seen if s.startswith(f"{STORE}-R05-")]
c.check(mine == uploaded and len(seen) == len(set(seen)),
        "following the pages from 0 gives every uploaded sale exactly once, in order",
        expected=(1000, "no duplicates"), actual=(len(mine), len(seen) - len(set(seen))))
c.check(sum(sizes) > MIB and pages >= 2,
        f"the replay really needed several pages ({sum(sizes)} bytes in {pages} pages)")


# --- 5. retries with the same request id ------------------------------------------------------
def envelope(method, body):
    """An encoded request: sending the same bytes twice is a client's retry."""
    rid = secrets.token_hex(16)
    return rid, msgpack.packb({"v": 1, "type": method, "id": rid, "src": "pytest", "seq": 1,
                               "ts": int(time.time() * 1000), "body": body})


def retry(rid, env):
    """Resend env as a retry whose first reply was lost, past the libbus reply cache: the
    cached first reply is removed so that the handler and its script see the retry."""
    st.redis_cli("DEL", f"reply:{{sales}}:operator-py:{rid}")  # kept per caller (Bus: operator-py)
    r = bus.call_raw("sales", env, 10.0)
    if r is None:
        raise Failure("a retried request got no reply within 10 s")
    return r


def business_day():
    return bus.call("sales", "day.current", {"store": STORE})["body"]["business_day"]


day0 = business_day()
rid, env = envelope("day.close", {"store": STORE})
first = bus.call_raw("sales", env, 10.0)  # its reply is "lost"
day1 = business_day()
second = retry(rid, env)
c.check(first and first["type"] == "reply" and second["type"] == "reply" and
        second["body"] == first["body"],
        "a retried day.close answers the first close", expected=first and first["body"],
        actual=second["body"])
c.eq((first["body"].get("closed_day"), business_day()), (day0, day1),
     f"one day closed: {day0} -> {day1}, not the day after")

ticket = {"lines": [{"sku": "COLA", "qty": 2}], "note": "customer fetching a wallet"}
pid_env = envelope("sale.park", {"store": STORE, "register": "R01", "ticket": ticket})
parked = bus.call_raw("sales", pid_env[1], 10.0)
pid = parked["body"]["park_id"]
rid, env = envelope("sale.recall", {"store": STORE, "park_id": pid})
first = bus.call_raw("sales", env, 10.0)
second = retry(rid, env)
other = bus.call("sales", "sale.recall", {"store": STORE, "park_id": pid})
c.check(first["type"] == "reply" and first["body"].get("ticket") == ticket and
        second["type"] == "reply" and second["body"].get("ticket") == ticket,
        "a retried sale.recall gets the same ticket again",
        expected=ticket, actual=(first["body"], second["body"]))
c.eq((other["type"], other["body"].get("code")), ("error", "not_found"),
     "a recall by another request finds nothing: the ticket was recalled once")
reparked = retry(*pid_env)
listed = bus.call("sales", "sale.parked", {"store": STORE})["body"]["parked"]
c.check(reparked["type"] == "reply" and pid not in listed and
        not any(p.startswith("~") for p in listed),
        "the park request resent after the recall does not bring the ticket back",
        expected=[], actual=listed)

# --- 6. Redis refusing writes -----------------------------------------------------------------
doc = sale("R06", 1, [line("COLA", 1, 300)])
st.redis_cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
st.redis_cli("CONFIG", "SET", "maxmemory", "1")
before = counters()
xlen = int(st.redis_cli("XLEN", "sales:stream").stdout.strip())
r = upload(doc)
body = r["body"]
c.check(r["type"] == "error" and body.get("code") == "unavailable" and
        body.get("retry_ms", 0) > 0,
        "an upload while Redis is out of memory answers unavailable with retry_ms",
        expected=("unavailable", "retry_ms > 0"), actual=body)
st.redis_cli("CONFIG", "SET", "maxmemory", "0")
deadline, r = time.time() + 10, None
while time.time() < deadline:  # the client's retry, until Redis takes writes again
    r = upload(doc)
    if r["type"] == "reply":
        break
    time.sleep(0.2)
accepted(r, "the same upload once memory is back")
again = upload(doc)
c.check(again["type"] == "reply" and again["body"]["duplicate"] is True,
        "and a further resend is a duplicate")
n = int(st.redis_cli("XLEN", "sales:stream").stdout.strip()) - xlen
after = counters()
c.eq((n, after["sales_committed"] - before["sales_committed"]), (1, 1),
     "the sale is in the stream once (stream length +1) and counted once")
c.finish()
