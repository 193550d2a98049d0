#!/usr/bin/python3
"""The Alipay emulator (devices/sim/alipay.py) driven by an independent small client written
here from the protocol facts: http.client over TLS trusting only the emulator's CA, form
requests signed RSA2 with an app key made by the test, every answer's signature checked with
DIR/alipay.pem over the raw response object cut out of the body (never re-serialised).

It must refuse a request whose signature, app_id, signed string or timestamp is wrong (40002,
itself signed), answer every method with its <method>_response, charge once for a replayed
pay, make every scenario do what it says (the money booked as status() reports), cancel
(close or refund), refund up to the total and no further, idempotently, and answer refund
queries; two requests must share one connection. The day's statement (业务明细, GBK) lists
every paid trade, refund and cancel of a paid trade with the real columns, tab padding and
totals, and bill_edit plants differences in it. Then the program form: the ready line,
DIR/port, the control socket, SIGTERM exits 0.

Waits are on conditions with deadlines, never fixed sleeps."""
import base64
import datetime
import json
import os
import time
import urllib.parse

from simtest import WAIT, run  # noqa: E402 (sys.path too)
from providertest import (Connection, check_files, rsa_key_file, start_program,  # noqa: E402
                          stop_program, test_cert_hosts, trade, until)
from alipay import Alipay  # noqa: E402

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

APP_ID = "2021000000000001"
AUTH_CODE = "287654321098765432"
BEIJING = datetime.timezone(datetime.timedelta(hours=8))


def app_files(tmp):
    """The app's key pair: (private key, public PEM path)."""
    return rsa_key_file(tmp, "app-pub.pem")


def alipay_key(d):
    with open(os.path.join(d, "alipay.pem"), "rb") as f:
        return serialization.load_pem_public_key(f.read())


def now_beijing(offset=0):
    return datetime.datetime.fromtimestamp(time.time() + offset, BEIJING) \
        .strftime("%Y-%m-%d %H:%M:%S")


class Answer:
    """An answer cut as a client must cut it: the raw bytes of the response object between
    `{"<key>":` and the last `,"sign":"`, verified as they are."""

    def __init__(self, resp, raw, sockname, method, pub):
        self.status, self.raw, self.sockname = resp.status, raw, sockname
        self.ctype = resp.getheader("Content-Type")
        self.json = json.loads(raw)
        key = method.replace(".", "_") + "_response"
        if key not in self.json:
            key = "error_response"
        self.key = key
        self.obj = self.json.get(key, {})
        prefix = b'{"' + key.encode() + b'":'
        end = raw.rfind(b',"sign":"')
        self.obj_raw = raw[len(prefix):end] if raw.startswith(prefix) and end > 0 else None
        self.signed = False
        if self.obj_raw is not None and raw.endswith(b'"}'):
            try:
                pub.verify(base64.b64decode(self.json["sign"]), self.obj_raw,
                           padding.PKCS1v15(), hashes.SHA256())
                self.signed = True
            except (InvalidSignature, ValueError, KeyError):
                pass

    def __getitem__(self, name):
        return self.obj.get(name)


class Client:
    """The merchant's side: one keep-alive HTTPS connection to the gateway, requests signed
    as the Alipay open platform wants them."""

    def __init__(self, port, ca, key, pub):
        self.port, self.key, self.pub = port, key, pub
        self.http = Connection(port, ca)

    def sign(self, params, key=None, skip=("sign",)):
        text = "&".join(f"{k}={v}" for k, v in sorted(params.items(), key=lambda kv:
                                                      kv[0].encode())
                        if k not in skip and v != "")
        return base64.b64encode((key or self.key).sign(text.encode(), padding.PKCS1v15(),
                                                       hashes.SHA256())).decode()

    def call(self, method, biz, timeout=WAIT, split=False, sign=None, edit=None, **kw):
        """An Answer, or None when the connection ended without one. split: common params
        in the query string, biz_content in the body; edit(params) changes them after
        signing; kw: sign() keyword arguments or overridden common params."""
        params = {"app_id": APP_ID, "method": method, "format": "JSON", "charset": "utf-8",
                  "sign_type": "RSA2", "timestamp": now_beijing(), "version": "1.0",
                  "biz_content": json.dumps(biz, ensure_ascii=False)}
        skw = {k: kw.pop(k) for k in ("key", "skip") if k in kw}
        params.update(kw)
        params["sign"] = self.sign(params, **skw) if sign is None else sign
        if edit:
            edit(params)
        path = "/gateway.do"
        if split:
            common = {k: v for k, v in params.items() if k != "biz_content"}
            path += "?" + urllib.parse.urlencode(common)
            body = urllib.parse.urlencode({"biz_content": params["biz_content"]})
        else:
            body = urllib.parse.urlencode(params)
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        got = self.http.exchange("POST", path, body.encode(), headers, timeout)
        return Answer(*got, method, self.pub) if got else None

    def pay(self, otn, amount="10.00", code=AUTH_CODE, timeout=WAIT, **extra):
        biz = {"out_trade_no": otn, "scene": "bar_code", "auth_code": code,
               "subject": "posbus 测试 sale", "total_amount": amount,
               "product_code": "FACE_TO_FACE_PAYMENT", **extra}
        return self.call("alipay.trade.pay", biz, timeout=timeout)

    def query(self, otn):
        return self.call("alipay.trade.query", {"out_trade_no": otn})

    def cancel(self, otn):
        return self.call("alipay.trade.cancel", {"out_trade_no": otn})

    def refund(self, otn, amount, orn):
        return self.call("alipay.trade.refund", {"out_trade_no": otn, "refund_amount": amount,
                                                 "out_request_no": orn,
                                                 "refund_reason": "退货"})

    def refund_query(self, otn, orn):
        return self.call("alipay.trade.fastpay.refund.query",
                         {"out_trade_no": otn, "out_request_no": orn})

    def close(self):
        self.http.close()


def test_files_and_signatures(c, tmp, emu, cl, akey):
    d = emu.dir
    check_files(c, emu, ("ca.pem", "ca.key", "server.pem", "server.key", "alipay.key",
                         "alipay.pem"))
    with open(os.path.join(d, "alipay.key"), "rb") as f:
        k = serialization.load_pem_private_key(f.read(), None)
    c.check(k.key_size == 2048 and k.public_key().public_numbers() == cl.pub.public_numbers(),
            "alipay.pem is alipay.key's public key")

    q = {"out_trade_no": "NOSUCH0001"}
    m = "alipay.trade.query"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = {"a wrong key": dict(key=other),
           "a signature without sign_type": dict(skip=("sign", "sign_type")),
           "no sign": dict(sign=""),
           "a garbage sign": dict(sign="bm90IGEgc2lnbmF0dXJl"),
           "a changed biz_content": dict(edit=lambda p: p.update(
               biz_content='{"out_trade_no":"NOSUCH0002"}'))}
    for what, kw in bad.items():
        a = cl.call(m, q, **kw)
        c.check(a is not None and a.status == 200 and a.key == "alipay_trade_query_response" and
                a["code"] == "40002" and a["msg"] == "Invalid Arguments" and
                a["sub_code"] == "isv.invalid-signature" and a.signed,
                f"{what}: 40002 isv.invalid-signature, itself signed")
    a = cl.call(m, q, app_id="2021000000000009")
    c.check(a["code"] == "40002" and a["sub_code"] == "isv.invalid-app-id" and a.signed,
            "another app_id: 40002 isv.invalid-app-id")
    c.eq(emu.status()["bad_signatures"], len(bad) + 1, "bad_signatures counts them")
    a = cl.call(m, q, timestamp=now_beijing(-8 * 3600))
    c.eq((a["code"], a["sub_code"]), ("40002", "isv.invalid-timestamp"),
         "a UTC timestamp (8 h behind Beijing): isv.invalid-timestamp")
    a = cl.call("alipay.trade.nonsense", q)
    c.check(a.key == "error_response" and a["sub_code"] == "isv.invalid-method" and a.signed,
            "an unknown method: error_response isv.invalid-method, signed")
    a = cl.query("NOSUCH0001")
    c.check(a.status == 200 and a.ctype == "application/json;charset=utf-8" and a.signed and
            a["code"] == "40004" and a["msg"] == "Business Failed" and
            a["sub_code"] == "ACQ.TRADE_NOT_EXIST", "unknown trade: 40004 ACQ.TRADE_NOT_EXIST")
    c.check(set(a.json) == {"alipay_trade_query_response", "sign"},
            "the body holds the response object and sign, nothing else")
    a = cl.call(m, q, split=True)
    c.check(a.signed and a["sub_code"] == "ACQ.TRADE_NOT_EXIST",
            "common params in the query string, biz_content in the body: accepted")
    # past the signature check (a value signed as sent would be 40002 isv.invalid-signature),
    # then refused for its alphabet
    a = cl.call(m, {"out_trade_no": "A+B/C=D&E"}, timestamp=now_beijing())
    c.check(a.signed and a["code"] == "40004" and a["sub_code"] == "ACQ.INVALID_PARAMETER",
            "values with + / = & are signed URL-decoded (then the out_trade_no refused)")
    a = cl.call(m, {"trade_no": "A+B/C=D&E"}, timestamp=now_beijing())
    c.check(a.signed and a["code"] == "40004" and a["sub_code"] == "ACQ.TRADE_NOT_EXIST",
            "a trade_no with + / = &: signed URL-decoded, no such trade")


def test_pay(c, tmp, emu, cl, akey):
    a = cl.pay("SALE000001", "12.34")
    c.check(a.signed and a.key == "alipay_trade_pay_response" and a["code"] == "10000" and
            a["msg"] == "Success", "pay: 10000 Success, signed")
    c.check(len(a["trade_no"]) == 28 and a["trade_no"].isdigit() and
            a["trade_no"][:8] == now_beijing()[:10].replace("-", "") and
            a["out_trade_no"] == "SALE000001" and a["buyer_logon_id"] == "159****5620" and
            a["total_amount"] == "12.34" and a["receipt_amount"] == "12.34" and
            a["gmt_payment"][:10] == now_beijing()[:10] and
            a["fund_bill_list"] == [{"fund_channel": "ALIPAYACCOUNT", "amount": "12.34"}],
            "pay: the success body")
    a2 = cl.pay("SALE000001", "12.34")
    c.check(a2.signed and a2["code"] == "10000" and a2["trade_no"] == a["trade_no"] and
            a2.sockname == a.sockname, "the same pay again: the same trade, same connection")
    st = emu.status()
    c.eq((st["charges"], st["pay_calls"], len(st["trades"])), (1, 2, 1),
         "replayed: charged once (charges, pay_calls, trades)")
    t = st["trades"][0]
    c.eq((t["trade_no"], t["auth_code"], t["amount_fen"], t["state"], t["net_fen"]),
         (a["trade_no"], AUTH_CODE, 1234, "TRADE_SUCCESS", 1234), "status: the trade")
    c.eq(cl.pay("SALE000001", "12.35")["sub_code"], "ACQ.TRADE_HAS_SUCCESS",
         "the same out_trade_no with another amount, paid: ACQ.TRADE_HAS_SUCCESS")
    c.eq(cl.pay("SALE000001", "12.34", code="287654321098765430")["sub_code"],
         "ACQ.TRADE_HAS_SUCCESS", "the same out_trade_no with another auth_code: "
         "ACQ.TRADE_HAS_SUCCESS")
    for what, kw in (("auth_code starting 31", {"code": "317654321098765432"}),
                     ("auth_code of 15 digits", {"code": "287654321098765"}),
                     ("auth_code of 25 digits", {"code": "2876543210987654321098765"}),
                     ("amount 12.3", {"amount": "12.3"}), ("amount 0.00", {"amount": "0.00"}),
                     ("amount 012.00", {"amount": "012.00"}), ("amount 1e3", {"amount": "1e3"}),
                     ("amount as a number", {"amount": 12.34}),
                     ("scene wave_code", {"scene": "wave_code"}),
                     ("product_code other", {"product_code": "QUICK_MSECURITY_PAY"}),
                     ("empty subject", {"subject": ""})):
        a = cl.pay("SALE000002", **kw)
        c.check(a.signed and a["code"] == "40004" and
                a["sub_code"] == "ACQ.INVALID_PARAMETER", f"{what}: ACQ.INVALID_PARAMETER")
    for otn in ("X" * 65, "SALE 02", "", "S1-R01-000001-1", "SALE.02", "订单02"):
        c.eq(cl.pay(otn)["sub_code"], "ACQ.INVALID_PARAMETER",
             f"out_trade_no {otn[:8]!r}..: ACQ.INVALID_PARAMETER (1-64 of [0-9A-Za-z_])")
    c.check(cl.pay("X" * 64, code="30" + "1" * 22)["code"] == "10000",
            "64-char out_trade_no, 24-digit auth_code starting 30: paid")
    c.check(cl.pay("S1__R01__000001__1", code="30" + "2" * 22)["code"] == "10000",
            "an out_trade_no with underscores: paid")
    for what, a in (("query", cl.query("S1-R01-000001-1")),
                    ("cancel", cl.cancel("S1-R01-000001-1")),
                    ("refund", cl.refund("S1-R01-000001-1", "1.00", "RF0001")),
                    ("refund query", cl.refund_query("X" * 65, "RF0001"))):
        c.eq((a["code"], a["sub_code"]), ("40004", "ACQ.INVALID_PARAMETER"),
             f"{what} naming an out_trade_no outside the alphabet: ACQ.INVALID_PARAMETER")
    c.eq(trade(emu, "SALE000002"), None, "refused pays book nothing")
    q = cl.query("SALE000001")
    c.check(q.signed and q["code"] == "10000" and q["trade_status"] == "TRADE_SUCCESS" and
            q["trade_no"] == a2["trade_no"] and q["total_amount"] == "12.34" and
            q["out_trade_no"] == "SALE000001" and q["send_pay_date"],
            "query: TRADE_SUCCESS, signed")


def test_scenarios(c, tmp, emu, cl, akey):
    charges = emu.status()["charges"]

    emu.mode("declined")
    a = cl.pay("DECLINE001")
    c.check(a.signed and a["code"] == "40004" and
            a["sub_code"] == "ACQ.BUYER_BALANCE_NOT_ENOUGH",
            "declined: ACQ.BUYER_BALANCE_NOT_ENOUGH")
    c.eq(cl.query("DECLINE001")["trade_status"], "TRADE_CLOSED", "declined: query TRADE_CLOSED")
    c.eq(cl.pay("DECLINE001")["sub_code"], "ACQ.TRADE_HAS_CLOSE",
         "declined, paid again: ACQ.TRADE_HAS_CLOSE, no new charge")

    emu.mode("waiting_then_success", seconds=1)
    t0 = time.time()
    a = cl.pay("WAIT000001")
    c.check(a.signed and a["code"] == "10003" and a["msg"] == "等待用户付款" and
            len(a["trade_no"]) == 28, "waiting_then_success: 10003 等待用户付款 with trade_no")
    c.eq(cl.query("WAIT000001")["trade_status"], "WAIT_BUYER_PAY", "queried at once: waiting")
    q = until(lambda: (lambda x: x if x["trade_status"] == "TRADE_SUCCESS" else None)(
        cl.query("WAIT000001")), step=0.2)
    c.check(q and time.time() - t0 >= 1 and q["send_pay_date"] and q.signed,
            "then TRADE_SUCCESS, not before 1 s")
    c.eq(cl.pay("WAIT000001")["code"], "10000", "then the replayed pay answers 10000")

    emu.mode("waiting_then_timeout")
    c.eq(cl.pay("WAIT000002")["code"], "10003", "waiting_then_timeout: 10003")
    c.eq(cl.pay("WAIT000002")["code"], "10003", "replayed while waiting: 10003 again")
    c.eq(cl.pay("WAIT000002", "9.99")["sub_code"], "ACQ.CONTEXT_INCONSISTENT",
         "another amount while waiting: ACQ.CONTEXT_INCONSISTENT")
    c.eq(cl.query("WAIT000002")["trade_status"], "WAIT_BUYER_PAY", "still WAIT_BUYER_PAY")
    r = cl.cancel("WAIT000002")
    c.check(r.signed and r["code"] == "10000" and r["action"] == "close" and
            r["retry_flag"] == "N", "cancel of the waiting trade: action close")
    c.eq(cl.query("WAIT000002")["trade_status"], "TRADE_CLOSED", "then TRADE_CLOSED")
    c.eq(emu.status()["charges"], charges + 1, "only the paid waiting trade charged")
    charges += 1

    emu.mode("system_error")
    a = cl.pay("SYSERR0001")
    c.check(a.signed and a["code"] == "20000" and a["msg"] == "Service Currently Unavailable"
            and a["sub_code"] == "aop.ACQ.SYSTEM_ERROR", "system_error: 20000 aop.ACQ.SYSTEM_ERROR")
    c.eq(cl.query("SYSERR0001")["trade_status"], "TRADE_SUCCESS", "system_error: booked paid")
    emu.mode("system_error", booked=False)
    c.eq(cl.pay("SYSERR0002")["code"], "20000", "system_error booked false: 20000")
    c.eq(cl.query("SYSERR0002")["sub_code"], "ACQ.TRADE_NOT_EXIST", "and nothing booked")

    emu.mode("drop_after_charge")
    c.eq(cl.pay("DROPPED001"), None, "drop_after_charge: no answer at all")
    c.eq(cl.query("DROPPED001")["trade_status"], "TRADE_SUCCESS", "drop_after_charge: booked")

    emu.mode("slow", seconds=1)
    t0 = time.time()
    a = cl.pay("SLOW000001")
    c.check(a.signed and a["code"] == "10000" and time.time() - t0 >= 0.95,
            "slow: 10000 after 1 s")
    emu.mode("slow", seconds=3)
    c.eq(cl.pay("SLOW000002", timeout=0.5), None, "slow: a client giving up gets nothing")
    c.eq(trade(emu, "SLOW000002")["state"], "TRADE_SUCCESS", "and the charge is booked anyway")

    emu.mode("tampered_signature")
    a = cl.pay("TAMPER0001")
    c.check(a["code"] == "10000" and a["tampered"] is True and not a.signed,
            "tampered_signature: 10000 whose signature fails")
    a = cl.pay("AFTER00001")
    c.check(a.signed and a["code"] == "10000", "one-shot: the next pay is a plain success")
    c.eq(emu.status()["charges"], charges + 6, "every booked scenario charged once")
    c.eq(emu.mode("nonsense")["ok"], False, "an unknown scenario is refused")


def test_cancel_and_faults(c, tmp, emu, cl, akey):
    cl.pay("CANCEL0001", "5.00")
    r = cl.cancel("CANCEL0001")
    c.check(r.signed and r.key == "alipay_trade_cancel_response" and r["code"] == "10000" and
            r["action"] == "refund" and r["retry_flag"] == "N" and
            r["out_trade_no"] == "CANCEL0001", "cancel of a paid trade: action refund")
    c.eq(cl.cancel("CANCEL0001")["action"], "refund", "cancelled again: the same answer")
    t = trade(emu, "CANCEL0001")
    c.eq((t["state"], t["net_fen"], t["cancel_action"]), ("TRADE_CLOSED", 0, "refund"),
         "status: closed, money back")
    c.eq(cl.pay("CANCEL0001", "5.00")["sub_code"], "ACQ.TRADE_HAS_CLOSE",
         "a pay replayed after the cancel: ACQ.TRADE_HAS_CLOSE")
    c.eq(cl.cancel("NOSUCH0003")["sub_code"], "ACQ.TRADE_NOT_EXIST",
         "cancel of an unknown trade: ACQ.TRADE_NOT_EXIST")

    cl.pay("CANCEL0002", "5.00")
    c.eq(emu.command({"cmd": "faults", "cancel": "system_error", "count": 2})["ok"], True,
         "faults: 2 cancels fail")
    r = cl.cancel("CANCEL0002")
    c.check(r.signed and r["code"] == "20000" and r["retry_flag"] == "Y" and
            r["sub_code"] == "aop.ACQ.SYSTEM_ERROR", "cancel fault: 20000 retry_flag Y")
    c.eq(cl.query("CANCEL0002")["trade_status"], "TRADE_SUCCESS", "and nothing done")
    c.eq([cl.cancel("CANCEL0002")["code"] for _ in range(2)], ["20000", "10000"],
         "the second fails too, the third cancels")
    c.eq(cl.query("CANCEL0002")["trade_status"], "TRADE_CLOSED", "now closed")

    cl.pay("CANCEL0003", "5.00")
    emu.command({"cmd": "faults", "cancel": "drop"})
    c.eq(cl.cancel("CANCEL0003"), None, "cancel with fault drop: no answer")
    c.eq(cl.query("CANCEL0003")["trade_status"], "TRADE_CLOSED", "but it was cancelled")
    c.eq(cl.cancel("CANCEL0003")["action"], "refund", "the retried cancel: action refund")

    emu.command({"cmd": "faults", "query": "system_error"})
    c.eq([cl.query("SALE000001")["code"] for _ in range(2)], ["20000", "10000"],
         "query fault: 20000 once, then 10000")
    emu.command({"cmd": "faults", "query": "tampered_signature"})
    a = cl.query("SALE000001")
    c.check(a["code"] == "10000" and not a.signed, "a tampered query answer does not verify")
    c.eq(emu.command({"cmd": "faults", "query": "nonsense"})["ok"], False,
         "an unknown fault is refused")


def test_refunds(c, tmp, emu, cl, akey):
    cl.pay("REFUND0001", "10.00")
    a = cl.refund("REFUND0001", "6.00", "RF0001")
    c.check(a.signed and a.key == "alipay_trade_refund_response" and a["code"] == "10000" and
            a["fund_change"] == "Y" and a["refund_fee"] == "6.00" and
            a["out_trade_no"] == "REFUND0001" and len(a["trade_no"]) == 28,
            "refund 6.00: fund_change Y, refund_fee 6.00")
    a = cl.refund("REFUND0001", "6.00", "RF0001")
    c.check(a.signed and a["code"] == "10000" and a["fund_change"] == "N" and
            a["refund_fee"] == "6.00", "the same out_request_no: fund_change N, nothing more")
    a = cl.refund("REFUND0001", "4.01", "RF0002")
    c.eq(a["sub_code"], "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "over the paid amount: refused")
    c.eq(cl.query("REFUND0001")["trade_status"], "TRADE_SUCCESS", "partly refunded: TRADE_SUCCESS")
    c.eq(cl.cancel("REFUND0001")["sub_code"], "ACQ.TRADE_STATUS_ERROR",
         "cancel of a refunded trade: ACQ.TRADE_STATUS_ERROR")
    a = cl.refund("REFUND0001", "4.00", "RF0003")
    c.eq((a["fund_change"], a["refund_fee"]), ("Y", "10.00"), "the rest: refund_fee 10.00")
    c.eq(cl.query("REFUND0001")["trade_status"], "TRADE_CLOSED", "fully refunded: TRADE_CLOSED")
    c.eq(cl.refund("REFUND0001", "0.01", "RF0004")["sub_code"], "ACQ.TRADE_STATUS_ERROR",
         "one fen more: refused")
    t = trade(emu, "REFUND0001")
    c.eq([(r["out_request_no"], r["amount_fen"], r["status"]) for r in t["refunds"]],
         [("RF0001", 600, "REFUND_SUCCESS"), ("RF0003", 400, "REFUND_SUCCESS")],
         "status lists the refunds")
    c.eq(t["net_fen"], 0, "status: nothing kept")

    q = cl.refund_query("REFUND0001", "RF0001")
    c.check(q.signed and q.key == "alipay_trade_fastpay_refund_query_response" and
            q["code"] == "10000" and q["refund_amount"] == "6.00" and
            q["refund_status"] == "REFUND_SUCCESS" and q["out_request_no"] == "RF0001" and
            q["total_amount"] == "10.00", "refund query: 6.00 REFUND_SUCCESS")
    q = cl.refund_query("REFUND0001", "RF0002")
    c.check(q.signed and q["code"] == "10000" and q["refund_amount"] is None and
            q["refund_status"] is None, "refund query of a refused refund: 10000 without amount")
    c.eq(cl.refund_query("NOSUCH0004", "RF0001")["sub_code"], "ACQ.TRADE_NOT_EXIST",
         "refund query of an unknown trade: ACQ.TRADE_NOT_EXIST")

    emu.mode("waiting_then_timeout")
    cl.pay("REFUND0002", "3.00")
    c.eq(cl.refund("REFUND0002", "1.00", "RF0005")["sub_code"], "ACQ.TRADE_STATUS_ERROR",
         "refund of an unpaid trade: ACQ.TRADE_STATUS_ERROR")
    c.eq(cl.refund("NOSUCH0005", "1.00", "RF0006")["sub_code"], "ACQ.TRADE_NOT_EXIST",
         "refund of an unknown trade: ACQ.TRADE_NOT_EXIST")
    c.eq(cl.refund("SALE000001", "1.5", "RF0007")["sub_code"], "ACQ.INVALID_PARAMETER",
         "refund_amount 1.5: ACQ.INVALID_PARAMETER")

    cl.pay("REFUND0003", "2.00")
    emu.command({"cmd": "faults", "refund": "drop"})
    c.eq(cl.refund("REFUND0003", "2.00", "RF0008"), None, "refund with fault drop: no answer")
    a = cl.refund("REFUND0003", "2.00", "RF0008")
    c.eq((a["code"], a["fund_change"], a["refund_fee"]), ("10000", "N", "2.00"),
         "the retried refund: done once (fund_change N)")
    c.eq(emu.command({"cmd": "finish", "out_trade_no": "SALE000001"})["ok"], True,
         "finish: TRADE_FINISHED")
    c.eq(cl.query("SALE000001")["trade_status"], "TRADE_FINISHED", "query: TRADE_FINISHED")
    c.eq(cl.refund("SALE000001", "1.00", "RF0009")["sub_code"], "ACQ.TRADE_HAS_FINISHED",
         "refund of a finished trade: ACQ.TRADE_HAS_FINISHED")


def parse_bill(data, encoding="gbk"):
    """A statement as (comment lines, header, rows as {column: value without its tab}, raw
    cells of the first row)."""
    lines = data.decode(encoding).split("\r\n")
    comments = [ln for ln in lines if ln.startswith("#")]
    table = [ln.split(",") for ln in lines if ln and not ln.startswith("#")]
    header = table[0]
    rows = [dict(zip(header, (v.rstrip("\t") for v in cells))) for cells in table[1:]]
    return comments, header, rows, table[1] if len(table) > 1 else []


def test_bill(c, tmp):
    d = os.path.join(tmp, "bill")
    akey, pub = app_files(tmp)
    with Alipay(d, APP_ID, pub) as emu:
        cl = Client(emu.port, emu.ca_file, akey, alipay_key(d))
        try:
            day = datetime.datetime.now(BEIJING).strftime("%Y-%m-%d")
            cl.pay("BILL000001", "10.00", store_id="S1", terminal_id="R01")
            cl.pay("BILL000002", "20.50")
            cl.refund("BILL000002", "5.00", "RB0001")
            cl.pay("BILL000003", "3.00")
            cl.cancel("BILL000003")
            emu.mode("declined")
            cl.pay("BILL000004", "4.00")
            emu.mode("waiting_then_timeout")
            cl.pay("BILL000005", "5.00")
            raw = emu.bill(day)
            try:
                raw.decode("utf-8")
                c.fail("the statement is GBK, as Alipay's download")
            except UnicodeDecodeError:
                pass
            comments, header, rows, first = parse_bill(raw)
            c.eq(header, "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,"
                 "操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,"
                 "支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,"
                 "卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注".split(","),
                 "bill: the 25 columns of 业务明细, in Alipay's order")
            c.check(comments[0] == "#支付宝业务明细查询" and comments[1].startswith("#账号：[") and
                    comments[2].startswith(f"#起始日期：[{day[:4]}年{day[5:7]}月{day[8:]}日 ")
                    and "业务明细列表" in comments[3] and "业务明细列表结束" in comments[4],
                    f"bill: the # lines above and below the rows: {comments[:5]}")
            c.eq(sorted((r["商户订单号"], r["业务类型"], r["订单金额（元）"], r["商家实收（元）"],
                         r["退款批次号/请求号"]) for r in rows),
                 [("BILL000001", "交易", "10.00", "10.00", ""),
                  ("BILL000002", "交易", "20.50", "20.50", ""),
                  ("BILL000002", "退款", "-5.00", "-5.00", "RB0001"),
                  ("BILL000003", "交易", "3.00", "3.00", ""),
                  ("BILL000003", "退款", "-3.00", "-3.00", "")],
                 "bill: one 交易 row per paid trade, one negative 退款 row per refund (with its "
                 "out_request_no) and per cancel of a paid trade; nothing unpaid")
            c.check(first[0].endswith("\t") and first[1].endswith("\t") and
                    not first[11].endswith("\t"),
                    "bill: the numbers Excel would mangle end with a tab, amounts do not")
            b1 = next(r for r in rows if r["商户订单号"] == "BILL000001")
            t1 = trade(emu, "BILL000001")
            c.eq((b1["支付宝交易号"], b1["门店编号"], b1["终端号"], b1["完成时间"], b1["服务费（元）"]),
                 (t1["trade_no"], "S1", "R01", t1["gmt_payment"], "-0.06"),
                 "bill: trade_no, store, terminal, the time paid, the 0.60% fee")
            c.eq(comments[5:7], ["#交易合计：3笔，商家实收共33.50元，商家优惠共0.00元",
                                 "#退款合计：2笔，商家实收退款共-8.00元，商家优惠退款共0.00元"],
                 "bill: the totals below the rows")
            c.eq(emu.bill(day, "utf-8").decode("utf-8"), raw.decode("gbk"),
                 "bill: the same statement in UTF-8 when asked")
            a = emu.command({"cmd": "bill", "day": day})
            c.eq((a["ok"], base64.b64decode(a["bill"]) == raw, a["encoding"]), (True, True, "gbk"),
                 "command bill: the statement, base64")
            c.eq(emu.command({"cmd": "bill", "day": "tomorrow"})["ok"], False,
                 "command bill: a bad day refused")
            other = parse_bill(emu.bill("2001-01-01"))
            c.eq((other[2], other[0][5]), ([], "#交易合计：0笔，商家实收共0.00元，商家优惠共0.00元"),
                 "bill of another day: no rows, zero totals")

            e = emu.command({"cmd": "bill_edit", "drop": ["BILL000001"],
                             "amount": {"BILL000002": 2060},
                             "add": [{"out_trade_no": "NOTOURS001", "amount": 1234},
                                     {"out_trade_no": "BILL000003", "out_request_no": "RX1",
                                      "amount": 100}]})
            c.eq(e["ok"], True, "bill_edit accepted")
            comments, _, rows, _ = parse_bill(emu.bill(day))
            c.eq(sorted((r["商户订单号"], r["业务类型"], r["订单金额（元）"], r["退款批次号/请求号"])
                        for r in rows),
                 [("BILL000002", "交易", "20.60", ""), ("BILL000002", "退款", "-5.00", "RB0001"),
                  ("BILL000003", "交易", "3.00", ""), ("BILL000003", "退款", "-1.00", "RX1"),
                  ("BILL000003", "退款", "-3.00", ""), ("NOTOURS001", "交易", "12.34", "")],
                 "edited bill: dropped, amount replaced, a trade and a refund added")
            c.eq(comments[5], "#交易合计：3笔，商家实收共35.94元，商家优惠共0.00元",
                 "edited bill: the totals follow the rows")
            for bad in ({"amount": {"X": 1.5}}, {"add": [{"out_trade_no": "X1", "amount": -1}]},
                        {"add": [{"amount": 100}]}, {"drop": "BILL000002"},
                        {"add": [{"out_trade_no": "NOT-OURS", "amount": 100}]}):
                c.eq(emu.command({"cmd": "bill_edit", **bad})["ok"], False,
                     f"bill_edit refused: {bad}")
            emu.command({"cmd": "bill_edit", "clear": True})
            c.eq(len(parse_bill(emu.bill(day))[2]), 5, "bill_edit clear: the real rows again")
        finally:
            cl.close()


def test_class(c, tmp):
    d = os.path.join(tmp, "class")
    akey, pub = app_files(tmp)
    t0 = time.time()
    with Alipay(d, APP_ID, pub) as emu:
        cl = Client(emu.port, emu.ca_file, akey, alipay_key(d))
        try:
            for test in (test_files_and_signatures, test_pay, test_scenarios,
                         test_cancel_and_faults, test_refunds):
                test(c, tmp, emu, cl, akey)
            a, b = cl.query("SALE000001"), cl.query("SALE000001")
            c.check(a.sockname == b.sockname, "keep-alive: two requests on one connection")
            st = emu.status()
            c.check(st["requests"].get("alipay.trade.pay", 0) >= st["pay_calls"] > 0 and
                    st["requests"].get("alipay.trade.query", 0) > 0 and
                    st["requests"].get("other", 0) > 0, "status counts requests by method")
        finally:
            cl.close()
    print(f"in-process tests: {time.time() - t0:.1f} s", flush=True)


def test_program(c, tmp):
    akey, pub = app_files(tmp)
    control = os.path.join(tmp, "alipay.sock")
    proc, port, ctl, err = start_program(
        c, tmp, "alipay.py", ["--app-id", APP_ID, "--app-public-key", pub], control)
    d = os.path.join(tmp, "prog")
    cl = Client(port, os.path.join(d, "ca.pem"), akey, alipay_key(d))
    c.eq(ctl({"cmd": "mode", "next": "declined"})["ok"], True, "control: mode")
    c.eq(cl.pay("PROG000001")["sub_code"], "ACQ.BUYER_BALANCE_NOT_ENOUGH",
         "program: the scripted decline")
    c.eq(cl.pay("PROG000002")["code"], "10000", "program: then success")
    st = ctl({"cmd": "status"})
    c.eq([(t["out_trade_no"], t["state"]) for t in st["trades"]],
         [("PROG000001", "TRADE_CLOSED"), ("PROG000002", "TRADE_SUCCESS")],
         "control: status")
    c.eq(st["charges"], 1, "control: one charge")
    b = ctl({"cmd": "bill", "encoding": "utf-8"})
    c.check(b["ok"] and ",PROG000002\t,交易\t," in base64.b64decode(b["bill"]).decode(),
            "control: bill, today's statement")
    c.eq(ctl({"cmd": "nonsense"})["ok"], False, "control: an unknown command refused")
    cl.close()
    stop_program(c, tmp, proc, control, err)


def test_names(c, tmp):
    _, pub = app_files(tmp)
    test_cert_hosts(c, tmp, lambda d, listen, hosts: Alipay(d, APP_ID, pub, listen=listen,
                                                             cert_hosts=hosts))


if __name__ == "__main__":
    run("test_alipay", test_class, test_bill, test_program, test_names)
