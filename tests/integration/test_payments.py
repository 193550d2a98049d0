#!/usr/bin/python3
"""test_payments - the payments service takes WeChat Pay payment codes as intents, against the
WeChat Pay API v3 emulator (devices/sim/wechatpay.py: HTTPS, signed requests and answers).

Each emulator scenario ends in the right state, and the emulator's books agree: success and a
retried request (one charge); declined (failed, nothing charged); the customer confirming, then
paying (succeeded); confirming until the deadline (reversed, not charged); a system error, a
dropped connection after the charge, a slow answer past the client's timeout, a tampered
signature, a clock skew and stripped headers (each resolved by querying: charged once, the
untrusted answers counted); an answer signed with the second platform key (a key change). A
payment code routed by its digits (Alipay refused while it is not configured, anything else
refused); another register cannot see an intent; a payment cancelled after it was paid is
reversed; payments killed with SIGKILL in the middle of a charge resolves the intent after its
restart without paying twice."""
import datetime
import os
import signal
import subprocess
import sys
import time
import urllib.request

from harness import (BIN, SRC, Bus, Checks, Stack, free_port, journal_audits, journal_sales,
                     rsa_key_files, wait_for)

sys.path.insert(0, os.path.join(SRC, "devices", "sim"))
from alipay import Alipay  # noqa: E402
from wechatpay import WechatPay  # noqa: E402

STORE = "S1"
MCHID, APPID, SERIAL = "1900000001", "wx0000000000000001", "3775B6A45ACD588826D15E583A95F5DD"
APP_ID = "2021000000000001"
c = Checks("test_payments")
st = Stack("payments")
wx = ali = None
try:
    st.start_redis()
    st.start_busd()
    st.start_service("inventory", "inventory")
    c.check(st.wait_healthy(["inventory"]), "inventory healthy")
    st.posctl("store", "add", STORE, "Payments store", check=True)

    # the merchant's key pair, the API v3 key, the emulator with its platform keys
    key, key_file, pub_file = rsa_key_files(st.tmp, "merchant")
    apiv3_file = os.path.join(st.tmp, "apiv3.key")
    with open(apiv3_file, "w") as f:
        f.write("0123456789abcdef0123456789ABCDEF")
    wdir = os.path.join(st.tmp, "wechat")
    wx = WechatPay(wdir, MCHID, APPID, SERIAL, pub_file, apiv3_file)
    wx.start()
    platform = (f"PUB_KEY_ID_0000000000000001={wdir}/platform-1.pem,"
                f"5157F09EFDC096DE15EBE81A47057A7232F1B8E1={wdir}/platform-2.pem")
    pay_args = ["--wechat-base-url", f"https://127.0.0.1:{wx.port}", "--wechat-mchid", MCHID,
                "--wechat-appid", APPID, "--wechat-serial", SERIAL, "--wechat-key-file",
                key_file, "--wechat-platform-keys", platform, "--wechat-apiv3-key-file",
                apiv3_file, "--wechat-ca-file", wx.ca_file, "--wechat-timeout-ms", "2000",
                "--query-interval-ms", "400", "--reverse-after-ms", "6000", "--lease-ms", "8000"]
    # Alipay: the app's key pair, the emulator with Alipay's own key
    _, app_key_file, app_pub_file = rsa_key_files(st.tmp, "app")
    adir = os.path.join(st.tmp, "alipay")
    ali = Alipay(adir, APP_ID, app_pub_file)
    ali.start()
    pay_args += ["--alipay-gateway", f"https://127.0.0.1:{ali.port}/gateway.do",
                 "--alipay-app-id", APP_ID, "--alipay-key-file", app_key_file,
                 "--alipay-public-key-file", os.path.join(adir, "alipay.pem"),
                 "--alipay-ca-file", ali.ca_file, "--alipay-timeout-ms", "2000"]
    metrics_port = free_port()
    pay_args += ["--metrics-listen", f"127.0.0.1:{metrics_port}", "--metrics-refresh-ms", "200"]
    st.start_service("payments", "payments", *pay_args)
    c.check(st.wait_healthy(["payments"]), "payments healthy")

    def open_payments():
        """posbus_payments_payments_open{store=S1,state=*} summed from payments' metrics page,
        or None."""
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                          timeout=2).read().decode()
        except OSError:
            return None
        total = None
        for line in text.splitlines():
            if line.startswith('posbus_payments_payments_open{store="S1",'):
                total = (total or 0) + int(line.split()[-1])
        return total

    reg = Bus(st, cert=st.key("register", "S1.R01"))
    other = Bus(st, cert=st.key("register", "S1.R02"))
    seq = [0]

    def pay(amount, code="134567890123456789", attempt=1, sale=None, who=reg):
        if sale is None:
            seq[0] += 1
            sale = f"S1-R01-{seq[0]:06d}"
        r = who.call("payments", "payment.pay", {"sale_id": sale, "attempt": attempt,
                                                 "amount": amount, "code": code})
        return r, sale

    def get(intent, who=reg):
        return who.call("payments", "payment.get", {"intent": intent})

    def final(intent, timeout=20):
        last = {}

        def done():
            r = get(intent)
            last.clear()
            last.update(r.get("body", {}))
            return last.get("final")
        wait_for(done, timeout, f"intent {intent} to end")
        return last

    def trade(otn):
        return next((t for t in wx.status()["trades"] if t["out_trade_no"] == otn), None)

    def charges():
        return wx.status()["charges"]

    # --- success, and a retry of the same request ---
    r, sale = pay(1234)
    c.check(r["type"] == "reply" and r["body"]["intent"] == f"{sale}-1" and
            r["body"]["final"] is False, f"pay: an intent, not final yet: {r.get('body')}")
    intent = r["body"]["intent"]
    end = final(intent)
    c.check(end.get("state") == "succeeded" and end.get("transaction_id"),
            f"success: succeeded with the provider's transaction id: {end}")
    paid_ms = end.get("paid_ms")
    c.check(isinstance(paid_ms, int) and abs(paid_ms - end["updated_ms"]) < 3000,
            f"paid_ms: when it was paid (WeChat's success_time): {paid_ms} {end['updated_ms']}")
    c.eq(trade(intent)["state"], "SUCCESS", "the emulator charged it")
    r2, _ = pay(1234, sale=sale)
    c.check(r2["body"].get("state") == "succeeded" and r2["body"]["intent"] == intent,
            "the same request again: the same intent, succeeded")
    r3, _ = pay(999, sale=sale)
    c.check(r3["type"] == "error" and r3["body"]["code"] == "conflict",
            f"the same attempt with another amount: conflict: {r3['body'].get('message')}")
    c.eq(charges(), 1, "one charge")

    # --- declined: failed, nothing charged ---
    wx.mode("declined")
    r, _ = pay(500)
    declined_intent = r["body"]["intent"]
    end = final(declined_intent)
    c.check(end.get("state") == "failed" and "NOT_ENOUGH" in end.get("reason", ""),
            f"declined: failed with the provider's reason: {end.get('reason')}")
    c.eq(charges(), 1, "declined: nothing charged")

    # --- the customer confirms, then pays ---
    wx.mode("userpaying_then_success", seconds=2)
    r, _ = pay(700)
    i = r["body"]["intent"]
    c.check(wait_for(lambda: get(i)["body"].get("state") == "pending", 5),
            "user paying: pending while the customer confirms")
    c.check(wait_for(lambda: (open_payments() or 0) >= 1, 5),
            "metrics: payments_open{store=S1} counts it while it is open")
    c.check(wait_for(lambda: 'posbus_payments_payments_open{store="S1",state="pending"} 1' in
                     urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                            timeout=2).read().decode(), 5),
            "metrics: by state: pending 1")
    end = final(i)
    c.check(end.get("state") == "succeeded", f"then succeeded: {end.get('reason')}")
    c.eq(charges(), 2, "charged once")
    c.check(wait_for(lambda: open_payments() == 0, 5), "metrics: payments_open back to 0")

    # --- confirming until the deadline: reversed, not charged ---
    wx.mode("userpaying_then_timeout")
    r, _ = pay(800)
    i = r["body"]["intent"]
    t0 = time.time()
    end = final(i, timeout=30)
    c.check(end.get("state") == "reversed" and time.time() - t0 >= 5,
            f"timeout: reversed after the deadline: {end.get('reason')} "
            f"({time.time() - t0:.1f} s)")
    c.check(trade(i)["state"] in ("REVOKED", "CLOSED"), f"not charged: {trade(i)['state']}")
    c.eq(charges(), 2, "timeout: nothing charged")

    # --- answers that decide nothing: resolved by querying, charged once ---
    ops = Bus(st)

    def counters():
        return ops.call("payments", "stats", {})["body"]["counters"]

    for scenario, kw in (("system_error", {"booked": True}), ("drop_after_charge", {}),
                         ("slow", {"seconds": 3}), ("tampered_signature", {}),
                         ("clock_skew", {"seconds": 600}), ("strip_headers", {})):
        before, untrusted = charges(), counters().get("unverified_answers", 0)
        wx.mode(scenario, **kw)
        r, _ = pay(900)
        i = r["body"]["intent"]
        end = final(i)
        c.check(end.get("state") == "succeeded" and end.get("transaction_id") ==
                trade(i)["transaction_id"],
                f"{scenario}: resolved by querying: succeeded ({end.get('reason')})")
        c.eq(charges() - before, 1, f"{scenario}: charged once")
        if scenario in ("tampered_signature", "clock_skew", "strip_headers"):
            c.check(counters().get("unverified_answers", 0) > untrusted,
                    f"{scenario}: the answer was not trusted (counted)")
    codepays = wx.status()["codepay_calls"]
    c.eq(codepays, seq[0], "one pay call per intent, none repeated")

    # --- a key change: answers signed with the second platform key are trusted ---
    wx.command({"cmd": "platform_key", "use": 2})
    r, _ = pay(1000)
    end = final(r["body"]["intent"])
    c.check(end.get("state") == "succeeded" and "not trusted" not in end.get("reason", ""),
            f"platform key 2: succeeded directly: {end.get('reason')}")
    wx.command({"cmd": "platform_key", "use": 1})

    # --- codes routed by their digits ---
    r, _ = pay(100, code="994567890123456789")
    c.check(r["type"] == "error" and r["body"]["code"] == "bad_code",
            f"not a payment code: {r['body'].get('message')}")
    r, _ = pay(100, code="6901234500097")
    c.check(r["type"] == "error" and r["body"]["code"] == "bad_code", "a product barcode: refused")
    r, _ = pay(100, sale="S1-R02-000001")
    c.check(r["type"] == "error" and r["body"]["code"] == "bad_request",
            "another register's sale id: refused")
    r = get(intent, who=other)
    c.check(r["type"] == "error" and r["body"]["code"] == "forbidden",
            "another register cannot read the intent")

    # --- Alipay face-to-face: the same intents, routed by the code's digits ---
    ACODE = "284567890123456789"

    def atrade(otn):
        from harness import alipay_trade_no  # Alipay knows the intent by its wire form
        return next((t for t in ali.status()["trades"]
                     if t["out_trade_no"] == alipay_trade_no(otn)), None)

    r, _ = pay(1500, code=ACODE)
    i = alipay_paid = r["body"]["intent"]
    end = final(i)
    c.check(r["body"]["provider"] == "alipay" and end.get("state") == "succeeded" and
            end.get("transaction_id") == atrade(i)["trade_no"],
            f"alipay: succeeded with Alipay's trade_no: {end.get('reason')}")
    for scenario, kw, want in (("declined", {}, "failed"),
                               ("waiting_then_success", {"seconds": 2}, "succeeded"),
                               ("waiting_then_timeout", {}, "reversed"),
                               ("system_error", {"booked": True}, "succeeded"),
                               ("drop_after_charge", {}, "succeeded"),
                               ("tampered_signature", {}, "succeeded")):
        before = ali.status()["charges"]
        ali.mode(scenario, **kw)
        r, _ = pay(1600, code=ACODE)
        i = r["body"]["intent"]
        end = final(i, timeout=30)
        c.check(end.get("state") == want, f"alipay {scenario}: {want} ({end.get('reason')})")
        paid = 1 if want == "succeeded" else 0
        c.eq(ali.status()["charges"] - before, paid, f"alipay {scenario}: charged {paid}")
        if want == "succeeded":  # Alipay's time of payment (Beijing, to the second) is kept
            gmt = atrade(i)["gmt_payment"]
            at = datetime.datetime.strptime(gmt, "%Y-%m-%d %H:%M:%S").replace(
                tzinfo=datetime.timezone(datetime.timedelta(hours=8)))
            c.eq(end.get("paid_ms"), int(at.timestamp()) * 1000,
                 f"alipay {scenario}: paid_ms is Alipay's gmt_payment {gmt}")
        if want == "reversed":
            c.eq(atrade(i)["state"], "TRADE_CLOSED", "alipay: cancelled at Alipay")
    c.eq(ali.status()["pay_calls"], 7, "alipay: one trade.pay per intent, none repeated")

    # --- refunds: partial, several, never more than was paid; the same number once ---
    def refund(intent_id, no, amount):
        return reg.call("payments", "payment.refund", {"intent": intent_id, "refund_no": no,
                                                       "amount": amount})

    def refund_final(no, timeout=15):
        last = {}

        def done():
            r = reg.call("payments", "payment.refund_get", {"refund_no": no})
            last.clear()
            last.update(r.get("body", {}))
            return last.get("final")
        wait_for(done, timeout, f"refund {no} to end")
        return last

    r = refund(intent, "RF-1", 300)
    c.check(r["type"] == "reply" and r["body"]["amount"] == 300,
            f"a refund of 3.00 of 12.34: {r['body']}")
    c.eq(refund_final("RF-1").get("state"), "succeeded", "refunded")
    r = refund(intent, "RF-2", 1000)
    c.check(r["type"] == "error" and r["body"]["code"] == "too_much" and
            "934" in r["body"]["message"], f"3.00 + 10.00 > 12.34: refused: {r['body']}")
    r = refund(intent, "RF-3", 934)
    c.eq(refund_final("RF-3").get("state"), "succeeded", "the rest, 9.34: refunded")
    r = refund(intent, "RF-3", 934)
    c.check(r["type"] == "reply" and r["body"]["state"] == "succeeded",
            "the same refund number again: the same refund, nothing more")
    c.check(refund(intent, "RF-4", 1)["body"].get("code") == "too_much",
            "nothing left to refund")
    end = get(intent)["body"]
    c.check(end.get("state") == "refunded" and end.get("final") and
            end.get("refunded") == 1234 and end.get("refunds_succeeded") == 1234 and
            end.get("paid_ms") == paid_ms,
            f"refunded in full: the intent says refunded (paid_ms kept): {end}")
    rd = st.redis()
    hist = [h.decode() for h in rd.call("LRANGE", f"payhist:{{S1}}:{intent}", 0, -1)]
    c.check(any(" refund RF-1 of 300 fen succeeded: " in h for h in hist) and
            any(" refund RF-3 of 934 fen succeeded: " in h for h in hist) and
            hist[-1].split(" ", 2)[1:] == ["refunded", "refunded in full: 1234 fen"],
            f"the intent's history: each refund's end, then refunded with its reason: {hist}")
    r = reg.call("payments", "payment.refundable", {"sale_id": sale})["body"]
    c.check([(x["intent"], x["refunded"], x["refundable"]) for x in r.get("intents", [])] ==
            [(intent, 1234, 0)], f"refundable: still listed as paid, nothing left: {r}")
    r = reg.call("payments", "payment.cancel", {"intent": intent})
    c.check(r["type"] == "error" and r["body"]["code"] == "has_refunds",
            f"a refunded payment is not reversed on top: {r['body'].get('message')}")
    wt = trade(intent)
    c.eq(sorted((x["out_refund_no"], x["amount"]) for x in wt["refunds"]),
         [("RF-1", 300), ("RF-3", 934)], "WeChat refunded exactly 3.00 and 9.34, once each")
    r = refund(declined_intent, "RF-5", 100)
    c.check(r["type"] == "error" and r["body"]["code"] == "not_paid",
            f"a declined payment: nothing to refund: {r['body'].get('message')}")
    ai = alipay_paid
    r = refund(ai, "RA-1", 700)
    c.eq(refund_final("RA-1").get("state"), "succeeded", "alipay: a partial refund")
    c.check(refund(ai, "RA-2", 801)["body"].get("code") == "too_much",
            "alipay: not more than was paid")
    c.eq([(x.get("out_request_no"), x.get("amount_fen")) for x in atrade(ai)["refunds"]],
         [("RA-1", 700)], "Alipay refunded 7.00 once")

    # --- cancelled after it was paid: reversed ---
    r, _ = pay(1100)
    i = r["body"]["intent"]
    c.eq(final(i).get("state"), "succeeded", "paid")
    before = charges()
    r = reg.call("payments", "payment.cancel", {"intent": i})
    c.check(r["type"] == "reply" and r["body"]["state"] == "reversing",
            f"cancel after the payment: reversing: {r['body']}")
    end = final(i)
    c.check(end.get("state") == "reversed", f"then reversed: {end.get('reason')}")
    c.eq(trade(i)["state"], "REVOKED", "the money went back")

    # --- SIGKILL in the middle of a charge: resolved after the restart, charged once ---
    wx.mode("slow", seconds=3)
    before = charges()
    r, _ = pay(1200)
    i = r["body"]["intent"]
    c.check(wait_for(lambda: wx.status()["codepay_calls"] >= codepays + 3, 5),
            "the pay call reached the provider")
    time.sleep(0.3)
    st.kill("payments", signal.SIGKILL)
    st.start_service("payments", "payments", *pay_args)
    c.check(st.wait_healthy(["payments"]), "payments back")
    end = final(i, timeout=25)
    c.check(end.get("state") == "succeeded", f"resolved after the restart: {end.get('reason')}")
    c.eq(charges() - before, 1, "charged once")
    c.eq(wx.status()["codepay_calls"], codepays + 3, "the pay call was never made again")

    # --- refunds that end without a refund: given back once, in the step that ends them ---
    def hget(key, field):
        v = rd.call("HGET", key, field)
        return v.decode() if v is not None else None

    def refunded_of(intent_id):
        return int(hget(f"pay:{{S1}}:{intent_id}", "refunded") or 0)

    def paid_intent(amount, code="134567890123456789"):
        r, _ = pay(amount, code=code)
        c.eq(final(r["body"]["intent"]).get("state"), "succeeded", f"paid {amount}")
        return r["body"]["intent"]

    def refund_to_end(intent_id, no, amount, want):
        r = refund(intent_id, no, amount)
        c.check(r["type"] == "reply", f"refund {no}: {r['body']}")
        end = refund_final(no)
        c.check(end.get("state") == want, f"refund {no}: {want} ({end.get('reason')})")
        return end

    # refused by WeChat (NOT_ENOUGH: nothing refunded): failed, the amount back once
    i = paid_intent(500)
    wx.command({"cmd": "faults", "refund": "refused", "code": "NOT_ENOUGH", "count": 1})
    refund_to_end(i, "RF-N1", 500, "failed")
    c.check(refunded_of(i) == 0 and hget("payref:{S1}:RF-N1", "released") == "1",
            f"its 5.00 given back once: refunded {refunded_of(i)}")
    refund_to_end(i, "RF-N2", 500, "succeeded")
    c.check(get(i)["body"].get("state") == "refunded" and refunded_of(i) == 500,
            "the whole 5.00 refunded again, the intent refunded")

    # the crash window: payments killed right after the failed refund is recorded (a test
    # hook): the amount is back already, since the same script did both
    i = paid_intent(600)
    st.kill("payments", signal.SIGTERM)
    os.environ["PAYMENTS_TEST_CRASH"] = "refund_failed"
    try:
        st.start_service("payments", "payments", *pay_args)
    finally:
        del os.environ["PAYMENTS_TEST_CRASH"]
    c.check(st.wait_healthy(["payments"]), "payments with the crash hook")
    wx.command({"cmd": "faults", "refund": "refused", "code": "NOT_ENOUGH", "count": 1})
    c.check(refund(i, "RF-K1", 600)["type"] == "reply", "a refund of 6.00, refused")
    c.check(wait_for(lambda: st.procs["payments"].poll() is not None, 15),
            "payments died right after recording the failed refund")
    st.kill("payments")
    c.check(hget("payref:{S1}:RF-K1", "state") == "failed" and refunded_of(i) == 0 and
            hget("payref:{S1}:RF-K1", "released") == "1",
            f"after the crash: failed and given back ({refunded_of(i)} reserved)")
    st.start_service("payments", "payments", *pay_args)
    c.check(st.wait_healthy(["payments"]), "payments back")
    refund_to_end(i, "RF-K2", 600, "succeeded")
    c.eq(refunded_of(i), 600, "the whole 6.00 refunded after the crash, once")

    # refused with a code that says nothing of the refund, again and again: the query that
    # finds no such refund ends it (failed), instead of asking for ever
    i = paid_intent(700)
    wx.command({"cmd": "faults", "refund": "refused", "code": "USER_ACCOUNT_ABNORMAL",
                "count": 50})
    end = refund_to_end(i, "RF-U1", 700, "failed")
    c.check("USER_ACCOUNT_ABNORMAL" in end.get("reason", "") and refunded_of(i) == 0 and
            not trade(i)["refunds"], f"refused, none at WeChat: failed, given back: {end}")
    wx.command({"cmd": "faults", "clear": True})
    refund_to_end(i, "RF-U2", 700, "succeeded")
    ali.command({"cmd": "faults", "refund": "refused", "count": 50})
    end = refund_to_end(alipay_paid, "RA-U1", 800, "failed")
    c.check("ACQ.TRADE_NOT_ALLOW_REFUND" in end.get("reason", "") and
            refunded_of(alipay_paid) == 700,
            f"alipay: refused with an unmapped sub_code: failed, given back: {end}")
    ali.command({"cmd": "faults", "clear": True})
    refund_to_end(alipay_paid, "RA-U2", 800, "succeeded")
    c.eq(get(alipay_paid)["body"].get("state"), "refunded", "alipay: refunded in full")

    # never resolved (every refund call and query fails): left to an operator after
    # --refund-deadline-s, its amount still reserved, counted; no more provider calls
    i = paid_intent(900)
    st.kill("payments", signal.SIGTERM)
    st.start_service("payments", "payments", *pay_args, "--refund-deadline-s", "3")
    c.check(st.wait_healthy(["payments"]), "payments with a 3 s refund deadline")
    wx.command({"cmd": "faults", "refund": "system_error", "refund_query": "system_error",
                "count": 10000})
    t0 = time.time()
    end = refund_to_end(i, "RF-M1", 400, "manual")
    c.check(time.time() - t0 >= 2.5 and end.get("final") and
            "check it at the provider" in end.get("reason", ""),
            f"manual after the deadline ({time.time() - t0:.1f} s): {end.get('reason')}")
    g = get(i)["body"]
    c.check(g.get("refunded") == 400 and g.get("refunds_manual") == 400 and
            g.get("state") == "succeeded", f"its 4.00 stays reserved on the intent: {g}")
    c.eq(counters().get("refunds_manual", 0), 1, "counted in refunds_manual")
    r = reg.call("payments", "payment.refundable", {"sale_id": g["sale_id"]})["body"]
    c.check([(x["refunds_manual"], x["refundable"]) for x in r["intents"]] == [(400, 500)],
            f"refundable shows it: {r}")
    c.eq(rd.call("ZSCORE", "paydue:{S1}", "R:RF-M1"), None, "no longer due")
    asked = wx.status()["requests"].get("refund_query", 0)
    time.sleep(1.5)
    c.eq(wx.status()["requests"].get("refund_query", 0), asked, "and not asked about again")
    # the operator finds out at the provider how they ended: posctl payments refund-resolve
    refund_to_end(i, "RF-M2", 500, "manual")
    c.eq(get(i)["body"].get("refunds_manual"), 900, "a second one, manual too: 9.00 reserved")
    r = reg.call("payments", "payment.refund_resolve",
                 {"store": STORE, "refund_no": "RF-M1", "state": "failed", "reason": "x"})
    c.eq(r["body"].get("code"), "forbidden", "a register may not resolve a refund")
    p = st.posctl("payments", "refund-resolve", "--store", STORE, "RF-M1", "failed", "--reason",
                  "WeChat says REFUNDCLOSE")
    e1 = reg.call("payments", "payment.refund_get", {"refund_no": "RF-M1"})["body"]
    p2 = st.posctl("payments", "refund-resolve", "--store", STORE, "RF-M2", "succeeded",
                   "--reason", "WeChat says SUCCESS")
    e2 = reg.call("payments", "payment.refund_get", {"refund_no": "RF-M2"})["body"]
    c.check(p.returncode == 0 and p2.returncode == 0 and e1.get("state") == "failed" and
            e2.get("state") == "succeeded" and "resolved by" in e1.get("reason", "") and
            "REFUNDCLOSE" in e1.get("reason", ""),
            f"posctl refund-resolve: RF-M1 failed, RF-M2 succeeded, with who and why: {e1} {e2}")
    g = get(i)["body"]
    c.check(g.get("refunded") == 500 and g.get("refunds_manual") == 0 and
            g.get("refunds_succeeded") == 500 and g.get("state") == "succeeded",
            f"the intent: 4.00 given back, 5.00 refunded, nothing left to an operator: {g}")
    r = reg.call("payments", "payment.refundable", {"sale_id": g["sale_id"]})["body"]
    c.check([(x["refunds_manual"], x["refundable"]) for x in r["intents"]] == [(0, 400)],
            f"and 4.00 may be refunded again: {r}")
    p = st.posctl("payments", "refund-resolve", "--store", STORE, "RF-M1", "succeeded",
                  "--reason", "again")
    c.check(p.returncode != 0 and "not_manual" in p.stderr,
            f"a refund that is no longer manual is not resolved again: {p.stderr.strip()}")
    hist = [x.decode() for x in rd.call("LRANGE", f"payhist:{{S1}}:{i}", 0, -1)]
    c.check(any("RF-M1" in x and "failed" in x for x in hist) and
            any("RF-M2" in x and "succeeded" in x for x in hist),
            f"both ends are in the intent's history: {hist[-3:]}")
    wx.command({"cmd": "faults", "clear": True})
    st.kill("payments", signal.SIGTERM)
    st.start_service("payments", "payments", *pay_args)
    c.check(st.wait_healthy(["payments"]), "payments back with the usual options")

    # --- the register: posnode pays a scanned code through payments ---
    for svc in ("sales", "devices"):
        st.start_service(svc, svc)
    c.check(st.wait_healthy(["sales", "devices"]), "sales and devices healthy")
    st.posctl("catalog", "import", os.path.join(SRC, "scripts", "sample", "catalog.csv"),
              check=True)
    subprocess.run([f"{BIN}/posctl", *st.conn_args(), "cashier", "add", "--store", STORE, "--id",
                    "ann", "--name", "Ann", "--role", "cashier"], input="1111\n", text=True,
                   capture_output=True, check=True)
    till = st.start_posnode("r02", STORE, "R02")
    wait_for(lambda: till.cmd("state")["config_version"] >= 1, 15)
    c.check(till.cmd("login ann 1111")["ok"], "Ann logs in at R02")

    def audits(kind):
        return journal_audits(till.journal, kind)

    def sales():
        return journal_sales(till.journal)

    till.cmd("scan 6901234500097")
    r = till.cmd("pay code 6901234500097")
    c.check(not r["ok"] and r["error"] == "bad_code", "a product barcode is no payment code")
    before = charges()
    r = till.cmd("pay code 134567890123456789")
    c.check(r["ok"] and r.get("wallet", {}).get("provider") == "wechat",
            f"pay code: WeChat, under way: {r.get('wallet')} {r.get('message')}")
    c.check(wait_for(lambda: till.cmd("state")["last_sale"] == 1, 15),
            "the code is paid: the sale completes by itself")
    c.eq(sales()[-1]["tenders"], [{"kind": "wechat", "amount": 300}], "with the WeChat tender")
    c.eq(charges() - before, 1, "one charge")
    req, res = audits("wallet_request"), audits("wallet_result")
    c.check(len(req) == 1 and req[0]["code"] == "1345**********6789" and len(res) == 1 and
            res[0]["state"] == "succeeded" and res[0]["transaction_id"],
            f"request (the code cut) and result journaled: {req} {res}")

    wx.mode("declined")
    till.cmd("scan 6901234500103")
    till.cmd("pay code 134567890123456789")
    c.check(wait_for(lambda: till.cmd("state").get("wallet") is None, 10),
            "declined: the code payment is over")
    s2 = till.cmd("state")
    c.check(s2["last_sale"] == 1 and s2["ticket"] and not s2["ticket"]["tenders"],
            "the ticket stays open with no tender")
    r = till.cmd("pay code 134567890123456789")
    c.check(r["ok"] and r["wallet"]["attempt"] == 2, f"scanned again: attempt 2 {r.get('wallet')}")
    c.check(wait_for(lambda: till.cmd("state")["last_sale"] == 2, 15), "paid at attempt 2")

    # posnode killed while the customer confirms: after the restart the payment is found,
    # and since its ticket is gone, reversed
    wx.mode("userpaying_then_success", seconds=2)
    till.cmd("scan 6901234500097")
    r = till.cmd("pay code 134567890123456789")
    c.check(r["ok"], "a third code payment")
    st.kill("r02", signal.SIGKILL)
    till = st.start_posnode("r02", STORE, "R02")
    c.check(wait_for(lambda: (till.cmd("state").get("wallet") or {}).get("state") ==
                     "before_restart" or not till.cmd("state").get("wallet"), 10),
            "after the restart the till knows the unresolved payment")
    c.check(wait_for(lambda: till.cmd("state").get("wallet") is None, 30),
            "and resolves it")
    res = audits("wallet_result")[-1]
    c.check(res.get("note") == "its ticket is gone" and res.get("state") == "reversed",
            f"paid for a ticket that is gone: reversed: {res}")
    c.eq(trade(res.get("intent", ""))["state"] if trade(res.get("intent", "")) else None,
         "REVOKED", "the money went back")
    c.eq(till.cmd("state")["last_sale"], 2, "no sale for it")

    # a code paid part of a ticket, then posnode died before the sale: cancelled at restart
    c.check(till.cmd("login ann 1111")["ok"], "Ann logs in again at R02")
    till.cmd("scan 6901234500097")
    till.cmd("scan 6901234500103")
    r = till.cmd("pay code 134567890123456789 1.00")
    c.check(wait_for(lambda: (till.cmd("state").get("ticket") or {}).get("tenders") ==
                     [{"kind": "wechat", "amount": 100}], 15), "a code paid 1.00 of 5.00")
    paid_intent = audits("wallet_result")[-1].get("intent", "")
    st.kill("r02", signal.SIGKILL)
    till = st.start_posnode("r02", STORE, "R02")
    c.check(wait_for(lambda: (trade(paid_intent) or {}).get("state") == "REVOKED", 30),
            "after the restart the 1.00 code payment without a sale is cancelled (reversed)")
    c.check(wait_for(lambda: audits("wallet_result")[-1].get("note") ==
                     "its ticket was lost: cancelled", 10), "and that is journaled")
    c.eq(till.cmd("state")["last_sale"], 2, "no sale for it")

    # payments stalls (SIGSTOP): the code payment is on its way; given up; never charged
    c.check(till.cmd("login ann 1111")["ok"], "Ann logs in again at R02")
    before = charges()
    pid = st.procs["payments"].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        till.cmd("scan 6901234500097")
        r = till.cmd("pay code 134567890123456789")
        c.check(r["ok"] and r.get("wallet"), f"payments does not answer: on its way ({r.get('message')})")
        r = till.cmd("pay-cancel")
        c.check(r["ok"] and r.get("wallet") is None,
                f"given up while payments cannot be reached: {r.get('message')}")
        c.check(till.cmd("pay cash 5")["ok"], "the ticket is free: paid in cash")
    finally:
        os.kill(pid, signal.SIGCONT)
    c.check(wait_for(lambda: audits("wallet_result")[-1].get("note") ==
                     "its ticket was lost: cancelled", 30),
            f"payments back: the given-up payment is cancelled: {audits('wallet_result')[-1]}")
    given = audits("wallet_result")[-1]
    t = trade(given.get("intent", ""))
    # the stalled payment.pay may reach payments before the cancel (charged, then reversed) or
    # after it (refused: never charged); either way the customer keeps the money
    c.check(given.get("state") in ("failed", "reversed") and
            (t is None or t["state"] == "REVOKED") and
            charges() - before == (1 if t else 0),
            f"and the customer is not charged: {given.get('state')}, at WeChat: {t and t['state']}")
finally:
    if wx:
        wx.stop()
    if ali:
        ali.stop()
    st.stop_all(c)
c.finish()
