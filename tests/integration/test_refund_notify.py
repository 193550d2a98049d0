#!/usr/bin/python3
"""test_refund_notify - WeChat refund notifications reach the payments service's HTTPS endpoint
and finish refunds; intents that are over are kept for the retention, then expire.

The emulator (devices/sim/wechatpay.py) sends REFUND.SUCCESS to the notify_url the service put
into its refund request, while its refund query keeps answering PROCESSING (refund_query_lag):
only the notification can finish the refund in time, and it does. The same notification again
changes nothing. A tampered signature, a resource encrypted with another key and a replay with a
stale timestamp are refused (4xx), counted and change nothing; the genuine one then finishes the
refund. REFUND.CLOSED fails a refund and gives its amount back; a notification for a refund
posbus never made is answered without harm. Retention: a failed payment's keys, a paid one's
(once no refund of it is open, and not while one is), a reversed one's, its refunds', the day
index and the day's reconciliation result carry a TTL; the due set does not."""
import base64
import datetime
import http.client
import ipaddress
import json
import os
import secrets
import ssl
import sys
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from harness import SRC, Bus, Checks, Stack, free_port, rsa_key_files, wait_for

sys.path.insert(0, os.path.join(SRC, "devices", "sim"))
from wechatpay import WechatPay  # noqa: E402

STORE = "S1"
MCHID, APPID, SERIAL = "1900000001", "wx0000000000000001", "3775B6A45ACD588826D15E583A95F5DD"
V3KEY = b"0123456789abcdef0123456789ABCDEF"
RETENTION_S = 3600


def tls_files(directory):
    """A throwaway self-signed certificate for 127.0.0.1 (the notify endpoint's)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = (os.path.join(directory, f"notify.{x}") for x in ("pem", "key"))
    with open(cert_file, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_file, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    return cert_file, key_file


c = Checks("test_refund_notify")
st = Stack("refund_notify")
wx = None
try:
    st.start_redis()
    st.start_busd()
    st.start_service("inventory", "inventory")
    c.check(st.wait_healthy(["inventory"]), "inventory healthy")
    st.posctl("store", "add", STORE, "Notify store", check=True)

    key, key_file, pub_file = rsa_key_files(st.tmp, "merchant")
    apiv3_file = os.path.join(st.tmp, "apiv3.key")
    with open(apiv3_file, "wb") as f:
        f.write(V3KEY)
    wdir = os.path.join(st.tmp, "wechat")
    wx = WechatPay(wdir, MCHID, APPID, SERIAL, pub_file, apiv3_file, refund_delay=0.3)
    wx.start()
    # the query says PROCESSING for ten minutes after the refund is done: only a notification
    # can finish it within this test
    c.check(wx.command({"cmd": "refund_query_lag", "seconds": 600})["ok"], "emulator lags")
    cert_file, tls_key_file = tls_files(st.tmp)
    port = free_port()
    notify_url = f"https://127.0.0.1:{port}/wechat/notify"
    platform = (f"PUB_KEY_ID_0000000000000001={wdir}/platform-1.pem,"
                f"5157F09EFDC096DE15EBE81A47057A7232F1B8E1={wdir}/platform-2.pem")
    st.start_service(
        "payments", "payments", "--wechat-base-url", f"https://127.0.0.1:{wx.port}",
        "--wechat-mchid", MCHID, "--wechat-appid", APPID, "--wechat-serial", SERIAL,
        "--wechat-key-file", key_file, "--wechat-platform-keys", platform,
        "--wechat-apiv3-key-file", apiv3_file, "--wechat-ca-file", wx.ca_file,
        "--wechat-timeout-ms", "2000", "--query-interval-ms", "400", "--reverse-after-ms",
        "6000", "--lease-ms", "8000", "--notify-listen", f"127.0.0.1:{port}", "--notify-url",
        notify_url, "--notify-cert", cert_file, "--notify-key", tls_key_file,
        "--retention-s", str(RETENTION_S))
    c.check(st.wait_healthy(["payments"]), "payments healthy")
    reg = Bus(st, cert=st.key("register", "S1.R01"))
    ops = Bus(st)
    rd = st.redis()
    seq = [0]

    def counters():
        return ops.call("payments", "stats", {})["body"]["counters"]

    def pay(amount, code="134567890123456789"):
        seq[0] += 1
        sale = f"S1-R01-{seq[0]:06d}"
        r = reg.call("payments", "payment.pay", {"sale_id": sale, "attempt": 1,
                                                 "amount": amount, "code": code})
        intent = r["body"]["intent"]
        last = {}

        def done():
            last.update(reg.call("payments", "payment.get", {"intent": intent})["body"])
            return last.get("final")
        wait_for(done, 20, f"intent {intent} to end")
        return intent, last

    def refund(intent, no, amount):
        return reg.call("payments", "payment.refund", {"intent": intent, "refund_no": no,
                                                       "amount": amount})

    def refund_get(no):
        return reg.call("payments", "payment.refund_get", {"refund_no": no})["body"]

    def wx_refund(no):
        for t in wx.status()["trades"]:
            for r in t["refunds"]:
                if r["out_refund_no"] == no:
                    return t, r
        return None, None

    def notice(plain, v3key=V3KEY, skew=0, event="REFUND.SUCCESS"):
        """A notification as WeChat sends it: plain encrypted with v3key, signed by the
        emulator's platform key with a timestamp skew seconds off."""
        nonce = secrets.token_hex(6)
        ct = AESGCM(v3key).encrypt(nonce.encode(), json.dumps(plain).encode(), b"refund")
        body = json.dumps({"id": secrets.token_hex(18), "create_time": "2026-01-01T00:00:00+08:00",
                           "event_type": event, "resource_type": "encrypt-resource",
                           "summary": "退款", "resource": {
                               "original_type": "refund", "algorithm": "AEAD_AES_256_GCM",
                               "ciphertext": base64.b64encode(ct).decode(),
                               "associated_data": "refund", "nonce": nonce}}).encode()
        return body, dict(wx.sign_headers(body, skew=skew))

    def plain_of(no, status="SUCCESS"):
        t, r = wx_refund(no)
        return {"mchid": MCHID, "out_trade_no": t["out_trade_no"],
                "transaction_id": t["transaction_id"], "out_refund_no": no,
                "refund_id": r["refund_id"], "refund_status": status,
                "success_time": "2026-01-01T00:00:00+08:00",
                "amount": {"total": t["amount"], "refund": r["amount"],
                           "payer_total": t["amount"], "payer_refund": r["amount"]},
                "user_received_account": "支付用户零钱"}

    ctx = ssl.create_default_context(cafile=cert_file)

    def post(body, headers, path="/wechat/notify"):
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
        try:
            conn.request("POST", path, body, {**headers, "Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def ttl(key):
        return rd.call("TTL", key)

    # --- a refund finished by its notification while the query still says PROCESSING ---
    intent, end = pay(1000)
    c.eq(end.get("state"), "succeeded", "paid")
    c.check(0 < ttl(f"pay:{{S1}}:{intent}") <= RETENTION_S and
            0 < ttl(f"payhist:{{S1}}:{intent}") <= RETENTION_S,
            f"retention: a paid intent's keys expire in {RETENTION_S} s")
    day = datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=8))).strftime("%Y-%m-%d")
    c.check(ttl(f"payday:{{S1}}:{day}") > RETENTION_S,
            f"retention: the day index outlives its intents: {ttl(f'payday:{{S1}}:{day}')}")
    r = ops.call("payments", "payment.recon.put", {"store": STORE, "day": day,
                                                   "provider": "wechat", "result": {"n": 1}})
    c.check(r["type"] == "reply" and ttl(f"payrec:{{S1}}:{day}") > RETENTION_S,
            f"retention: the day's reconciliation result too: {ttl(f'payrec:{{S1}}:{day}')}")
    c.check(refund(intent, "RN-1", 600)["type"] == "reply", "a refund of 6.00")
    c.eq(ttl(f"pay:{{S1}}:{intent}"), -1, "retention: an intent with an open refund is kept")
    t0 = time.monotonic()
    c.check(wait_for(lambda: refund_get("RN-1").get("state") == "succeeded", 10),
            f"the notification finished the refund: {refund_get('RN-1')}")
    took = time.monotonic() - t0
    got = refund_get("RN-1")
    _, wr = wx_refund("RN-1")
    c.check(got.get("reason", "").startswith("notified:") and
            got.get("refund_id") == wr["refund_id"],
            f"by the notification, with WeChat's refund id: {got.get('reason')}")
    c.check(wr["notify"] and wr["notify"]["delivered"] and wr["notify"]["last"] in (200, 204),
            f"the emulator's notification was answered 2xx: {wr['notify']}")
    c.check(took < 8, f"in {took:.1f} s, while a query would say PROCESSING for 600 s")
    n0 = counters()
    c.check(n0.get("notifications", 0) >= 1, f"counted: {n0.get('notifications')}")
    c.check(0 < ttl(f"pay:{{S1}}:{intent}") <= RETENTION_S and
            0 < ttl("payref:{S1}:RN-1") <= RETENTION_S and
            0 < ttl("payhist:{S1}:R:RN-1") <= RETENTION_S,
            "retention: the refund's keys and the paid intent's again (no refund open)")

    # the same notification again (WeChat resends it): answered, nothing changes
    hist = rd.call("LRANGE", "payhist:{S1}:R:RN-1", 0, -1)
    refunded = rd.call("HGET", f"pay:{{S1}}:{intent}", "refunded")
    c.eq(post(*notice(plain_of("RN-1"))), 204, "the same notification again: 204")
    c.check(rd.call("LRANGE", "payhist:{S1}:R:RN-1", 0, -1) == hist and
            rd.call("HGET", f"pay:{{S1}}:{intent}", "refunded") == refunded and
            refund_get("RN-1").get("state") == "succeeded",
            "and changes nothing (history, refunded amount, state)")

    # --- notifications that cannot be trusted: refused, counted, nothing changes ---
    c.check(wx.command({"cmd": "refund_delay", "seconds": 600})["ok"], "the next refunds wait")
    c.check(refund(intent, "RN-2", 300)["type"] == "reply", "a second refund, 3.00")
    c.check(wait_for(lambda: wx_refund("RN-2")[1] is not None, 10), "at WeChat, PROCESSING")
    c.eq(ttl(f"pay:{{S1}}:{intent}"), -1, "retention: open again, kept again")
    body, headers = notice(plain_of("RN-2"))
    bad = dict(headers)
    sig = bad["Wechatpay-Signature"]
    bad["Wechatpay-Signature"] = ("A" if sig[0] != "A" else "B") + sig[1:]
    before = counters()
    c.eq(post(body, bad), 401, "a tampered signature: 401")
    c.eq(post(body.replace(b"REFUND.SUCCESS", b"REFUND.CLOSED"), headers), 401,
         "a body changed under its signature: 401")
    c.eq(post(*notice(plain_of("RN-2"), v3key=b"x" * 32)), 400,
         "a resource encrypted with another key: 400")
    c.eq(post(*notice(plain_of("RN-2"), skew=-900)), 401, "a stale timestamp (a replay): 401")
    c.eq(post(b"{" * 10, {}), 401, "no signature headers at all: 401")
    c.eq(post(b"x" * (70 * 1024), headers), 413, "a body over 64 KiB: 413")
    c.eq(post(body, headers, path="/elsewhere"), 404, "another path: 404")
    after = counters()
    c.eq(after.get("notifications_unverified", 0) - before.get("notifications_unverified", 0), 4,
         "the four unverified counted")
    c.eq(after.get("notifications_undecryptable", 0) -
         before.get("notifications_undecryptable", 0), 1, "the undecryptable one counted")
    c.eq(after.get("notifications", 0), before.get("notifications", 0), "none taken")
    time.sleep(0.5)
    c.check(refund_get("RN-2").get("state") in ("pending", "created", "unknown"),
            f"the refund is still open: {refund_get('RN-2').get('state')}")
    # the genuine one, late: taken
    c.eq(post(body, headers), 204, "the genuine notification: 204")
    c.eq(refund_get("RN-2").get("state"), "succeeded", "stored before it was answered")

    # --- REFUND.CLOSED: failed, the amount given back ---
    c.check(refund(intent, "RN-3", 100)["type"] == "reply", "a third refund, 1.00")
    c.check(wait_for(lambda: wx_refund("RN-3")[1] is not None, 10), "at WeChat")
    c.eq(rd.call("HGET", f"pay:{{S1}}:{intent}", "refunded"), b"1000", "900 + 100 reserved")
    c.eq(post(*notice(plain_of("RN-3", "CLOSED"), event="REFUND.CLOSED")), 204, "CLOSED: 204")
    c.eq(refund_get("RN-3").get("state"), "failed", "the refund failed")
    c.eq(rd.call("HGET", f"pay:{{S1}}:{intent}", "refunded"), b"900", "its 1.00 given back")
    c.eq(post(*notice(plain_of("RN-3", "CLOSED"), event="REFUND.CLOSED")), 204,
         "CLOSED again: 204")
    c.check(rd.call("HGET", f"pay:{{S1}}:{intent}", "refunded") == b"900" and
            rd.call("HGET", "payref:{S1}:RN-3", "released") == b"1",
            "and given back once only")
    hist = [h.decode() for h in rd.call("LRANGE", f"payhist:{{S1}}:{intent}", 0, -1)]
    c.check(sum(" refund RN-3 of 100 fen failed: notified: " in h for h in hist) == 1 and
            sum(" refund RN-1 of 600 fen succeeded: notified: " in h for h in hist) == 1,
            f"the paid intent's history has each refund's end once: {hist}")
    c.check(0 < ttl(f"pay:{{S1}}:{intent}") <= RETENTION_S and
            0 < ttl("payref:{S1}:RN-3") <= RETENTION_S,
            "retention: every refund over, the intent expires again")

    # --- a notification for a refund posbus never made: answered, nothing written ---
    plain = plain_of("RN-1")
    plain["out_refund_no"] = "NOT-OURS-1"
    before = counters()
    c.eq(post(*notice(plain)), 204, "an unknown refund's notification: 204")
    c.eq(rd.call("EXISTS", "payref:{S1}:NOT-OURS-1"), 0, "nothing written for it")
    c.eq(counters().get("notifications_ignored", 0) - before.get("notifications_ignored", 0), 1,
         "counted as ignored")

    # --- retention of a failed payment ---
    wx.mode("declined")
    failed, end = pay(500)
    c.eq(end.get("state"), "failed", "declined: failed")
    c.check(0 < ttl(f"pay:{{S1}}:{failed}") <= RETENTION_S and
            0 < ttl(f"payhist:{{S1}}:{failed}") <= RETENTION_S,
            "retention: a failed intent's keys expire too")
    wx.mode("success")
    paid, end = pay(700)
    r = reg.call("payments", "payment.cancel", {"intent": paid})
    last = {}

    def reversed_():
        last.update(reg.call("payments", "payment.get", {"intent": paid})["body"])
        return last.get("state") == "reversed"
    c.check(r["type"] == "reply" and wait_for(reversed_, 20),
            f"a payment cancelled after it was paid: reversed: {last.get('state')}")
    c.check(0 < ttl(f"pay:{{S1}}:{paid}") <= RETENTION_S and
            0 < ttl(f"payhist:{{S1}}:{paid}") <= RETENTION_S,
            "retention: reversed, its keys expire again")
    c.check(ttl("paydue:{S1}") < 0 and ttl("stores") < 0,
            "the due set and the store set carry no TTL")
finally:
    if wx:
        wx.stop()
    st.stop_all(c)
c.finish()
