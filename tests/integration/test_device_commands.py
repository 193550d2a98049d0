#!/usr/bin/python3
"""test_device_commands - an operator's command reaches a register's device and its result comes back.

An operator's device.command creates a pending command and publishes command.S1.R01 once; the
same key again is a poll (nothing new published), the same key with other content a conflict.
The register learns from its heartbeat that a command waits, reads it with device.pending (its
own only) and answers it with device.result (once; another register's answer is not_found and
changes nothing); the operator's poll then answers done with the result. Roles are enforced,
bad bodies refused and counted. posctl device command waits for a simulated register's answer
(exit 0, the result printed) or gives up (exit 1, "still pending")."""
import json
import threading
import time

import msgpack
import zmq

from harness import Bus, Checks, Stack, load_cert, wait_for

STORE = "S1"
c = Checks("test_device_commands")
st = Stack("devcmd")
st.start_redis()
st.start_busd()
st.start_service("sales", "sales")
st.start_service("inventory", "inventory")  # posctl store add registers a store there
st.start_service("devices", "devices")
c.check(st.wait_healthy(["sales", "inventory", "devices"]), "sales, inventory and devices healthy")
st.posctl("store", "add", STORE, "Commands store", check=True)
ops = Bus(st)
r01 = Bus(st, st.key("register", "S1.R01"))
r02 = Bus(st, st.key("register", "S1.R02"))
redis = st.redis()


def counters():
    return ops.call("devices", "stats", {})["body"]["counters"]


def is_error(reply, code):
    return reply is not None and reply["type"] == "error" and reply["body"].get("code") == code


def body_of(reply):
    return reply["body"] if reply else None


def watcher(prefix):
    """A consumer's SUB socket on prefix, after the subscription has reached the publishers."""
    server = load_cert(st.server_cert())
    me = load_cert(st.key("consumer", "watch"))
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.curve_publickey, sock.curve_secretkey = me["public"], me["secret"]
    sock.curve_serverkey = server["public"]
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(st.sub)
    sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
    time.sleep(1.0)
    return sock


def events(sock, wait):
    got, deadline = [], time.time() + wait
    while time.time() < deadline:
        if sock.poll(100):
            topic, payload = sock.recv_multipart()[:2]
            got.append((topic.decode(), msgpack.unpackb(payload, raw=False)))
    return got


def heartbeat(bus):
    r = bus.call("devices", "node.heartbeat", {"last_seq": 0, "unsynced": 0, "config_version": 0})
    c.check(r["type"] == "reply", f"heartbeat answered: {r['body']}")
    return r["body"].get("commands")


def command_hash(key):
    return redis.call("HGETALL", f"devcmd:{{{STORE}}}:{key}")


watch = watcher("command.")

# --- an operator's command: pending, stored, published once -------------------------------------
ARGS = {"text": "欢迎光临 welcome", "line": 1}
CMD = {"store": STORE, "register": "R01", "device": "display", "command": "display",
       "args": ARGS, "key": "op-1:display.a"}
r = ops.call("devices", "device.command", CMD)
c.check(r["type"] == "reply" and r["body"] == {"key": "op-1:display.a", "state": "pending"},
        f"device.command answers pending: {body_of(r)}")
h = command_hash("op-1:display.a")
fields = dict(zip(h[0::2], h[1::2])) if isinstance(h, list) else {}
c.check(fields.get(b"state") == b"pending" and fields.get(b"register") == b"R01" and
        fields.get(b"device") == b"display" and fields.get(b"command") == b"display" and
        msgpack.unpackb(fields.get(b"args", b"\xc0"), raw=False) == ARGS and
        fields.get(b"caller", b"").startswith(b"operator ") and b"created_ms" in fields,
        f"devcmd:{{S1}}:op-1:display.a holds the pending command: {fields}")
c.eq(redis.call("TTL", f"devcmd:{{{STORE}}}:op-1:display.a"), -1, "a pending command has no TTL")
c.eq(redis.call("ZRANGE", f"devcmds:{{{STORE}}}:R01", 0, -1), [b"op-1:display.a"],
     "the key is in R01's pending set")
got = events(watch, 1.5)
want = {"store": STORE, "register": "R01", "key": "op-1:display.a", "device": "display",
        "command": "display", "args": ARGS}
c.check(len(got) == 1 and got[0][0] == "command.S1.R01" and
        got[0][1].get("type") == "device.command" and got[0][1].get("body") == want and
        got[0][1].get("src", "").startswith("devices"),
        f"one event command.S1.R01 with the command: {got}")

# --- the same again: a poll; the same key with other content: conflict ---------------------------
r = ops.call("devices", "device.command", CMD)
c.check(r["type"] == "reply" and r["body"] == {"key": "op-1:display.a", "state": "pending"},
        f"the same request again answers pending: {body_of(r)}")
for what, other in (("args", dict(CMD, args={"text": "other"})),
                    ("device", dict(CMD, device="printer")),
                    ("command", dict(CMD, command="print")),
                    ("register", dict(CMD, register="R02"))):
    r = ops.call("devices", "device.command", other)
    c.check(is_error(r, "conflict"), f"the same key with another {what}: conflict ({body_of(r)})")
c.eq(events(watch, 1.0), [], "events after the poll and the conflicts")
c.eq(redis.call("ZCARD", f"devcmds:{{{STORE}}}:R02"), 0, "nothing pending for R02")
k = counters()
c.check(k.get("commands_created") == 1 and k.get("commands_polled") == 1 and
        k.get("commands_conflict") == 4,
        f"counted: created {k.get('commands_created')}, polled {k.get('commands_polled')}, "
        f"conflict {k.get('commands_conflict')}")

# --- the register learns of it and reads it; another register sees nothing ----------------------
c.eq(heartbeat(r01), 1, "R01's heartbeat: commands")
c.eq(heartbeat(r02), 0, "R02's heartbeat: commands")
r = r01.call("devices", "device.pending", {})
c.check(r["type"] == "reply" and r["body"].get("commands") ==
        [{"key": "op-1:display.a", "device": "display", "command": "display", "args": ARGS}],
        f"device.pending as R01 lists the command: {body_of(r)}")
r = r02.call("devices", "device.pending", {})
c.check(r["type"] == "reply" and r["body"].get("commands") == [],
        f"device.pending as R02 lists nothing: {body_of(r)}")
r = r02.call("devices", "device.pending", {"store": STORE, "register": "R01"})
c.check(is_error(r, "forbidden"), f"R02 asking for R01's commands: forbidden ({body_of(r)})")

# --- results: another register's is not_found; the own one completes it, once -------------------
before = command_hash("op-1:display.a")
r = r02.call("devices", "device.result", {"key": "op-1:display.a", "ok": False,
                                          "error": "forged"})
c.check(is_error(r, "not_found"), f"device.result from R02 for R01's command: {body_of(r)}")
c.eq(command_hash("op-1:display.a"), before, "R01's command after R02's answer")
r = r01.call("devices", "device.result", {"key": "no-such-key", "ok": True})
c.check(is_error(r, "not_found"), f"device.result for an unknown key: {body_of(r)}")
RESULT = {"shown": True, "chars": 14}
r = r01.call("devices", "device.result", {"key": "op-1:display.a", "ok": True, "result": RESULT})
c.check(r["type"] == "reply" and r["body"] == {"ok": True}, f"R01's result taken: {body_of(r)}")
ttl = redis.call("TTL", f"devcmd:{{{STORE}}}:op-1:display.a")
c.check(7 * 86400 - 60 <= ttl <= 7 * 86400, f"a done command is kept 7 days: TTL {ttl}")
c.eq(redis.call("ZCARD", f"devcmds:{{{STORE}}}:R01"), 0, "R01's pending set once answered")
done = command_hash("op-1:display.a")
r = r01.call("devices", "device.result", {"key": "op-1:display.a", "ok": False,
                                          "error": "paper out"})
c.check(r["type"] == "reply" and r["body"] == {"ok": True, "unchanged": True},
        f"a second result changes nothing: {body_of(r)}")
c.eq(command_hash("op-1:display.a"), done, "the command after the second result")
r = ops.call("devices", "device.command", CMD)
c.check(r["type"] == "reply" and r["body"] == {"key": "op-1:display.a", "state": "done",
                                               "ok": True, "result": RESULT, "error": ""},
        f"the operator's poll answers done with the result: {body_of(r)}")
c.eq(heartbeat(r01), 0, "R01's heartbeat after the answer: commands")
c.eq(events(watch, 0.5), [], "events after the results and the poll")

# a failed command keeps its error
r = ops.call("devices", "device.command", dict(CMD, key="op-2", device="printer",
                                               command="print", args={"doc": "x"}))
r = r01.call("devices", "device.result", {"key": "op-2", "ok": False, "error": "缺纸 paper out"})
r = ops.call("devices", "device.command", dict(CMD, key="op-2", device="printer",
                                               command="print", args={"doc": "x"}))
c.check(r["type"] == "reply" and r["body"] == {"key": "op-2", "state": "done", "ok": False,
                                               "result": {}, "error": "缺纸 paper out"},
        f"a failed command answers done, not ok, with its error: {body_of(r)}")
events(watch, 0.5)  # op-2's event

# --- roles ----------------------------------------------------------------------------------------
r = r01.call("devices", "device.command", dict(CMD, key="from-register"))
c.check(is_error(r, "forbidden"), f"a register calling device.command: {body_of(r)}")
r = ops.call("devices", "device.pending", {"store": STORE, "register": "R01"})
c.check(is_error(r, "forbidden"), f"an operator calling device.pending: {body_of(r)}")
r = ops.call("devices", "device.result", {"key": "op-1:display.a", "ok": True,
                                          "store": STORE, "register": "R01"})
c.check(is_error(r, "forbidden"), f"an operator calling device.result: {body_of(r)}")
r = ops.call("devices", "device.command", dict(CMD, store="S9", key="s9"))
c.check(is_error(r, "unknown_store"), f"a store that is not registered: {body_of(r)}")

# --- bad bodies: refused, counted, nothing stored --------------------------------------------------
bad_before = counters().get("bad_requests", 0)
BAD = [
    (ops, "device.command", dict(CMD, key="b1", device="dis play")),
    (ops, "device.command", dict(CMD, key="b2", device="d" * 33)),
    (ops, "device.command", dict(CMD, key="k" * 65)),
    (ops, "device.command", dict(CMD, key="b/4")),
    (ops, "device.command", dict(CMD, key="b5", command="Print")),
    (ops, "device.command", dict(CMD, key="b6", args=["text", "hello"])),
    (ops, "device.command", dict(CMD, key="b7", args="text=hello")),
    (ops, "device.command", dict(CMD, key="b8", args={"doc": "x" * (64 * 1024)})),
    (ops, "device.command", {k: v for k, v in CMD.items() if k != "key"}),
    (ops, "device.command", dict(CMD, key="b10", register="R-1")),
    (r01, "device.pending", {"count": 0}),
    (r01, "device.pending", {"count": 101}),
    (r01, "device.result", {"key": "op-1:display.a"}),
    (r01, "device.result", {"key": "op-1:display.a", "ok": "yes"}),
    (r01, "device.result", {"key": "op-1:display.a", "ok": True, "result": [1]}),
    (r01, "device.result", {"key": "op-1:display.a", "ok": False, "error": "e" * 201}),
    (r01, "device.result", {"key": "op-1:display.a", "ok": True,
                            "result": {"blob": "x" * (64 * 1024)}}),
]
for bus, method, body in BAD:
    r = bus.call("devices", method, body)
    c.check(is_error(r, "bad_request"), f"{method} {str(body)[:80]}: bad_request "
            f"({body_of(r)})")
c.eq(counters().get("bad_requests", 0) - bad_before, len(BAD), "bad requests counted")
keys = sorted(redis.call("KEYS", "devcmd:*"))
c.eq(keys, [b"devcmd:{S1}:op-1:display.a", b"devcmd:{S1}:op-2"], "commands stored after the bad ones")
r = ops.call("devices", "device.command", dict(CMD, key="big", args={"doc": "x" * 60000}))
c.check(r["type"] == "reply" and r["body"].get("state") == "pending",
        f"args of 60000 bytes are taken: {body_of(r)}")
events(watch, 0.5)  # big's event
r = r01.call("devices", "device.result", {"key": "big", "ok": True})
c.check(r["type"] == "reply", f"and answered: {body_of(r)}")

# --- device.pending: oldest first, count, more; a register not enrolled yet is accepted ----------
for n in range(3):
    r = ops.call("devices", "device.command", dict(CMD, register="R03", key=f"r3-{n}",
                                                   args={"n": n}))
    c.check(r["type"] == "reply" and r["body"].get("state") == "pending",
            f"a command for R03 (no node row yet): {body_of(r)}")
    time.sleep(0.01)  # distinct created_ms
events(watch, 0.5)  # R03's events
r03 = Bus(st, st.key("register", "S1.R03"))
r = r03.call("devices", "device.pending", {"count": 2})
c.check(r["type"] == "reply" and [x["key"] for x in r["body"].get("commands", [])] ==
        ["r3-0", "r3-1"] and r["body"].get("more") is True,
        f"device.pending count 2: the two oldest, more: {body_of(r)}")
r = r03.call("devices", "device.result", {"key": "r3-0", "ok": True})
r = r03.call("devices", "device.pending", {})
c.check(r["type"] == "reply" and [x["key"] for x in r["body"].get("commands", [])] ==
        ["r3-1", "r3-2"] and r["body"].get("more") is False,
        f"device.pending after r3-0 was answered: {body_of(r)}")

# --- Redis down: unavailable, never a crash -------------------------------------------------------
st.kill("redis")
for bus, method, body in ((ops, "device.command", dict(CMD, key="down")),
                          (r03, "device.pending", {}),
                          (r03, "device.result", {"key": "r3-1", "ok": True})):
    r = bus.call("devices", method, body, timeout=10)
    c.check(is_error(r, "unavailable") and r["body"].get("retry_ms", 0) > 0,
            f"{method} while Redis is down: unavailable with a retry hint ({body_of(r)})")
st.start_redis()
redis = st.redis()
c.check(wait_for(lambda: ops.call("devices", "device.command", dict(CMD, key="up"),
                                  timeout=10)["type"] == "reply", 15),
        "device.command answered again once Redis is back")
events(watch, 0.5)  # up's event

# --- posctl device command, with a simulated register and with nobody answering ------------------


def simulated_register(stop):
    """R01's node: answers each command.S1.R01 event with device.result {printed: <text>}."""
    node = Bus(st, st.key("register", "S1.R01"))
    sub = watcher("command.S1.R01")
    ready.set()
    while not stop.is_set():
        if sub.poll(100):
            topic, payload = sub.recv_multipart()[:2]
            cmd = msgpack.unpackb(payload, raw=False)["body"]
            answered.append(cmd)
            node.call("devices", "device.result",
                      {"key": cmd["key"], "ok": True,
                       "result": {"printed": cmd["args"].get("text", "")}})
    sub.close()


ready, stop, answered = threading.Event(), threading.Event(), []
thread = threading.Thread(target=simulated_register, args=(stop,), daemon=True)
thread.start()
c.check(ready.wait(10), "the simulated register is listening")
p = st.posctl("device", "command", "--store", STORE, "--register", "R01", "--device", "printer",
              "--command", "print", "text=hello", "--format", "json", "--wait-ms", "5000")
try:
    out = json.loads(p.stdout.strip().splitlines()[-1])
except (ValueError, IndexError):
    out = {}
c.check(p.returncode == 0 and out.get("state") == "done" and out.get("ok") is True and
        out.get("result") == {"printed": "hello"},
        f"posctl device command exits 0 with the register's result (exit {p.returncode}, "
        f"stdout {p.stdout!r}, stderr {p.stderr!r})")
c.check(len(answered) == 1 and answered[0].get("args") == {"text": "hello"} and
        answered[0].get("device") == "printer" and answered[0].get("command") == "print",
        f"the register got the command once, with args {{text: hello}}: {answered}")
key = answered[0]["key"] if answered else "?"
c.check(f"command key {key}" in p.stderr, f"the random key is printed: {p.stderr!r}")
p = st.posctl("device", "command", "--store", STORE, "--register", "R01", "--device", "printer",
              "--command", "print", "text=hello", "--key", key, "--wait-ms", "0")
c.check(p.returncode == 0 and "hello" in p.stdout and len(answered) == 1,
        f"polling again with --key answers done at once, nothing sent again (exit "
        f"{p.returncode}, {p.stdout!r}, answered {len(answered)})")
stop.set()
thread.join(5)

t0 = time.time()
p = st.posctl("device", "command", "--store", STORE, "--register", "R02", "--device", "drawer",
              "--command", "drawer", "--key", "nobody-home", "--wait-ms", "1000")
took = time.time() - t0
c.check(p.returncode == 1 and "still pending" in p.stderr and "--key nobody-home" in p.stderr,
        f"nobody answering: exit 1 and still pending (exit {p.returncode}, {p.stderr!r})")
c.check(0.9 <= took < 10, f"it waited --wait-ms 1000 (took {took:.1f} s)")
c.eq(heartbeat(r02), 1, "R02's heartbeat then: commands")
p = st.posctl("device", "command", "--store", STORE, "--register", "R01", "--device", "drawer",
              "--command", "drawer", "--key", "nobody-home", "--wait-ms", "0")
c.check(p.returncode == 1 and "conflict" in (p.stderr + p.stdout),
        f"the same key for another register is refused (exit {p.returncode}, {p.stderr!r})")
p = st.posctl("device", "command", "--store", STORE, "--register", "R01", "--device", "drawer",
              "--command", "drawer", "novalue")
c.eq(p.returncode, 2, "posctl device command with an argument that is not NAME=VALUE: exit")

c.check(st.wait_healthy(["devices"]), "devices still healthy")
st.stop_all(c)
c.finish()
