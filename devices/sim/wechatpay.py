#!/usr/bin/python3
"""A WeChat Pay API v3 provider emulator (付款码支付, "codepay"): the payments service and its
tests run against it in place of https://api.mch.weixin.qq.com, so it speaks the real protocol
(docs: devices/sim/README.md; protocol facts: section 1 of protocols.md).

Why it is built this way:

- The real wire, not a mock. HTTPS with a CA and a server certificate it makes itself (the
  client trusts DIR/ca.pem), HTTP/1.1 keep-alive (libcurl reuses connections), JSON bodies,
  every request's WECHATPAY2-SHA256-RSA2048 signature verified with the merchant public key,
  every answer signed with a platform RSA key named by Wechatpay-Serial. A client that gets
  any of that wrong fails here, not in production. Two platform keys (a PUB_KEY_ID_ one and a
  certificate serial) exist from the start, so a client can be tested through a key migration.
- One place decides, one place talks. WechatPay.handle() takes (method, path, headers, body)
  and returns a Reply: status, body and how to deliver it (signed, tampered, skewed, stripped,
  late, or not at all). The HTTP handler only reads requests and writes Replies. So every
  fault is a property of a Reply, and the codepay scenarios and the query/reverse faults are
  the same few delivery faults.
- Faults are named after what a payments client must survive, and the money stays honest
  under every one of them: a charge is booked (or not) before the answer goes wrong, and
  status() says what really happened ("charges" counts trades that were ever paid), so a test
  can check that the client neither lost nor doubled a payment. Codepay scenarios are
  one-shot (`mode`), like the card terminal's; query/reverse/refund faults are counted
  (`faults`). A replayed codepay (same out_trade_no, auth_code and amount) answers the trade's
  current state and never charges again.
- Time-driven states are computed when looked at (a USERPAYING trade that becomes SUCCESS
  after N seconds is settled on the next query or status), so no timer can race a query. Only
  refunds need a clock thread (one, ticking every TICK), because their success notification
  is pushed to the client.
- Threads: the HTTPS and control socket servers of providercore.py (which this shares with
  alipay.py: the files, TLS, the servers, the life, the command line), the refund ticker and
  one short-lived thread per notification. All state sits behind one lock; nothing sleeps
  holding it.
- Amounts are integer fen everywhere; the bill's yuan are formatted from integers.

Run with Debian's /usr/bin/python3 (python3-cryptography)."""
import base64
import datetime
import gzip
import hashlib
import http.client
import json
import logging
import re
import secrets
import ssl
import sys
import time
import urllib.parse

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import providercore
from providercore import is_int, jdump, load_public_key, rsa_sign, rsa_verify, yuan

LOG = logging.getLogger("wechatpay")
LOG.addHandler(logging.NullHandler())

# ---- defaults and limits ------------------------------------------------------------------
MAX_SKEW = 300               # seconds a request's timestamp may be off
TICK = 0.05                  # seconds between two looks at the refunds in progress
REFUND_DELAY = 0.5           # seconds a refund stays PROCESSING
NOTIFY_ATTEMPTS = 3          # a notification not answered 2xx is sent this often in all
NOTIFY_RETRY = 1.0           # seconds between two attempts
NOTIFY_TIMEOUT = 5.0         # seconds the notify target has to answer (WeChat's rule)
BILL_TOKEN_TTL = 300         # seconds a download_url works
USERPAYING_SECONDS = 4.0     # userpaying_then_success: seconds until paid
SKEW_SECONDS = 600
FEE_PER_MILLE = 6            # the bill's 手续费: 0.60% of the order, rounded half up
PLATFORM_SERIALS = {1: "PUB_KEY_ID_0000000000000001",
                    2: "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"}
BEIJING = datetime.timezone(datetime.timedelta(hours=8))

SCENARIOS = ("success", "declined", "userpaying_then_success", "userpaying_then_timeout",
             "system_error", "drop_after_charge", "slow", "tampered_signature", "clock_skew",
             "strip_headers")
FAULT_KINDS = ("system_error", "drop", "slow", "tampered_signature", "clock_skew",
               "strip_headers", "refused")
REFUSED_STATUS, REFUSED_CODE = 403, "USER_ACCOUNT_ABNORMAL"  # the fault refused's default
FAULT_ENDPOINTS = ("query", "reverse", "refund", "refund_query", "tradebill", "billdownload")
STATE_DESC = {"SUCCESS": "支付成功", "REFUND": "转入退款", "NOTPAY": "未支付", "CLOSED": "已关闭",
              "REVOKED": "已撤销", "USERPAYING": "用户支付中，需要输入密码",
              "PAYERROR": "支付失败(余额不足)"}
BILL_COLUMNS = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,"
                "交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,"
                "充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,"
                "费率备注").split(",")
BILL_SUMMARY = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"

OUT_TRADE_NO = re.compile(r"[0-9A-Za-z_*-]{6,32}")
OUT_REFUND_NO = re.compile(r"[0-9A-Za-z_*@|-]{1,64}")
AUTH_CODE = re.compile(r"1[0-5][0-9]{16}")
AUTH_HEADER = re.compile(r'(\w+)="([^"]*)"')
HOST_PORT = re.compile(r"[0-9A-Za-z.:\[\]-]{1,255}")  # a Host header to echo
NOTIFY_URL = re.compile(r"(https?)://127\.0\.0\.1(?::([0-9]{1,5}))?(/[^\s]*)?")


# ---- small helpers ------------------------------------------------------------------------
def rfc3339(t):
    """Wall time t (epoch seconds) as WeChat writes it: 2026-11-26T01:30:00+08:00."""
    return datetime.datetime.fromtimestamp(int(t), BEIJING).isoformat()


def load_api_v3_key(path):
    """The 32-byte API v3 key (a trailing newline in the file is ignored)."""
    with open(path, "rb") as f:
        key = f.read().rstrip(b"\r\n")
    if len(key) != 32:
        raise ValueError(f"{path}: the API v3 key must be 32 bytes, not {len(key)}")
    return key


# ---- what goes back -----------------------------------------------------------------------
class Reply(providercore.Delivery):
    """An answer and how to deliver it: signed (unless `unsigned`, the bill download), with the
    body changed after signing (`tamper`), its timestamp `skew` seconds off, without Wechatpay-*
    headers (`strip`), after `delay` seconds, or not at all (`drop`: the connection closes)."""

    def __init__(self, status, body=None, raw=None, content_type="application/json"):
        super().__init__()
        self.status = status
        self.raw = raw if raw is not None else (b"" if body is None else jdump(body))
        self.content_type = content_type
        self.unsigned = self.strip = False
        self.skew = 0

    def fault(self, kind, kw):
        """Apply a delivery fault (FAULT_KINDS other than system_error)."""
        if kind == "clock_skew":
            self.skew = int(kw.get("seconds", SKEW_SECONDS))
        elif kind == "strip_headers":
            self.strip = True
        else:
            super().fault(kind, kw)
        return self


def error(status, code, message):
    return Reply(status, {"code": code, "message": message})


def tampered(raw):
    """The body as a man in the middle would change it after it was signed."""
    if raw.startswith(b"{") and len(raw) > 2:
        return raw[:-1] + b',"tampered":true}'
    return raw + b" "


class _Handler(providercore.Handler):
    """This provider's connections: providercore's, in a class of its own so that a wrapper
    (bench/bench_payments.py) can time them."""


# ---- the provider -------------------------------------------------------------------------
class WechatPay(providercore.Provider):
    """The emulator on threads of the calling process: start(), stop(), port, ca_file,
    command(dict), mode(next, **kw), status(); a context manager. listen is "HOST:PORT"
    (127.0.0.1 or 0.0.0.0; port 0: a free port); control, a unix socket path for the
    JSON-lines control socket; cert_hosts, more names for the server certificate."""
    NAME = "wechatpay"
    SCENARIOS = SCENARIOS
    FAULT_KINDS = FAULT_KINDS
    FAULT_ENDPOINTS = FAULT_ENDPOINTS
    MODE_NUMBERS = ("seconds", "no_reverse_s")
    WAITING = "USERPAYING"
    HANDLER = _Handler

    def __init__(self, dir, mchid, appid, merchant_serial, merchant_public_key_pem_path,
                 api_v3_key_path, listen="127.0.0.1:0", control=None, refund_delay=REFUND_DELAY,
                 cert_hosts=()):
        self.mchid, self.appid = mchid, appid
        self.merchant_serial = merchant_serial
        self.merchant_pub = load_public_key(merchant_public_key_pem_path)
        self.api_v3_key = load_api_v3_key(api_v3_key_path)
        super().__init__(dir, listen, control, cert_hosts)
        self.refund_delay = float(refund_delay)
        self.refund_query_lag = 0.0      # seconds a refund query still says PROCESSING after it
        self.platform = {n: providercore.ensure_rsa_key(dir, f"platform-{n}.key",
                                                        f"platform-{n}.pem")
                         for n in PLATFORM_SERIALS}
        # the provider's books and the script beyond providercore's
        self.trades = {}                 # out_trade_no -> trade dict
        self.refunds = {}                # out_refund_no -> refund dict
        self.bill_tokens = {}            # token -> (expiry, bytes)
        self.key_in_use = 1
        self.clock_offset = 0
        self.reverse_status = 200
        self.codepay_calls = self.bad_signatures = self.charges = 0

    # -- life
    def started(self):
        self._spawn(self._ticker, "refunds")

    def stopped_note(self):
        return (f"{self.codepay_calls} codepay calls, {self.charges} charges, "
                f"{self.bad_signatures} bad signatures")

    # -- signing
    def render(self, reply):
        """reply's status, headers and body on the wire: signed unless unsigned or stripped,
        the body tampered after signing when asked."""
        body = reply.raw
        headers = [("Content-Type", reply.content_type), ("Request-ID", secrets.token_hex(16))]
        if not reply.unsigned and not reply.strip:
            headers += self.sign_headers(body, reply.skew)
            if reply.tamper:
                body = tampered(body)
        return reply.status, headers, body

    def refusal(self, status, text):
        return error(status, "PARAM_ERROR", text)

    def refused_reply(self, endpoint, fault):
        """The fault refused: a signed error answer, `status` (403) and `code`
        (USER_ACCOUNT_ABNORMAL) as scripted, nothing done."""
        return error(int(fault.get("status", REFUSED_STATUS)),
                     str(fault.get("code", REFUSED_CODE)),
                     str(fault.get("message", f"{endpoint} refused (scripted)")))

    def sign_headers(self, body, skew=0):
        """The Wechatpay-* headers of an answer (or a notification) with this body."""
        ts = str(int(time.time()) + self.clock_offset + skew)
        nonce = secrets.token_hex(16)
        with self.lock:
            n = self.key_in_use
        sig = rsa_sign(self.platform[n], f"{ts}\n{nonce}\n".encode() + body + b"\n")
        return [("Wechatpay-Timestamp", ts), ("Wechatpay-Nonce", nonce),
                ("Wechatpay-Serial", PLATFORM_SERIALS[n]), ("Wechatpay-Signature", sig)]

    def _authorized(self, method, path, headers, body):
        """None when the request's Authorization verifies, else why not."""
        auth = headers.get("Authorization") or ""
        scheme, _, params = auth.partition(" ")
        if scheme != "WECHATPAY2-SHA256-RSA2048":
            return "Authorization missing or not WECHATPAY2-SHA256-RSA2048"
        f = dict(AUTH_HEADER.findall(params))
        for name in ("mchid", "nonce_str", "timestamp", "serial_no", "signature"):
            if name not in f:
                return f"Authorization lacks {name}"
        if f["mchid"] != self.mchid:
            return "mchid does not match"
        if f["serial_no"] != self.merchant_serial:
            return "serial_no is not the merchant certificate's"
        if not f["timestamp"].isdigit() or abs(int(f["timestamp"]) - time.time()) > MAX_SKEW:
            return "timestamp more than 300 s off"
        msg = f"{method}\n{path}\n{f['timestamp']}\n{f['nonce_str']}\n".encode() + body + b"\n"
        if not rsa_verify(self.merchant_pub, f["signature"], msg):
            return "signature does not verify"
        return None

    # -- requests
    def handle(self, method, path, headers, body):
        """The Reply to one HTTP request (any thread)."""
        url = urllib.parse.urlsplit(path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        segs = [urllib.parse.unquote(s) for s in url.path.split("/")]
        route = None
        if method == "POST" and url.path == "/v3/pay/transactions/codepay":
            route = ("codepay",)
        elif len(segs) == 6 and segs[:5] == ["", "v3", "pay", "transactions", "out-trade-no"] \
                and method == "GET":
            route = ("query", segs[5])
        elif len(segs) == 7 and segs[:5] == ["", "v3", "pay", "transactions", "out-trade-no"] \
                and segs[6] == "reverse" and method == "POST":
            route = ("reverse", segs[5])
        elif method == "POST" and url.path == "/v3/refund/domestic/refunds":
            route = ("refund",)
        elif len(segs) == 6 and segs[:5] == ["", "v3", "refund", "domestic", "refunds"] \
                and method == "GET":
            route = ("refund_query", segs[5])
        elif method == "GET" and url.path == "/v3/bill/tradebill":
            route = ("tradebill", headers.get("Host"))
        elif method == "GET" and url.path == "/v3/billdownload/file":
            route = ("billdownload",)
        name = route[0] if route else "other"
        self._count(name)
        why = self._authorized(method, path, headers, body)
        if why:
            with self.lock:
                self.bad_signatures += 1
            LOG.info("%s %s: 401 %s", method, url.path, why)
            return error(401, "SIGN_ERROR", why)
        if route is None:
            return error(404, "NOT_FOUND", f"no such endpoint: {method} {url.path}")
        data = None
        if method == "POST":
            try:
                data = json.loads(body)
            except ValueError:
                return error(400, "PARAM_ERROR", "the body is not JSON")
            if not isinstance(data, dict):
                return error(400, "PARAM_ERROR", "the body is not a JSON object")
        if name == "codepay":
            with self.lock:
                self.codepay_calls += 1
            return self._codepay(data)
        reply = self.faulted(
            name, lambda: getattr(self, "_" + name)(query, data, *route[1:]),
            lambda done: error(500, "SYSTEM_ERROR",
                               f"系统错误 (scripted, {'done' if done else 'nothing done'})"))
        LOG.debug("%s %s: %d", method, url.path, reply.status)
        return reply

    # -- trades
    def _new_id(self, prefix, digits):
        self.seq += 1
        day = datetime.datetime.now(BEIJING).strftime("%Y%m%d")
        core = f"{prefix}{self.seq % 10**8:08d}{day}"
        return core + "".join(secrets.choice("0123456789") for _ in range(digits - len(core)))

    def _charge(self, t, when=None):
        t["state"] = "SUCCESS"
        t["paid_at"] = time.time() if when is None else when
        t["transaction_id"] = self._new_id("4200", 28)
        self.charges += 1
        LOG.info("charged %s: %d fen", t["out_trade_no"], t["amount"])

    def _trade_body(self, t):
        """A trade as a query answers it."""
        self._settle(t)
        paid = t["paid_at"] is not None
        body = {"appid": self.appid, "mchid": self.mchid, "out_trade_no": t["out_trade_no"]}
        if paid:
            body["transaction_id"] = t["transaction_id"]
            body["trade_type"] = "MICROPAY"
            body["bank_type"] = "OTHERS"
        body["trade_state"] = t["state"]
        body["trade_state_desc"] = STATE_DESC[t["state"]]
        body["attach"] = t["attach"]
        amount = {"total": t["amount"], "currency": "CNY"}
        if paid:
            body["success_time"] = rfc3339(t["paid_at"])
            body["payer"] = {"openid": t["openid"]}
            amount.update(payer_total=t["amount"], payer_currency="CNY")
        body["amount"] = amount
        if paid:
            body["promotion_detail"] = []
        return body

    def _codepay(self, d):
        payer, amount = d.get("payer"), d.get("amount")
        problem = None
        if d.get("appid") != self.appid or d.get("mchid") != self.mchid:
            problem = "appid or mchid does not match"
        elif not isinstance(d.get("out_trade_no"), str) or \
                not OUT_TRADE_NO.fullmatch(d["out_trade_no"]):
            problem = "out_trade_no must be 6-32 of [0-9A-Za-z_*-]"
        elif not isinstance(d.get("description"), str) or not 1 <= len(d["description"]) <= 127:
            problem = "description must be 1-127 characters"
        elif not isinstance(payer, dict) or not isinstance(payer.get("auth_code"), str) or \
                not AUTH_CODE.fullmatch(payer["auth_code"]):
            problem = "payer.auth_code must be 18 digits starting 10-15"
        elif not isinstance(amount, dict) or not is_int(amount.get("total")) or \
                amount["total"] < 1:
            problem = "amount.total must be an integer number of fen >= 1"
        elif amount.get("currency", "CNY") != "CNY":
            problem = "amount.currency must be CNY"
        elif "scene_info" in d and not isinstance(d["scene_info"], dict):
            problem = "scene_info must be an object"
        elif not isinstance(d.get("attach", ""), str):
            problem = "attach must be a string"
        if problem:
            return error(400, "PARAM_ERROR", problem)
        otn, code, total = d["out_trade_no"], payer["auth_code"], amount["total"]
        with self.lock:
            t = self.trades.get(otn)
            if t is not None:
                if t["auth_code"] == code and t["amount"] == total:
                    LOG.info("codepay %s again: answered its state", otn)
                    return Reply(200, self._trade_body(t))
                return error(400, "OUT_TRADE_NO_USED", "商户订单号重复")
            mode, self.next = self.next, {"next": "success"}
            scenario = mode["next"]
            if scenario == "system_error" and not mode.get("booked", True):
                LOG.info("codepay %s: scripted system_error, nothing booked", otn)
                return error(500, "SYSTEM_ERROR", "系统错误")
            now = time.time()
            scene = d.get("scene_info") or {}
            t = {"out_trade_no": otn, "auth_code": code, "amount": total, "state": "USERPAYING",
                 "created": now, "paid_at": None, "transaction_id": None, "pay_due": None,
                 "pay_seconds": 0.0, "no_reverse_until": 0.0, "description": d["description"],
                 "attach": d.get("attach", ""), "device_id": str(scene.get("device_id", "")),
                 "openid": "o" + base64.urlsafe_b64encode(
                     hashlib.sha1(code.encode()).digest()).decode()[:27],
                 "refunds": [], "scenario": scenario}
            self.trades[otn] = t
            if scenario == "declined":
                t["state"] = "PAYERROR"
                return error(403, "NOT_ENOUGH", "用户余额不足")
            if scenario.startswith("userpaying"):
                if scenario == "userpaying_then_success":
                    t["pay_seconds"] = float(mode.get("seconds", USERPAYING_SECONDS))
                    t["pay_due"] = time.monotonic() + t["pay_seconds"]
                t["no_reverse_until"] = time.monotonic() + float(mode.get("no_reverse_s", 0))
                return Reply(202, {"trade_state": "USERPAYING"})
            self._charge(t, now)
            if scenario == "system_error":
                return error(500, "SYSTEM_ERROR", "系统错误")
            return self.scripted(Reply(200, self._trade_body(t)), mode)

    def _query(self, query, data, otn):
        if query.get("mchid") != self.mchid:
            return error(400, "PARAM_ERROR", "mchid missing or not ours")
        with self.lock:
            t = self.trades.get(otn)
            if t is None:
                return error(404, "ORDER_NOT_EXIST", "订单不存在")
            return Reply(200, self._trade_body(t))

    def _reverse(self, query, data, otn):
        if data.get("appid") != self.appid or data.get("mchid") != self.mchid:
            return error(400, "PARAM_ERROR", "appid or mchid does not match")
        with self.lock:
            t = self.trades.get(otn)
            if t is None:
                return error(404, "ORDER_NOT_EXIST", "订单不存在")
            self._settle(t)
            if t["state"] == "USERPAYING" and time.monotonic() < t["no_reverse_until"]:
                return error(400, "USERPAYING", "用户支付中，暂时不能撤销")
            if t["state"] == "REFUND":
                return error(400, "INVALID_REQUEST", "a refunded trade cannot be reversed")
            if t["state"] != "REVOKED":
                LOG.info("reversed %s (%s)", otn, t["state"])
                t["state"] = "REVOKED"
            if self.reverse_status == 204:
                return Reply(204)
            return Reply(200, {})

    # -- refunds
    def _refund_body(self, r):
        t = self.trades[r["out_trade_no"]]
        body = {"refund_id": r["refund_id"], "out_refund_no": r["out_refund_no"],
                "transaction_id": t["transaction_id"], "out_trade_no": t["out_trade_no"],
                "channel": "ORIGINAL", "user_received_account": "支付用户零钱",
                "create_time": rfc3339(r["created"]), "status": r["status"],
                "amount": {"total": t["amount"], "refund": r["amount"],
                           "payer_total": t["amount"], "payer_refund": r["amount"],
                           "currency": "CNY"}}
        if r["success_time"] is not None:
            body["success_time"] = rfc3339(r["success_time"])
        return body

    def _refund(self, query, d, *_):
        amount = d.get("amount")
        orn = d.get("out_refund_no")
        if not isinstance(orn, str) or not OUT_REFUND_NO.fullmatch(orn):
            return error(400, "PARAM_ERROR", "out_refund_no must be 1-64 of [0-9A-Za-z_*@|-]")
        if not isinstance(amount, dict) or not is_int(amount.get("refund")) or \
                not is_int(amount.get("total")) or amount["refund"] < 1 or \
                amount.get("currency", "CNY") != "CNY":
            return error(400, "PARAM_ERROR", "amount{refund, total} integer fen, currency CNY")
        notify = d.get("notify_url")
        if notify is not None and not isinstance(notify, str):
            return error(400, "PARAM_ERROR", "notify_url must be a string")
        with self.lock:
            t = self.trades.get(d.get("out_trade_no"))
            if t is None and d.get("transaction_id"):
                t = next((x for x in self.trades.values()
                          if x["transaction_id"] == d["transaction_id"]), None)
            if t is None:
                return error(404, "ORDER_NOT_EXIST", "订单不存在")
            r = self.refunds.get(orn)
            if r is not None:
                if r["out_trade_no"] == t["out_trade_no"] and r["amount"] == amount["refund"]:
                    return Reply(200, self._refund_body(r))
                return error(400, "INVALID_REQUEST", "out_refund_no used for another refund")
            self._settle(t)
            if t["state"] not in ("SUCCESS", "REFUND"):
                return error(400, "INVALID_REQUEST", f"the trade is {t['state']}, not paid")
            if amount["total"] != t["amount"]:
                return error(400, "PARAM_ERROR", "amount.total is not the trade's total")
            refunded = sum(x["amount"] for x in t["refunds"])
            if refunded + amount["refund"] > t["amount"]:
                return error(400, "NOT_ENOUGH", f"only {t['amount'] - refunded} fen left")
            r = {"out_refund_no": orn, "refund_id": self._new_id("50", 29),
                 "out_trade_no": t["out_trade_no"], "amount": amount["refund"],
                 "status": "PROCESSING", "created": time.time(), "success_time": None,
                 "due": time.monotonic() + self.refund_delay, "notify_url": notify,
                 "reason": d.get("reason"), "notify": None}
            self.refunds[orn] = r
            t["refunds"].append(r)
            t["state"] = "REFUND"
            LOG.info("refund %s of %s: %d fen", orn, t["out_trade_no"], r["amount"])
            return Reply(200, self._refund_body(r))

    def _refund_query(self, query, data, orn):
        with self.lock:
            r = self.refunds.get(orn)
            if r is None:
                return error(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
            body = self._refund_body(r)
            if time.monotonic() < r["due"] + self.refund_query_lag:
                # a query served from a replica behind the notification (refund_query_lag):
                # only the notification tells the end in time
                body["status"] = "PROCESSING"
                body.pop("success_time", None)
            return Reply(200, body)

    def _ticker(self):
        while not self._stopping.wait(TICK):
            with self.lock:
                due = [r for r in self.refunds.values()
                       if r["status"] == "PROCESSING" and time.monotonic() >= r["due"]]
                for r in due:
                    r["status"], r["success_time"] = "SUCCESS", time.time()
                    m = NOTIFY_URL.fullmatch(r["notify_url"] or "")
                    if m:
                        r["notify"] = {"attempts": 0, "delivered": False, "last": None}
                        self._spawn(lambda r=r: self._notify(r), "notify")
                    elif r["notify_url"]:
                        r["notify"] = {"attempts": 0, "delivered": False,
                                       "last": "not sent: only 127.0.0.1 targets"}

    def notification(self, r):
        """The REFUND.SUCCESS notification of refund r: (body bytes, headers)."""
        t = self.trades[r["out_trade_no"]]
        plain = {"mchid": self.mchid, "out_trade_no": t["out_trade_no"],
                 "transaction_id": t["transaction_id"], "out_refund_no": r["out_refund_no"],
                 "refund_id": r["refund_id"], "refund_status": "SUCCESS",
                 "success_time": rfc3339(r["success_time"]),
                 "amount": {"total": t["amount"], "refund": r["amount"],
                            "payer_total": t["amount"], "payer_refund": r["amount"]},
                 "user_received_account": "支付用户零钱"}
        nonce = "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                       "0123456789") for _ in range(12))
        ct = AESGCM(self.api_v3_key).encrypt(nonce.encode(), jdump(plain), b"refund")
        body = jdump({"id": secrets.token_hex(18), "create_time": rfc3339(time.time()),
                      "event_type": "REFUND.SUCCESS", "resource_type": "encrypt-resource",
                      "summary": "退款成功",
                      "resource": {"original_type": "refund", "algorithm": "AEAD_AES_256_GCM",
                                   "ciphertext": base64.b64encode(ct).decode(),
                                   "associated_data": "refund", "nonce": nonce}})
        headers = dict(self.sign_headers(body))
        headers["Content-Type"] = "application/json"
        return body, headers

    def _notify(self, r):
        """POST the notification, up to NOTIFY_ATTEMPTS times until answered 2xx."""
        m = NOTIFY_URL.fullmatch(r["notify_url"])
        scheme, port, path = m.group(1), m.group(2), m.group(3) or "/"
        port = int(port) if port else (443 if scheme == "https" else 80)
        for attempt in range(NOTIFY_ATTEMPTS):
            if attempt and self._stopping.wait(NOTIFY_RETRY):
                return
            with self.lock:
                body, headers = self.notification(r)
            if scheme == "https":
                # The notify target's certificate is not checked: the client's test server
                # may use any certificate (a real client checks the signature, not TLS).
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=NOTIFY_TIMEOUT,
                                                   context=ctx)
            else:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=NOTIFY_TIMEOUT)
            try:
                conn.request("POST", path, body, headers)
                status = conn.getresponse().status
            except (OSError, http.client.HTTPException) as e:
                status = f"{type(e).__name__}: {e}"
            finally:
                conn.close()
            with self.lock:
                r["notify"]["attempts"] += 1
                r["notify"]["last"] = status
                if isinstance(status, int) and 200 <= status < 300:
                    r["notify"]["delivered"] = True
            LOG.info("notified %s to %s: %s", r["out_refund_no"], r["notify_url"], status)
            if isinstance(status, int) and 200 <= status < 300:
                return

    # -- the trade bill
    def bill(self, day):
        """The ALL trade bill of day (YYYY-MM-DD, Beijing time) as bytes."""
        with self.lock:
            rows = []          # (time, kind, values...) before formatting
            edits = self.bill_edits
            for t in self.trades.values():
                self._settle(t)
                if t["paid_at"] is None or t["out_trade_no"] in edits["drop"]:
                    continue
                if rfc3339(t["paid_at"])[:10] == day:
                    total = edits["amount"].get(t["out_trade_no"], t["amount"])
                    state = "SUCCESS" if t["state"] == "REFUND" else t["state"]
                    rows.append(self._bill_row(t["paid_at"], t, state, total, None))
                for r in t["refunds"]:
                    if rfc3339(r["created"])[:10] == day:
                        rows.append(self._bill_row(r["created"], t, "REFUND", 0, r))
            for a in edits["add"]:
                if a.get("bill_date", day) == day:
                    rows.append(self._added_row(a))
        rows.sort(key=lambda row: row[0])
        lines = [",".join(BILL_COLUMNS)]
        sums = [0, 0, 0, 0, 0, 0, 0]
        for _, v in rows:
            lines.append(",".join("`" + v[c] if isinstance(v[c], str) else "`" + yuan(v[c])
                                  for c in BILL_COLUMNS))
            sums = [sums[0] + 1, sums[1] + v["应结订单金额"], sums[2] + v["退款金额"],
                    sums[3] + v["充值券退款金额"], sums[4] + v["手续费"], sums[5] + v["订单金额"],
                    sums[6] + v["申请退款金额"]]
        lines.append(BILL_SUMMARY)
        lines.append(",".join(["`" + str(sums[0])] + ["`" + yuan(s) for s in sums[1:]]))
        return ("\r\n".join(lines) + "\r\n").encode()

    def _bill_row(self, when, t, state, total, r):
        fee = (total * FEE_PER_MILLE + 500) // 1000 if r is None else \
            -((r["amount"] * FEE_PER_MILLE + 500) // 1000)
        return (when, {
            "交易时间": datetime.datetime.fromtimestamp(int(when), BEIJING)
            .strftime("%Y-%m-%d %H:%M:%S"),
            "公众账号ID": self.appid, "商户号": self.mchid, "特约商户号": "0",
            "设备号": t["device_id"], "微信订单号": t["transaction_id"] or "",
            "商户订单号": t["out_trade_no"], "用户标识": t["openid"], "交易类型": "MICROPAY",
            "交易状态": state, "付款银行": "OTHERS", "货币种类": "CNY", "应结订单金额": total,
            "代金券金额": 0, "微信退款单号": r["refund_id"] if r else "",
            "商户退款单号": r["out_refund_no"] if r else "",
            "退款金额": r["amount"] if r else 0, "充值券退款金额": 0,
            "退款类型": "ORIGINAL" if r else "", "退款状态": r["status"] if r else "",
            "商品名称": t["description"], "商户数据包": t["attach"], "手续费": fee, "费率": "0.60%",
            "订单金额": total, "申请退款金额": r["amount"] if r else 0, "费率备注": ""})

    def _added_row(self, a):
        total = int(a.get("amount", 0))
        t = {"device_id": str(a.get("device_id", "")),
             "transaction_id": str(a.get("transaction_id", self._new_id("4200", 28))),
             "out_trade_no": str(a.get("out_trade_no", "")), "openid": str(a.get("openid", "")),
             "description": str(a.get("description", "")), "attach": str(a.get("attach", ""))}
        when = a.get("time", time.time())
        return self._bill_row(when, t, str(a.get("state", "SUCCESS")), total, None)

    def _tradebill(self, query, data, host=None):
        day = query.get("bill_date", "")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
            return error(400, "PARAM_ERROR", "bill_date must be YYYY-MM-DD")
        if query.get("bill_type", "ALL") != "ALL":
            return error(400, "PARAM_ERROR", "only bill_type ALL is emulated")
        if day > datetime.datetime.now(BEIJING).strftime("%Y-%m-%d"):
            return error(400, "NO_STATEMENT_EXIST", "账单不存在")
        raw = self.bill(day)
        data = gzip.compress(raw) if query.get("tar_type") == "GZIP" else raw
        token = secrets.token_urlsafe(24)
        with self.lock:
            now = time.monotonic()
            self.bill_tokens = {k: v for k, v in self.bill_tokens.items() if v[0] > now}
            self.bill_tokens[token] = (now + BILL_TOKEN_TTL, data)
        # on the host the client called, as WeChat's own: 127.0.0.1:PORT, or the compose
        # service name the server certificate was made for (--cert-host)
        if not host or not HOST_PORT.fullmatch(host):
            host = f"127.0.0.1:{self.port}"
        return Reply(200, {"hash_type": "SHA1", "hash_value": hashlib.sha1(raw).hexdigest(),
                           "download_url": f"https://{host}/v3/billdownload/file?token={token}"})

    def _billdownload(self, query, data, *_):
        with self.lock:
            entry = self.bill_tokens.get(query.get("token", ""))
        if entry is None or entry[0] < time.monotonic():
            return error(400, "INVALID_REQUEST", "download token unknown or expired")
        reply = Reply(200, raw=entry[1], content_type="application/octet-stream")
        reply.unsigned = True
        return reply

    # -- control
    def _cmd_platform_key(self, req):
        if req.get("use") not in PLATFORM_SERIALS:
            return {"ok": False, "error": "use must be 1 or 2"}
        self.key_in_use = req["use"]
        return {"ok": True, "serial": PLATFORM_SERIALS[self.key_in_use]}

    def _cmd_clock(self, req):
        self.clock_offset = int(req["offset_s"])
        return {"ok": True, "offset_s": self.clock_offset}

    def _cmd_reverse_status(self, req):
        if req.get("status") not in (200, 204):
            return {"ok": False, "error": "status must be 200 or 204"}
        self.reverse_status = req["status"]
        return {"ok": True}

    def _cmd_refund_delay(self, req):
        self.refund_delay = max(0.0, float(req["seconds"]))
        return {"ok": True}

    def _cmd_refund_query_lag(self, req):
        self.refund_query_lag = max(0.0, float(req["seconds"]))
        return {"ok": True}

    def _cmd_bill_edit(self, req):
        e = self.bill_edits
        if req.get("clear"):
            e["drop"], e["amount"], e["add"] = set(), {}, []
        e["drop"].update(str(x) for x in req.get("drop", []))
        for k, v in dict(req.get("amount", {})).items():
            if not is_int(v):
                return {"ok": False, "error": "amount values are integer fen"}
            e["amount"][str(k)] = v
        for a in req.get("add", []):
            if not isinstance(a, dict) or not is_int(a.get("amount", 0)):
                return {"ok": False, "error": "add: objects with integer fen amount"}
            a = dict(a)
            a.setdefault("bill_date", datetime.datetime.now(BEIJING).strftime("%Y-%m-%d"))
            a.setdefault("transaction_id", self._new_id("4200", 28))
            e["add"].append(a)
        return {"ok": True, "drop": sorted(e["drop"]), "amount": e["amount"], "add": e["add"]}

    def _cmd_status(self, req):
        trades = []
        for t in self.trades.values():
            self._settle(t)
            trades.append({"out_trade_no": t["out_trade_no"],
                           "transaction_id": t["transaction_id"], "auth_code": t["auth_code"],
                           "amount": t["amount"], "state": t["state"],
                           "created": rfc3339(t["created"]), "scenario": t["scenario"],
                           "success_time": rfc3339(t["paid_at"]) if t["paid_at"] else None,
                           "refunds": [{"out_refund_no": r["out_refund_no"],
                                        "refund_id": r["refund_id"], "amount": r["amount"],
                                        "status": r["status"], "created": rfc3339(r["created"]),
                                        "notify": r["notify"]}
                                       for r in t["refunds"]]})
        return {"ok": True, "trades": trades, "requests": dict(self.requests),
                "codepay_calls": self.codepay_calls, "bad_signatures": self.bad_signatures,
                "charges": self.charges, "next": self.next, "faults": self.faults,
                "platform_key": self.key_in_use, "serial": PLATFORM_SERIALS[self.key_in_use],
                "clock_offset_s": self.clock_offset, "reverse_status": self.reverse_status,
                "refund_delay": self.refund_delay,
                "refund_query_lag": self.refund_query_lag, "port": self.port, "dir": self.dir}

def main(argv=None):
    def add_args(ap):
        ap.add_argument("--mchid", required=True)
        ap.add_argument("--appid", required=True)
        ap.add_argument("--merchant-serial", required=True)
        ap.add_argument("--merchant-public-key", required=True,
                        help="PEM public key or certificate")
        ap.add_argument("--api-v3-key-file", required=True, help="file holding the 32-byte key")
        ap.add_argument("--refund-delay", type=float, default=REFUND_DELAY)

    def make(args):
        return WechatPay(args.dir, args.mchid, args.appid, args.merchant_serial,
                         args.merchant_public_key, args.api_v3_key_file, listen=args.listen,
                         control=args.control, refund_delay=args.refund_delay,
                         cert_hosts=args.cert_host)
    return providercore.main(argv, WechatPay, "WeChat Pay API v3 codepay provider emulator",
                             add_args, make)


if __name__ == "__main__":
    sys.exit(main())
