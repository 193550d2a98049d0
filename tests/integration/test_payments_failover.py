#!/usr/bin/python3
"""test_payments_failover - an unknown intent is resolved by another instance when the one that
held it stalls (docs/payments.md "How an intent moves": "unknown intents are resolved by the
service itself, after a restart and on any instance").

Two payments instances share one Redis, each with one worker and small leases. A WeChat payment
the customer is still confirming (the emulator's userpaying_then_success) is paid by instance
A; A's worker is then caught in the middle of a query (the emulator holds the answer back) and
A is stopped there with SIGSTOP, holding the intent's lease. Instance B, started meanwhile,
leaves the intent alone until A's lease has run out, then takes it over, and it ends
succeeded: charged once, one pay call. A, continued with SIGCONT, finds its lease gone: the
outcome of its stalled step is not recorded (counted once in its `lost_leases`, B's stays 0),
and it never calls pay again."""
import os
import re
import signal
import time
import urllib.request

from harness import Bus, Checks, PaymentEmulators, Stack, free_port, wait_for

STORE = "S1"
TIMEOUT_MS = 1000          # --wechat-timeout-ms: the stalled query's deadline
LEASE_MS = TIMEOUT_MS + 5000  # the least --lease-ms the service takes with it
PAY_SECONDS = 22           # the customer confirms this long after the pay call
CATCH_TRIES = 3            # tries at stopping A in the middle of its query
c = Checks("test_payments_failover")
st = Stack("failover")
emu = None
stopped = None  # A's pid while it is stopped, so a failure continues it
try:
    st.start_redis()
    st.start_busd()
    st.start_service("inventory", "inventory")
    c.check(st.wait_healthy(["inventory"]), "inventory healthy")
    st.posctl("store", "add", STORE, "Failover store", check=True)
    emu = PaymentEmulators(st, alipay=False)
    wx = emu.wx
    rc = st.redis()
    ports = {"a": free_port(), "b": free_port()}

    def start(name):
        return st.start_service(
            f"payments-{name}", "payments", *emu.args, "--wechat-timeout-ms", str(TIMEOUT_MS),
            "--workers", "1", "--lease-ms", str(LEASE_MS), "--query-interval-ms", "300",
            "--scan-ms", "100", "--reverse-after-ms", "60000", "--metrics-listen",
            f"127.0.0.1:{ports[name]}", "--metrics-refresh-ms", "100")

    def metric(name, counter):
        """posbus_payments_<counter>_total of instance name, or None if its page is silent."""
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{ports[name]}/metrics",
                                          timeout=2).read().decode()
        except OSError:
            return None
        m = re.search(rf"^posbus_payments_{counter}_total(?:{{[^}}]*}})? (\S+)$", text, re.M)
        return int(float(m.group(1))) if m else None

    a = start("a")
    c.check(st.wait_healthy(["payments"]) and wait_for(lambda: metric("a", "steps") is not None,
                                                       10),
            f"instance A healthy (one worker, --lease-ms {LEASE_MS})")
    reg = Bus(st, cert=st.key("register", f"{STORE}.R01"))

    def intent_hash(intent):
        f = rc.call("HGETALL", f"pay:{{{STORE}}}:{intent}")
        return {f[i].decode(): f[i + 1].decode() for i in range(0, len(f or []), 2)}

    def get(intent):
        r = reg.call("payments", "payment.get", {"intent": intent})
        return r["body"] if r["type"] == "reply" else {}

    # the customer confirms on the phone for a while: A pays, the intent is pending
    wx.mode("userpaying_then_success", seconds=PAY_SECONDS)
    r = reg.call("payments", "payment.pay", {"sale_id": f"{STORE}-R01-000001", "attempt": 1,
                                             "amount": 2500, "code": "134567890123456789"})
    c.check(r["type"] == "reply", f"payment.pay: an intent {r['body']}")
    intent = r["body"]["intent"]
    c.check(wait_for(lambda: get(intent).get("reason", "").startswith("the customer"), 10),
            f"A paid: pending while the customer confirms ({get(intent).get('reason')})")
    c.eq(wx.status()["codepay_calls"], 1, "one pay call")

    # catch A's worker in the middle of a query, holding the lease, and stop A there
    a_id = f"-{a.pid}-"
    held = {}
    for attempt in range(CATCH_TRIES):
        wx.command({"cmd": "faults", "query": "slow", "seconds": 60, "count": 1})
        wait_for(lambda: "query" not in wx.status()["faults"], 10, "A's next query")
        a.send_signal(signal.SIGSTOP)
        stopped = a.pid
        held = intent_hash(intent)
        if a_id in held.get("owner", "") and int(held["lease_until"]) > time.time() * 1000:
            break
        print(f"     (A's query ended before SIGSTOP, attempt {attempt + 1}: {held})", flush=True)
        a.send_signal(signal.SIGCONT)
        stopped = None
    lease_until = int(held.get("lease_until", 0))
    c.check(stopped and a_id in held.get("owner", ""),
            f"A stopped in the middle of its query, holding the lease "
            f"(owner {held.get('owner')}, {lease_until - time.time() * 1000:.0f} ms left)")
    steps = int(held.get("steps", 0))
    queries = wx.status()["requests"].get("query", 0)

    # B starts meanwhile; it leaves the intent alone while A's lease lasts, then takes over
    b = start("b")
    b_id = f"-{b.pid}-"
    c.check(wait_for(lambda: metric("b", "steps") is not None, 10), "instance B started")
    taken = wait_for(lambda: int(intent_hash(intent).get("steps", 0)) > steps,
                     LEASE_MS / 1000 + 15, "B's step")
    h = intent_hash(intent)
    c.check(taken and int(h["updated_ms"]) >= lease_until,
            f"B took the intent over only once A's lease had run out (its step at "
            f"{int(h.get('updated_ms', 0)) - lease_until} ms after the lease's end)")
    c.check(wx.status()["requests"].get("query", 0) > queries and h["state"] == "pending",
            f"B queried it: still pending while the customer confirms ({h['reason']})")
    c.check(wait_for(lambda: (metric("b", "provider_calls") or 0) >= 1, 5),
            f"the step was B's (B's provider calls: {metric('b', 'provider_calls')}; steps "
            f"{metric('b', 'steps')})")

    # A goes on: its stalled query's outcome is not recorded, the lost lease counted once
    before = (h["state"], h["reason"], int(h["steps"]))
    a.send_signal(signal.SIGCONT)
    stopped = None
    c.check(wait_for(lambda: metric("a", "lost_leases") == 1, 10),
            f"A continued: its lost lease counted (lost_leases {metric('a', 'lost_leases')})")
    hist = [x.decode() for x in rc.call("LRANGE", f"payhist:{{{STORE}}}:{intent}", 0, -1)]
    c.check(not any(x.split(" ", 2)[1] == "unknown" for x in hist),
            f"A's stalled step (a query that timed out: unknown) left nothing in the intent's "
            f"history: {hist}")

    # the customer confirms: the intent ends succeeded, charged once, paid once
    end = {}

    def done():
        end.clear()
        end.update(get(intent))
        return end.get("final")
    wait_for(done, PAY_SECONDS + 20, "the intent to end")
    trade = next(t for t in wx.status()["trades"] if t["out_trade_no"] == intent)
    c.check(end.get("state") == "succeeded" and end.get("transaction_id") ==
            trade["transaction_id"], f"the intent ends succeeded with the provider's "
            f"transaction id: {end.get('state')} ({end.get('reason')})")
    c.eq((wx.status()["charges"], wx.status()["codepay_calls"]), (1, 1),
         "charged once, one pay call (charges, pay calls)")
    c.eq((metric("a", "lost_leases"), metric("b", "lost_leases")), (1, 0),
         "lost leases (A, B): A's stalled step only, counted once")
    print(f"     (the intent's steps {before[2]} -> {intent_hash(intent).get('steps')}; "
          f"history: {hist})", flush=True)
finally:
    if stopped:
        os.kill(stopped, signal.SIGCONT)
    if emu:
        emu.stop()
    st.stop_all(c)
c.finish()
