#!/usr/bin/python3
"""test_inventory - the inventory service hardened: no partial writes, names in characters,
large stores, pages bounded in bytes, transient Redis failures.

Runs a private redis-server, busd and inventory. Sales are planted straight into the sales stream
(the fields and payload the sales service writes), so that entries sales would refuse can be
tested too; stock of a 100k-SKU store is planted straight into Redis. Every expected value is
computed here from what the test sent or planted, never read back from the service."""
import os
import signal
import secrets
import time

import msgpack
import zmq

from harness import Bus, Checks, Stack, wait_for as poll

PAYLOAD_MAX = 1024 * 1024  # documented limit of one message payload
QTY_MAX = 10**9            # documented bound of one line or movement
NAME_CHARS, CATEGORY_CHARS, SUPPLIER_CHARS = 120, 40, 80
BIG_SKUS = 100_000
DEADLINE_S = 60

c = Checks("test_inventory")
st = Stack("inventory")


def check(cond, what, expected=None, actual=None):
    """A check that prints expected and actual when it fails."""
    if not cond and (expected is not None or actual is not None):
        what += f" (expected {expected!r}, got {actual!r})"
    return c.check(bool(cond), what)


def fail(what):
    return c.check(False, what)

st.start_redis()
st.start_busd()


def wait_for(what, fn, timeout=DEADLINE_S):
    """Poll fn until it returns something true or the deadline passes; returns its last value."""
    return poll(fn, timeout, what)


def raw_call(bus, service, method, body, timeout=30.0):
    """A request through busd; returns (decoded reply envelope or None, payload bytes)."""
    bus.seq += 1
    env = {"v": 1, "type": method, "id": secrets.token_hex(16), "src": "pytest",
           "seq": bus.seq, "ts": int(time.time() * 1000), "body": body}
    corr = secrets.token_bytes(8)
    bus.sock.send_multipart([b"BUS1C", b"REQ", service.encode(), corr,
                             msgpack.packb(env, use_bin_type=False)])
    deadline = time.time() + timeout
    while time.time() < deadline:
        if bus.sock.poll(int((deadline - time.time()) * 1000) + 1):
            reply = bus.sock.recv_multipart()
            if len(reply) == 4 and reply[2] == corr:
                return msgpack.unpackb(reply[3], raw=False), len(reply[3])
    return None, 0


def call(method, body, timeout=30.0):
    """The reply body of an inventory request (a map with "code" for an error); a timeout is an
    error body too, so that checks print it instead of crashing."""
    rep, _ = raw_call(bus, "inventory", method, body, timeout)
    if rep is None:
        return {"code": "timeout", "message": f"{method}: no reply in {timeout} s"}
    return rep["body"]


def err(body):
    return body.get("code") if isinstance(body, dict) and "code" in body and \
        "message" in body else None


def start_inventory(tag="inventory", *extra):
    st.start_service(tag, "inventory", "--claim-idle-ms", "1000", "--batch", "100", *extra)
    if not check(st.wait_healthy(["inventory"]), f"{tag} healthy"):
        c.finish()


redis = st.redis()
start_inventory()
bus = Bus(st)
for store in ("S1", "S2"):
    check(call("store.add", {"store": store, "name": "门店 " + store}).get("store") == store,
            f"store {store} added")


def row(sku, name, **kw):
    base = {"sku": sku, "barcode": "", "name": name, "price": "1.00", "tax_rate": "13",
            "unit": "pcs", "category": "misc"}
    base.update(kw)
    return base


# --- names in characters (defect 8) --------------------------------------------------------
han = "商品名称测试中文字符"  # 10 characters, 3 bytes each in UTF-8
name33, name120, name121 = (han * 13)[:33], (han * 12)[:120], (han * 13)[:121]
bad_utf8 = b"\xe5\x95\x86\xff\xfe bad"  # a truncated sequence and bytes that are never UTF-8
rows = [row("CN33", name33, line=2), row("CN120", name120, line=3),
        row("CN121", name121, line=4), row("BADUTF", bad_utf8, line=5),
        row("CAT40", "ok", category="类" * CATEGORY_CHARS, supplier="供" * SUPPLIER_CHARS,
            line=6),
        row("CAT41", "too long category", category="类" * (CATEGORY_CHARS + 1), line=7),
        row("SUP81", "too long supplier", supplier="供" * (SUPPLIER_CHARS + 1), line=8),
        row("CTRL", "bell\x07inside", line=9)]
rep = call("catalog.import", {"rows": rows})
reasons = {r["line"]: r["reason"] for r in rep.get("rejected", [])}
print("     rejected:", reasons, flush=True)
check(rep.get("applied") == 3, "33-char, 120-char Chinese names and 40/80-char category and "
        "supplier are accepted", 3, rep.get("applied"))
check("121 characters, at most 120" in reasons.get(4, ""),
        "a 121-character name is refused by line, the limit stated in characters", 
        "line 4: name: 121 characters, at most 120", reasons.get(4))
check("UTF-8" in reasons.get(5, ""), "a malformed UTF-8 name is refused by line", "UTF-8",
        reasons.get(5))
check("41 characters, at most 40" in reasons.get(7, ""), "a 41-character category is refused",
        "category: 41 characters, at most 40", reasons.get(7))
check("81 characters, at most 80" in reasons.get(8, ""), "an 81-character supplier is refused",
        "supplier: 81 characters, at most 80", reasons.get(8))
check(9 in reasons, "a name with a control character is refused", "line 9", reasons)
for sku, name in (("CN33", name33), ("CN120", name120)):
    item = call("catalog.get", {"code": sku}).get("item", {})
    check(item.get("name") == name, f"{sku} reads back intact ({len(name)} characters)", name,
            item.get("name"))
item = call("catalog.get", {"code": "CAT40"}).get("item", {})
check(item.get("category") == "类" * CATEGORY_CHARS and
        item.get("supplier") == "供" * SUPPLIER_CHARS, "40-char category and 80-char supplier "
        "read back intact")
again = call("catalog.import", {"rows": rows})
check(again.get("changed") == 0 and again.get("applied") == 3,
        "importing the same rows again changes nothing", 0, again.get("changed"))
check(err(call("store.add", {"store": "S3", "name": "店" * 121})) == "bad_request",
        "a 121-character store name is refused")

# --- poison entry in a batch of 100 (defect 4) ----------------------------------------------
SKUS = [f"P{i:02d}" for i in range(12)]
INITIAL = 1_000_000
call("catalog.import", {"rows": [row(s, f"商品 {s}", threshold="10") for s in SKUS]})
for s in SKUS:
    call("stock.receive", {"store": "S1", "sku": s, "qty": INITIAL, "supplier_ref": "INIT",
                           "move_id": f"init-{s}"})
stock0 = call("stock.get", {"store": "S1"}).get("stock", {})
check(all(stock0.get(s) == INITIAL for s in SKUS), "initial stock received", INITIAL, stock0)

BDAY = time.strftime("%Y-%m-%d")


def sale_payload(sale_id, lines, kind="sale"):
    return msgpack.packb({"sale_id": sale_id, "store": "S1", "register": "R1", "seq": 1,
                          "kind": kind, "cashier": "c1", "ts": int(time.time() * 1000),
                          "lines": lines, "total": 0, "tenders": []}, use_bin_type=True)


def xadd(sale_id, payload, store="S1", bday=BDAY):
    return ("XADD", "sales:stream", "*", "sale_id", sale_id, "store", store, "bday", bday,
            "payload", payload)


rng = __import__("random").Random(6)
expected = {s: INITIAL for s in SKUS}
moves_expected = {s: 1 for s in SKUS}  # the INIT receipt
batch, POISON = [], 57
for i in range(100):
    sale_id = f"S1-R1-{i + 1:06d}"
    lines = []
    for n in range(rng.randint(1, 4)):
        sku, qty = rng.choice(SKUS), rng.randint(1, 5000)
        line = {"sku": sku, "qty": qty, "unit_price": 100, "amount": qty * 100}
        if n == 1 and i % 5 == 0:
            line["voided"] = True
        lines.append(line)
    if i % 10 == 3:  # a return of something sold earlier
        lines = [{"sku": lines[0]["sku"], "qty": -lines[0]["qty"], "unit_price": 100,
                  "amount": -lines[0]["qty"] * 100, "return_of": "S1-R1-000001"}]
    if i == POISON:
        lines.append({"sku": SKUS[0], "qty": 100_000_000_000_000, "unit_price": 1, "amount": 1})
    else:
        for line in lines:
            if not line.get("voided"):
                expected[line["sku"]] -= line["qty"]
                moves_expected[line["sku"]] += 1
    batch.append(xadd(sale_id, sale_payload(sale_id, lines)))

# plant the 100 while no inventory instance runs, so that they are read as one batch
st.kill("inventory", signal.SIGTERM)
replies = redis.pipeline(batch)
check(all(isinstance(r, bytes) for r in replies), "100 sale entries planted in sales:stream")
poison_id = replies[POISON].decode()
start_inventory("inventory2")


def pending():
    r = redis.call("XPENDING", "sales:stream", "inventory")
    return r[0] if isinstance(r, list) else r


def dead():
    r = redis.call("XRANGE", "dead:{inventory}", "-", "+")
    return r if isinstance(r, list) else []


def stock_now():
    return call("stock.get", {"store": "S1"}).get("stock", {})


done = wait_for("the batch to be applied", lambda: pending() == 0 and dead() and
                all(stock_now().get(s) == q for s, q in expected.items()))
stock = stock_now()
wrong = {s: (q, stock.get(s)) for s, q in expected.items() if stock.get(s) != q}
check(not wrong, "the 99 good sales moved stock exactly once (expected, got): "
        f"{wrong or 'all equal'}")
check(pending() == 0, "nothing stays pending in the inventory group", 0, pending())
letters = dead()
fields = [dict(zip(e[1][::2], e[1][1::2])) for e in letters]
check(len(letters) == 1 and fields[0].get(b"entry", b"").decode() == poison_id,
        "the poison entry, and only it, is parked in dead:{inventory}", poison_id,
        [f.get(b"entry") for f in fields])
reason = fields[0].get(b"reason", b"").decode() if fields else ""
check("qty" in reason and str(QTY_MAX) in reason, "its reason names the quantity bound",
        f"qty ... {QTY_MAX}", reason)
hist = call("stock.history", {"store": "S1", "sku": SKUS[0], "count": 1000}).get("moves", [])
check(len(hist) == moves_expected[SKUS[0]], f"{SKUS[0]}'s history has one movement per line "
        "applied (nothing of the poison sale)", moves_expected[SKUS[0]], len(hist))
check(all(abs(m["delta"]) <= QTY_MAX for m in hist), "no movement of the poison quantity")
stats = call("stats", {}).get("counters", {})
if "stream_parked" in stats:
    check(stats["stream_parked"] >= 1, "stats count the parked entry", ">= 1",
            stats["stream_parked"])
check(stats.get("bad_stream_entries", 0) >= 1, "stats count the refused entry",
        ">= 1", stats.get("bad_stream_entries"))

# the same 99 sales delivered again (a producer retry): nothing moves twice
again = [cmd for i, cmd in enumerate(batch) if i != POISON]
last_id = redis.pipeline(again)[-1]


def delivered_upto(entry_id):
    """Has the inventory group been handed everything up to entry_id, and acknowledged it?"""
    info = dict(zip(*[iter(redis.call("XINFO", "GROUPS", "sales:stream")[0])] * 2))
    return info[b"last-delivered-id"] == entry_id and info[b"pending"] == 0


wait_for("the redelivered sales to be acknowledged", lambda: delivered_upto(last_id))
stock = stock_now()
check(all(stock.get(s) == q for s, q in expected.items()),
        "sales delivered twice move stock once", expected, {s: stock.get(s) for s in SKUS})

# assorted entries that can never apply, each parked with a reason; good ones around them apply
bad = {
    "float qty": sale_payload("S1-R1-000201", [{"sku": SKUS[1], "qty": 1.5}]),
    "zero qty": sale_payload("S1-R1-000202", [{"sku": SKUS[1], "qty": 0}]),
    "qty over bound": sale_payload("S1-R1-000203", [{"sku": SKUS[1], "qty": QTY_MAX + 1}]),
    "no sku": sale_payload("S1-R1-000204", [{"qty": 2}]),
    "bad sku": sale_payload("S1-R1-000205", [{"sku": "P{01}", "qty": 2}]),
    "garbage payload": b"\xc1\x00garbage",
    "lines not an array": msgpack.packb({"sale_id": "S1-R1-000207", "lines": 5}),
}
cmds = [xadd(f"S1-R1-{201 + i:06d}", p) for i, p in enumerate(bad.values())]
cmds.append(xadd("S1-R1-000208", sale_payload("S1-R1-000208", [{"sku": SKUS[1], "qty": 7}])))
cmds.append(("XADD", "sales:stream", "*", "store", "S1", "payload", b"\x80"))  # no sale_id
cmds.append(xadd("S1-R1-000209", sale_payload("S1-R1-000209", [{"sku": SKUS[2], "qty": 9}]),
                 bday="tomorrow!"))
expected[SKUS[1]] -= 7
redis.pipeline(cmds)
n_bad = len(bad) + 2
wait_for("the assorted entries to be parked", lambda: len(dead()) == 1 + n_bad and
         pending() == 0)
letters = dead()[1:]
why = [dict(zip(e[1][::2], e[1][1::2])).get(b"reason", b"").decode() for e in letters]
print("     reasons:", why, flush=True)
check(len(letters) == n_bad and all(why), f"all {n_bad} malformed entries are parked with a "
        "reason", n_bad, len(letters))
stock = stock_now()
check(all(stock.get(s) == q for s, q in expected.items()), "the good sale among them applied, "
        "nothing else moved", expected, {s: stock.get(s) for s in SKUS})

# --- direct movements with absurd quantities -------------------------------------------------
before = stock_now()
for method, body in (("stock.adjust", {"store": "S1", "sku": SKUS[3], "delta": 10**14,
                                       "reason": "found", "move_id": "absurd-1"}),
                     ("stock.receive", {"store": "S1", "sku": SKUS[3], "qty": QTY_MAX + 1,
                                        "supplier_ref": "X", "move_id": "absurd-2"}),
                     ("stock.count", {"store": "S1", "sku": SKUS[3], "qty": 10**12,
                                      "move_id": "absurd-3"}),
                     ("stock.transfer", {"from": "S1", "to": "S2", "sku": SKUS[3],
                                         "qty": 10**14, "move_id": "absurd-4"})):
    rep = call(method, body)
    check(err(rep) == "bad_request" and str(QTY_MAX) in rep.get("message", ""),
            f"{method} with an absurd quantity is refused, stating the bound",
            f"bad_request ... {QTY_MAX}", rep)
check(stock_now() == before, "and nothing moved")
# a balance pushed to the edge (planted): the script refuses and writes nothing, not even the id
redis.call("HSET", "stock:{S2}", SKUS[4], 10**12 - 5)
rep = call("stock.receive", {"store": "S2", "sku": SKUS[4], "qty": 10, "supplier_ref": "X",
                             "move_id": "edge-1"})
check(err(rep) == "bad_request" and "would leave" in rep.get("message", ""),
        "a receipt that would take stock past 10^12 is refused by the script", "bad_request",
        rep)
redis.call("HSET", "stock:{S2}", SKUS[4], 100)
rep = call("stock.receive", {"store": "S2", "sku": SKUS[4], "qty": 10, "supplier_ref": "X",
                             "move_id": "edge-1"})
check(rep.get("balance") == 110 and rep.get("duplicate") is False,
        "the refused move id was not claimed: the corrected request runs", 110, rep)
rep = call("stock.receive", {"store": "S2", "sku": SKUS[4], "qty": 10, "supplier_ref": "X",
                             "move_id": "edge-1"})
check(rep.get("balance") == 110 and rep.get("duplicate") is True,
        "the same move id again moves nothing", 110, rep)

# --- pages bounded in bytes (defect 7) ------------------------------------------------------
wide = "\U00020000"  # a CJK Extension B character: 4 bytes in UTF-8, the widest there is
W = [f"W{i:04d}" for i in range(1000)]
wide_name = {s: (s + wide * NAME_CHARS)[:NAME_CHARS] for s in W}
for k in range(0, len(W), 100):
    rep = call("catalog.import", {"rows": [
        row(s, wide_name[s], category=wide * CATEGORY_CHARS, supplier=wide * SUPPLIER_CHARS)
        for s in W[k:k + 100]]})
    if rep.get("applied") != 100:
        fail(f"import of wide items {k}..{k + 99}: {rep}")
        break
seen, sizes, pages, after, more = {}, [], 0, "", True
first = None
while more and pages < 100:
    rep, size = raw_call(bus, "inventory", "catalog.snapshot", {"after": after, "count": 1000})
    if rep is None:
        fail("catalog.snapshot page got no reply")
        break
    body = rep["body"]
    if "items" not in body:
        fail(f"catalog.snapshot page: {body}")
        break
    first = first or body
    pages += 1
    sizes.append(size)
    for it in body["items"]:
        seen[it["sku"]] = seen.get(it["sku"], 0) + (1 if it["name"] ==
                                                     wide_name.get(it["sku"]) else 100)
    after, more = body["last"], body["more"]
print(f"     snapshot: {pages} pages of {sizes} bytes", flush=True)
check(max(sizes) < PAYLOAD_MAX, "every catalog.snapshot page stays below 1 MiB", PAYLOAD_MAX,
        max(sizes))
check(first and first["more"] and len(first["items"]) < 1000,
        "the first page stopped on bytes before 1000 wide items and says more",
        "< 1000 items, more", first and (len(first["items"]), first["more"]))
check(all(seen.get(s) == 1 for s in W), "following last/more yields every wide item once, "
        "names intact", 1000, sum(1 for s in W if seen.get(s) == 1))

ref = (wide * 64)
for i in range(300):
    call("stock.receive", {"store": "S1", "sku": "W0001", "qty": 1, "supplier_ref": ref,
                           "move_id": f"wide-{i}"})
got, sizes, before_id, more, pages = [], [], "", True, 0
while more and pages < 100:
    rep, size = raw_call(bus, "inventory", "stock.history",
                         {"store": "S1", "sku": "W0001", "count": 1000, "before": before_id,
                          "max_bytes": 16384})
    if rep is None:
        fail("stock.history page got no reply")
        break
    body = rep["body"]
    if "moves" not in body:
        fail(f"stock.history page: {body}")
        break
    pages += 1
    sizes.append(size)
    got += body["moves"]
    before_id, more = body["last"], body["more"]
print(f"     history: {pages} pages of {sizes} bytes", flush=True)
check(pages > 1 and max(sizes) <= 16384 + 2048, "stock.history pages respect max_bytes "
        "(16 KiB)", "<= 18432", max(sizes))
check(len(got) == 300 and [m["balance"] for m in got] == list(range(300, 0, -1)) and
        all(m["ref"] == ref for m in got), "following last/more yields the 300 moves newest "
        "first, once, refs intact", 300, len(got))

# --- a store with 100k SKUs (defect 10) -----------------------------------------------------
big = {f"B{i:06d}": (i * 7919) % 1000 for i in range(BIG_SKUS)}
threshold = {s: (i % 7) * 50 for i, s in enumerate(big)}
sold_today = {s: (i % 100) * 3 for i, s in enumerate(big) if i % 10 == 0}
cmds, skus = [], list(big)
for k in range(0, BIG_SKUS, 5000):
    part = skus[k:k + 5000]
    cmds.append(["HSET", "stock:{BIG}"] + [x for s in part for x in (s, big[s])])
for s in skus:
    cmds.append(("HSET", f"catalog:item:{s}", "sku", s, "threshold", threshold[s]))
for s, q in sold_today.items():
    cmds.append(("HSET", f"sold:{{BIG}}:{s}", BDAY, q))
for k in range(0, len(cmds), 10000):
    redis.pipeline(cmds[k:k + 10000])
check(redis.call("HLEN", "stock:{BIG}") == BIG_SKUS, "100k SKUs planted in store BIG")


def walk(method, key):
    """Follow cursor/more through every page; returns (merged, pages, max page bytes, seconds)."""
    merged, cursor, more, pages, biggest = {}, "0", True, 0, 0
    t0 = time.time()
    while more and pages < 1000:
        rep, size = raw_call(bus, "inventory", method, {"store": "BIG", "cursor": cursor})
        if rep is None or "code" in rep["body"]:
            fail(f"{method} page {pages}: {rep and rep['body']}")
            break
        body = rep["body"]
        pages += 1
        biggest = max(biggest, size)
        if key == "stock":
            merged.update(body["stock"])
        else:
            merged.update({r["sku"]: r for r in body["rows"]})
        cursor, more = body.get("cursor", "0"), body.get("more", False)
    return merged, pages, biggest, time.time() - t0


t0 = time.time()
one = call("stock.get", {"store": "BIG", "sku": "B050000"})
t_one = time.time() - t0
check(one.get("qty") == big["B050000"], "stock.get of one SKU of 100k", big["B050000"],
        one.get("qty"))
got, pages, biggest, t_get = walk("stock.get", "stock")
print(f"     measure: stock.get of 100k SKUs: {pages} pages, largest {biggest} bytes, "
      f"{t_get * 1000:.0f} ms in all; one SKU {t_one * 1000:.1f} ms", flush=True)
check(len(got) == BIG_SKUS and sum(got.values()) == sum(big.values()),
        "stock.get pages hold every SKU and the stock sums to the planted total",
        (BIG_SKUS, sum(big.values())), (len(got), sum(got.values())))
check(got == big, "every SKU's quantity is the planted one")
check(biggest < PAYLOAD_MAX, "every stock.get page stays below 1 MiB", PAYLOAD_MAX, biggest)


def suggest(s):
    sold = sold_today.get(s, 0)
    return -(-sold * 3 // 7) + threshold[s] - big[s]


want = {s: suggest(s) for s in skus if suggest(s) > 0}
rows, pages, biggest, t_reorder = walk("stock.reorder", "rows")
print(f"     measure: stock.reorder of 100k SKUs (7-day window): {pages} pages, largest "
      f"{biggest} bytes, {t_reorder * 1000:.0f} ms in all", flush=True)
got_s = {s: r["suggested"] for s, r in rows.items()}
check(got_s == want, f"stock.reorder suggests exactly the {len(want)} expected orders",
        len(want), len(got_s))
check(all(r["sold_in_window"] == sold_today.get(s, 0) and r["threshold"] == threshold[s]
            for s, r in rows.items()), "with the planted sold quantities and thresholds")
check(biggest < PAYLOAD_MAX, "every stock.reorder page stays below 1 MiB", PAYLOAD_MAX,
        biggest)

# --- Redis refusing writes (transient) ------------------------------------------------------
# the sale and the refusal arrive together: the worker reads the sale (reading a stream is
# allowed over maxmemory) and its script meets the refusal at its first write
sale = xadd("S1-R1-000301", sale_payload("S1-R1-000301", [{"sku": SKUS[5], "qty": 11}]))
expected[SKUS[5]] -= 11
redis.pipeline([("CONFIG", "SET", "maxmemory-policy", "noeviction"), sale,
                ("CONFIG", "SET", "maxmemory", "1")])
rep = call("stock.receive", {"store": "S1", "sku": SKUS[6], "qty": 5, "supplier_ref": "OOM",
                             "move_id": "oom-1"})
check(err(rep) == "unavailable" and rep.get("retry_ms", 0) > 0,
        "a movement while Redis refuses writes is unavailable with a retry hint", "unavailable",
        rep)
wait_for("the worker to read the sale", lambda: pending() == 1, timeout=10)
check(pending() == 1 and len(dead()) == 1 + n_bad,
        "a sale that meets the refusal stays pending, not parked", (1, 1 + n_bad),
        (pending(), len(dead())))
held = stock_now().get(SKUS[5])
check(held == expected[SKUS[5]] + 11, "nothing of the pending sale was written", 
      expected[SKUS[5]] + 11, held)
redis.call("CONFIG", "SET", "maxmemory", "0")
rep = call("stock.receive", {"store": "S1", "sku": SKUS[6], "qty": 5, "supplier_ref": "OOM",
                             "move_id": "oom-1"})
expected[SKUS[6]] += 5
check(rep.get("balance") == expected[SKUS[6]] and rep.get("duplicate") is False,
        "the retried movement applies once Redis accepts writes", expected[SKUS[6]], rep)
wait_for("the pending sale to apply", lambda: pending() == 0 and
         stock_now().get(SKUS[5]) == expected[SKUS[5]])
stock = stock_now()
check(all(stock.get(s) == q for s, q in expected.items()) and len(dead()) == 1 + n_bad,
        "and the pending sale applied once, nothing parked", expected,
        {s: stock.get(s) for s in SKUS})

c.finish()
