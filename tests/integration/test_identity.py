#!/usr/bin/python3
"""test_identity - every enrolled key has a role, busd enforces it, revocation is immediate.

Each attack an insider with one enrolled key tried (issue 7) is run against a real busd and real
services over CURVE: serving requests as sales, uploading under another register's id, publishing
a forged sale.completed, going on after its certificate was removed; plus busd refusing to start
with CURVE and no clients directory. Each must be refused and counted, and the real sales all
committed exactly once."""
import os
import secrets
import subprocess
import threading
import time

import msgpack
import zmq

from harness import BIN, SRC, Bus, Checks, Stack, free_port, load_cert, wait_for

STORE = "S1"
SIM_SALES = 300
c = Checks("test_identity")
st = Stack("identity")
st.start_redis()
st.start_busd()
st.start_service("sales", "sales")
st.start_service("inventory", "inventory")
c.check(st.wait_healthy(["sales", "inventory"]), "sales and inventory healthy")
st.posctl("store", "add", STORE, "Identity store", check=True)
st.posctl("catalog", "import", os.path.join(SRC, "scripts", "sample", "catalog.csv"), check=True)
ops = Bus(st)
ctx = zmq.Context.instance()


def curve(sock, cert):
    me, server = load_cert(cert), load_cert(st.server_cert())
    sock.curve_publickey, sock.curve_secretkey = me["public"], me["secret"]
    sock.curve_serverkey = server["public"]
    sock.setsockopt(zmq.LINGER, 0)
    return sock


def busd_counters():
    return ops.call("busd", "stats", {})["body"]["counters"]


def counters(service):
    return ops.call(service, "stats", {})["body"]["counters"]


def envelope(type_, src, body, seq=1):
    """An envelope laid out exactly as libbus writes it (v, type, id, src, seq, ts, body)."""
    return msgpack.packb({"v": 1, "type": type_, "id": secrets.token_hex(16), "src": src,
                          "seq": seq, "ts": int(time.time() * 1000), "body": body})


def is_error(reply, code):
    return reply is not None and reply["type"] == "error" and reply["body"].get("code") == code


# --- who am I: busd reads the role from the enrolled certificate --------------------------------
reg1 = st.key("register", "S1.R01")
who = Bus(st, reg1).call("busd", "whoami", {})["body"]
c.check(who.get("role") == "register" and who.get("store") == "S1" and who.get("register") == "R01",
        f"busd knows a register's key by its certificate: {who}")
who = ops.call("busd", "whoami", {})["body"]
c.check(who.get("role") == "operator", f"and an operator's: {who}")

# --- attack 1: serving requests as sales with a key that is not sales' ---------------------------
# A register's key and the inventory service's key both heartbeat as "sales" and answer every
# request they get with "committed". busd must never route a request to them.
stolen = {"requests": 0}
stop = threading.Event()


def impostor(cert, instance):
    sock = curve(ctx.socket(zmq.DEALER), cert)
    sock.connect(st.req)
    next_hb = 0.0
    while not stop.is_set():
        if time.time() >= next_hb:
            sock.send_multipart([b"BUS2W", b"HB", b"sales", instance.encode()])
            next_hb = time.time() + 0.2
        if sock.poll(50):
            frames = sock.recv_multipart()
            if len(frames) >= 6 and frames[1] == b"REQ":
                stolen["requests"] += 1
                reply = envelope("reply", instance, {"sale_id": "x", "duplicate": False,
                                                     "stream_id": "1-0"})
                sock.send_multipart([b"BUS2W", b"REP", frames[2], frames[3], reply])
    sock.close()


threads = [threading.Thread(target=impostor, args=(reg1, "sales-evil-1"), daemon=True),
           threading.Thread(target=impostor, args=(st.key("service", "inventory"), "sales-evil-2"),
                            daemon=True)]
for t in threads:
    t.start()
time.sleep(1.0)
instances = ops.call("busd", "services", {})["body"]["instances"]
fakes = [i for i in instances if i["instance"].startswith("sales-evil")]
c.check(not fakes, f"no impostor is registered as a sales instance: {fakes}")
sim = st.posctl("sim", "--store", STORE, "--registers", "4", "--sales", str(SIM_SALES), "--seed",
                "11", "--deadline-ms", "120000", timeout=300)
stop.set()
for t in threads:
    t.join(5)
c.check(sim.returncode == 0, f"posctl sim: every sale acknowledged (exit {sim.returncode}: "
        f"{sim.stderr.strip()[-300:]})")
c.eq(stolen["requests"], 0, "requests busd routed to the impostors")
c.eq(counters("sales")["sales_committed"], SIM_SALES, "sales committed by the real sales service")
n = busd_counters()
c.check(n.get("refused_not_service", 0) > 0,
        f"a register key's heartbeats refused and counted: refused_not_service = "
        f"{n.get('refused_not_service')}")
c.check(n.get("refused_service_name", 0) > 0,
        f"inventory's key registering as sales refused and counted: refused_service_name = "
        f"{n.get('refused_service_name')}")

# a reply from a key that is not a service's never reaches a client
liar = curve(ctx.socket(zmq.DEALER), reg1)
liar.connect(st.req)
before = busd_counters().get("refused_not_service", 0)
liar.send_multipart([b"BUS2W", b"REP", b"\x00\x80\x00\x00\x29", b"12345678",
                     envelope("reply", "sales-x", {})])
c.check(wait_for(lambda: busd_counters().get("refused_not_service", 0) > before, 3),
        "a reply sent with a register's key is refused and counted")
liar.close()

# --- attack 2: a register uploading under another register's id ---------------------------------
SKU_PRICE = 4990


def sale(reg, seq):
    amount = SKU_PRICE
    return {"sale_id": f"{STORE}-{reg}-{seq:06d}", "store": STORE, "register": reg, "seq": seq,
            "cashier": "李娜", "ts": int(time.time() * 1000), "kind": "sale",
            "lines": [{"sku": "RICE5", "name": "", "category": "", "qty": 1, "unit": "pcs",
                       "unit_price": amount, "gross": amount, "promo_discount": 0,
                       "ticket_discount": 0, "amount": amount, "tax": 412, "tax_rate_bp": 900}],
            "tenders": [{"kind": "card", "amount": amount}], "total": amount, "change": 0,
            "cash_rounding": 0}


SEQ = 900001
r01 = Bus(st, reg1)
r02 = Bus(st, st.key("register", "S1.R02"))
forged = r01.call("sales", "sale.upload", sale("R02", SEQ), timeout=10)
c.check(is_error(forged, "forbidden"),
        f"R01's key uploading R02's sale {SEQ} is refused with forbidden: {forged['body']}")
c.eq(counters("sales").get("refused_other_register"), 1, "sales' refused_other_register")
real = r02.call("sales", "sale.upload", sale("R02", SEQ), timeout=10)
c.check(real["type"] == "reply" and real["body"].get("duplicate") is False,
        f"the real R02 then uploads that sequence and it is committed, not a duplicate: "
        f"{real['body']}")
own = r01.call("sales", "sale.upload", sale("R01", SEQ), timeout=10)
c.check(own["type"] == "reply" and own["body"].get("duplicate") is False,
        f"R01 uploads its own sale: {own['body']}")
park = r01.call("sales", "sale.park", {"store": STORE, "register": "R02", "ticket": {"a": 1}})
c.check(is_error(park, "forbidden"), f"R01 parking a ticket as R02 is refused: {park['body']}")

# --- roles per method ----------------------------------------------------------------------------
bi = Bus(st, st.key("consumer", "bi"))
r = bi.call("sales", "day.current", {"store": STORE})
c.check(r["type"] == "reply", f"a consumer may call a read-only method: {r['body']}")
r = bi.call("sales", "day.close", {"store": STORE})
c.check(is_error(r, "forbidden"), f"a consumer may not close the day: {r['body']}")
r = bi.call("inventory", "stock.receive", {"store": STORE, "sku": "RICE5", "qty": 5,
                                            "supplier_ref": "x", "move_id": "m-bi-1"})
c.check(is_error(r, "forbidden"), f"a consumer may not receive stock: {r['body']}")
r = r01.call("sales", "day.close", {"store": STORE})
c.check(is_error(r, "forbidden"), f"a register may not close the day: {r['body']}")
c.check(counters("sales").get("forbidden", 0) >= 2 and counters("inventory").get("forbidden", 0) >= 1,
        "the refusals are counted by each service ('forbidden')")

# --- attack 3: forged events ----------------------------------------------------------------------
watcher = curve(ctx.socket(zmq.SUB), st.key("consumer", "watch"))
watcher.connect(st.sub)
watcher.setsockopt(zmq.SUBSCRIBE, b"sale.")
watcher.setsockopt(zmq.SUBSCRIBE, b"device.")
pubs = {name: curve(ctx.socket(zmq.PUB), cert) for name, cert in
        (("register", reg1), ("operator", st.key("operator", "mallory")),
         ("inventory", st.key("service", "inventory")))}
for p in pubs.values():
    p.connect(st.pub)
time.sleep(1.0)  # subscriptions reach the publishers
FAKE_ID = "99999999999999-0"
own_src = curve(ctx.socket(zmq.PUB), st.key("service", "inventory"))
own_src.connect(st.pub)
for i in range(20):
    for name, p in pubs.items():
        p.send_multipart([b"sale.completed",
                          envelope("sale.completed", "sales-host-1-abcd",
                                   {"sale_id": f"S1-R09-{i:06d}", "stream_id": FAKE_ID}, i + 1)])
time.sleep(0.5)
for i in range(5):  # another service under its own name, on sales' topic
    own_src.send_multipart([b"sale.completed",
                            envelope("sale.completed", "inventory-host-1-abcd",
                                     {"sale_id": f"S1-R08-{i:06d}", "stream_id": FAKE_ID}, i + 1)])
pubs["register"].send_multipart([b"device.S1.R01.printer.status",
                                 envelope("device.status", "node-S1-R01", {"paper": "ok"})])
pubs["register"].send_multipart([b"device.S1.R02.printer.status",
                                 envelope("device.status", "node-S1-R01", {"paper": "out"})])
genuine = ops.call("sales", "sale.upload", sale("R77", 1), timeout=10)
c.check(genuine["type"] == "reply" and genuine["body"].get("duplicate") is False,
        f"a genuine sale uploaded meanwhile: {genuine['body']}")
got = []
deadline = time.time() + 3
while time.time() < deadline:
    if watcher.poll(100):
        topic, payload = watcher.recv_multipart()[:2]
        got.append((topic.decode(), msgpack.unpackb(payload, raw=False)))
sales_events = [e for t, e in got if t == "sale.completed"]
fakes = [e for e in sales_events if e["body"].get("stream_id") == FAKE_ID]
c.eq(len(fakes), 0, "forged sale.completed events delivered to a consumer")
c.check(len(sales_events) == 1 and sales_events[0]["src"].startswith("sales-") and
        sales_events[0]["body"].get("sale_id") == "S1-R77-000001",
        f"the consumer got exactly the genuine sale.completed, src {[e['src'] for e in sales_events]}")
devices = [t for t, e in got if t.startswith("device.")]
c.check(devices == ["device.S1.R01.printer.status"],
        f"a register publishes its own device topic and only that: {devices}")
n = busd_counters()
c.check(n.get("refused_publish_topic", 0) >= 66,
        f"forged events counted: refused_publish_topic {n.get('refused_publish_topic')} (>= 66: "
        f"20 from a register, 20 from an operator, 25 from inventory on sales' topic, 1 device)")
# a service on its own topic, but naming another service as src
src_before = n.get("refused_publish_src", 0)
watcher.setsockopt(zmq.SUBSCRIBE, b"stock.")  # publishers send only what somebody wants
time.sleep(0.5)
own_src.send_multipart([b"stock.low", envelope("stock.low", "sales-host-1-abcd", {"sku": "X"})])
c.check(wait_for(lambda: busd_counters().get("refused_publish_src", 0) > src_before, 3),
        "inventory's event on its own topic with src naming sales is refused (refused_publish_src)")

# --- attack 4: revocation on an open connection ---------------------------------------------------
r02_pub = curve(ctx.socket(zmq.PUB), st.key("register", "S1.R02"))
r02_pub.connect(st.pub)
time.sleep(0.5)
c.check(r02.call("sales", "day.current", {"store": STORE})["type"] == "reply",
        "R02 is served before its revocation")
r02_sub = curve(ctx.socket(zmq.SUB), st.key("register", "S1.R02"))
r02_sub.connect(st.sub)
r02_sub.setsockopt(zmq.SUBSCRIBE, b"")
time.sleep(0.5)
st.posctl("node", "revoke", STORE, "R02", check=True)
t0 = time.time()
refused = wait_for(lambda: is_error(r02.call("sales", "day.current", {"store": STORE}), "forbidden"),
                   5, step=0.05)
took = time.time() - t0
c.check(refused and took <= 2.0,
        f"a revoked register on its open connection is refused within 2 s (took {took:.2f} s)")
while watcher.poll(50):
    watcher.recv_multipart()
r02_pub.send_multipart([b"device.S1.R02.drawer.opened", envelope("device.event", "n", {})])
c.check(not watcher.poll(1000), "the revoked register's events are dropped")
c.check(busd_counters().get("refused_unknown_key", 0) > 0, "refused_unknown_key counts it")
while r02_sub.poll(50):
    r02_sub.recv_multipart()
time.sleep(1.0)  # the other subscribers reconnect after busd dropped every subscriber connection
after = ops.call("sales", "sale.upload", sale("R77", 2), timeout=10)
c.check(after["type"] == "reply", "a sale uploaded after the revocation")
c.check(not r02_sub.poll(1500), "the revoked register's open subscription receives nothing more")
c.check(wait_for(lambda: watcher.poll(100) and
                 watcher.recv_multipart()[0] == b"sale.completed", 5),
        "an enrolled consumer still receives that sale's event (it reconnected by itself)")
st.posctl("node", "enroll", STORE, "R02", check=True)
t0 = time.time()
back = wait_for(lambda: r02.call("sales", "day.current", {"store": STORE})["type"] == "reply", 5,
                step=0.05)
c.check(back and time.time() - t0 <= 2.0,
        f"re-enrolled, the register works again on the same connection "
        f"({time.time() - t0:.2f} s)")

# a revoked service key: its instances are dropped at once
st.posctl("keys", "revoke", "service", "inventory", check=True)
gone = wait_for(lambda: not [i for i in ops.call("busd", "services", {})["body"]["instances"]
                             if i["service"] == "inventory"], 3, step=0.05)
c.check(gone, "revoking the inventory service's key drops its instance within 2 s")
st.kill("inventory")  # it can never re-register with that key; stop it here

# --- bad files in the clients directory: refused, never a crash ----------------------------------
clients = os.path.join(st.keys, "clients")
with open(os.path.join(clients, "consumer-bi.cert"), encoding="utf-8") as f:
    dup = f.read()
with open(os.path.join(clients, "copy-of-cli.cert"), "w", encoding="utf-8") as f:
    f.write(dup)  # the same key enrolled twice
with open(os.path.join(clients, "garbage.cert"), "w", encoding="utf-8") as f:
    f.write("metadata\n    role = \"operator\"\ncurve\n    public-key = \"short\"\n")
time.sleep(1.5)
c.check(st.posctl("ping").returncode == 0 and st.procs["busd"].poll() is None,
        "a duplicated and a malformed certificate in clients/ leave busd running and serving")
r = Bus(st, st.key("consumer", "bi")).call("busd", "whoami", {}, allow_timeout=True)
c.check(r is None or is_error(r, "forbidden"),
        "a key enrolled in two files is refused (which file to believe is a guess)")

# --- attack 5: busd with CURVE and no clients directory --------------------------------------------
def lone_busd(*extra):
    ports = [f"tcp://127.0.0.1:{free_port()}" for _ in range(3)]
    return subprocess.Popen([f"{BIN}/busd", "--pub-bind", ports[0], "--sub-bind", ports[1],
                             "--req-bind", ports[2], "--cert",
                             os.path.join(st.keys, "busd.cert_secret"), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


p = lone_busd()
try:
    out, _ = p.communicate(timeout=10)
except subprocess.TimeoutExpired:
    p.kill()
    out, _ = p.communicate()
c.check(p.returncode not in (0, None) and "--clients-dir" in out,
        f"busd refuses to start with CURVE and no clients directory (exit {p.returncode}): "
        f"{out.strip()[-200:]}")
p = lone_busd("--unsafe-any-client-key")
time.sleep(1.0)
alive = p.poll() is None
p.terminate()
out, _ = p.communicate(timeout=10)
c.check(alive and "unsafe" in out,
        f"with --unsafe-any-client-key it starts and warns: {out.strip()[:200]}")

st.stop_all(c)
c.finish()
