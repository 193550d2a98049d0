#!/usr/bin/python3
"""The WeChat Pay API v3 emulator (devices/sim/wechatpay.py) driven by an independent small
client written here from the protocol facts: http.client over TLS trusting only the
emulator's CA, requests signed with a merchant key made by the test, every answer's
signature checked with the platform public key that Wechatpay-Serial names.

It must refuse a request whose signature, serial, mchid or timestamp is wrong (401), sign
every answer (and sign with key 2 after the switch, and visibly not in tampered_signature),
charge once for a replayed codepay, make every scenario do what it says (the money booked as
status() reports), reverse, refund up to the total and no further with an encrypted, signed
notification, and produce a trade bill whose SHA1, backticks and yuan totals are right and
which shows planted edits; two requests must share one connection. Then the program form:
the ready line, DIR/port, the control socket, SIGTERM exits 0.

Waits are on conditions with deadlines, never fixed sleeps."""
import base64
import hashlib
import http.server
import json
import os
import secrets
import ssl
import threading
import time
import urllib.parse

from simtest import WAIT, run  # noqa: E402 (sys.path too)
from providertest import (Connection, check_files, handshake, rsa_key_file,  # noqa: E402
                          start_program, stop_program, test_cert_hosts, trade, until)
from wechatpay import WechatPay  # noqa: E402

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MCHID, APPID, SERIAL = "1900000001", "wx0000000000000001", "3775B6A45ACD588826D15E583A95F5DD"
KEY1, KEY2 = "PUB_KEY_ID_0000000000000001", "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
AUTH_CODE = "134567890123456789"


def merchant_files(tmp):
    """A merchant key pair and an API v3 key: (private key, public PEM path, v3 key path)."""
    key, pub = rsa_key_file(tmp, "merchant-pub.pem")
    v3 = os.path.join(tmp, "apiv3.key")
    api_key = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(32))
    with open(v3, "w") as f:
        f.write(api_key + "\n")
    return key, pub, v3, api_key.encode()


def platform_keys(d):
    out = {}
    for n, serial in ((1, KEY1), (2, KEY2)):
        with open(os.path.join(d, f"platform-{n}.pem"), "rb") as f:
            out[serial] = serialization.load_pem_public_key(f.read())
    return out


def verifies(pub, ts, nonce, body, sig):
    try:
        pub.verify(base64.b64decode(sig), f"{ts}\n{nonce}\n".encode() + body + b"\n",
                   padding.PKCS1v15(), hashes.SHA256())
        return True
    except (InvalidSignature, ValueError):
        return False


class Answer:
    def __init__(self, resp, raw, sockname):
        self.status, self.raw, self.sockname = resp.status, raw, sockname
        self.headers = {k.lower(): v for k, v in resp.getheaders()}
        try:
            self.json = json.loads(raw) if raw else None
        except ValueError:
            self.json = None

    def h(self, name):
        return self.headers.get(name.lower())


class Client:
    """The merchant's side: one keep-alive HTTPS connection to the emulator, requests signed
    as WeChat Pay API v3 wants them."""

    def __init__(self, port, ca, key, platform):
        self.port, self.key, self.platform = port, key, platform
        self.http = Connection(port, ca)

    def auth(self, method, path, body, key=None, serial=SERIAL, mchid=MCHID, ts=None):
        ts = str(int(time.time()) if ts is None else ts)
        nonce = secrets.token_hex(16)
        msg = f"{method}\n{path}\n{ts}\n{nonce}\n".encode() + body + b"\n"
        sig = base64.b64encode((key or self.key).sign(msg, padding.PKCS1v15(),
                                                      hashes.SHA256())).decode()
        return (f'WECHATPAY2-SHA256-RSA2048 mchid="{mchid}",nonce_str="{nonce}",'
                f'timestamp="{ts}",serial_no="{serial}",signature="{sig}"')

    def call(self, method, path, body=None, auth=None, timeout=WAIT, **kw):
        """An Answer, or None when the connection ended without one."""
        raw = b"" if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json", "Authorization":
                   auth if auth is not None else self.auth(method, path, raw, **kw)}
        if body is not None:
            headers["Content-Type"] = "application/json"
        got = self.http.exchange(method, path, raw if body is not None else None, headers,
                                 timeout)
        return Answer(*got) if got else None

    def signed(self, a):
        """True/False: whether a's signature verifies with the key its serial names; None
        without Wechatpay-* headers."""
        if a.h("Wechatpay-Signature") is None:
            return None
        pub = self.platform.get(a.h("Wechatpay-Serial"))
        return pub is not None and verifies(pub, a.h("Wechatpay-Timestamp"),
                                            a.h("Wechatpay-Nonce"), a.raw,
                                            a.h("Wechatpay-Signature"))

    def pay(self, otn, total=1000, code=AUTH_CODE, timeout=WAIT, **extra):
        body = {"appid": APPID, "mchid": MCHID, "description": "posbus test sale",
                "out_trade_no": otn, "payer": {"auth_code": code},
                "amount": {"total": total, "currency": "CNY"},
                "scene_info": {"device_id": "R01", "device_ip": "127.0.0.1",
                               "store_info": {"id": "S001"}}, "attach": "ticket 1", **extra}
        return self.call("POST", "/v3/pay/transactions/codepay", body, timeout=timeout)

    def query(self, otn, **kw):
        return self.call("GET", f"/v3/pay/transactions/out-trade-no/{otn}?mchid={MCHID}", **kw)

    def reverse(self, otn):
        return self.call("POST", f"/v3/pay/transactions/out-trade-no/{otn}/reverse",
                         {"appid": APPID, "mchid": MCHID})

    def refund(self, otn, orn, refund, total, notify=None):
        body = {"out_trade_no": otn, "out_refund_no": orn, "reason": "test",
                "amount": {"refund": refund, "total": total, "currency": "CNY"}}
        if notify:
            body["notify_url"] = notify
        return self.call("POST", "/v3/refund/domestic/refunds", body)

    def close(self):
        self.http.close()


class Receiver:
    """The merchant's notify_url: HTTPS on 127.0.0.1 (with the emulator's server certificate,
    any would do); the first `fail_first` notifications are answered 500."""

    def __init__(self, d, fail_first=1):
        got, cond = [], threading.Condition()
        left = [fail_first]

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with cond:
                    got.append((dict(self.headers), body))
                    failing = left[0] > 0
                    left[0] -= 1
                    cond.notify_all()
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(d, "server.pem"), os.path.join(d, "server.key"))
        self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.port = self.srv.server_address[1]
        self.got, self.cond = got, cond
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def wait(self, n):
        with self.cond:
            self.cond.wait_for(lambda: len(self.got) >= n, WAIT)
            return list(self.got)

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def test_files_and_signatures(c, tmp, emu, cl, mkey):
    d = emu.dir
    check_files(c, emu, ("ca.pem", "server.pem", "server.key", "platform-1.key",
                         "platform-1.pem", "platform-2.key", "platform-2.pem"))
    with open(os.path.join(d, "platform-1.key"), "rb") as f:
        k1 = serialization.load_pem_private_key(f.read(), None)
    c.check(k1.key_size == 2048 and k1.public_key().public_numbers() ==
            cl.platform[KEY1].public_numbers(), "platform-1.pem is platform-1.key's public key")

    path = "/v3/pay/transactions/out-trade-no/NOSUCH123?mchid=" + MCHID
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = {"a wrong key": cl.auth("GET", path, b"", key=other),
           "a wrong serial_no": cl.auth("GET", path, b"", serial="0BAD"),
           "a wrong mchid": cl.auth("GET", path, b"", mchid="1900000002"),
           "a timestamp 400 s old": cl.auth("GET", path, b"", ts=int(time.time()) - 400),
           "a signature over another path": cl.auth("GET", path + "&x=1", b""),
           "no Authorization": ""}
    for what, auth in bad.items():
        a = cl.call("GET", path, auth=auth)
        c.check(a is not None and a.status == 401 and a.json.get("code") == "SIGN_ERROR" and
                cl.signed(a), f"{what}: 401 SIGN_ERROR, itself signed")
    c.eq(emu.status()["bad_signatures"], len(bad), "bad_signatures counts them")
    body = {"appid": APPID, "mchid": MCHID}
    raw = json.dumps(body).encode()
    a = cl.call("POST", "/v3/pay/transactions/out-trade-no/NOSUCH123/reverse", body,
                auth=cl.auth("POST", "/v3/pay/transactions/out-trade-no/NOSUCH123/reverse",
                             raw + b" "))
    c.eq(a.status, 401, "a signature over another body: 401")
    a = cl.query("NOSUCH123")
    c.check(a.status == 404 and a.json["code"] == "ORDER_NOT_EXIST" and cl.signed(a) and
            a.h("Request-ID"), "unknown trade: 404 ORDER_NOT_EXIST, signed, Request-ID")


def test_codepay(c, tmp, emu, cl, mkey):
    a = cl.pay("SALE000001", 1234)
    b = a.json
    c.check(a.status == 200 and cl.signed(a) and a.h("Wechatpay-Serial") == KEY1,
            "codepay: 200, signed with platform key 1")
    c.check(b["trade_state"] == "SUCCESS" and b["trade_type"] == "MICROPAY" and
            len(b["transaction_id"]) == 28 and b["transaction_id"].isdigit() and
            b["success_time"].endswith("+08:00") and b["amount"] ==
            {"total": 1234, "payer_total": 1234, "currency": "CNY", "payer_currency": "CNY"} and
            b["payer"]["openid"] and b["promotion_detail"] == [] and b["attach"] == "ticket 1"
            and b["appid"] == APPID and b["mchid"] == MCHID and "bank_type" in b,
            "codepay: the full success body")
    a2 = cl.pay("SALE000001", 1234)
    c.check(a2.status == 200 and a2.json["transaction_id"] == b["transaction_id"] and
            a2.sockname == a.sockname, "the same codepay again: the same trade, same connection")
    st = emu.status()
    c.eq((st["charges"], st["codepay_calls"], len(st["trades"])), (1, 2, 1),
         "replayed: charged once (charges, codepay_calls, trades)")
    c.eq(cl.pay("SALE000001", 999).json["code"], "OUT_TRADE_NO_USED",
         "the same out_trade_no with another amount: OUT_TRADE_NO_USED")
    c.eq(cl.pay("SALE000001", 1234, code="134567890123456780").status, 400,
         "the same out_trade_no with another auth_code: 400")
    for what, kw in (("auth_code starting 16", {"code": "164567890123456789"}),
                     ("auth_code of 17 digits", {"code": "13456789012345678"}),
                     ("total 0", {"total": 0}), ("total 1.5", {"total": 1.5})):
        a = cl.pay("SALE000002", **kw)
        c.check(a.status == 400 and a.json["code"] == "PARAM_ERROR", f"{what}: PARAM_ERROR")
    c.eq(cl.pay("S1", 100).json["code"], "PARAM_ERROR", "out_trade_no of 2 chars: PARAM_ERROR")
    c.eq(cl.pay("SALE000002", 100, appid="wx0000000000000009").json["code"], "PARAM_ERROR",
         "another appid: PARAM_ERROR")
    q = cl.query("SALE000001")
    c.check(q.status == 200 and q.json["trade_state"] == "SUCCESS" and cl.signed(q) and
            q.json["transaction_id"] == b["transaction_id"], "query: SUCCESS, signed")
    c.eq(cl.call("GET", "/v3/pay/transactions/out-trade-no/SALE000001?mchid=1").status, 400,
         "query with another mchid: 400")


def test_scenarios(c, tmp, emu, cl, mkey):
    charges = emu.status()["charges"]

    emu.mode("declined")
    a = cl.pay("DECLINE001")
    c.check(a.status == 403 and a.json["code"] == "NOT_ENOUGH" and cl.signed(a),
            "declined: 403 NOT_ENOUGH")
    c.eq(cl.query("DECLINE001").json["trade_state"], "PAYERROR", "declined: query PAYERROR")

    emu.mode("userpaying_then_success", seconds=1)
    t0 = time.time()
    a = cl.pay("USERPAY001")
    c.check(a.status == 202 and a.raw == b'{"trade_state":"USERPAYING"}' and cl.signed(a),
            "userpaying_then_success: 202 with exactly {\"trade_state\":\"USERPAYING\"}")
    c.eq(cl.query("USERPAY001").json["trade_state"], "USERPAYING", "queried at once: USERPAYING")
    q = until(lambda: (lambda x: x if x.json["trade_state"] == "SUCCESS" else None)(
        cl.query("USERPAY001")), step=0.2)
    c.check(q and time.time() - t0 >= 1 and q.json.get("transaction_id"),
            "then SUCCESS with a transaction_id, not before 1 s")

    emu.mode("userpaying_then_timeout", no_reverse_s=1)
    t0 = time.time()
    c.eq(cl.pay("USERPAY002").status, 202, "userpaying_then_timeout: 202")
    r = cl.reverse("USERPAY002")
    c.check(r.status == 400 and r.json["code"] == "USERPAYING" and cl.signed(r),
            "a reverse within no_reverse_s: 400 USERPAYING")
    c.eq(cl.query("USERPAY002").json["trade_state"], "USERPAYING", "still USERPAYING")
    r = until(lambda: (lambda x: x if x.status == 200 else None)(cl.reverse("USERPAY002")),
              step=0.2)
    c.check(r and r.json == {} and cl.signed(r) and time.time() - t0 >= 1,
            "after no_reverse_s: reverse 200 {}")
    c.eq(cl.query("USERPAY002").json["trade_state"], "REVOKED", "then REVOKED")
    c.eq(cl.reverse("USERPAY002").status, 200, "reversed twice: 200 again")
    c.eq(emu.status()["charges"], charges + 1, "only the paid USERPAYING trade charged")
    charges += 1

    emu.mode("system_error")
    a = cl.pay("SYSERR0001")
    c.check(a.status == 500 and a.json["code"] == "SYSTEM_ERROR" and cl.signed(a),
            "system_error: 500 SYSTEM_ERROR")
    c.eq(cl.query("SYSERR0001").json["trade_state"], "SUCCESS", "system_error: booked SUCCESS")
    emu.mode("system_error", booked=False)
    c.eq(cl.pay("SYSERR0002").status, 500, "system_error booked false: 500")
    c.eq(cl.query("SYSERR0002").status, 404, "and nothing booked (404)")

    emu.mode("drop_after_charge")
    c.eq(cl.pay("DROPPED001"), None, "drop_after_charge: no answer at all")
    c.eq(cl.query("DROPPED001").json["trade_state"], "SUCCESS", "drop_after_charge: booked")

    emu.mode("slow", seconds=1)
    t0 = time.time()
    a = cl.pay("SLOW000001")
    c.check(a.status == 200 and time.time() - t0 >= 0.95 and cl.signed(a),
            "slow: SUCCESS after 1 s")
    emu.mode("slow", seconds=3)
    c.eq(cl.pay("SLOW000002", timeout=0.5), None, "slow: a client giving up gets nothing")
    c.eq(trade(emu, "SLOW000002")["state"], "SUCCESS", "and the charge is booked anyway")

    emu.mode("tampered_signature")
    a = cl.pay("TAMPER0001")
    c.check(a.status == 200 and a.json["trade_state"] == "SUCCESS" and
            cl.signed(a) is False, "tampered_signature: SUCCESS whose signature fails")

    emu.mode("clock_skew", seconds=600)
    a = cl.pay("SKEW000001")
    c.check(cl.signed(a) and abs(int(a.h("Wechatpay-Timestamp")) - time.time() - 600) < 5,
            "clock_skew: Wechatpay-Timestamp 600 s ahead, signature valid")

    emu.mode("strip_headers")
    a = cl.pay("STRIP00001")
    c.check(a.status == 200 and cl.signed(a) is None and a.h("Request-ID") and
            not any(k.startswith("wechatpay-") for k in a.headers),
            "strip_headers: no Wechatpay-* headers")
    a = cl.pay("AFTER00001")
    c.check(a.status == 200 and cl.signed(a) and abs(int(a.h("Wechatpay-Timestamp")) -
                                                       time.time()) < 5,
            "one-shot: the next codepay is a plain success")
    c.eq(emu.status()["charges"], charges + 8, "every booked scenario charged once")
    c.eq(emu.mode("nonsense")["ok"], False, "an unknown scenario is refused")


def test_keys_faults_reverse(c, tmp, emu, cl, mkey):
    c.eq(emu.command({"cmd": "platform_key", "use": 2})["ok"], True, "platform_key 2")
    a = cl.query("SALE000001")
    c.check(a.h("Wechatpay-Serial") == KEY2 and cl.signed(a) and
            not verifies(cl.platform[KEY1], a.h("Wechatpay-Timestamp"),
                         a.h("Wechatpay-Nonce"), a.raw, a.h("Wechatpay-Signature")),
            "key 2: Wechatpay-Serial names it, verifies with it and not with key 1")
    emu.command({"cmd": "platform_key", "use": 1})
    emu.command({"cmd": "clock", "offset_s": -400})
    a = cl.query("SALE000001")
    c.check(cl.signed(a) and abs(int(a.h("Wechatpay-Timestamp")) - time.time() + 400) < 5,
            "clock offset -400: every answer 400 s behind")
    emu.command({"cmd": "clock", "offset_s": 0})

    c.eq(emu.command({"cmd": "faults", "query": "system_error", "count": 2})["ok"], True,
         "faults: 2 queries fail")
    c.eq([cl.query("SALE000001").status for _ in range(3)], [500, 500, 200],
         "two queries 500 SYSTEM_ERROR, then 200")
    emu.command({"cmd": "faults", "query": "tampered_signature"})
    c.eq(cl.signed(cl.query("SALE000001")), False, "a tampered query answer does not verify")

    cl.pay("REVERSE001", 500)
    emu.command({"cmd": "faults", "reverse": "drop"})
    c.eq(cl.reverse("REVERSE001"), None, "reverse with fault drop: no answer")
    c.eq(cl.query("REVERSE001").json["trade_state"], "REVOKED", "but it was reversed")
    r = cl.reverse("REVERSE001")
    c.check(r.status == 200 and r.json == {} and cl.signed(r), "the retried reverse: 200 {}")
    emu.command({"cmd": "faults", "reverse": "system_error"})
    cl.pay("REVERSE002", 500)
    c.eq(cl.reverse("REVERSE002").status, 500, "reverse with fault system_error: 500")
    c.eq(cl.query("REVERSE002").json["trade_state"], "SUCCESS", "and nothing done")
    c.eq(cl.call("POST", "/v3/pay/transactions/out-trade-no/NOSUCH999/reverse",
                 {"appid": APPID, "mchid": MCHID}).json["code"], "ORDER_NOT_EXIST",
         "reverse of an unknown trade: 404 ORDER_NOT_EXIST")
    emu.command({"cmd": "reverse_status", "status": 204})
    r = cl.reverse("REVERSE002")
    c.check(r.status == 204 and r.raw == b"" and cl.signed(r),
            "reverse_status 204: 204 signed over an empty body")
    emu.command({"cmd": "reverse_status", "status": 200})


def test_refunds(c, tmp, emu, cl, mkey, v3key):
    rcv = Receiver(emu.dir, fail_first=1)
    url = f"https://127.0.0.1:{rcv.port}/notify?x=1"
    try:
        cl.pay("REFUND0001", 1000)
        a = cl.refund("REFUND0001", "RF0001", 600, 1000, url)
        b = a.json
        c.check(a.status == 200 and cl.signed(a) and b["status"] == "PROCESSING" and
                b["channel"] == "ORIGINAL" and b["amount"] == {
                    "total": 1000, "refund": 600, "payer_total": 1000, "payer_refund": 600,
                    "currency": "CNY"} and b["refund_id"] and b["transaction_id"],
                "refund: 200 PROCESSING with the amounts")
        a2 = cl.refund("REFUND0001", "RF0001", 600, 1000, url)
        c.eq(a2.json["refund_id"], b["refund_id"], "the same out_refund_no: the same refund")
        a = cl.refund("REFUND0001", "RF0002", 401, 1000)
        c.check(a.status == 400 and a.json["code"] == "NOT_ENOUGH", "over-refund: NOT_ENOUGH")
        c.eq(emu.command({"cmd": "faults", "refund": "refused", "status": 403,
                          "code": "USER_ACCOUNT_ABNORMAL"})["ok"], True,
             "faults: the next refund refused")
        a = cl.refund("REFUND0001", "RF0003", 400, 1000, url)
        c.check(a.status == 403 and a.json["code"] == "USER_ACCOUNT_ABNORMAL" and
                cl.signed(a) and
                cl.call("GET", "/v3/refund/domestic/refunds/RF0003").status == 404,
                "refused: 403 with the scripted code, signed; nothing done (no such refund)")
        c.eq(cl.refund("REFUND0001", "RF0003", 400, 1000, url).status, 200,
             "the rest (400) can be refunded")
        c.eq(cl.refund("REFUND0001", "RF0004", 1, 1000).json["code"], "NOT_ENOUGH",
             "one fen more: NOT_ENOUGH")
        c.eq(cl.query("REFUND0001").json["trade_state"], "REFUND", "the trade says REFUND")

        got = rcv.wait(3)   # RF0001 twice (its first answered 500), RF0003 once
        c.eq(len(got), 3, "notifications: one refused, resent, one more")
        plains = {}
        for headers, body in got:
            h = {k.lower(): v for k, v in headers.items()}
            pub = cl.platform.get(h.get("wechatpay-serial"))
            c.check(pub and verifies(pub, h["wechatpay-timestamp"], h["wechatpay-nonce"], body,
                                     h["wechatpay-signature"]), "notification signature verifies")
            n = json.loads(body)
            res = n["resource"]
            c.check(n["event_type"] == "REFUND.SUCCESS" and
                    n["resource_type"] == "encrypt-resource" and
                    res["algorithm"] == "AEAD_AES_256_GCM" and len(res["nonce"]) == 12 and
                    res["original_type"] == "refund", "notification envelope")
            plain = json.loads(AESGCM(v3key).decrypt(res["nonce"].encode(),
                                                     base64.b64decode(res["ciphertext"]),
                                                     res["associated_data"].encode()))
            plains[plain["out_refund_no"]] = plain
        p = plains.get("RF0001", {})
        c.check(p.get("refund_status") == "SUCCESS" and p.get("amount") == {
            "total": 1000, "refund": 600, "payer_total": 1000, "payer_refund": 600} and
            p.get("out_trade_no") == "REFUND0001" and p.get("mchid") == MCHID and
            p.get("refund_id") == b["refund_id"], "notification decrypts to the refund")
        c.eq(sorted(plains), ["RF0001", "RF0003"], "both refunds notified")
        res = json.loads(got[0][1])["resource"]
        try:
            AESGCM(b"x" * 32).decrypt(res["nonce"].encode(), base64.b64decode(res["ciphertext"]),
                                      b"refund")
            c.fail("another key decrypts the notification")
        except InvalidTag:
            c.check(True, "another key does not decrypt the notification")
        q = cl.call("GET", "/v3/refund/domestic/refunds/RF0001")
        c.check(q.status == 200 and q.json["status"] == "SUCCESS" and cl.signed(q) and
                q.json["success_time"].endswith("+08:00"), "refund query: SUCCESS")
        c.eq(cl.call("GET", "/v3/refund/domestic/refunds/RF9999").status, 404,
             "unknown refund: 404")
        r = trade(emu, "REFUND0001")["refunds"]
        c.eq([(x["out_refund_no"], x["amount"], x["status"]) for x in r],
             [("RF0001", 600, "SUCCESS"), ("RF0003", 400, "SUCCESS")], "status lists the refunds")
        c.eq(until(lambda: all(x["notify"]["delivered"]
                               for x in trade(emu, "REFUND0001")["refunds"])),
             True, "status: both notifications delivered")
        # the receiver refuses the first notification it gets: RF0001's or RF0003's, whichever
        # the emulator's threads sent first
        c.eq(sorted(x["notify"]["attempts"] for x in trade(emu, "REFUND0001")["refunds"]),
             [1, 2], "one on attempt 2 (the refused one), the other on attempt 1")

        # refund_query_lag: the query still says PROCESSING after the refund succeeded
        c.eq(emu.command({"cmd": "refund_query_lag", "seconds": 60})["ok"], True,
             "control: refund_query_lag")
        cl.pay("REFUND0002", 500)
        c.eq(cl.refund("REFUND0002", "RF0010", 500, 500).status, 200, "a refund to lag")
        c.check(until(lambda: trade(emu, "REFUND0002")["refunds"][0]["status"] == "SUCCESS"),
                "the lagged refund succeeds")
        q = cl.call("GET", "/v3/refund/domestic/refunds/RF0010")
        c.check(q.status == 200 and cl.signed(q) and q.json["status"] == "PROCESSING" and
                "success_time" not in q.json, "lagged: its query still says PROCESSING")
        emu.command({"cmd": "refund_query_lag", "seconds": 0})
        c.eq(cl.call("GET", "/v3/refund/domestic/refunds/RF0010").json["status"], "SUCCESS",
             "no lag: its query says SUCCESS")
    finally:
        rcv.stop()


def fen_of(field):
    whole, frac = field.split(".")
    return (-1 if whole.startswith("-") else 1) * (abs(int(whole)) * 100 + int(frac))


def get_bill(c, cl, day, what):
    a = cl.call("GET", f"/v3/bill/tradebill?bill_date={day}&bill_type=ALL")
    c.check(a.status == 200 and cl.signed(a) and a.json["hash_type"] == "SHA1",
            f"{what}: tradebill answered, signed")
    url = urllib.parse.urlsplit(a.json["download_url"])
    c.eq(url.netloc, f"127.0.0.1:{cl.port}", f"{what}: download_url on the emulator")
    path = f"{url.path}?{url.query}"
    c.eq(cl.call("GET", path, auth="").status, 401, f"{what}: download needs Authorization")
    d = cl.call("GET", path)
    c.check(d.status == 200 and d.h("Wechatpay-Signature") is None, f"{what}: download unsigned")
    c.eq(hashlib.sha1(d.raw).hexdigest(), a.json["hash_value"], f"{what}: SHA1 matches")
    lines = d.raw.decode().splitlines()
    header, summary_header, summary = lines[0].split(","), lines[-2], lines[-1].split(",")
    rows = [dict(zip(header, ln.split(","))) for ln in lines[1:-2]]
    ok = all(v.startswith("`") for r in rows for v in r.values()) and \
        all(v.startswith("`") for v in summary)
    c.check(ok and len(header) == 27 and summary_header.startswith("总交易单数,"),
            f"{what}: 27 columns, every field backticked, summary header")
    rows = [{k: v[1:] for k, v in r.items()} for r in rows]
    summary = [v[1:] for v in summary]
    return rows, summary


def test_bill(c, tmp, emu, cl, mkey):
    st = emu.status()
    paid = [t for t in st["trades"] if t["success_time"]]
    day = paid[0]["success_time"][:10]
    paid = [t for t in paid if t["success_time"][:10] == day]
    rows, summary = get_bill(c, cl, day, "bill")
    pays = [r for r in rows if not r["商户退款单号"]]
    refunds = [r for r in rows if r["商户退款单号"]]
    c.eq(sorted(r["商户订单号"] for r in pays), sorted(t["out_trade_no"] for t in paid),
         "one payment row per paid trade")
    c.eq(sum(fen_of(r["订单金额"]) for r in pays), sum(t["amount"] for t in paid),
         "payment rows: yuan equal the fen totals")
    want_refunds = sorted((r["out_refund_no"], r["amount"]) for t in st["trades"]
                          for r in t["refunds"] if r["created"][:10] == day)
    c.eq(sorted((r["商户退款单号"], fen_of(r["退款金额"])) for r in refunds), want_refunds,
         "one refund row per refund, amounts in yuan")
    c.eq(int(summary[0]), len(rows), "summary: 总交易单数")
    c.eq(fen_of(summary[1]), sum(fen_of(r["应结订单金额"]) for r in rows), "summary: 应结订单总金额")
    c.eq(fen_of(summary[2]), sum(a for _, a in want_refunds), "summary: 退款总金额")
    one = next(r for r in pays if r["商户订单号"] == "SALE000001")
    c.check(one["应结订单金额"] == "12.34" and one["交易类型"] == "MICROPAY" and
            one["商户号"] == MCHID and len(one["微信订单号"]) == 28, "SALE000001: 12.34 yuan")

    e = emu.command({"cmd": "bill_edit", "drop": ["SLOW000001"], "amount": {"SALE000001": 1235},
                     "add": [{"out_trade_no": "GHOST00001", "amount": 777,
                              "bill_date": day}]})
    c.eq(e["ok"], True, "bill_edit accepted")
    rows, summary = get_bill(c, cl, day, "edited bill")
    otns = [r["商户订单号"] for r in rows]
    c.check("SLOW000001" not in otns, "edited bill: the dropped trade is missing")
    c.eq(next(r["应结订单金额"] for r in rows if r["商户订单号"] == "SALE000001"), "12.35",
         "edited bill: the changed amount")
    c.eq(next((r["应结订单金额"] for r in rows if r["商户订单号"] == "GHOST00001"), None), "7.77",
         "edited bill: the added row")
    c.eq(fen_of(summary[1]), sum(fen_of(r["应结订单金额"]) for r in rows),
         "edited bill: the summary follows the rows")
    c.eq(cl.call("GET", "/v3/bill/tradebill?bill_date=2999-01-01&bill_type=ALL").status, 400,
         "a bill of a future day: 400")


def test_class(c, tmp):
    d = os.path.join(tmp, "class")
    mkey, pub, v3, v3key = merchant_files(tmp)
    t0 = time.time()
    with WechatPay(d, MCHID, APPID, SERIAL, pub, v3, refund_delay=0.2) as emu:
        cl = Client(emu.port, emu.ca_file, mkey, platform_keys(d))
        try:
            for test in (test_files_and_signatures, test_codepay, test_scenarios,
                         test_keys_faults_reverse):
                test(c, tmp, emu, cl, mkey)
            test_refunds(c, tmp, emu, cl, mkey, v3key)
            test_bill(c, tmp, emu, cl, mkey)
            a, b = cl.query("SALE000001"), cl.query("SALE000001")
            c.check(a.sockname == b.sockname, "keep-alive: two requests on one connection")
            st = emu.status()
            c.check(st["requests"].get("codepay", 0) >= st["codepay_calls"] > 0 and
                    st["requests"].get("query", 0) > 0, "status counts requests by endpoint")
        finally:
            cl.close()
    print(f"in-process tests: {time.time() - t0:.1f} s", flush=True)


def test_program(c, tmp):
    mkey, pub, v3, _ = merchant_files(tmp)
    control = os.path.join(tmp, "wechatpay.sock")
    proc, port, ctl, err = start_program(
        c, tmp, "wechatpay.py", ["--mchid", MCHID, "--appid", APPID, "--merchant-serial", SERIAL,
                                 "--merchant-public-key", pub, "--api-v3-key-file", v3,
                                 "--cert-host", "payments-emulators"], control)
    d = os.path.join(tmp, "prog")
    c.eq(handshake(port, os.path.join(d, "ca.pem"), "payments-emulators"), None,
         "program: --cert-host, connected by that name")
    cl = Client(port, os.path.join(d, "ca.pem"), mkey, platform_keys(d))
    c.eq(ctl({"cmd": "mode", "next": "declined"})["ok"], True, "control: mode")
    c.eq(cl.pay("PROG000001").status, 403, "program: the scripted decline")
    c.eq(cl.pay("PROG000002").status, 200, "program: then success")
    st = ctl({"cmd": "status"})
    c.eq([(t["out_trade_no"], t["state"]) for t in st["trades"]],
         [("PROG000001", "PAYERROR"), ("PROG000002", "SUCCESS")], "control: status")
    c.eq(st["charges"], 1, "control: one charge")
    c.eq(ctl({"cmd": "platform_key", "use": 3})["ok"], False, "control: a bad key refused")
    c.eq(ctl({"cmd": "nonsense"})["ok"], False, "control: an unknown command refused")
    cl.close()
    stop_program(c, tmp, proc, control, err)


def test_names(c, tmp):
    _, pub, v3, _ = merchant_files(tmp)
    test_cert_hosts(c, tmp, lambda d, listen, hosts: WechatPay(
        d, MCHID, APPID, SERIAL, pub, v3, listen=listen, cert_hosts=hosts))


if __name__ == "__main__":
    run("test_wechatpay", test_class, test_program, test_names)
