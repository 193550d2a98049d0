#!/usr/bin/python3
"""test_reporting - the reporting service against what it is fed, bad input included.

Sales are planted directly in the sales stream (the fields the sales service writes: sale_id,
store, bday, payload), so that the test controls every byte reporting reads, poison included.
Every expected figure is summed here from what the test planted, never read back from the code
under test. Checks:

  1. a batch of 100 with one line amount of 10^17: the other 99 are applied (day totals, tenders,
     items and registers equal the test's sums), the poison sale is parked in dead:{reporting}
     with its reason, counted, and nothing stays pending;
  2. a batch of 100 with a float, a string where an int belongs, a day total stored beyond what
     the script handles exactly, and a sale that would take a total past 2^53 - 1: the other 96
     are applied, the 4 are parked, and no sale is marked applied without its totals;
  2b. the apply script alone, on batches whose last total cannot be written (it would pass
     2^53 - 1, it is not an integer, it would overflow int64, its key is not a hash): it undoes
     the totals it had written, so every field, including one it had created and one that held
     0, reads as before, and no marker, sequence or day is written; through the service, a sale
     whose item total would pass 2^53 - 1 is parked and leaves nothing in its day;
  3. after a SIGKILL and a restart, a redelivered sale is not applied again and nothing parked
     comes back;
  4. report.day, report.x and report.z of a day with one plain cash sale carry every documented
     key, 0 where nothing happened;
  5. report.items over 50,000 distinct items: the top rows equal the test's own ranking, and the
     time each report takes is printed.
"""
import os
import time

import msgpack

from harness import SRC, Bus, Checks, Stack, wait_for as poll

STREAM = "sales:stream"
DEAD = "dead:{reporting}"
GROUP = "reporting"
TOTAL_KEYS = ["tickets", "sale_tickets", "return_tickets", "nosale", "gross", "discounts",
              "returns", "total", "change", "cash_rounding", "voided_lines"]
TENDER_KINDS = ["cash", "card", "wechat", "alipay", "stored_value", "other"]
REGISTER_KEYS = ["first", "last", "records", "tickets", "total", "change", "nosale", "complete"]
LIMIT = 2 ** 53 - 1  # the largest day total reporting keeps (Lua numbers are doubles)
APPLY_TIMEOUT = 120  # seconds for reporting to work through what was planted (ASan builds)


def tax(amount, rate):
    q, r = divmod(abs(amount) * rate, 10000 + rate)
    q += 1 if 2 * r >= 10000 + rate else 0
    return q if amount >= 0 else -q


def line(sku, qty, price, category="grocery", rate=1300, discount=0):
    gross = qty * price
    amount = gross - discount
    return {"sku": sku, "name": sku.lower(), "category": category, "qty": qty, "unit": "pcs",
            "unit_price": price, "gross": gross, "promo_discount": discount,
            "ticket_discount": 0, "amount": amount, "tax": tax(amount, rate),
            "tax_rate_bp": rate}


def sale(store, reg, seq, lines, tender="card", given=None):
    """A sale paid with one tender (cash: given, change back)."""
    total = sum(ln["amount"] for ln in lines)
    paid = given if given is not None else total
    return {"sale_id": f"{store}-{reg}-{seq:06d}", "store": store, "register": reg, "seq": seq,
            "cashier": "C" + reg[-1], "ts": int(time.time() * 1000), "kind": "sale",
            "lines": lines, "tenders": [{"kind": tender, "amount": paid}], "total": total,
            "change": paid - total, "cash_rounding": 0}


def xadd(s, day, payload=None):
    return ("XADD", STREAM, "*", "sale_id", s["sale_id"], "store", s["store"], "bday", day,
            "payload", payload if payload is not None else msgpack.packb(s))


class Oracle:
    """What the reports must say, summed from the sales the test expects applied."""

    def __init__(self):
        self.totals = dict.fromkeys(TOTAL_KEYS, 0)
        self.tenders = dict.fromkeys(TENDER_KINDS, 0)
        self.items, self.regs = {}, {}

    def add(self, s):
        t = self.totals
        t["tickets"] += 1
        t["sale_tickets"] += 1
        for ln in s["lines"]:
            t["gross"] += ln["gross"]
            t["discounts"] += ln["promo_discount"] + ln["ticket_discount"]
            t["total"] += ln["amount"]
            it = self.items.setdefault(ln["sku"], {"amount": 0, "qty": 0})
            it["amount"] += ln["amount"]
            it["qty"] += ln["qty"]
        t["change"] += s["change"]
        for tn in s["tenders"]:
            self.tenders[tn["kind"]] += tn["amount"]
        r = self.regs.setdefault(s["register"], {"seqs": [], "tickets": 0, "total": 0})
        r["seqs"].append(s["seq"])
        r["tickets"] += 1
        r["total"] += s["total"]

    def registers(self):
        out = {}
        for reg, r in self.regs.items():
            first, last, n = min(r["seqs"]), max(r["seqs"]), len(r["seqs"])
            out[reg] = {"first": first, "last": last, "records": n, "tickets": r["tickets"],
                        "total": r["total"], "complete": last - first + 1 == n}
        return out


c = Checks("test_reporting")
st = Stack("reporting")
st.start_redis()
st.start_busd()
db = st.redis()
bus = Bus(st)


def report(method, body, timeout=30.0):
    r = bus.call("reporting", method, body, timeout=timeout)
    if r is None or r["type"] != "reply":
        c.check(False, f"{method} {body} answered (got {r})")
        return {}
    return r["body"]


def counters():
    r = bus.call("reporting", "stats", {})
    return r["body"]["counters"] if r and r["type"] == "reply" else {}


def pending():
    r = db.call("XPENDING", STREAM, GROUP)
    return r[0] if isinstance(r, list) else -1


def dead_letters():
    """{sale_id: reason} of every entry parked by reporting."""
    out = {}
    for _, fields in db.call("XRANGE", DEAD, "-", "+") or []:
        f = dict(zip(fields[::2], fields[1::2]))
        out[f.get(b"sale_id", b"?").decode()] = f.get(b"reason", b"").decode()
    return out


def wait_for(cond, timeout=APPLY_TIMEOUT):
    """Poll cond until it holds or the deadline passes; returns its last value."""
    return poll(cond, timeout)


def day_totals(store, day):
    return report("report.day", {"store": store, "day": day}).get("totals", {})


def compare(name, got, want):
    """One check that got == want, listing every key that differs (expected, actual)."""
    wrong = {k: (want.get(k), got.get(k)) for k in set(want) | set(got)
             if want.get(k) != got.get(k)}
    c.check(not wrong, f"{name} equal the test's sums (key: (expected, actual)): {wrong}")


# --- 1. a batch of 100 with one line amount of 10^17 -----------------------------------------
DAY1 = "2024-05-01"
oracle1, batch, seqs = Oracle(), [], {}
POISON1 = 57
for i in range(100):
    reg = f"R0{i % 3 + 1}"
    seqs[reg] = seqs.get(reg, 0) + 1
    lines = [line(f"SKU{(i * 7 + k) % 40:02d}", 1 + (i + k) % 4, 150 + 10 * ((i * 3 + k) % 17),
                  discount=5 * (k % 2)) for k in range(1 + i % 3)]
    s = sale("S001", reg, seqs[reg], lines, *(("cash", 10000) if i % 4 == 0 else ("card",)))
    if i == POISON1:
        s["lines"][0].update(gross=10 ** 17, amount=10 ** 17)
        s["total"] = sum(ln["amount"] for ln in s["lines"])
        s["tenders"][0]["amount"] = s["total"] + s["change"]
        poison1 = s["sale_id"]
    else:
        oracle1.add(s)
    batch.append(xadd(s, DAY1))
db.pipeline(batch)
# started after planting: its group starts at the beginning and reads the 100 as one batch
st.start_service("reporting1", "reporting", "--claim-idle-ms", "1000")
c.check(st.wait_healthy(["reporting"]), "reporting healthy")

wait_for(lambda: day_totals("S001", DAY1).get("tickets") == 99 and pending() == 0)
day1 = report("report.day", {"store": "S001", "day": DAY1})
compare("day 1 totals of the 99 good sales", day1.get("totals", {}), oracle1.totals)
compare("day 1 tenders", day1.get("tenders", {}), oracle1.tenders)
want_regs = oracle1.registers()
got_regs = {reg: {k: r.get(k) for k in want_regs.get(reg, {})}
            for reg, r in day1.get("registers", {}).items()}
compare("day 1 registers (first, last, records, tickets, total, complete)", got_regs, want_regs)
c.check(not want_regs[poison1.split("-")[1]]["complete"],
        f"the register of the parked sale {poison1} shows a hole (complete false)")
items = report("report.items", {"store": "S001", "day": DAY1, "top": 1000}).get("rows", [])
compare("day 1 items", {r["key"]: {"amount": r["amount"], "qty": r["qty"]} for r in items},
        oracle1.items)
dead = dead_letters()
c.check(list(dead) == [poison1] and "amount" in dead[poison1],
        f"the poison sale is parked in {DEAD} with its reason (expected [{poison1}] with "
        f"'amount', got {dead})")
c.check(pending() == 0, f"nothing stays pending (expected 0, got {pending()})")
marker = db.call("HGET", f"sale:{{S001}}:{poison1}", "reporting")
c.check(marker is None, f"the parked sale is not marked applied (expected None, got {marker})")
n = counters()
c.check(n.get("sales_applied") == 99 and n.get("bad_stream_entries") == 1,
        f"counted: 99 applied, 1 bad entry (got applied={n.get('sales_applied')}, "
        f"bad={n.get('bad_stream_entries')})")

# --- 2. a float, a string, a stored total beyond 2^53 and a sum past 2^53 - 1 -----------------
DAY2 = "2024-05-02"
oracle2, batch, poisons = Oracle(), [], {}
db.pipeline([("HSET", f"rep:{{S002}}:{DAY2}", "total", "9223372036854775807"),
             ("HSET", f"rep:{{S003}}:{DAY2}", "total", str(LIMIT - 100))])
for i in range(100):
    s = sale("S001", "R04", i + 1, [line(f"SKU{i % 25:02d}", 1 + i % 3, 200 + i)])
    payload = None
    if i == 10:  # a float where an int belongs: MessagePack float 64
        s["lines"][0]["qty"] = 1.5
        payload = msgpack.packb(s, use_single_float=False)
        poisons[s["sale_id"]] = "payload"
    elif i == 20:  # a string where an int belongs
        s["lines"][0]["amount"] = str(s["lines"][0]["amount"])
        poisons[s["sale_id"]] = "amount"
    elif i == 30:  # a store whose stored day total is beyond what the script handles exactly
        s = sale("S002", "R01", 1, [line("SKU00", 1, 300)])
        poisons[s["sale_id"]] = "2^53"
    elif i == 40:  # a sale that would take the day total past 2^53 - 1
        s = sale("S003", "R01", 1, [line("SKU00", 1, 300)])
        poisons[s["sale_id"]] = "2^53"
    else:
        oracle2.add(s)
    batch.append(xadd(s, DAY2, payload))
db.pipeline(batch)
wait_for(lambda: len(dead_letters()) == 5 and pending() == 0 and
         day_totals("S001", DAY2).get("tickets") == 96)
day2 = report("report.day", {"store": "S001", "day": DAY2})
compare("day 2 totals of the 96 good sales", day2.get("totals", {}), oracle2.totals)
compare("day 2 tenders", day2.get("tenders", {}), oracle2.tenders)
items = report("report.items", {"store": "S001", "day": DAY2, "top": 1000}).get("rows", [])
compare("day 2 items", {r["key"]: {"amount": r["amount"], "qty": r["qty"]} for r in items},
        oracle2.items)
dead = dead_letters()
wrong = {sid: dead.get(sid) for sid, word in poisons.items() if word not in dead.get(sid, "")}
c.check(not wrong and len(dead) == 5,
        f"the 4 poison sales are parked with their reasons (wrong or missing: {wrong}; all: "
        f"{dead})")
s2 = db.call("HGETALL", f"rep:{{S002}}:{DAY2}")
s3 = db.call("HGETALL", f"rep:{{S003}}:{DAY2}")
c.check(s2 == [b"total", b"9223372036854775807"] and s3 == [b"total", str(LIMIT - 100).encode()],
        f"the refused sales wrote nothing to their day (got {s2} and {s3})")
marks = db.pipeline([("HGET", f"sale:{{{sid.split('-')[0]}}}:{sid}", "reporting")
                     for sid in poisons])
c.check(marks == [None] * 4, f"no refused sale is marked applied (expected 4 x None, got {marks})")
n = counters()
c.check(n.get("sales_applied") == 195 and n.get("bad_stream_entries") == 3 and
        n.get("sales_refused") == 2,
        f"counted: 195 applied, 3 bad entries, 2 refused sales (got {n.get('sales_applied')}, "
        f"{n.get('bad_stream_entries')}, {n.get('sales_refused')})")

# --- 2b. the undo of a batch whose last total cannot be written ------------------------------
APPLY_LUA = open(os.path.join(SRC, "services", "reporting", "lua", "apply.lua"), "rb").read()
DAY2B = "2024-05-12"
H1, H2 = f"rep:{{S007}}:{DAY2B}", f"rep:{{S007}}:{DAY2B}:items"
REGS2B, DAYS2B = f"rep:{{S007}}:{DAY2B}:regs", "rep:{S007}:days"
MARK2B = "sale:{S007}:S007-R01-000001"


def run_apply(last_key, last_field):
    """The script on one sale whose increments create a field, add to a field holding 0 and to
    one holding 10, and end with last_key last_field + 10."""
    return db.call("EVAL", APPLY_LUA, 0, 1, MARK2B, 4, H1, "created", 5, H1, "zero", 3,
                   H2, "kept", 7, last_key, last_field, 10, 1, REGS2B, "R01", 1, 1,
                   1, DAYS2B, DAY2B)


def state_2b():
    return [db.call("HGETALL", k) for k in (H1, H2, REGS2B, MARK2B)] + \
        [db.call("SMEMBERS", DAYS2B), db.call("GET", "S007-string")]


db.pipeline([("HSET", H1, "zero", 0), ("HSET", H2, "kept", 10, "edge", LIMIT - 5),
             ("HSET", H2, "text", "abc", "big", "9223372036854775807"),
             ("SET", "S007-string", "not a hash")])
before = state_2b()
for what, key, field, word in [("would pass 2^53 - 1", H2, "edge", "2^53"),
                               ("is not an integer", H2, "text", "not an integer"),
                               ("would overflow int64", H2, "big", "2^53")]:
    got = run_apply(key, field)
    c.check(isinstance(got, list) and got[0] == b"refused" and word in got[1].decode(),
            f"a batch whose last total {what} is refused, naming why (expected 'refused' with "
            f"{word!r}, got {got})")
    c.check(state_2b() == before, f"and undone: the created field is gone, 0 and 10 are as "
            f"they were, no marker, sequence or day (expected {before}, got {state_2b()})")
got = run_apply("S007-string", "f")
c.check(isinstance(got, RuntimeError) and "WRONGTYPE" in str(got),
        f"a last key that is not a hash fails the script (expected a WRONGTYPE error, got {got})")
c.check(state_2b() == before, f"and nothing stays written (expected {before}, got {state_2b()})")
got = run_apply(H2, "fresh")
c.check(got == [b"ok", 1], f"the same batch with a writable last total applies (got {got})")
c.check(db.call("HGETALL", H1) == [b"zero", b"3", b"created", b"5"] and
        db.call("HGET", H2, "fresh") == b"10" and db.call("HGET", H2, "kept") == b"17" and
        db.call("HGET", MARK2B, "reporting") == b"1" and
        db.call("HGET", REGS2B, "R01:last") == b"1" and
        db.call("SMEMBERS", DAYS2B) == [DAY2B.encode()],
        "with every total, its marker, sequence and day")

# through the service: a planted item total at the edge, reached after the day totals
edge = sale("S008", "R01", 1, [line("SKU00", 1, 300)])
db.call("HSET", f"rep:{{S008}}:{DAY2B}:items", "SKU00:amount", LIMIT - 100)
db.call(*xadd(edge, DAY2B))
wait_for(lambda: edge["sale_id"] in dead_letters() and pending() == 0)
c.check("2^53" in dead_letters().get(edge["sale_id"], ""),
        f"a sale whose item total would pass 2^53 - 1 is parked with the reason (got "
        f"{dead_letters().get(edge['sale_id'])})")
left = {k: db.call("HGETALL", f"rep:{{S008}}:{DAY2B}{k}") for k in ("", ":regs", ":cats")}
c.check(left == {"": [], ":regs": [], ":cats": []} and
        db.call("HGETALL", f"rep:{{S008}}:{DAY2B}:items") ==
        [b"SKU00:amount", str(LIMIT - 100).encode()] and
        db.call("HGET", f"sale:{{S008}}:{edge['sale_id']}", "reporting") is None,
        f"and leaves nothing in its day: no totals, registers or categories, the item total as "
        f"planted, no marker (got {left})")
# --- 3. restart: nothing applied twice, nothing parked again ---------------------------------
st.kill("reporting1")
st.start_service("reporting2", "reporting", "--claim-idle-ms", "1000")
c.check(st.wait_healthy(["reporting"]), "reporting restarted")
first = db.call("XRANGE", STREAM, "-", "+", "COUNT", 1)[0][1]
db.call("XADD", STREAM, "*", *first)  # a sale applied on day 1, delivered again
DAY3 = "2024-05-03"
sentinel = sale("S001", "R05", 1, [line("SKU01", 2, 500)])
db.call(*xadd(sentinel, DAY3))
wait_for(lambda: day_totals("S001", DAY3).get("tickets") == 1 and pending() == 0)
compare("day 1 totals after the restart", day_totals("S001", DAY1), oracle1.totals)
compare("day 2 totals after the restart", day_totals("S001", DAY2), oracle2.totals)
c.check(day_totals("S001", DAY3).get("total") == 1000, "the new sale after the restart applied")
n = counters()
c.check(n.get("sales_applied") == 1 and n.get("bad_stream_entries", 0) == 0 and
        len(dead_letters()) == 6,
        f"the restarted instance applied only the new sale, the redelivered one was recognised "
        f"(expected 1 applied, 0 bad, 6 dead letters; got {n.get('sales_applied')}, "
        f"{n.get('bad_stream_entries')}, {len(dead_letters())})")

# --- 3b. an error that is not the sale's (a key of the wrong type): pending, never parked -----
DAY3B = "2024-05-13"
blocked = sale("S006", "R01", 1, [line("SKU01", 1, 700)])
blocked_key = f"sale:{{S006}}:{blocked['sale_id']}"
db.call("SET", blocked_key, "not a hash")  # the script's HEXISTS on it fails with WRONGTYPE
errors0 = counters().get("stream_errors", 0)
db.call(*xadd(blocked, DAY3B))
c.check(wait_for(lambda: counters().get("stream_errors", 0) > errors0 and pending() == 1),
        f"a script error that is not about the sale leaves it pending and counts an error "
        f"(stream_errors {errors0} -> {counters().get('stream_errors')}, pending {pending()})")
c.check(blocked["sale_id"] not in dead_letters(),
        f"and does not park it (dead letters: {sorted(dead_letters())})")
db.call("DEL", blocked_key)
c.check(wait_for(lambda: day_totals("S006", DAY3B).get("total") == 700 and pending() == 0),
        f"once the key is fixed the sale is applied, once: {day_totals('S006', DAY3B)}")

# --- 4. every documented key, on a day with one plain cash sale ---------------------------------
DAY4 = "2024-05-04"
one = sale("S004", "R01", 1, [line("COLA", 1, 300, category="drinks")], "cash", 500)
sid = db.call(*xadd(one, DAY4)).decode()
db.call("HSET", "dayclose:{S004}", DAY4, sid)
wait_for(lambda: day_totals("S004", DAY4).get("tickets") == 1 and pending() == 0)
want_totals = dict.fromkeys(TOTAL_KEYS, 0)
want_totals.update(tickets=1, sale_tickets=1, gross=300, total=300, change=200)
want_tenders = dict.fromkeys(TENDER_KINDS, 0)
want_tenders["cash"] = 500
want_reg = {"first": 1, "last": 1, "records": 1, "tickets": 1, "total": 300, "change": 200,
            "nosale": 0, "complete": True}
want_reg.update({f"tender:{k}": v for k, v in want_tenders.items()})
for method in ("report.day", "report.z"):
    r = report(method, {"store": "S004", "day": DAY4})
    c.check(r.get("totals") == want_totals and list(r.get("totals", {})) == TOTAL_KEYS,
            f"{method}: every total key, in the documented order, 0 where nothing happened "
            f"(expected {want_totals}, got {r.get('totals')})")
    c.check(r.get("tenders") == want_tenders,
            f"{method}: every tender kind (expected {want_tenders}, got {r.get('tenders')})")
    c.check(r.get("expected_cash") == 300,
            f"{method}: expected_cash 500 - 200 (expected 300, got {r.get('expected_cash')})")
    c.check(r.get("registers") == {"R01": want_reg},
            f"{method}: every register key (expected {want_reg}, got {r.get('registers')})")
    c.check(r.get("tax") == {"1300": {"gross": 300, "tax": 35, "net": 265}} and
            r.get("cashiers") == {"C1": {"tickets": 1, "total": 300}} and
            r.get("categories") == {"drinks": {"amount": 300}},
            f"{method}: tax, cashiers and categories rows complete (got {r.get('tax')}, "
            f"{r.get('cashiers')}, {r.get('categories')})")
z = report("report.z", {"store": "S004", "day": DAY4})
c.check(z.get("covers_upto") == sid, f"report.z covers up to the sale (expected {sid}, got "
        f"{z.get('covers_upto')})")
x = report("report.x", {"store": "S004", "day": DAY4, "register": "R01"})
c.check(x.get("shift") == want_reg and x.get("tenders") == want_tenders and
        x.get("expected_cash") == 300,
        f"report.x R01: every key (got shift {x.get('shift')}, tenders {x.get('tenders')}, "
        f"expected_cash {x.get('expected_cash')})")
idle = report("report.x", {"store": "S004", "day": DAY4, "register": "R09"})
want_idle = {k: 0 for k in want_reg}
want_idle["complete"] = False
c.check(idle.get("shift") == want_idle and idle.get("tenders") == dict.fromkeys(TENDER_KINDS, 0)
        and idle.get("expected_cash") == 0,
        f"report.x of a register without sales: every key 0 (got {idle})")

# --- 5. report.items over 50,000 distinct items ------------------------------------------------
DAY5, ITEMS, PER_SALE = "2024-05-05", 50000, 100
price = [(j * 7919) % ITEMS + 1 for j in range(ITEMS)]  # a permutation: every amount distinct
batch = []
for n_sale in range(ITEMS // PER_SALE):
    lines = [line(f"I{j:05d}", 1, price[j]) for j in range(n_sale * PER_SALE,
                                                            (n_sale + 1) * PER_SALE)]
    batch.append(xadd(sale("S005", "R01", n_sale + 1, lines), DAY5))
t0 = time.time()
db.pipeline(batch)
wait_for(lambda: day_totals("S005", DAY5).get("tickets") == ITEMS // PER_SALE, 600)
applied_s = time.time() - t0
t0 = time.time()
rows = report("report.items", {"store": "S005", "day": DAY5, "top": 10}, timeout=120).get("rows")
items_s = time.time() - t0
t0 = time.time()
big = report("report.items", {"store": "S005", "day": DAY5, "top": 1000}, timeout=120)
items1000_s = time.time() - t0
t0 = time.time()
pairs = report("report.baskets", {"store": "S005", "day": DAY5}, timeout=120).get("rows", [])
baskets_s = time.time() - t0
ranked = sorted(range(ITEMS), key=lambda j: -price[j])
want_rows = [{"key": f"I{j:05d}", "amount": price[j], "qty": 1} for j in ranked[:10]]
print(f"measure: {ITEMS} items in {ITEMS // PER_SALE} sales applied in {applied_s:.2f} s; "
      f"report.items top 10 in {items_s * 1000:.0f} ms, top 1000 in {items1000_s * 1000:.0f} "
      f"ms; report.baskets over {ITEMS // PER_SALE * 190} pairs in {baskets_s * 1000:.0f} ms",
      flush=True)
c.check(rows == want_rows, f"report.items top 10 of {ITEMS} (expected {want_rows}, got {rows})")
c.check([r["key"] for r in big.get("rows", [])] == [f"I{j:05d}" for j in ranked[:1000]],
        "report.items top 1000 in the test's order")
want_pairs = [{"key": f"I00000|I{j:05d}", "count": 1} for j in range(1, 11)]
c.check(pairs == want_pairs, f"report.baskets top 10 of {ITEMS // PER_SALE * 190} pairs, ties by "
        f"name (expected {want_pairs}, got {pairs})")
c.finish()
