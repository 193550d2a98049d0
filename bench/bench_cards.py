#!/usr/bin/python3
"""bench_cards - stored-value card deductions on one hot card (payments, docs/payments.md).

Starts redis-server, busd and payments (no provider) from a build, creates one card, tops it up,
then runs register processes (each its own key and connection, several registers) that send
card.pay one after the other, as fast as they are answered, all on that one card: the worst
case, since every deduction of one card is one script on one hash tag, in a row. Checks that
the balance is the top-up minus exactly what was taken. Prints `name: value` lines:
  payments.deductions_per_s      deductions answered ok per second of wall time
  payments.deduction_p99_ms      request -> answer (worst process's p99)
usage: bench_cards.py BUILD_DIR [SECONDS [PROCESSES]]"""
import multiprocessing
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
os.environ.setdefault("POSBUS_SRC", os.path.join(HERE, ".."))
os.environ["POSBUS_BIN"] = os.path.abspath(os.path.join(sys.argv[1] if len(sys.argv) > 1
                                                        else "build", "bin"))
from harness import Bus, Stack  # noqa: E402

SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
PROCS = int(sys.argv[3]) if len(sys.argv) > 3 else 4
STORE, CARD, TOPUP = "B001", "HOT1", 10 ** 11


class Endpoints:
    """What Bus needs of a Stack, without the Stack (a child process must not own it)."""

    def __init__(self, req, server_cert):
        self.req, self._server_cert = req, server_cert

    def server_cert(self):
        return self._server_cert


def register(index, req, server_cert, cert, start_at, out):
    bus = Bus(Endpoints(req, server_cert), cert=cert)
    reg = f"R{index + 1:02d}"
    ok, taken, lat = 0, 0, []
    while time.time() < start_at:
        time.sleep(0.001)
    deadline, n = start_at + SECONDS, 0
    while time.time() < deadline:
        n += 1
        t = time.perf_counter()
        r = bus.call("payments", "card.pay", {"card": CARD, "amount": 1 + n % 7,
                                              "sale_id": f"{STORE}-{reg}-{n:08d}",
                                              "attempt": 1}, timeout=20)
        lat.append(time.perf_counter() - t)
        if r["type"] == "reply":
            ok += 1
            taken += 1 + n % 7
    lat.sort()
    out.put((ok, taken, lat[int(len(lat) * 0.99)] if lat else 0.0))


st = Stack("bench-cards")
st.start_redis()
st.start_busd()
st.start_service("payments", "payments", "--log-level", "warn")
if not st.wait_healthy(["payments"]):
    sys.exit("bench_cards: payments did not come up")
op = Bus(st)
op.call("payments", "card.create", {"card": CARD, "holder": "bench"})
r = op.call("payments", "card.topup", {"card": CARD, "amount": TOPUP, "op_id": "bench-1"})
if r["type"] != "reply":
    sys.exit(f"bench_cards: top-up refused: {r['body']}")
certs = [st.key("register", f"{STORE}.R{i + 1:02d}") for i in range(PROCS)]
out = multiprocessing.get_context("fork").Queue()
start_at = time.time() + 1.0
procs = [multiprocessing.get_context("fork").Process(
    target=register, args=(i, st.req, st.server_cert(), certs[i], start_at, out))
    for i in range(PROCS)]
for p in procs:
    p.start()
results = [out.get(timeout=SECONDS + 60) for _ in procs]
for p in procs:
    p.join()
ok = sum(r[0] for r in results)
taken = sum(r[1] for r in results)
balance = op.call("payments", "card.get", {"card": CARD})["body"]["balance"]
print(f"payments.deductions: {ok}")
print(f"payments.deductions_per_s: {ok / SECONDS:.0f}")
print(f"payments.deduction_p99_ms: {max(r[2] for r in results) * 1000:.2f}")
print(f"payments.card_balance_exact: {1 if balance == TOPUP - taken else 0}")
if balance != TOPUP - taken:
    sys.exit(f"bench_cards: balance {balance} != {TOPUP} - {taken}")
