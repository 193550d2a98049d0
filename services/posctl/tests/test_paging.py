#!/usr/bin/python3
"""test_paging - posctl shows every page of inventory's paged listings as one reply.

A real redis-server, busd and inventory. Inventory answers stock.get (whole store),
stock.reorder and stock.history in pages of at most 512 KiB or 1000 moves; posctl must follow
them and print one reply shaped like the single page of a small store. The oracle is what this
test planted straight into Redis, not anything posctl or inventory computed:
- 30,000 SKUs of stock: `stock get` (json and csv) shows each once with its planted quantity;
- 10,000 of them with a threshold (the rest 0): `stock reorder` suggests threshold - stock
  for each SKU short, and no other;
- 2,600 moves of one SKU: `stock history --count N` shows N moves newest first across pages;
- 1,500 dead letters of 600 bytes: `dead inventory --count N` shows N oldest first across
  pages that inventory cuts at 512 KiB;
- what fits one page (a small store, the default 100 moves): the output is that page's
  reply, key for key."""
import csv
import io
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.environ.get("POSBUS_SRC", "."), "tests", "integration"))
from harness import Bus, Checks, Failure, Stack  # noqa: E402

BIG, SMALL = "S1", "S2"
N_SKUS = 30000
THRESHOLD = 1000
N_MOVES, MOVE_SKU, MOVE_T0 = 2600, "P00007", 1700000000000

c = Checks("test_paging")
st = Stack("paging")


def pipe(commands):
    """Send commands (lists of str) to the private Redis in one redis-cli --pipe run."""
    out = io.StringIO()
    for cmd in commands:
        out.write(f"*{len(cmd)}\r\n")
        for arg in map(str, cmd):
            out.write(f"${len(arg.encode())}\r\n{arg}\r\n")
    env = dict(os.environ, REDISCLI_AUTH=st.password)
    r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(st.redis_port), "--pipe"],
                       input=out.getvalue(), capture_output=True, text=True, env=env, timeout=120)
    if r.returncode != 0 or "errors: 0," not in r.stdout:
        raise Failure(f"redis-cli --pipe: {r.stdout}{r.stderr}")


def posctl_out(*args):
    return st.posctl(*args, check=True).stdout


def pairs_json(text):
    """Parse JSON keeping every object as a list of (key, value): duplicates and order show."""
    return json.loads(text, object_pairs_hook=list)


def page(method, body):
    r = bus.call("inventory", method, body, timeout=10)
    if r["type"] != "reply":
        raise Failure(f"{method}: {r['body']}")
    return r["body"]


st.start_redis()
st.start_busd()
st.start_service("inventory1", "inventory")
c.check(st.wait_healthy(["inventory"]), "stack healthy")
bus = Bus(st)

# --- 30,000 SKUs of stock, a threshold on every third ---------------------------------------
skus = [f"P{i:05d}" for i in range(N_SKUS)]
planted = {s: (i * 7919) % 2000 - 100 for i, s in enumerate(skus)}  # some negative, some 0
cmds = [["HSET", f"stock:{{{BIG}}}"] + [x for s in skus[k:k + 5000] for x in (s, planted[s])]
        for k in range(0, N_SKUS, 5000)]
cmds += [["HSET", f"catalog:item:{s}", "sku", s, "threshold", THRESHOLD] for s in skus[::3]]
pipe(cmds)
c.eq(st.redis_cli("HLEN", f"stock:{{{BIG}}}").stdout.strip(), str(N_SKUS),
     "SKUs planted in the big store")
first = page("stock.get", {"store": BIG})
c.check(first["more"] and len(first["stock"]) < N_SKUS,
        f"inventory needs more than one page for them (first page: {len(first['stock'])} SKUs)")

out = posctl_out("stock", "get", "--store", BIG, "--format", "json")
got = pairs_json(out)
stock = dict(got).get("stock", [])
c.eq([k for k, _ in got], ["store", "stock", "cursor", "more"],
     "stock get json has the keys of one page, in order")
c.check(dict(got).get("more") is False and dict(got).get("cursor") == "0",
        "the combined reply says there is no more")
c.eq(len(stock), N_SKUS, "stock get json lists every SKU once")
c.check(dict(stock) == planted, "every SKU's quantity is the planted one",
        sum(planted.values()), sum(dict(stock).values()))

rows = list(csv.reader(io.StringIO(posctl_out("stock", "get", "--store", BIG, "--format",
                                              "csv"))))
csv_stock = {r[0][len("stock."):]: int(r[1]) for r in rows if r[0].startswith("stock.")}
c.check(len(rows) == N_SKUS + 3 and csv_stock == planted,
        "stock get csv: one row per SKU with its planted quantity, plus store, cursor, more",
        N_SKUS + 3, len(rows))

# --- reorder: suggested = threshold - stock (nothing sold; no threshold is 0) when positive --
threshold = {s: THRESHOLD if i % 3 == 0 else 0 for i, s in enumerate(skus)}
want = {s: threshold[s] - q for s, q in planted.items() if threshold[s] - q > 0}
first = page("stock.reorder", {"store": BIG})
c.check(first["more"], f"stock.reorder needs more than one page ({len(first['rows'])} rows "
        "in the first)")
got = json.loads(posctl_out("stock", "reorder", "--store", BIG, "--format", "json"))
sug = [r["sku"] for r in got.get("rows", [])]
c.check(len(sug) == len(set(sug)) == len(want), "stock reorder lists each short SKU once",
        len(want), (len(sug), len(set(sug))))
c.check({r["sku"]: (r["stock"], r["suggested"]) for r in got.get("rows", [])} ==
        {s: (planted[s], n) for s, n in want.items()} and got.get("more") is False,
        "stock reorder suggests threshold - stock for every short SKU and no other")
table = posctl_out("stock", "reorder", "--store", BIG).splitlines()
c.eq(len(table), len(want) + 1, "stock reorder table: a header and one line per SKU")

# --- history across pages: N moves newest first ---------------------------------------------
ids = [f"{MOVE_T0 + i}-0" for i in range(N_MOVES)]
pipe([["XADD", f"moves:{{{BIG}}}:{MOVE_SKU}", ids[i], "kind", "receive", "delta", 1, "balance",
       i + 1, "reason", "", "ref", f"DN-{i}", "ts", MOVE_T0 + i] for i in range(N_MOVES)])
newest = ids[::-1]
for n, more in ((2500, True), (3000, False), (1000, True)):
    h = json.loads(posctl_out("stock", "history", "--store", BIG, MOVE_SKU, "--count", str(n),
                              "--format", "json"))
    moves = h.get("moves", [])
    shown = min(n, N_MOVES)
    c.check([m["id"] for m in moves] == newest[:shown] and
            [m["balance"] for m in moves] == list(range(N_MOVES, N_MOVES - shown, -1)) and
            h.get("last") == newest[shown - 1] and h.get("more") is more,
            f"stock history --count {n}: {shown} moves newest first, last the oldest shown, "
            f"more {more}", (shown, newest[shown - 1], more),
            (len(moves), h.get("last"), h.get("more")))

# --- dead letters: --count N entries, oldest first, across pages cut at 512 KiB -------------
N_DEAD = 1500
dead_ids = [f"{MOVE_T0 + i}-0" for i in range(N_DEAD)]
pipe([["XADD", "dead:{inventory}", dead_ids[i], "entry", f"{MOVE_T0 - N_DEAD + i}-0", "reason",
       "malformed", "consumer", "inventory-test", "ts", MOVE_T0, "sale_id",
       f"{BIG}-R01-{i:06d}", "payload", "x" * 600] for i in range(N_DEAD)])
first = page("dead.list", {"count": 1000})
c.check(first.get("more") and len(first.get("entries", [])) < 1000,
        f"inventory cuts a dead.list page by bytes ({len(first.get('entries', []))} of 1000)")
for n, more in ((1200, True), (2000, False)):
    r = st.posctl("dead", "inventory", "--count", str(n), "--format", "json")
    d = json.loads(r.stdout) if r.returncode == 0 else {}
    shown = min(n, N_DEAD)
    c.check([e["id"] for e in d.get("entries", [])] == dead_ids[:shown] and
            d.get("last") == dead_ids[shown - 1] and d.get("more") is more and
            d.get("total") == N_DEAD and f"{shown} shown" in r.stderr,
            f"dead --count {n}: {shown} entries oldest first, more {more}",
            (shown, dead_ids[shown - 1], more), (len(d.get("entries", [])), d.get("last"),
                                                 d.get("more"), r.stderr.strip()))
r = st.posctl("dead", "inventory", "--count", "3", "--after", dead_ids[10], "--format", "csv")
c.check([ln.split(",")[0] for ln in r.stdout.splitlines()] == ["id"] + dead_ids[11:14],
        "dead --after ID --count 3: the three entries after it, as CSV", dead_ids[11:14],
        r.stdout)

# --- what fits one page: exactly the reply of that page -------------------------------------
pipe([["HSET", f"stock:{{{SMALL}}}", "A1", 5, "A2", -2, "A3", 0],
      ["HSET", "catalog:item:A1", "sku", "A1", "threshold", 8],
      ["XADD", f"moves:{{{SMALL}}}:A1", "*", "kind", "receive", "delta", 5, "balance", 5,
       "reason", "", "ref", "DN-1", "ts", MOVE_T0]])
for what, method, body, argv in (
        ("stock get", "stock.get", {"store": SMALL}, ["stock", "get"]),
        ("stock reorder", "stock.reorder", {"store": SMALL}, ["stock", "reorder"]),
        ("stock history", "stock.history", {"store": SMALL, "sku": "A1"},
         ["stock", "history", "A1"]),
        ("stock history (100 of many moves)", "stock.history",
         {"store": BIG, "sku": MOVE_SKU}, ["stock", "history", MOVE_SKU])):
    one = page(method, body)
    shown = pairs_json(posctl_out(*argv, "--store", body["store"], "--format", "json"))
    c.check(shown == pairs_json(json.dumps(one)), f"{what}: posctl prints the one page as it "
            "is", json.dumps(one)[:200], json.dumps(shown)[:200])
c.eq(posctl_out("stock", "get", "--store", SMALL).split(),
     ["store", '"S2"', "stock.A1", "5", "stock.A2", "-2", "stock.A3", "0", "cursor", '"0"',
      "more", "false"], "stock get table of a small store")

c.finish()
