#!/usr/bin/python3
"""bench_payments - the payments service's own time for a WeChat payment code (docs/payments.md),
without the provider's: payments against the WeChat Pay API v3 emulator, every payment succeeding
at the first call (the emulator's `success` scenario).

Starts redis-server, busd, inventory (to add the store) and payments from a build, and the
emulator (devices/sim/wechatpay.py) in a process of its own, wrapped so that it times itself:
for every request, the wall time from the moment it takes the connection (before the TLS
handshake, for a connection's first request) or reads the request line (a reused connection) to
the last byte of the answer written, summed per out_trade_no. A register client (its own key)
then pays codes one at a time: `payment.pay`, then `payment.get` every POLL_S until final.
Per intent:
  e2e       = payment.pay sent -> final seen by the register (its clock, poll granularity incl.)
  emulator  = the emulator's own wall time for that intent's requests (handshake, verify, sign)
  overhead  = e2e - emulator: the bus, the request, Redis, the worker, signing, TLS client side
  server    = updated_ms - created_ms - emulator (the intent's own times, 1 ms resolution)
Then PROCESSES register processes pay codes back to back for SECONDS: intents final per second.
Prints `name: value` lines:
  payments.codepay_p50_ms / _p99_ms          overhead (above), the one-at-a-time run
  payments.codepay_e2e_p50_ms / _p99_ms      e2e, the emulator included
  payments.codepay_emulator_p50_ms / _p99_ms the emulator's own time per intent
  payments.codepay_server_p50_ms / _p99_ms   created -> final inside payments, minus the emulator
  payments.intents_per_s                     intents final per second, PROCESSES at once
  <process>.codepay_cpu_ms_per_intent        CPU of payments, the emulator, busd, Redis then
  payments.codepay_charges_exact             1: one charge per intent, each succeeded
usage: bench_payments.py BUILD_DIR [INTENTS [SECONDS [PROCESSES]]]"""
import json
import multiprocessing
import os
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SIM = os.path.join(HERE, "..", "devices", "sim")
MCHID, APPID, SERIAL = "1900000001", "wx0000000000000001", "3775B6A45ACD588826D15E583A95F5DD"
STORE = "B001"
CODE = "134567890123456789"
POLL_S = 0.0005        # one at a time: the register's poll (granularity of e2e)
POLL_BULK_S = 0.005    # several at once: polls cost payments and busd CPU, so fewer


def emulator_main(argv):
    """The emulator, timing itself (this process only: devices/sim is not changed). argv:
    DIR MERCHANT_PUB APIV3_FILE CONTROL. Adds the control command `timings` (per
    out_trade_no: seconds, requests) and `timings_clear`."""
    sys.path.insert(0, SIM)
    import signal
    import wechatpay
    d, pub, apiv3, control = argv
    lock, timings, local = threading.Lock(), {}, threading.local()
    handler = wechatpay._Handler
    o_setup, o_parse, o_deliver = handler.setup, handler.parse_request, handler._deliver

    def setup(self):
        self._t_conn = time.perf_counter()  # before the TLS handshake (done in setup)
        # The emulator writes an answer's headers and body in two sends; with Nagle on, the
        # body waits for the client's delayed ACK (40 ms on Linux), which no real provider
        # costs and no client can avoid. Off here, so the figures are payments', not that.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        o_setup(self)

    def parse_request(self):  # the request line has just been read
        t = getattr(self, "_t_conn", None)
        self._t_req = t if t is not None else time.perf_counter()
        self._t_conn = None
        return o_parse(self)

    def deliver(self, reply):
        o_deliver(self, reply)
        dt = time.perf_counter() - self._t_req
        otn = getattr(local, "otn", None)
        local.otn = None
        if otn:
            with lock:
                s, n = timings.get(otn, (0.0, 0))
                timings[otn] = (s + dt, n + 1)

    handler.setup, handler.parse_request, handler._deliver = setup, parse_request, deliver

    class Timed(wechatpay.WechatPay):
        def handle(self, method, path, headers, body):
            reply = super().handle(method, path, headers, body)
            otn = None
            if path.startswith("/v3/pay/transactions/codepay"):
                try:
                    otn = json.loads(body).get("out_trade_no")
                except (ValueError, AttributeError):
                    pass
            elif path.startswith("/v3/pay/transactions/out-trade-no/"):
                otn = path.split("/")[5].split("?")[0]
            local.otn = otn
            return reply

        def _cmd_timings(self, req):
            with lock:
                return {"ok": True, "timings": {k: list(v) for k, v in timings.items()}}

        def _cmd_timings_clear(self, req):
            with lock:
                timings.clear()
            return {"ok": True}

    emu = Timed(d, MCHID, APPID, SERIAL, pub, apiv3, control=control).start()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *a: threading.Thread(target=emu.stop, daemon=True).start())
    print(json.dumps({"ready": True, "port": emu.port}), flush=True)
    while not emu.stopped.wait(0.5):
        pass
    return 0


if len(sys.argv) > 1 and sys.argv[1] == "--emulator":
    sys.exit(emulator_main(sys.argv[2:]))

sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
os.environ.setdefault("POSBUS_SRC", os.path.join(HERE, ".."))
os.environ["POSBUS_BIN"] = os.path.abspath(os.path.join(sys.argv[1] if len(sys.argv) > 1
                                                        else "build", "bin"))
from harness import Bus, Stack  # noqa: E402

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

INTENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 300
SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 5.0
PROCS = int(sys.argv[4]) if len(sys.argv) > 4 else 4


class Endpoints:
    """What Bus needs of a Stack, without the Stack (a child process must not own it)."""

    def __init__(self, req, server_cert):
        self.req, self._server_cert = req, server_cert

    def server_cert(self):
        return self._server_cert


def control(path, cmd):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    f = s.makefile("rw")
    f.write(json.dumps(cmd) + "\n")
    f.flush()
    answer = json.loads(f.readline())
    s.close()
    return answer


def pay_one(bus, reg, n, amount, poll=POLL_S):
    """Pay one code; (e2e seconds, final body)."""
    sale = f"{STORE}-{reg}-{n:08d}"
    t = time.perf_counter()
    r = bus.call("payments", "payment.pay", {"sale_id": sale, "attempt": 1, "amount": amount,
                                             "code": CODE}, timeout=30)
    if r["type"] != "reply":
        sys.exit(f"bench_payments: payment.pay refused: {r['body']}")
    body = r["body"]
    while not body.get("final"):
        time.sleep(poll)
        g = bus.call("payments", "payment.get", {"intent": body["intent"]}, timeout=30)
        if g["type"] != "reply":
            sys.exit(f"bench_payments: payment.get refused: {g['body']}")
        body = g["body"]
    return time.perf_counter() - t, body


def register(index, req, server_cert, cert, start_at, out):
    bus = Bus(Endpoints(req, server_cert), cert=cert)
    reg = f"R{index + 2:02d}"
    done, bad, n = 0, 0, 0
    while time.time() < start_at:
        time.sleep(0.001)
    deadline = start_at + SECONDS
    while time.time() < deadline:
        n += 1
        _, body = pay_one(bus, reg, n, 100 + n % 50, POLL_BULK_S)
        done += 1
        bad += body.get("state") != "succeeded"
    out.put((done, bad, time.time() - start_at))


def cpu_s(pid):
    """A process's user + system CPU seconds so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p))] if v else 0.0


st = Stack("bench-payments")
# the merchant's key pair and API v3 key (files 0600 in the stack's directory)
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
key_file = st._private_file("merchant.key", key.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption()).decode())
pub_file = os.path.join(st.tmp, "merchant.pub")
with open(pub_file, "wb") as f:
    f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo))
apiv3_file = st._private_file("apiv3.key", "0123456789abcdef0123456789ABCDEF")
wdir = os.path.join(st.tmp, "wechat")
ctl = os.path.join(st.tmp, "wechat.ctl")
emu = st.spawn("wechatpay", ["/usr/bin/python3", os.path.abspath(__file__), "--emulator", wdir,
                             pub_file, apiv3_file, ctl], stdout=__import__("subprocess").PIPE)
ready = json.loads(emu.stdout.readline() or "{}")
if not ready.get("ready"):
    sys.exit("bench_payments: the emulator did not start")
st.start_redis()
st.start_busd()
st.start_service("inventory", "inventory", "--log-level", "warn")
platform = (f"PUB_KEY_ID_0000000000000001={wdir}/platform-1.pem,"
            f"5157F09EFDC096DE15EBE81A47057A7232F1B8E1={wdir}/platform-2.pem")
st.start_service("payments", "payments", "--log-level", "warn",
                 "--wechat-base-url", f"https://127.0.0.1:{ready['port']}",
                 "--wechat-mchid", MCHID, "--wechat-appid", APPID, "--wechat-serial", SERIAL,
                 "--wechat-key-file", key_file, "--wechat-platform-keys", platform,
                 "--wechat-apiv3-key-file", apiv3_file,
                 "--wechat-ca-file", os.path.join(wdir, "ca.pem"))
if not st.wait_healthy(["inventory", "payments"]):
    sys.exit("bench_payments: payments did not come up")
st.posctl("store", "add", STORE, "Bench store", check=True)

# one at a time: latency
reg = Bus(st, cert=st.key("register", f"{STORE}.R01"))
for n in range(1, 21):  # warm-up: connections, caches, the emulator's first handshakes
    pay_one(reg, "R01", 900000 + n, 100)
control(ctl, {"cmd": "timings_clear"})
results = [pay_one(reg, "R01", n, 100 + n % 50) for n in range(1, INTENTS + 1)]
timings = control(ctl, {"cmd": "timings"})["timings"]
e2e, emu_s, over, server = [], [], [], []
for t, body in results:
    if body.get("state") != "succeeded":
        sys.exit(f"bench_payments: {body['intent']} ended {body.get('state')}: {body.get('reason')}")
    spent = timings.get(body["intent"], [0.0, 0])[0]
    e2e.append(t * 1000)
    emu_s.append(spent * 1000)
    over.append((t - spent) * 1000)
    server.append(body["updated_ms"] - body["created_ms"] - spent * 1000)

# several registers at once: throughput
certs = [st.key("register", f"{STORE}.R{i + 2:02d}") for i in range(PROCS)]
mp = multiprocessing.get_context("fork")
out = mp.Queue()
start_at = time.time() + 1.0
procs = [mp.Process(target=register, args=(i, st.req, st.server_cert(), certs[i], start_at, out))
         for i in range(PROCS)]
watched = {"payments": st.procs["payments"].pid, "wechatpay": emu.pid,
           "busd": st.procs["busd"].pid, "redis": st.procs["redis"].pid}
cpu0 = {k: cpu_s(v) for k, v in watched.items()}
for p in procs:
    p.start()
runs = [out.get(timeout=SECONDS + 120) for _ in procs]
for p in procs:
    p.join()
cpu1 = {k: cpu_s(v) for k, v in watched.items()}
done = sum(r[0] for r in runs)
bad = sum(r[1] for r in runs)
wall = max(r[2] for r in runs)
status = control(ctl, {"cmd": "status"})
expected = 20 + INTENTS + done
exact = status["charges"] == expected and status["codepay_calls"] == expected and bad == 0

print(f"payments.codepay_p50_ms: {pct(over, 0.5):.2f}")
print(f"payments.codepay_p99_ms: {pct(over, 0.99):.2f}")
print(f"payments.codepay_e2e_p50_ms: {pct(e2e, 0.5):.2f}")
print(f"payments.codepay_e2e_p99_ms: {pct(e2e, 0.99):.2f}")
print(f"payments.codepay_emulator_p50_ms: {pct(emu_s, 0.5):.2f}")
print(f"payments.codepay_emulator_p99_ms: {pct(emu_s, 0.99):.2f}")
print(f"payments.codepay_server_p50_ms: {pct(server, 0.5):.2f}")
print(f"payments.codepay_server_p99_ms: {pct(server, 0.99):.2f}")
print(f"payments.codepay_intents: {INTENTS}")
print(f"payments.intents_per_s: {done / wall:.0f}")
print(f"payments.intents_per_s_processes: {PROCS}")
for k in watched:
    print(f"{k}.codepay_cpu_ms_per_intent: {(cpu1[k] - cpu0[k]) * 1000 / max(done, 1):.2f}")
print(f"payments.codepay_charges_exact: {1 if exact else 0}")
if not exact:
    sys.exit(f"bench_payments: {status['charges']} charges and {status['codepay_calls']} codepay "
             f"calls for {expected} intents, {bad} not succeeded")
