#!/usr/bin/python3
"""test_config - the registers' configuration in the devices service: versions, events, roles.

Operators change a store's configuration with posctl (promotions, cashiers, receipt settings);
every change bumps the store's version by exactly one and publishes config.<S>.changed. A
register reads its own store's document with config.get (and no other store's), never changes
it; a retried request bumps nothing twice, even past the reply cache. Every invalid field is
refused (bad_request, too_many) and changes nothing. A cashier's PIN goes in on posctl's stdin
and only its scrypt hash comes out: nowhere in Redis is the PIN. posctl node config says which
registers run an old configuration."""
import base64
import hashlib
import json
import subprocess
import time

import msgpack
import zmq

from harness import BIN, Bus, Checks, Stack, load_cert, wait_for

STORE, OTHER = "S1", "S2"
PIN = "73950148"
DOC_KEYS = {"store": str, "version": int, "receipt_header": list, "receipt_footer": list,
            "cash_rounding": bool, "tax_id": str, "discount_cap_bp": int, "cashiers": list,
            "promotions": list, "devices": list}  # a register's document: its own devices
PROMO_KEYS = {"id": str, "kind": str, "sku": str, "category": str, "percent_bp": int,
              "amount": int, "qty": int, "free_qty": int, "price": int, "start_ms": int,
              "end_ms": int}
CASHIER_KEYS = {"id": str, "name": str, "role": str, "pin_hash": str, "active": bool}

c = Checks("test_config")
st = Stack("config")
st.start_redis()
st.start_busd()
st.start_service("inventory", "inventory")
st.start_service("devices", "devices")
c.check(st.wait_healthy(["inventory", "devices"]), "inventory and devices healthy")
for s in (STORE, OTHER):
    st.posctl("store", "add", s, check=True)
ops = Bus(st)
r01 = Bus(st, st.key("register", "S1.R01"))
r02 = Bus(st, st.key("register", "S1.R02"))
s2r = Bus(st, st.key("register", "S2.R01"))
db = st.redis()


def is_error(reply, code):
    return reply is not None and reply["type"] == "error" and reply["body"].get("code") == code


def counters():
    return ops.call("devices", "stats", {})["body"]["counters"]


def doc(bus=None, **body):
    r = (bus or ops).call("devices", "config.get", {"store": STORE, **body} if bus is None
                          else body)
    c.check(r["type"] == "reply", f"config.get answered: {r['body']}")
    return r["body"]


def version():
    return doc()["version"]


def posctl(*args, stdin=None):
    """posctl with the operator's connection (also for "node config", which the harness would
    send to the keys directory)."""
    return subprocess.run([f"{BIN}/posctl", *st.conn_args(), *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def posctl_ok(*args, stdin=None):
    r = posctl(*args, stdin=stdin)
    c.check(r.returncode == 0, f"posctl {' '.join(args)} exits 0 ({r.stderr.strip()})")
    return r.stdout


def typed(obj, keys, what):
    """obj has exactly keys, each of its type (a bool is not an int here)."""
    c.check(isinstance(obj, dict) and set(obj) == set(keys), f"{what}: exactly the keys "
            f"{sorted(keys)}", sorted(keys), sorted(obj) if isinstance(obj, dict) else obj)
    for k, t in keys.items():
        v = obj.get(k) if isinstance(obj, dict) else None
        c.check(type(v) is t, f"{what}.{k} is {t.__name__}: {v!r}")


# --- events --------------------------------------------------------------------------------------
server = load_cert(st.server_cert())
me = load_cert(st.key("consumer", "watch"))
watcher = zmq.Context.instance().socket(zmq.SUB)
watcher.curve_publickey, watcher.curve_secretkey = me["public"], me["secret"]
watcher.curve_serverkey = server["public"]
watcher.setsockopt(zmq.LINGER, 0)
watcher.connect(st.sub)
watcher.setsockopt(zmq.SUBSCRIBE, b"config.")
time.sleep(1.0)  # the subscription reaches the publishers


def events(wait=1.5):
    got, deadline = [], time.time() + wait
    while time.time() < deadline:
        if watcher.poll(100):
            topic, payload = watcher.recv_multipart()[:2]
            got.append((topic.decode(), msgpack.unpackb(payload, raw=False)))
    return got


# --- never configured: the defaults, in exactly the documented shape -----------------------------
d = doc(r01)
typed(d, DOC_KEYS, "config.get of a store never configured")
c.check(d["store"] == STORE and d["version"] == 0 and d["receipt_header"] == [] and
        d["receipt_footer"] == [] and d["cash_rounding"] is False and d["tax_id"] == "" and
        d["discount_cap_bp"] == 1000 and d["cashiers"] == [] and d["promotions"] == [],
        f"version 0 is all defaults: {d}")

# --- promotions through posctl: one version per change, and an event each ------------------------
posctl_ok("promo", "add", "--store", STORE, "--id", "P1", "--kind", "percent", "--sku", "RICE5",
          "--percent", "12.5")
got = events()
c.check(len(got) == 1 and got[0][0] == f"config.{STORE}.changed" and
        got[0][1].get("type") == "config.changed" and
        got[0][1].get("body") == {"store": STORE, "version": 1} and
        got[0][1].get("src", "").startswith("devices-"),
        f"promo add published config.{STORE}.changed with version 1: {got}")
c.eq(version(), 1, "version after the first promotion")
start = int(time.mktime(time.strptime("2030-01-02 08:30", "%Y-%m-%d %H:%M"))) * 1000
end = int(time.mktime(time.strptime("2030-02-01 00:00", "%Y-%m-%d %H:%M"))) * 1000
posctl_ok("promo", "add", "--store", STORE, "--id", "P2", "--kind", "amount", "--category",
          "粮油", "--amount", "1.50", "--from", "2030-01-02 08:30", "--to", "2030-02-01 00:00")
posctl_ok("promo", "add", "--store", STORE, "--id", "P3", "--kind", "qty_break", "--sku", "MILK",
          "--qty", "3", "--amount", "10.00")
posctl_ok("promo", "add", "--store", STORE, "--id", "P4", "--kind", "buy_x_get_y", "--sku", "EGG",
          "--qty", "2", "--free", "1")
posctl_ok("promo", "add", "--store", STORE, "--id", "P5", "--kind", "member_price", "--sku", "OIL",
          "--price", "9.90")
got = events()
c.eq([e[1]["body"]["version"] for e in got], [2, 3, 4, 5], "one event per change, versions 2..5")
listed = json.loads(posctl_ok("promo", "list", "--store", STORE, "--format", "json"))
by_id = {p["id"]: p for p in listed["promotions"]}
c.check(listed["version"] == 5 and sorted(by_id) == ["P1", "P2", "P3", "P4", "P5"],
        f"promo list shows the five: {listed}")
c.check(by_id["P1"]["percent_bp"] == 1250 and by_id["P1"]["sku"] == "RICE5" and
        by_id["P1"]["category"] == "" and by_id["P1"]["ended"] is False,
        f"--percent 12.5 is 1250 basis points exactly: {by_id['P1']}")
c.check(by_id["P2"]["amount"] == 150 and by_id["P2"]["category"] == "粮油" and
        by_id["P2"]["start_ms"] == start and by_id["P2"]["end_ms"] == end,
        f"--amount 1.50 is 150 fen; --from/--to are local times: {by_id['P2']}")
c.check(by_id["P3"]["qty"] == 3 and by_id["P3"]["amount"] == 1000 and
        by_id["P4"]["qty"] == 2 and by_id["P4"]["free_qty"] == 1 and by_id["P5"]["price"] == 990,
        f"qty_break, buy_x_get_y and member_price fields: {listed}")
table = posctl_ok("promo", "list", "--store", STORE)
c.check("P3" in table and "3 for ¥10.00" in table and "12.50% off" in table,
        f"the table says what each promotion does:\n{table}")
posctl_ok("promo", "end", "--store", STORE, "--id", "P1")
c.eq(version(), 6, "promo end bumps the version")
got = events()
c.check([e[1]["body"] for e in got] == [{"store": STORE, "version": 6}], f"and publishes: {got}")
live = json.loads(posctl_ok("promo", "list", "--store", STORE, "--format", "json"))
every = json.loads(posctl_ok("promo", "list", "--store", STORE, "--all", "--format", "json"))
ended = {p["id"]: p for p in every["promotions"]}.get("P1", {})
c.check("P1" not in [p["id"] for p in live["promotions"]] and ended.get("ended") is True and
        ended.get("ended_ms", 0) > 0, f"P1 ended: only --all lists it, with ended_ms: {ended}")
r = ops.call("devices", "promo.end", {"store": STORE, "id": "P1"})
c.check(r["type"] == "reply" and r["body"].get("version") == 6,
        f"ending twice is fine and bumps nothing: {r['body']}")
r = ops.call("devices", "promo.end", {"store": STORE, "id": "NOPE"})
c.check(is_error(r, "not_found"), f"ending an unknown promotion: {r['body']}")
r = ops.call("devices", "promo.add", {"store": STORE, "id": "P2", "kind": "percent",
                                      "sku": "X", "percent_bp": 500})
c.check(is_error(r, "conflict"), f"an id that exists is a conflict: {r['body']}")
r = ops.call("devices", "promo.add", {"store": "NOPE", "id": "PX", "kind": "percent",
                                      "sku": "X", "percent_bp": 500})
c.check(is_error(r, "unknown_store"), f"an unknown store: {r['body']}")

# --- the register's document ---------------------------------------------------------------------
d = doc(r01)
typed(d, DOC_KEYS, "config.get as a register")
c.eq([p["id"] for p in d["promotions"]], ["P2", "P3", "P4", "P5"],
     "promotions sorted by id, the ended one left out")
for p in d["promotions"]:
    typed(p, PROMO_KEYS, f"promotion {p.get('id')}")
r = r01.call("devices", "config.get", {"known_version": d["version"]})
c.check(r["type"] == "reply" and r["body"] == {"store": STORE, "version": 6, "unchanged": True},
        f"known_version equal to the current: just unchanged: {r['body']}")
r = r01.call("devices", "config.get", {"known_version": 5})
c.check(r["type"] == "reply" and r["body"].get("promotions") is not None,
        f"an older known_version gets the document: {sorted(r['body'])}")
refused = counters().get("refused_other_register", 0)
r = s2r.call("devices", "config.get", {"store": STORE})
c.check(is_error(r, "forbidden"), f"another store's register may not read S1's: {r['body']}")
c.eq(counters().get("refused_other_register", 0), refused + 1, "counted refused_other_register")
d2 = doc(s2r)
c.check(d2["store"] == OTHER and d2["version"] == 0 and d2["promotions"] == [],
        f"S2's register gets S2's own document: {d2}")
r = r01.call("devices", "promo.add", {"store": STORE, "id": "RX", "kind": "percent",
                                      "sku": "RICE5", "percent_bp": 9000})
c.check(is_error(r, "forbidden"), f"a register may not add a promotion: {r['body']}")
r = r01.call("devices", "promo.list", {"store": STORE})
c.check(is_error(r, "forbidden"), f"nor list them with promo.list: {r['body']}")
r = ops.call("devices", "config.get", {})
c.check(is_error(r, "bad_request"), f"an operator must name the store: {r['body']}")
c.eq(version(), 6, "nothing above changed the version")

# --- retries: one request id, one version --------------------------------------------------------
body = {"store": STORE, "id": "R1", "kind": "percent", "category": "饮料", "percent_bp": 500}
first = ops.call("devices", "promo.add", body, request_id="retry-promo-1")
again = ops.call("devices", "promo.add", body, request_id="retry-promo-1")
c.check(first["type"] == "reply" and first["body"].get("version") == 7 and
        again["body"] == first["body"], f"a retry gets the first reply: {first} / {again}")
for key in db.call("KEYS", "reply:{devices}:*"):  # the reply cache lost: the script still knows
    db.call("DEL", key)
third = ops.call("devices", "promo.add", body, request_id="retry-promo-1")
c.check(third["type"] == "reply" and third["body"].get("version") == 7,
        f"a retry past the reply cache gets the version it made: {third['body']}")
c.eq(version(), 7, "three attempts of one request bumped the version once")

# --- invalid fields: refused, counted, nothing changed -------------------------------------------
P = {"store": STORE, "id": "BAD", "kind": "percent", "sku": "RICE5", "percent_bp": 500}
HASH = "scrypt$8192$8$1$fKR9GLQviY7pNhvouH1hFw==$hD9EKDe2DUOd0bMS5P85pLbrccwujAYRVkGaWOehPE4="
CASHIER = {"store": STORE, "id": "c9", "name": "王芳", "role": "cashier", "pin_hash": HASH}
bad = [("promo.add", {**P, "kind": "bogo"}, "kind"),
       ("promo.add", {**P, "category": "粮油"}, "sku, category"),
       ("promo.add", {**P, "sku": ""}, "sku, category"),
       ("promo.add", {**P, "percent_bp": 0}, "percent_bp"),
       ("promo.add", {**P, "percent_bp": 10001}, "percent_bp"),
       ("promo.add", {**P, "amount": 100}, "amount"),
       ("promo.add", {**P, "start_ms": 2000, "end_ms": 1000}, "end_ms"),
       ("promo.add", {**P, "id": "bad id!"}, "id"),
       ("promo.add", {**P, "kind": "member_price", "sku": "", "category": "粮油",
                      "percent_bp": 0, "price": 100}, "sku"),
       ("promo.add", {**P, "kind": "qty_break", "percent_bp": 0, "qty": 1, "amount": 100}, "qty"),
       ("cashier.add", {**CASHIER, "pin_hash": "1234"}, "pin_hash"),
       ("cashier.add", {**CASHIER, "pin_hash": HASH[:-8]}, "pin_hash"),
       ("cashier.add", {**CASHIER, "role": "owner"}, "role"),
       ("cashier.add", {**CASHIER, "id": "toolong_cashier_id"}, "id"),
       ("cashier.add", {**CASHIER, "name": ""}, "name"),
       ("cashier.add", {**CASHIER, "permissions": ["void_line", "fly"]}, "permissions"),
       ("config.set", {"store": STORE, "receipt_header": ["x"] * 9}, "receipt_header"),
       ("config.set", {"store": STORE, "receipt_footer": ["é" * 49]}, "receipt_footer"),
       ("config.set", {"store": STORE, "receipt_header": ["tab\there"]}, "receipt_header"),
       ("config.set", {"store": STORE, "discount_cap_bp": 10001}, "discount_cap_bp"),
       ("config.set", {"store": STORE, "cash_rounding": "yes"}, "cash_rounding"),
       ("config.set", {"store": STORE, "tax_id": "x" * 33}, "tax_id"),
       ("config.set", {"store": STORE}, "nothing to set")]
before = counters().get("bad_requests", 0)
promos_before = db.call("HGETALL", "cfg:{S1}:promos")
for method, b, field in bad:
    r = ops.call("devices", method, b)
    c.check(is_error(r, "bad_request") and field in r["body"].get("message", ""),
            f"{method} {b}: bad_request naming {field}: {r['body']}")
c.eq(counters().get("bad_requests", 0), before + len(bad), "each refusal counted (bad_requests)")
c.eq(version(), 7, "no refused request changed the version")
c.check(db.call("HGETALL", "cfg:{S1}:promos") == promos_before and
        db.call("HLEN", "cfg:{S1}:cashiers") == 0, "and no row was written")

# --- at most 64 live promotions ------------------------------------------------------------------
n_live = len(doc()["promotions"])
for i in range(64 - n_live):
    r = ops.call("devices", "promo.add", {**P, "id": f"F{i:02d}"})
    c.check(r["type"] == "reply", f"promotion F{i:02d} added: {r['body']}")
c.eq(len(doc()["promotions"]), 64, "64 live promotions")
v = version()
r = ops.call("devices", "promo.add", {**P, "id": "F99"})
c.check(is_error(r, "too_many"), f"the 65th is too_many: {r['body']}")
c.eq(version(), v, "too_many changed nothing")
ops.call("devices", "promo.end", {"store": STORE, "id": "F00"})
r = ops.call("devices", "promo.add", {**P, "id": "F99"})
c.check(r["type"] == "reply" and r["body"].get("version") == v + 2,
        f"ending one makes room for another: {r['body']}")

# --- cashiers: the PIN goes in on stdin, only a hash comes out -----------------------------------
out = posctl_ok("cashier", "add", "--store", STORE, "--id", "c01", "--name", "李娜", "--role",
                "supervisor", stdin=PIN + "\n")
posctl_ok("cashier", "add", "--store", STORE, "--id", "a02", "--name", "Zhang Wei", "--role",
          "cashier", "--permissions", "void_line,return", stdin="26048913\n")
r = posctl("cashier", "add", "--store", STORE, "--id", "c03", "--name", "X", "--role",
           "cashier", stdin="12ab\n")
c.check(r.returncode != 0 and "PIN" in r.stderr, f"a PIN that is not 4-8 digits: {r.stderr}")
d = doc(r01)
c.eq([x["id"] for x in d["cashiers"]], ["a02", "c01"], "cashiers sorted by id")
cashier = {x["id"]: x for x in d["cashiers"]}
typed(cashier.get("c01", {}), CASHIER_KEYS, "a cashier with the role's permissions")
typed(cashier.get("a02", {}), {**CASHIER_KEYS, "permissions": list}, "a cashier with its own")
c.check(cashier.get("a02", {}).get("permissions") == ["void_line", "return"],
        f"--permissions kept: {cashier.get('a02')}")
stored = cashier.get("c01", {}).get("pin_hash", "")
parts = stored.split("$")
c.check(stored.startswith("scrypt$") and len(parts) == 6, f"a scrypt hash is stored: {stored}")


def verify(pin, stored):
    _, n, r, p, salt, digest = stored.split("$")
    want = base64.b64decode(digest)
    got = hashlib.scrypt(pin.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                         p=int(p), dklen=len(want), maxmem=64 * 1024 * 1024)
    return got == want


c.check(len(parts) == 6 and verify(PIN, stored) and not verify("00000000", stored),
        "the stored hash matches the PIN typed on stdin, and not another")
haystack = b""
for key in db.call("KEYS", "*"):
    kind = db.call("TYPE", key)
    value = {"string": lambda: [db.call("GET", key)],
             "hash": lambda: db.call("HGETALL", key),
             "set": lambda: db.call("SMEMBERS", key),
             "list": lambda: db.call("LRANGE", key, 0, -1),
             "zset": lambda: db.call("ZRANGE", key, 0, -1),
             "stream": lambda: [json.dumps(x, default=repr).encode()
                                for x in db.call("XRANGE", key, "-", "+")]}.get(kind,
                                                                               lambda: [])()
    haystack += key + b"\n" + b"\n".join(v for v in value if isinstance(v, bytes))
c.check(len(haystack) > 1000 and PIN.encode() not in haystack and b"26048913" not in haystack,
        f"the PIN is nowhere in Redis ({len(haystack)} bytes of keys and values searched)")
listing = posctl_ok("cashier", "list", "--store", STORE)
c.check("c01" in listing and "supervisor" in listing and "scrypt" not in listing,
        f"cashier list shows no hashes:\n{listing}")
v = version()
posctl_ok("cashier", "disable", "--store", STORE, "--id", "c01")
c.check(version() == v + 1 and {x["id"]: x for x in doc()["cashiers"]}["c01"]["active"] is False,
        "cashier disable: inactive, one version")
r = ops.call("devices", "cashier.disable", {"store": STORE, "id": "c01"})
c.check(r["type"] == "reply" and r["body"].get("version") == v + 1, f"twice: no bump {r['body']}")
r = ops.call("devices", "cashier.disable", {"store": STORE, "id": "ghost"})
c.check(is_error(r, "not_found"), f"an unknown cashier: {r['body']}")
posctl_ok("cashier", "add", "--store", STORE, "--id", "c01", "--name", "李娜", "--role",
          "supervisor", stdin="5555\n")
again = {x["id"]: x for x in doc()["cashiers"]}["c01"]
c.check(again["active"] is True and again["pin_hash"] != stored and verify("5555", again["pin_hash"]),
        "adding again re-enables with a new PIN (a PIN reset)")

# --- receipt settings through posctl ------------------------------------------------------------
posctl_ok("config", "set", "--store", STORE, "--header", "好又多超市|人民路 1 号", "--footer",
          "谢谢惠顾", "--cash-rounding", "on", "--tax-id", "91310000MA1K", "--discount-cap",
          "12.5")
d = doc(r01)
c.check(d["receipt_header"] == ["好又多超市", "人民路 1 号"] and d["receipt_footer"] == ["谢谢惠顾"]
        and d["cash_rounding"] is True and d["tax_id"] == "91310000MA1K" and
        d["discount_cap_bp"] == 1250, f"config set: {d}")
shown = json.loads(posctl_ok("config", "show", "--store", STORE, "--format", "json"))
c.check(shown["version"] == d["version"] and "scrypt" not in json.dumps(shown),
        f"config show --format json: the document without PIN hashes")
r = posctl("config", "set", "--store", STORE, "--discount-cap", "12.345")
c.check(r.returncode != 0 and version() == d["version"],
        f"--discount-cap with 3 decimals is refused by posctl: {r.stderr}")

# --- posctl node config: current or behind -------------------------------------------------------
latest = version()
for bus, cv in ((r01, latest - 3), (r02, latest)):
    r = bus.call("devices", "node.hello", {"version": "1.0.0", "devices": [], "config_version": cv})
    c.check(r["type"] == "reply", f"hello with config_version {cv}: {r['body']}")
nodes = json.loads(posctl_ok("node", "config", "--store", STORE, "--format", "json"))["nodes"]
state = {n["register"]: (n["config_version"], n["latest"], n["state"]) for n in nodes}
c.eq(state, {"R01": (latest - 3, latest, "behind"), "R02": (latest, latest, "current")},
     "node config: R01 behind, R02 current")
r01.call("devices", "node.heartbeat", {"last_seq": 0, "unsynced": 0, "config_version": latest})
table = posctl_ok("node", "config", "--store", STORE)
c.check("behind" not in table and table.count("current") == 2,
        f"after R01's heartbeat with the latest version, both current:\n{table}")

st.stop_all(c)
c.finish()
