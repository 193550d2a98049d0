#!/usr/bin/python3
"""test_devices - the devices service knows the registers: hello, heartbeats, node list, gap healing.

Two registers say hello and heartbeat with their own keys; `posctl node list` shows both online
with their devices, and one offline once it stops heartbeating. A register can speak only for
itself and only a register's key may heartbeat. A heartbeat ahead of what sales committed asks the
register to resend the missing sales on register.<S>.<R>.resend, at most once per interval. Bad
bodies are refused and counted, and the service keeps running."""
import json
import os
import subprocess
import time

import msgpack
import zmq

from harness import BIN, SRC, Bus, Checks, Stack, load_cert, wait_for

STORE = "S1"
OFFLINE_MS = 1500
RESEND_MS = 3000
c = Checks("test_devices")
st = Stack("devices")
st.start_redis()
st.start_busd()
st.start_service("sales", "sales")
st.start_service("inventory", "inventory")
st.start_service("devices", "devices", "--node-offline-ms", str(OFFLINE_MS),
                 "--resend-interval-ms", str(RESEND_MS))
c.check(st.wait_healthy(["sales", "inventory", "devices"]), "sales, inventory and devices healthy")
st.posctl("store", "add", STORE, "Devices store", check=True)
st.posctl("catalog", "import", os.path.join(SRC, "scripts", "sample", "catalog.csv"), check=True)
ops = Bus(st)
r01 = Bus(st, st.key("register", "S1.R01"))
r02 = Bus(st, st.key("register", "S1.R02"))


def counters():
    return ops.call("devices", "stats", {})["body"]["counters"]


def is_error(reply, code):
    return reply is not None and reply["type"] == "error" and reply["body"].get("code") == code


def node_list(*args):
    """posctl node list --format json (node is a key command for the harness: connect here)."""
    r = subprocess.run([f"{BIN}/posctl", *st.conn_args(), "node", "list", "--format", "json",
                        *args], capture_output=True, text=True, timeout=60)
    c.check(r.returncode == 0, f"posctl node list {' '.join(args)} exits 0 ({r.stderr.strip()})")
    try:  # in the order listed
        return {f"{n['store']}.{n['register']}": n for n in json.loads(r.stdout)["nodes"]}
    except (ValueError, KeyError):
        c.fail(f"posctl node list: no JSON nodes in {r.stdout!r}")
        return {}


DEVICES = [{"name": "scanner", "kind": "scanner", "health": "ok", "detail": ""},
           {"name": "printer", "kind": "printer", "health": "warn", "detail": "纸快用完了 paper low"}]

# --- hello and heartbeat from two registers ------------------------------------------------------
for bus, version in ((r01, "1.4.0"), (r02, "1.4.1")):
    r = bus.call("devices", "node.hello", {"version": version, "devices": DEVICES,
                                           "config_version": 7})
    c.check(r["type"] == "reply" and r["body"].get("ok") is True, f"node.hello: {r['body']}")
    r = bus.call("devices", "node.heartbeat", {"last_seq": 0, "unsynced": 0, "config_version": 7})
    c.check(r["type"] == "reply" and r["body"].get("resend") is None,
            f"a heartbeat with nothing missing asks nothing: {r['body']}")
nodes = node_list()
c.eq(sorted(nodes), ["S1.R01", "S1.R02"], "nodes listed")
for name, version in (("S1.R01", "1.4.0"), ("S1.R02", "1.4.1")):
    n = nodes.get(name, {})
    c.check(n.get("online") is True and n.get("version") == version and
            n.get("config_version") == 7 and n.get("devices") == DEVICES,
            f"{name} online with its version, config version and devices: {n}")
table = subprocess.run([f"{BIN}/posctl", *st.conn_args(), "node", "list", "--store", STORE],
                       capture_output=True, text=True, timeout=60)
c.check(table.returncode == 0 and "R01" in table.stdout and "printer:warn" in table.stdout,
        f"the table shows the registers and their device health:\n{table.stdout}")

# --- roles: only a register heartbeats, and only as itself ---------------------------------------
r = ops.call("devices", "node.heartbeat", {"last_seq": 1, "unsynced": 0, "config_version": 1,
                                           "store": STORE, "register": "R01"})
c.check(is_error(r, "forbidden"), f"an operator's key may not heartbeat: {r['body']}")
bi = Bus(st, st.key("consumer", "bi"))
r = bi.call("devices", "node.hello", {"version": "1", "devices": [], "config_version": 0})
c.check(is_error(r, "forbidden"), f"a consumer's key may not say hello: {r['body']}")
r = bi.call("devices", "node.list", {"store": STORE})
c.check(r["type"] == "reply" and r["body"].get("count") == 2, f"a consumer may list: {r['body']}")
before = dict(nodes["S1.R02"])
r = r01.call("devices", "node.heartbeat", {"store": STORE, "register": "R02", "last_seq": 99,
                                           "unsynced": 42, "config_version": 1,
                                           "devices": [{"name": "drawer", "kind": "drawer",
                                                        "health": "error", "detail": "forged"}]})
c.check(is_error(r, "forbidden"), f"R01 heartbeating as R02 is refused: {r['body']}")
r = r01.call("devices", "node.hello", {"store": STORE, "register": "R02", "version": "6.6.6",
                                       "devices": [], "config_version": 1})
c.check(is_error(r, "forbidden"), f"R01 saying hello as R02 is refused: {r['body']}")
after = node_list()["S1.R02"]
c.check(all(after.get(k) == before.get(k) for k in ("version", "last_seq", "unsynced",
                                                     "config_version", "devices")),
        f"R02's row is unchanged by R01: {after}")
k = counters()
c.check(k.get("refused_other_register") == 2 and k.get("forbidden", 0) >= 2,
        f"refusals counted: refused_other_register {k.get('refused_other_register')}, "
        f"forbidden {k.get('forbidden')}")

# --- offline after --node-offline-ms without heartbeats -----------------------------------------
deadline = time.time() + OFFLINE_MS / 1000 + 1.5
while time.time() < deadline:  # R01 keeps heartbeating, R02 stopped
    r01.call("devices", "node.heartbeat", {"last_seq": 0, "unsynced": 2, "config_version": 8})
    time.sleep(0.3)
nodes = node_list()
c.check(nodes.get("S1.R01", {}).get("online") is True and
        nodes["S1.R01"].get("unsynced") == 2 and nodes["S1.R01"].get("config_version") == 8,
        f"R01 is online with what its heartbeat said: {nodes.get('S1.R01')}")
c.check(nodes.get("S1.R02", {}).get("online") is False and
        nodes["S1.R02"].get("last_heartbeat_ms_ago", 0) > OFFLINE_MS,
        f"R02 is offline after {OFFLINE_MS} ms without a heartbeat: {nodes.get('S1.R02')}")
r = r02.call("devices", "node.heartbeat", {"last_seq": 0, "unsynced": 0, "config_version": 7})
c.check(node_list().get("S1.R02", {}).get("online") is True, "R02 online again after a heartbeat")

# --- gap healing ----------------------------------------------------------------------------------
PRICE = 4990


def sale(reg, seq):
    return {"sale_id": f"{STORE}-{reg}-{seq:06d}", "store": STORE, "register": reg, "seq": seq,
            "cashier": "李娜", "ts": int(time.time() * 1000), "kind": "sale",
            "lines": [{"sku": "RICE5", "name": "", "category": "", "qty": 1, "unit": "pcs",
                       "unit_price": PRICE, "gross": PRICE, "promo_discount": 0,
                       "ticket_discount": 0, "amount": PRICE, "tax": 412, "tax_rate_bp": 900}],
            "tenders": [{"kind": "card", "amount": PRICE}], "total": PRICE, "change": 0,
            "cash_rounding": 0}


for seq in (1, 2, 3):
    r = r01.call("sales", "sale.upload", sale("R01", seq), timeout=10)
    c.check(r["type"] == "reply" and r["body"].get("duplicate") is False,
            f"sale {seq} of R01 committed: {r['body']}")
server = load_cert(st.server_cert())
me = load_cert(st.key("consumer", "watch"))
watcher = zmq.Context.instance().socket(zmq.SUB)
watcher.curve_publickey, watcher.curve_secretkey = me["public"], me["secret"]
watcher.curve_serverkey = server["public"]
watcher.setsockopt(zmq.LINGER, 0)
watcher.connect(st.sub)
watcher.setsockopt(zmq.SUBSCRIBE, b"register.S1.R01.")
time.sleep(1.0)  # the subscription reaches the publishers


def resends(wait):
    got, deadline = [], time.time() + wait
    while time.time() < deadline:
        if watcher.poll(100):
            topic, payload = watcher.recv_multipart()[:2]
            got.append((topic.decode(), msgpack.unpackb(payload, raw=False)))
    return got


r = r01.call("devices", "node.heartbeat", {"last_seq": 9, "unsynced": 6, "config_version": 8})
c.check(r["type"] == "reply" and r["body"].get("resend") is None,
        f"sales not uploaded yet (9 journaled, 6 unsynced, 1..3 committed) are not missing: "
        f"{r['body']}")
r = r01.call("devices", "node.heartbeat", {"last_seq": 7, "unsynced": 2, "config_version": 8})
c.check(r["type"] == "reply" and r["body"].get("resend") == {"from": 4, "to": 5} and
        r["body"].get("committed_seq") == 3,
        f"a heartbeat with 5 acknowledged (7 journaled, 2 unsynced) after 1..3 were committed "
        f"asks for 4..5: {r['body']}")
got = resends(2.0)
want = {"store": STORE, "register": "R01", "missing_from": 4, "missing_to": 5}
c.check(len(got) == 1 and got[0][0] == "register.S1.R01.resend" and
        got[0][1].get("type") == "register.resend" and got[0][1].get("body") == want and
        got[0][1].get("src", "").startswith("devices-"),
        f"the register is asked on register.S1.R01.resend for 4..5: {got}")
r = r01.call("devices", "node.heartbeat", {"last_seq": 7, "unsynced": 2, "config_version": 8})
c.check(r["type"] == "reply" and r["body"].get("resend") is None,
        f"asked again within {RESEND_MS} ms: nothing (rate-limited): {r['body']}")
r = r01.call("devices", "node.heartbeat", {"last_seq": 3, "unsynced": 0, "config_version": 8})
c.check(r["type"] == "reply" and r["body"].get("resend") is None,
        f"a heartbeat at 3 asks nothing: {r['body']}")
c.eq(resends(1.0), [], "resend events after the limited and the up-to-date heartbeats")
k = counters()
c.check(k.get("resends_asked") == 1 and k.get("resends_limited") == 1,
        f"resends counted: resends_asked {k.get('resends_asked')}, resends_limited "
        f"{k.get('resends_limited')}")
n = node_list("--store", STORE).get("S1.R01", {})
c.check(n.get("last_seq") == 3 and n.get("committed_seq") == 3,
        f"node list shows the last and the committed sequence: {n}")
time.sleep(RESEND_MS / 1000)
r = r01.call("devices", "node.heartbeat", {"last_seq": 5, "unsynced": 1, "config_version": 8})
c.check(r["type"] == "reply" and r["body"].get("resend") == {"from": 4, "to": 4},
        f"after the interval a new gap is asked again: {r['body']}")

# --- bad bodies: refused, counted, the service keeps running ------------------------------------
bad_before = counters().get("bad_requests", 0)
many = [{"name": f"d{i}", "kind": "scale", "health": "ok", "detail": ""} for i in range(33)]
BAD = [
    ("node.heartbeat", {"last_seq": -1, "unsynced": 0, "config_version": 1}),
    ("node.heartbeat", {"last_seq": "5", "unsynced": 0, "config_version": 1}),
    ("node.heartbeat", {"unsynced": 0, "config_version": 1}),
    ("node.heartbeat", {"last_seq": 1, "unsynced": 0, "config_version": 1, "devices": many}),
    ("node.heartbeat", {"last_seq": 1, "unsynced": 0, "config_version": 1, "devices": "x"}),
    ("node.heartbeat", {"last_seq": 1, "unsynced": 0, "config_version": 1,
                        "devices": [{"name": "p", "kind": "printer", "health": "fine"}]}),
    ("node.heartbeat", {"last_seq": 1, "unsynced": 0, "config_version": 1,
                        "devices": [{"name": "p", "kind": "printer", "health": "ok",
                                     "detail": "x" * 121}]}),
    ("node.heartbeat", {"last_seq": 1, "unsynced": 0, "config_version": 1, "store": 5}),
    ("node.hello", {"version": "1.0", "config_version": 0,
                    "devices": [DEVICES[0], dict(DEVICES[1], name="scanner")]}),
    ("node.hello", {"version": "v" * 33, "devices": [], "config_version": 0}),
    ("node.hello", {"version": "1.0", "devices": [], "config_version": -3}),
    ("node.hello", {"version": 1, "devices": [], "config_version": 0}),
    ("node.hello", {"version": "1.0", "config_version": 0}),
    ("node.hello", {"version": "1.0", "devices": [7], "config_version": 0}),
]
for method, body in BAD:
    r = r01.call("devices", method, body)
    c.check(is_error(r, "bad_request"), f"{method} {str(body)[:70]}: bad_request "
            f"({r['body'].get('message', r['body'])})")
r = ops.call("devices", "node.list", {"store": "S 1"})
c.check(is_error(r, "bad_request"), f"node.list with a malformed store: {r['body']}")
c.eq(counters().get("bad_requests", 0) - bad_before, len(BAD) + 1, "bad requests counted")
n = node_list().get("S1.R01", {})
c.check(n.get("last_seq") == 5 and n.get("devices") == DEVICES,
        f"nothing of the bad bodies was written: {n}")
c.check(st.wait_healthy(["devices"]), "devices still healthy")

# --- a second store, sorted listing, pages ------------------------------------------------------
st.posctl("store", "add", "S2", "Second store", check=True)
s2 = Bus(st, st.key("register", "S2.R01"))
r = s2.call("devices", "node.hello", {"version": "2.0.0", "devices": [], "config_version": 1})
c.check(r["type"] == "reply", f"a register of store S2 says hello: {r['body']}")
c.eq(list(node_list()), ["S1.R01", "S1.R02", "S2.R01"], "every store's nodes, by store and register")
c.eq(list(node_list("--store", "S2")), ["S2.R01"], "one store's nodes")
seen, after, pages = [], None, 0
while pages < 10:
    body = {"count": 1, **({"after": after} if after else {})}
    page = ops.call("devices", "node.list", body)["body"]
    pages += 1
    seen += [f"{n['store']}.{n['register']}" for n in page.get("nodes", [])]
    if not page.get("more"):
        break
    after = page.get("last")
c.check(seen == ["S1.R01", "S1.R02", "S2.R01"] and pages == 3,
        f"node.list pages of one node follow each other with after = last: {seen} in {pages} pages")
r = ops.call("devices", "node.list", {"after": "S1"})
c.check(is_error(r, "bad_request"), f"node.list with a malformed after: {r['body']}")

# --- Redis down: unavailable, never a crash; back when Redis is ---------------------------------
HB = {"last_seq": 4, "unsynced": 1, "config_version": 8}
st.kill("redis")
r = r01.call("devices", "node.heartbeat", HB, timeout=10)
c.check(is_error(r, "unavailable") and r["body"].get("retry_ms", 0) > 0,
        f"a heartbeat while Redis is down is answered unavailable with a retry hint: {r['body']}")
r = ops.call("devices", "node.list", {}, timeout=10)
c.check(is_error(r, "unavailable"), f"and so is node.list: {r['body']}")
st.start_redis()
c.check(wait_for(lambda: r01.call("devices", "node.heartbeat", HB, timeout=10)["type"] == "reply",
                 15, "a heartbeat answered after Redis restarted"),
        "heartbeats are answered again once Redis is back")
c.check(node_list().get("S1.R01", {}).get("online") is True, "R01 listed online again")
c.check(counters().get("redis_errors", 0) >= 2, "Redis failures counted (redis_errors)")

st.stop_all(c)
c.finish()
