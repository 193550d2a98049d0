#!/usr/bin/python3
"""An Alipay open-platform emulator for face-to-face barcode pay (当面付): the payments service
and its tests run against it in place of https://openapi.alipay.com/gateway.do, so it speaks
the real protocol (docs: devices/sim/README.md; protocol facts: section 2 of protocols.md).

Why it is built this way:

- The real wire, not a mock. HTTPS with a CA and a server certificate it makes itself (the
  client trusts DIR/ca.pem), HTTP/1.1 keep-alive (libcurl reuses connections), one gateway
  URL taking form-encoded common parameters and a JSON biz_content, every request's RSA2
  signature verified with the app's public key, every answer signed with Alipay's own RSA key
  over the exact bytes of the response object. A client that gets any of that wrong (sorting,
  URL decoding, sign_type in the signed string, the Beijing timestamp, re-serialising the
  answer before checking it) fails here, not in production.
- One place decides, one place talks. Alipay.handle() takes (method, path, headers, body) and
  returns a Reply: the response key, the response object and how to deliver it (signed,
  tampered, late, or not at all). The HTTP handler only reads requests and writes Replies, so
  every fault is a property of a Reply and the pay scenarios and the query/cancel/refund
  faults are the same few delivery faults.
- Faults are named after what a payments client must survive, and the money stays honest
  under every one of them: a charge is booked (or not) before the answer goes wrong, and
  status() says what really happened ("charges" counts trades that were ever paid, each
  trade's net_fen what the merchant keeps), so a test can check that the client neither lost
  nor doubled a payment. Pay scenarios are one-shot (`mode`); the other methods' faults are
  counted (`faults`). A replayed pay (same out_trade_no, auth_code and amount) answers the
  trade's current state and never charges again.
- Time-driven states are computed when looked at (a WAIT_BUYER_PAY trade that becomes
  TRADE_SUCCESS after N seconds is settled on the next query or status), so there is no timer
  to race a query, and no thread besides the servers'. Refunds succeed at once, as Alipay's
  当面付 refunds answer.
- Threads: the HTTPS and control socket servers of providercore.py (which this shares with
  wechatpay.py: the files, TLS, the servers, the life, the command line). All state sits
  behind one lock; nothing sleeps holding it.
- Amounts are integer fen everywhere; yuan strings are parsed and formatted with integers.
- The day's statement (bill(day)) is the merchant's 业务明细 CSV as Alipay's 账单 download gives
  it: GBK, `#` lines around a header and one row per payment and per refund, the fields Excel
  would mangle ended with a tab. It is made from the same books the gateway answers from, so a
  reconciliation of a clean day has nothing to find; bill_edit plants the differences.

Run with Debian's /usr/bin/python3 (python3-cryptography)."""
import base64
import datetime
import json
import logging
import os
import re
import secrets
import sys
import time
import urllib.parse

import providercore
from providercore import is_int, jdump, load_public_key, rsa_sign, rsa_verify, yuan

LOG = logging.getLogger("alipay")
LOG.addHandler(logging.NullHandler())

# ---- defaults and limits ------------------------------------------------------------------
MAX_SKEW = 900               # seconds a request's timestamp may be off Beijing time (UNVERIFIED)
WAITING_SECONDS = 4.0        # waiting_then_success: seconds until paid
MAX_FEN = 100_000_000_00     # Alipay's largest total_amount, 100000000.00 yuan
GATEWAY = "/gateway.do"
BEIJING = datetime.timezone(datetime.timedelta(hours=8))
BUYER_LOGON_ID = "159****5620"
BUYER_USER_ID = "2088102146225135"

METHODS = ("alipay.trade.pay", "alipay.trade.query", "alipay.trade.cancel",
           "alipay.trade.refund", "alipay.trade.fastpay.refund.query")
SCENARIOS = ("success", "declined", "waiting_then_success", "waiting_then_timeout",
             "system_error", "drop_after_charge", "slow", "tampered_signature")
FAULT_KINDS = ("system_error", "drop", "slow", "tampered_signature", "refused")
REFUSED_SUB_CODE = "ACQ.TRADE_NOT_ALLOW_REFUND"  # the fault refused's default
FAULT_ENDPOINTS = {"query": "alipay.trade.query", "cancel": "alipay.trade.cancel",
                   "refund": "alipay.trade.refund",
                   "refund_query": "alipay.trade.fastpay.refund.query"}
PAID = ("TRADE_SUCCESS", "TRADE_FINISHED")

# out_trade_no: "64个字符以内、可包含字母、数字、下划线" (alipay.trade.pay); out_request_no: Alipay
# documents only its length
OUT_TRADE_NO = re.compile(r"[0-9A-Za-z_]{1,64}")
OUT_REQUEST_NO = re.compile(r"[0-9A-Za-z_-]{1,64}")
AUTH_CODE = re.compile(r"(?:2[5-9]|30)[0-9]{14,22}")
YUAN = re.compile(r"(0|[1-9][0-9]{0,8})\.([0-9]{2})")
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
DAY = re.compile(r"\d{4}-\d{2}-\d{2}")

# the statement (业务明细): its columns in Alipay's order, and those written with a tab after
# them (Alipay's way of keeping spreadsheets from turning long numbers into floats)
BILL_COLUMNS = ("支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,"
                "终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,"
                "商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,"
                "退款批次号/请求号,服务费（元）,分润（元）,备注").split(",")
BILL_TABBED = ("支付宝交易号", "商户订单号", "业务类型", "门店编号", "门店名称", "操作员", "终端号",
               "对方账户", "商家红包消费金额（元）", "退款批次号/请求号")
BILL_ZERO = ("支付宝红包（元）", "集分宝（元）", "支付宝优惠（元）", "商家优惠（元）", "券核销金额（元）",
             "商家红包消费金额（元）", "卡消费金额（元）", "分润（元）")
BILL_ACCOUNT = "20881021462251350156"
BILL_RULE = "#" + "-" * 41 + "业务明细列表" + "-" * 40
BILL_RULE_END = "#" + "-" * 41 + "业务明细列表结束" + "-" * 36
FEE_PER_MILLE = 6            # the statement's 服务费: 0.60% of the amount, rounded half up


# ---- small helpers ------------------------------------------------------------------------
def beijing(t):
    """Wall time t (epoch seconds) as Alipay writes it: 2026-11-26 01:30:00 (Beijing)."""
    return datetime.datetime.fromtimestamp(int(t), BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def fen_of(text):
    """A yuan string with exactly two decimals as integer fen, or None."""
    m = YUAN.fullmatch(text) if isinstance(text, str) else None
    return int(m.group(1)) * 100 + int(m.group(2)) if m else None


def sign_content(params):
    """The string an RSA2 request signature covers: every parameter but sign, empty ones
    dropped, sorted by name (byte order), joined k=v&k=v with the raw values."""
    items = sorted(((k, v) for k, v in params.items() if k != "sign" and v != ""),
                   key=lambda kv: kv[0].encode())
    return "&".join(f"{k}={v}" for k, v in items).encode()


# ---- what goes back -----------------------------------------------------------------------
class Reply(providercore.Delivery):
    """An answer and how to deliver it: `{"<key>":<obj>,"sign":".."}` signed over the bytes of
    obj (or `raw` as it is, unsigned: a 404), with obj changed after signing (`tamper`), after
    `delay` seconds, or not at all (`drop`: the connection closes)."""

    def __init__(self, key, obj, status=200, raw=None):
        super().__init__()
        self.key, self.obj, self.status, self.raw = key, obj, status, raw


def response_key(method):
    return method.replace(".", "_") + "_response"


def failure(method, code, msg, sub_code=None, sub_msg=None, **extra):
    """An error answer of method (the key error_response when the method is unknown)."""
    obj = {"code": code, "msg": msg}
    if sub_code:
        obj["sub_code"] = sub_code
        obj["sub_msg"] = sub_msg or sub_code
    obj.update(extra)
    return Reply(response_key(method) if method in METHODS else "error_response", obj)


def invalid_arguments(method, sub_code, sub_msg):
    return failure(method, "40002", "Invalid Arguments", sub_code, sub_msg)


def business_failed(method, sub_code, sub_msg, **extra):
    return failure(method, "40004", "Business Failed", sub_code, sub_msg, **extra)


def system_error(method, **extra):
    return failure(method, "20000", "Service Currently Unavailable", "aop.ACQ.SYSTEM_ERROR",
                   "系统异常", **extra)


def tampered(obj_raw):
    """The response object as a man in the middle would change it after it was signed."""
    return obj_raw[:-1] + b',"tampered":true}' if obj_raw.endswith(b"}") else obj_raw + b" "


# ---- the provider -------------------------------------------------------------------------
class Alipay(providercore.Provider):
    """The emulator on threads of the calling process: start(), stop(), port, ca_file,
    public_key_file, command(dict), mode(next, **kw), status(), bill(day); a context manager.
    listen is "HOST:PORT" (127.0.0.1 or 0.0.0.0; port 0: a free port); control, a unix socket
    path for the JSON-lines control socket; cert_hosts, more names for the server
    certificate."""
    NAME = "alipay"
    SCENARIOS = SCENARIOS
    FAULT_KINDS = FAULT_KINDS
    FAULT_ENDPOINTS = FAULT_ENDPOINTS
    READY_PATH = GATEWAY
    WAITING = "WAIT_BUYER_PAY"

    def __init__(self, dir, app_id, app_public_key_path, listen="127.0.0.1:0", control=None,
                 cert_hosts=()):
        self.app_id = app_id
        self.app_pub = load_public_key(app_public_key_path)
        super().__init__(dir, listen, control, cert_hosts)
        self.key = providercore.ensure_rsa_key(dir, "alipay.key", "alipay.pem")
        self.public_key_file = os.path.join(dir, "alipay.pem")
        # Alipay's books beyond providercore's
        self.trades = {}                 # out_trade_no -> trade dict
        self.pay_calls = self.bad_signatures = self.bad_requests = self.charges = 0

    def stopped_note(self):
        return f"{self.pay_calls} pay calls, {self.charges} charges, " \
            f"{self.bad_signatures} bad signatures"

    # -- signing
    def render(self, reply):
        """reply's status, headers and body on the wire: a plain-text raw one as it is, else
        the response object serialised once, signed as those bytes and spliced in unchanged
        (changed after signing when tampered)."""
        if reply.raw is not None:
            return reply.status, [("Content-Type", "text/plain; charset=utf-8")], reply.raw
        obj = jdump(reply.obj)
        sig = rsa_sign(self.key, obj)
        if reply.tamper:
            obj = tampered(obj)
        body = b'{"' + reply.key.encode() + b'":' + obj + b',"sign":"' + sig.encode() + b'"}'
        return reply.status, [("Content-Type", "application/json;charset=utf-8")], body

    def refusal(self, status, text):
        return Reply(None, None, status, text.encode() + b"\n")

    def refused_reply(self, endpoint, fault):
        """The fault refused: 40004 with the scripted `sub_code` (ACQ.TRADE_NOT_ALLOW_REFUND),
        nothing done."""
        return business_failed(FAULT_ENDPOINTS[endpoint],
                               str(fault.get("sub_code", REFUSED_SUB_CODE)),
                               str(fault.get("message", f"{endpoint} refused (scripted)")))


    def _params(self, query, headers, body):
        """The request's parameters (query string, then a form body over it) or why not."""
        params = {}
        try:
            for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True,
                                               encoding="utf-8", errors="strict"):
                params[k] = v
            ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if body and ctype != "application/x-www-form-urlencoded":
                return None, "the body must be application/x-www-form-urlencoded"
            for k, v in urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                                               encoding="utf-8", errors="strict"):
                params[k] = v
        except (UnicodeDecodeError, ValueError):
            return None, "the parameters are not UTF-8"
        return params, None

    def _refused(self, method, p):
        """None when the common parameters and the signature are right, else the Reply."""
        if p.get("app_id") != self.app_id:
            with self.lock:
                self.bad_signatures += 1
            return invalid_arguments(method, "isv.invalid-app-id", "无效的AppID参数")
        if p.get("sign_type") != "RSA2":
            with self.lock:
                self.bad_signatures += 1
            return invalid_arguments(method, "isv.invalid-signature-type", "无效的签名类型")
        if not p.get("sign") or not rsa_verify(self.app_pub, p["sign"], sign_content(p)):
            with self.lock:
                self.bad_signatures += 1
            return invalid_arguments(method, "isv.invalid-signature", "验签出错")
        if method not in METHODS:
            return invalid_arguments(method, "isv.invalid-method", "不存在的方法名")
        if p.get("format", "JSON").upper() != "JSON":
            return invalid_arguments(method, "isv.invalid-format", "无效的数据格式")
        if p.get("charset", "utf-8").lower() != "utf-8":
            return invalid_arguments(method, "isv.invalid-charset", "字符集错误")
        if p.get("version") != "1.0":
            return invalid_arguments(method, "isv.invalid-version", "version must be 1.0")
        ts = p.get("timestamp", "")
        try:
            t = datetime.datetime.strptime(ts, "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
            off = abs(t.timestamp() - time.time()) if TIMESTAMP.fullmatch(ts) else None
        except ValueError:
            off = None
        if off is None or off > MAX_SKEW:
            return invalid_arguments(method, "isv.invalid-timestamp",
                                     "非法的时间戳参数 (YYYY-MM-DD HH:MM:SS, Beijing time)")
        return None

    # -- requests
    def handle(self, http_method, path, headers, body):
        """The Reply to one HTTP request (any thread): POST /gateway.do, or a 404."""
        url = urllib.parse.urlsplit(path)
        if http_method != "POST" or url.path != GATEWAY:
            self._count("other")
            return Reply(None, None, 404, b"not found: POST /gateway.do only\n")
        p, why = self._params(url.query, headers, body)
        method = (p or {}).get("method", "")
        self._count(method if method in METHODS else "other")
        if p is None:
            with self.lock:
                self.bad_requests += 1
            return invalid_arguments(method, "isv.invalid-parameter", why)
        refused = self._refused(method, p)
        if refused:
            with self.lock:
                self.bad_requests += 1
            LOG.info("%s refused: %s", method or "(no method)", refused.obj["sub_code"])
            return refused
        if method == "alipay.trade.pay":
            with self.lock:
                self.pay_calls += 1
        try:
            biz = json.loads(p.get("biz_content", ""))
        except ValueError:
            biz = None
        if not isinstance(biz, dict):
            return business_failed(method, "ACQ.INVALID_PARAMETER",
                                   "biz_content must be a JSON object")
        if method == "alipay.trade.pay":
            return self._pay_method(biz)
        if "out_trade_no" in biz and not (isinstance(biz["out_trade_no"], str) and
                                          OUT_TRADE_NO.fullmatch(biz["out_trade_no"])):
            return business_failed(method, "ACQ.INVALID_PARAMETER",
                                   "out_trade_no must be 1-64 of [0-9A-Za-z_]")
        endpoint = next(k for k, v in FAULT_ENDPOINTS.items() if v == method)
        extra = {"retry_flag": "Y"} if endpoint == "cancel" else {}
        reply = self.faulted(endpoint, lambda: getattr(self, "_" + endpoint)(method, biz),
                             lambda done: system_error(method, **extra))
        LOG.debug("%s: %s", method, reply.obj.get("code"))
        return reply

    # -- trades
    def _new_trade_no(self):
        """28 digits: the Beijing date, 22, a sequence and random digits, like Alipay's."""
        self.seq += 1
        core = datetime.datetime.now(BEIJING).strftime("%Y%m%d") + "22" + f"{self.seq % 10**8:08d}"
        return core + "".join(secrets.choice("0123456789") for _ in range(28 - len(core)))

    def _charge(self, t, when=None):
        t["state"] = "TRADE_SUCCESS"
        t["paid_at"] = time.time() if when is None else when
        self.charges += 1
        LOG.info("charged %s: %d fen", t["out_trade_no"], t["amount_fen"])

    @staticmethod
    def _refunded(t):
        return sum(r["amount_fen"] for r in t["refunds"])

    def _net(self, t):
        """What the merchant keeps of trade t."""
        if t["paid_at"] is None or t["cancel_action"] == "refund":
            return 0
        return t["amount_fen"] - self._refunded(t)

    def _paid_fields(self, t):
        amount = yuan(t["amount_fen"])
        return {"buyer_pay_amount": amount, "point_amount": "0.00", "invoice_amount": amount,
                "fund_bill_list": [{"fund_channel": "ALIPAYACCOUNT", "amount": amount}]}

    def _pay_body(self, t):
        """A trade as a pay answers it: 10000 once paid, 10003 while the buyer pays, 40004
        TRADE_HAS_CLOSE once closed."""
        self._settle(t)
        if t["state"] == "TRADE_CLOSED":
            return business_failed("alipay.trade.pay", "ACQ.TRADE_HAS_CLOSE", "交易已经关闭",
                                   out_trade_no=t["out_trade_no"], trade_no=t["trade_no"])
        head = ({"code": "10000", "msg": "Success"} if t["state"] in PAID else
                {"code": "10003", "msg": "等待用户付款"})
        body = {**head, "trade_no": t["trade_no"], "out_trade_no": t["out_trade_no"],
                "buyer_logon_id": BUYER_LOGON_ID, "buyer_user_id": BUYER_USER_ID,
                "total_amount": yuan(t["amount_fen"])}
        if t["state"] in PAID:
            body["receipt_amount"] = yuan(t["amount_fen"])
            body["gmt_payment"] = beijing(t["paid_at"])
            body.update(self._paid_fields(t))
        else:
            body["receipt_amount"] = "0.00"
        return Reply(response_key("alipay.trade.pay"), body)

    def _pay_problem(self, d):
        if not isinstance(d.get("out_trade_no"), str) or \
                not OUT_TRADE_NO.fullmatch(d["out_trade_no"]):
            return "out_trade_no must be 1-64 of [0-9A-Za-z_]"
        if d.get("scene") != "bar_code":
            return "scene must be bar_code"
        if not isinstance(d.get("auth_code"), str) or not AUTH_CODE.fullmatch(d["auth_code"]):
            return "auth_code must be 16-24 digits starting 25-30"
        if not isinstance(d.get("subject"), str) or not 1 <= len(d["subject"]) <= 256:
            return "subject must be 1-256 characters"
        fen = fen_of(d.get("total_amount"))
        if fen is None or not 1 <= fen <= MAX_FEN:
            return "total_amount must be yuan with 2 decimals, 0.01-100000000.00"
        if d.get("product_code", "FACE_TO_FACE_PAYMENT") != "FACE_TO_FACE_PAYMENT":
            return "product_code must be FACE_TO_FACE_PAYMENT"
        return None

    def _pay_method(self, d):
        m = "alipay.trade.pay"
        problem = self._pay_problem(d)
        if problem:
            return business_failed(m, "ACQ.INVALID_PARAMETER", problem)
        otn, code, fen = d["out_trade_no"], d["auth_code"], fen_of(d["total_amount"])
        with self.lock:
            t = self.trades.get(otn)
            if t is not None:
                self._settle(t)
                if t["auth_code"] == code and t["amount_fen"] == fen:
                    LOG.info("pay %s again: answered its state", otn)
                    return self._pay_body(t)
                if t["state"] in PAID:
                    return business_failed(m, "ACQ.TRADE_HAS_SUCCESS", "交易已被支付",
                                           out_trade_no=otn, trade_no=t["trade_no"])
                if t["state"] == "TRADE_CLOSED" and t["amount_fen"] == fen:
                    return business_failed(m, "ACQ.TRADE_HAS_CLOSE", "交易已经关闭",
                                           out_trade_no=otn, trade_no=t["trade_no"])
                return business_failed(m, "ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改",
                                       out_trade_no=otn)
            mode, self.next = self.next, {"next": "success"}
            scenario = mode["next"]
            if scenario == "system_error" and not mode.get("booked", True):
                LOG.info("pay %s: scripted system_error, nothing booked", otn)
                return system_error(m)
            t = {"out_trade_no": otn, "trade_no": self._new_trade_no(), "auth_code": code,
                 "amount_fen": fen, "subject": d["subject"], "state": "WAIT_BUYER_PAY",
                 "store_id": str(d.get("store_id", "")),
                 "operator_id": str(d.get("operator_id", "")),
                 "terminal_id": str(d.get("terminal_id", "")),
                 "created": time.time(), "paid_at": None, "pay_due": None, "pay_seconds": 0.0,
                 "cancel_action": None, "finished": False, "refunds": [],
                 "scenario": scenario}
            self.trades[otn] = t
            if scenario == "declined":
                t["state"] = "TRADE_CLOSED"
                LOG.info("pay %s: declined", otn)
                return business_failed(m, "ACQ.BUYER_BALANCE_NOT_ENOUGH", "买家余额不足",
                                       out_trade_no=otn, buyer_logon_id=BUYER_LOGON_ID)
            if scenario.startswith("waiting"):
                if scenario == "waiting_then_success":
                    t["pay_seconds"] = float(mode.get("seconds", WAITING_SECONDS))
                    t["pay_due"] = time.monotonic() + t["pay_seconds"]
                LOG.info("pay %s: waiting for the buyer", otn)
                return self._pay_body(t)
            self._charge(t, t["created"])
            if scenario == "system_error":
                return system_error(m)
            return self.scripted(self._pay_body(t), mode)

    def _trade(self, d):
        """The trade d names by out_trade_no (or trade_no), settled; None if unknown."""
        t = self.trades.get(d.get("out_trade_no")) if d.get("out_trade_no") else None
        if t is None and d.get("trade_no"):
            t = next((x for x in self.trades.values() if x["trade_no"] == d["trade_no"]), None)
        if t is not None:
            self._settle(t)
        return t

    def _query(self, m, d):
        with self.lock:
            t = self._trade(d)
            if t is None:
                return business_failed(m, "ACQ.TRADE_NOT_EXIST", "交易不存在")
            state = "TRADE_FINISHED" if t["finished"] else t["state"]
            body = {"code": "10000", "msg": "Success", "trade_no": t["trade_no"],
                    "out_trade_no": t["out_trade_no"], "buyer_logon_id": BUYER_LOGON_ID,
                    "buyer_user_id": BUYER_USER_ID, "trade_status": state,
                    "total_amount": yuan(t["amount_fen"])}
            if t["paid_at"] is not None:
                body["receipt_amount"] = yuan(t["amount_fen"])
                body["send_pay_date"] = beijing(t["paid_at"])
                body.update(self._paid_fields(t))
            else:
                body["receipt_amount"] = "0.00"
            return Reply(response_key(m), body)

    def _cancel(self, m, d):
        with self.lock:
            t = self._trade(d)
            if t is None:
                return business_failed(m, "ACQ.TRADE_NOT_EXIST", "交易不存在", retry_flag="N")
            if t["refunds"] or t["finished"]:
                return business_failed(m, "ACQ.TRADE_STATUS_ERROR", "交易状态不合法",
                                       retry_flag="N")
            if t["cancel_action"] is None:
                t["cancel_action"] = "refund" if t["state"] in PAID else "close"
                t["cancelled_at"] = time.time()
                LOG.info("cancelled %s (%s): %s", t["out_trade_no"], t["state"],
                         t["cancel_action"])
                t["state"] = "TRADE_CLOSED"
            body = {"code": "10000", "msg": "Success", "trade_no": t["trade_no"],
                    "out_trade_no": t["out_trade_no"], "retry_flag": "N",
                    "action": t["cancel_action"]}
            if t["cancel_action"] == "refund":
                body["gmt_refund_pay"] = beijing(t["cancelled_at"])
            return Reply(response_key(m), body)

    def _refund(self, m, d):
        fen = fen_of(d.get("refund_amount"))
        orn = d.get("out_request_no", d.get("out_trade_no"))
        if fen is None or not 1 <= fen <= MAX_FEN:
            return business_failed(m, "ACQ.INVALID_PARAMETER",
                                   "refund_amount must be yuan with 2 decimals, >= 0.01")
        if not isinstance(orn, str) or not OUT_REQUEST_NO.fullmatch(orn):
            return business_failed(m, "ACQ.INVALID_PARAMETER",
                                   "out_request_no must be 1-64 of [0-9A-Za-z_-]")
        if not isinstance(d.get("refund_reason", ""), str):
            return business_failed(m, "ACQ.INVALID_PARAMETER", "refund_reason must be a string")
        with self.lock:
            t = self._trade(d)
            if t is None:
                return business_failed(m, "ACQ.TRADE_NOT_EXIST", "交易不存在")
            r = next((x for x in t["refunds"] if x["out_request_no"] == orn), None)
            if r is not None and r["amount_fen"] != fen:
                return business_failed(m, "ACQ.INVALID_PARAMETER",
                                       "out_request_no already used with another refund_amount")
            if r is None:
                if t["finished"]:
                    return business_failed(m, "ACQ.TRADE_HAS_FINISHED", "交易已完结")
                if t["paid_at"] is None or t["cancel_action"] is not None or \
                        t["state"] not in PAID:
                    return business_failed(m, "ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
                if self._refunded(t) + fen > t["amount_fen"]:
                    return business_failed(m, "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
                r = {"out_request_no": orn, "amount_fen": fen, "status": "REFUND_SUCCESS",
                     "reason": d.get("refund_reason", ""), "created": time.time()}
                t["refunds"].append(r)
                if self._refunded(t) == t["amount_fen"]:
                    t["state"] = "TRADE_CLOSED"
                LOG.info("refund %s of %s: %d fen", orn, t["out_trade_no"], fen)
                change = "Y"
            else:
                change = "N"
            return Reply(response_key(m), {
                "code": "10000", "msg": "Success", "trade_no": t["trade_no"],
                "out_trade_no": t["out_trade_no"], "buyer_logon_id": BUYER_LOGON_ID,
                "buyer_user_id": BUYER_USER_ID, "fund_change": change,
                "refund_fee": yuan(self._refunded(t)), "gmt_refund_pay": beijing(r["created"])})

    def _refund_query(self, m, d):
        with self.lock:
            t = self._trade(d)
            if t is None:
                return business_failed(m, "ACQ.TRADE_NOT_EXIST", "交易不存在")
            orn = d.get("out_request_no", t["out_trade_no"])
            r = next((x for x in t["refunds"] if x["out_request_no"] == orn), None)
            body = {"code": "10000", "msg": "Success", "out_trade_no": t["out_trade_no"],
                    "out_request_no": orn}
            if r is not None:
                body.update(trade_no=t["trade_no"], total_amount=yuan(t["amount_fen"]),
                            refund_amount=yuan(r["amount_fen"]), refund_status=r["status"],
                            gmt_refund_pay=beijing(r["created"]))
            return Reply(response_key(m), body)

    # -- the statement (业务明细)
    def bill(self, day, encoding="gbk"):
        """The day's 业务明细 statement (day YYYY-MM-DD, Beijing time) as bytes in encoding
        (gbk as Alipay's download; utf-8 for a file someone converted)."""
        with self.lock:
            rows, edits = [], self.bill_edits
            for t in self.trades.values():
                self._settle(t)
                if t["paid_at"] is None or t["out_trade_no"] in edits["drop"]:
                    continue
                if beijing(t["paid_at"])[:10] == day:
                    amount = edits["amount"].get(t["out_trade_no"], t["amount_fen"])
                    rows.append(self._bill_row(t, "交易", t["paid_at"], amount, ""))
                if t["cancel_action"] == "refund" and beijing(t["cancelled_at"])[:10] == day:
                    rows.append(self._bill_row(t, "退款", t["cancelled_at"], -t["amount_fen"],
                                               "", "撤销"))
                for r in t["refunds"]:
                    if beijing(r["created"])[:10] == day:
                        rows.append(self._bill_row(t, "退款", r["created"], -r["amount_fen"],
                                                   r["out_request_no"], r["reason"]))
            rows += [self._added_row(a) for a in edits["add"] if a["bill_date"] == day]
        rows.sort(key=lambda row: row[0])
        start = datetime.datetime.strptime(day, "%Y-%m-%d")
        end = start + datetime.timedelta(days=1)
        lines = ["#支付宝业务明细查询", f"#账号：[{BILL_ACCOUNT}]",
                 f"#起始日期：[{start:%Y年%m月%d日} 00:00:00]   终止日期：[{end:%Y年%m月%d日} 00:00:00]",
                 BILL_RULE, ",".join(BILL_COLUMNS)]
        count = {"交易": 0, "退款": 0}
        net = {"交易": 0, "退款": 0}
        for _, v in rows:
            count[v["业务类型"]] += 1
            net[v["业务类型"]] += v["商家实收（元）"]
            lines.append(",".join((yuan(v[c]) if isinstance(v[c], int) else v[c]) +
                                  ("\t" if c in BILL_TABBED else "") for c in BILL_COLUMNS))
        lines += [BILL_RULE_END,
                  f"#交易合计：{count['交易']}笔，商家实收共{yuan(net['交易'])}元，商家优惠共0.00元",
                  f"#退款合计：{count['退款']}笔，商家实收退款共{yuan(net['退款'])}元，商家优惠退款共0.00元",
                  f"#导出时间：[{datetime.datetime.now(BEIJING):%Y年%m月%d日 %H:%M:%S}]"]
        return ("\r\n".join(lines) + "\r\n").encode(encoding, errors="replace")

    def _bill_row(self, t, kind, when, amount, request_no, note=""):
        """One statement row: (when, {column: value}), amounts as int fen (negative on a
        refund row, the service fee's sign the other way)."""
        fee = (abs(amount) * FEE_PER_MILLE + 500) // 1000
        v = {c: 0 if c in BILL_ZERO else "" for c in BILL_COLUMNS}
        v.update({"支付宝交易号": t["trade_no"], "商户订单号": t["out_trade_no"], "业务类型": kind,
                  "商品名称": t["subject"], "创建时间": beijing(t["created"]),
                  "完成时间": beijing(when), "门店编号": t.get("store_id", ""),
                  "操作员": t.get("operator_id", ""), "终端号": t.get("terminal_id", ""),
                  "对方账户": BUYER_LOGON_ID, "订单金额（元）": amount, "商家实收（元）": amount,
                  "退款批次号/请求号": request_no, "服务费（元）": -fee if amount > 0 else fee,
                  "备注": note})
        return when, v

    def _added_row(self, a):
        t = {"trade_no": a["trade_no"], "out_trade_no": a["out_trade_no"],
             "subject": a["subject"], "created": a["time"]}
        if a["request_no"]:
            return self._bill_row(t, "退款", a["time"], -a["amount"], a["request_no"])
        return self._bill_row(t, "交易", a["time"], a["amount"], "")

    # -- control
    def _cmd_finish(self, req):
        t = self.trades.get(req.get("out_trade_no"))
        if t is None:
            return {"ok": False, "error": "no such trade"}
        self._settle(t)
        if t["state"] != "TRADE_SUCCESS":
            return {"ok": False, "error": f"the trade is {t['state']}, not TRADE_SUCCESS"}
        t["finished"] = True
        return {"ok": True}

    def _cmd_bill(self, req):
        day = str(req.get("day", datetime.datetime.now(BEIJING).strftime("%Y-%m-%d")))
        encoding = req.get("encoding", "gbk")
        if not DAY.fullmatch(day) or encoding not in ("gbk", "utf-8"):
            return {"ok": False, "error": "day: YYYY-MM-DD; encoding: gbk or utf-8"}
        data = self.bill(day, encoding)
        return {"ok": True, "day": day, "encoding": encoding,
                "bill": base64.b64encode(data).decode()}

    def _cmd_bill_edit(self, req):
        e = self.bill_edits
        if req.get("clear"):
            e["drop"], e["amount"], e["add"] = set(), {}, []
        drop, amount, add = req.get("drop", []), dict(req.get("amount", {})), []
        if not isinstance(drop, list) or \
                not all(is_int(v) and 0 < v <= MAX_FEN
                        for v in amount.values()):
            return {"ok": False, "error": "drop: a list; amount values: integer fen > 0"}
        today = datetime.datetime.now(BEIJING).strftime("%Y-%m-%d")
        for a in req.get("add", []):
            fen = a.get("amount") if isinstance(a, dict) else None
            if not is_int(fen) or not 0 < fen <= MAX_FEN or \
                    not OUT_TRADE_NO.fullmatch(str(a.get("out_trade_no", ""))) or \
                    not DAY.fullmatch(str(a.get("bill_date", today))):
                return {"ok": False, "error": "add: objects with out_trade_no and integer fen "
                                              "amount > 0 (bill_date YYYY-MM-DD)"}
            add.append({"out_trade_no": str(a["out_trade_no"]), "amount": fen,
                        "request_no": str(a.get("out_request_no", "")),
                        "trade_no": str(a.get("trade_no") or self._new_trade_no()),
                        "subject": str(a.get("subject", "")),
                        "time": float(a.get("time", time.time())),
                        "bill_date": str(a.get("bill_date", today))})
        e["drop"].update(str(x) for x in drop)
        e["amount"].update({str(k): v for k, v in amount.items()})
        e["add"] += add
        return {"ok": True, "drop": sorted(e["drop"]), "amount": e["amount"], "add": e["add"]}

    def _cmd_status(self, req):
        trades = []
        for t in self.trades.values():
            self._settle(t)
            trades.append({"out_trade_no": t["out_trade_no"], "trade_no": t["trade_no"],
                           "auth_code": t["auth_code"], "amount_fen": t["amount_fen"],
                           "state": "TRADE_FINISHED" if t["finished"] else t["state"],
                           "created": beijing(t["created"]), "scenario": t["scenario"],
                           "gmt_payment": beijing(t["paid_at"]) if t["paid_at"] else None,
                           "cancel_action": t["cancel_action"], "net_fen": self._net(t),
                           "refunds": [{"out_request_no": r["out_request_no"],
                                        "amount_fen": r["amount_fen"], "status": r["status"],
                                        "created": beijing(r["created"])}
                                       for r in t["refunds"]]})
        return {"ok": True, "trades": trades, "requests": dict(self.requests),
                "pay_calls": self.pay_calls, "bad_signatures": self.bad_signatures,
                "bad_requests": self.bad_requests, "charges": self.charges, "next": self.next,
                "faults": self.faults, "port": self.port, "dir": self.dir}

def main(argv=None):
    def add_args(ap):
        ap.add_argument("--app-id", required=True)
        ap.add_argument("--app-public-key", required=True, help="PEM public key or certificate")

    def make(args):
        return Alipay(args.dir, args.app_id, args.app_public_key, listen=args.listen,
                      control=args.control, cert_hosts=args.cert_host)
    return providercore.main(argv, Alipay, "Alipay face-to-face barcode pay emulator",
                             add_args, make)


if __name__ == "__main__":
    sys.exit(main())
