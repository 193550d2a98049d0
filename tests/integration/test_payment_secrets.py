#!/usr/bin/python3
"""test_payment_secrets - keys never appear in a log, an error or a reply, nor does a payment
code in payments' log or Redis (docs/payments.md "Configuration").

A stack with payments configured with the WeChat merchant key, the API v3 key and Alipay's app
key (harness.PaymentEmulators), logging at debug, is driven through successes, declines, the
customer confirming, system errors, tampered answers, a cancel, refunds and every kind of error
reply; then through an instance with valid keys that are not the merchant's (every request
refused by the providers); then through bad configuration: a garbled key file, a truncated one,
files that are not the key asked for (the API v3 key as the RSA key, a PEM as the API v3 key,
a public key as the private key, a private key as Alipay's public key). Each bad configuration
must stop the instance at start.

Then every process log, every reply the test got and every key and value in Redis is searched
for secret material: each private key's PEM body and its DER in hex (any 24-character run of
them, so a line, a part of one or a key cut into pieces is found; the runs every RSA key or its
public half shares are left out, since they are no secret), the API v3 key (any 24 characters
of it). The full payment codes the test used must not appear in payments' log or in Redis (the
intent keeps them masked). The search itself is checked first: planted lines of each kind are
found.

Among the bad configurations are a key's text given where a file's path belongs: the error
must name no value then."""
import base64
import glob
import os
import re
import secrets
import signal
import time

from harness import Bus, Checks, PaymentEmulators, Stack, rsa_key_files, wait_for

STORE = "S1"
WINDOW = 24  # characters of a run of secret material that count as a leak
STARTUP_TIMEOUT = 20  # seconds a badly configured instance may take to give up
c = Checks("test_payment_secrets")
st = Stack("secrets")
emu = None
replies = []  # every reply envelope the test got, searched at the end


# ---- what is secret, and the search ----------------------------------------------------------
def pem_body(path):
    """The base64 lines between a PEM file's BEGIN and END lines."""
    with open(path, encoding="ascii") as f:
        lines = [line.strip() for line in f]
    return [x for x in lines if x and not x.startswith("-----")]


def runs(text):
    """Every WINDOW-character run of text."""
    return {text[i:i + WINDOW] for i in range(len(text) - WINDOW + 1)}


def encodings(pem_path):
    """The forms a key's bytes take in text: its PEM body, its DER in hex (both cases)."""
    body = "".join(pem_body(pem_path))
    der = base64.b64decode(body)
    return {"PEM body": body, "DER hex": der.hex(), "DER HEX": der.hex().upper()}


class Secrets:
    """The runs of secret material, each with what it is a part of. search(text) answers the
    first run found in text, or None."""

    def __init__(self):
        self.runs = {}
        self.public = set()

    def add_private(self, name, key_file, pub_file):
        for form, text in encodings(key_file).items():
            for r in runs(text):
                self.runs.setdefault(r, f"{name} ({form})")
        for text in encodings(pub_file).values():  # the public half is no secret
            self.public |= runs(text)

    def add_text(self, name, text):
        for r in runs(text):
            self.runs[r] = name

    def drop_common(self, key_file, pub_file):
        """Leave out the runs another RSA key shares: ASN.1 headers, the public exponent."""
        for path in (key_file, pub_file):
            for text in encodings(path).values():
                self.public |= runs(text)
        for r in self.public:
            self.runs.pop(r, None)

    def search(self, text):
        for m in re.finditer(r"[0-9A-Za-z+/=_-]{%d,}" % WINDOW, text):
            run = m.group(0)
            for i in range(len(run) - WINDOW + 1):
                what = self.runs.get(run[i:i + WINDOW])
                if what:
                    return what, text[max(0, m.start() - 40):m.start() + 80]
        return None


def find_codes(codes, text):
    return sorted(code for code in codes if code in text)


# ---- calls, each reply kept ------------------------------------------------------------------
def call(who, method, body, **kw):
    r = who.call("payments", method, body, **kw)
    replies.append(r)
    return r


try:
    st.start_redis()
    st.start_busd()
    st.start_service("inventory", "inventory")
    c.check(st.wait_healthy(["inventory"]), "inventory healthy")
    st.posctl("store", "add", STORE, "Secrets store", check=True)
    emu = PaymentEmulators(st)
    wx, ali = emu.wx, emu.ali
    app_key_file, app_pub_file = (os.path.join(st.tmp, f"app.{x}") for x in ("key", "pub"))
    merchant_pub_file = os.path.join(st.tmp, "merchant.pub")
    _, wrong_key_file, wrong_pub_file = rsa_key_files(st.tmp, "wrong")  # valid, not theirs
    _, other_key_file, other_pub_file = rsa_key_files(st.tmp, "other")  # for the common runs

    sec = Secrets()
    sec.add_private("the WeChat merchant key", emu.merchant_key_file, merchant_pub_file)
    sec.add_private("the Alipay app key", app_key_file, app_pub_file)
    sec.add_private("the wrong merchant key", wrong_key_file, wrong_pub_file)
    sec.add_text("the API v3 key", emu.APIV3_KEY)
    sec.drop_common(other_key_file, other_pub_file)
    c.check(len(sec.runs) > 3 * 3000, f"{len(sec.runs)} runs of {WINDOW} characters of secret "
            f"material to search for ({len(sec.public)} public or common ones left out)")

    # the search catches what it must: a planted line, a part of one, a key in hex, the API v3
    # key, a full code among masked ones
    line = pem_body(emu.merchant_key_file)[7]
    app_line = pem_body(app_key_file)[11]
    hexed = encodings(wrong_key_file)["DER hex"][1000:1000 + WINDOW]
    planted = {"a merchant key line in a log line": f"INFO payments.x: key {line} end",
               "part of an app key line, in JSON": f'{{"k": "..{app_line[20:20 + WINDOW]}.."}}',
               "a key line cut by an escaped newline": f"a\\n{line[-30:]}\\n{line[:30]}",
               "the wrong key in hex": f"der={hexed}",
               "the API v3 key": f"apiv3 {emu.APIV3_KEY[4:4 + WINDOW]}"}
    for what, text in planted.items():
        c.check(sec.search(text), f"the search finds a planted secret: {what}")
    c.check(sec.search("INFO payments.intent: S1-R01-000001-1 wechat: succeeded (SUCCESS) "
                       "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA") is None,
            "... and nothing in a log line without secrets (nor in a public key's header)")
    c.eq(find_codes(["134567890123456789"], "code 1345**********6789 and 134567890123456789"),
         ["134567890123456789"], "the code search finds a full code next to its mask")

    # ---- a payments instance with the keys, logging at debug ----------------------------------
    pay_args = [*emu.args, "--query-interval-ms", "300", "--reverse-after-ms", "4000",
                "--lease-ms", "8000", "--log-level", "debug"]
    st.start_service("payments", "payments", *pay_args)
    c.check(st.wait_healthy(["payments"]), "payments healthy (WeChat with the merchant key and "
            "the API v3 key, Alipay with the app key; --log-level debug)")
    reg = Bus(st, cert=st.key("register", f"{STORE}.R01"))
    other = Bus(st, cert=st.key("register", f"{STORE}.R02"))
    ops = Bus(st)
    codes = set()  # every full payment code sent
    intents = []
    seq = [0]

    def new_code(prefix):
        code = prefix + "".join(secrets.choice("0123456789") for _ in range(18 - len(prefix)))
        codes.add(code)
        return code

    def pay(amount, code, sale=None, attempt=1, who=reg):
        if sale is None:
            seq[0] += 1
            sale = f"{STORE}-R01-{seq[0]:06d}"
        r = call(who, "payment.pay", {"sale_id": sale, "attempt": attempt, "amount": amount,
                                      "code": code})
        if r["type"] == "reply":
            intents.append(r["body"]["intent"])
        return r, sale

    def final(intent, timeout=30):
        last = {}

        def done():
            r = call(reg, "payment.get", {"intent": intent})
            last.clear()
            last.update(r.get("body", {}))
            return last.get("final")
        wait_for(done, timeout, f"intent {intent} to end")
        return last

    # WeChat: success, a retry, a conflict with another code, then every scenario
    r, sale = pay(1234, new_code("13"))
    paid = r["body"]["intent"]
    c.eq(final(paid).get("state"), "succeeded", "wechat: paid")
    pay(1234, next(iter(codes)), sale=sale)
    r, _ = pay(1234, new_code("13"), sale=sale)
    c.check(r["type"] == "error" and r["body"]["code"] == "conflict",
            f"the same attempt with another code: conflict ({r['body'].get('message')})")
    for scenario, kw, want in (("declined", {}, "failed"),
                               ("userpaying_then_success", {"seconds": 1}, "succeeded"),
                               ("userpaying_then_timeout", {}, "reversed"),
                               ("system_error", {"booked": True}, "succeeded"),
                               ("tampered_signature", {}, "succeeded"),
                               ("strip_headers", {}, "succeeded")):
        wx.mode(scenario, **kw)
        r, _ = pay(500, new_code("13"))
        c.eq(final(r["body"]["intent"]).get("state"), want, f"wechat {scenario}")
    # Alipay
    for scenario, kw, want in (("success", {}, "succeeded"), ("declined", {}, "failed"),
                               ("waiting_then_success", {"seconds": 1}, "succeeded"),
                               ("system_error", {"booked": True}, "succeeded"),
                               ("tampered_signature", {}, "succeeded")):
        ali.mode(scenario, **kw)
        r, _ = pay(600, new_code("28"))
        got = final(r["body"]["intent"]).get("state")
        c.eq(got, want, f"alipay {scenario}")
        if scenario == "success":
            ali_paid = r["body"]["intent"]
    # refunds, a cancel after payment, and error replies of every kind
    for intent, no, amount in ((paid, "RF-1", 300), (ali_paid, "RA-1", 100)):
        r = call(reg, "payment.refund", {"intent": intent, "refund_no": no, "amount": amount})
        c.check(r["type"] == "reply", f"refund {no}: {r['body']}")
        c.check(wait_for(lambda: call(reg, "payment.refund_get", {"refund_no": no})["body"]
                         .get("state") == "succeeded", 20), f"refund {no} succeeded")
    errors = [
        ("too_much", reg, "payment.refund", {"intent": paid, "refund_no": "RF-2",
                                             "amount": 100000}),
        ("bad_code", reg, "payment.pay", {"sale_id": f"{STORE}-R01-900001", "attempt": 1,
                                          "amount": 100, "code": "994567890123456789"}),
        ("bad_code", reg, "payment.pay", {"sale_id": f"{STORE}-R01-900002", "attempt": 1,
                                          "amount": 100, "code": "6901234500097"}),
        ("bad_request", reg, "payment.pay", {"sale_id": f"{STORE}-R02-900003", "attempt": 1,
                                             "amount": 100, "code": new_code("13")}),
        ("bad_request", reg, "payment.pay", {"sale_id": f"{STORE}-R01-900004", "attempt": 1,
                                             "amount": -5, "code": new_code("13")}),
        ("forbidden", other, "payment.get", {"intent": paid}),
        ("not_found", reg, "payment.get", {"intent": f"{STORE}-R01-999999-1"}),
        ("forbidden", ops, "payment.pay", {"sale_id": f"{STORE}-R01-900005", "attempt": 1,
                                           "amount": 100, "code": new_code("13")}),
    ]
    for code, who, method, body in errors:
        r = call(who, method, body)
        c.check(r["type"] == "error" and r["body"].get("code") == code,
                f"{method}: the error {code} ({r['body'].get('code')}: "
                f"{r['body'].get('message')})")
    r, _ = pay(700, new_code("13"))
    i = r["body"]["intent"]
    c.eq(final(i).get("state"), "succeeded", "a payment to cancel: paid")
    call(reg, "payment.cancel", {"intent": i})
    c.eq(final(i).get("state"), "reversed", "cancelled after it was paid: reversed")
    call(ops, "stats", {})

    # ---- valid keys that are not the merchant's: every request refused -------------------------
    st.kill("payments", signal.SIGTERM)
    wrong_args = list(pay_args)
    wrong_args[wrong_args.index("--wechat-key-file") + 1] = wrong_key_file
    wrong_args[wrong_args.index("--alipay-key-file") + 1] = wrong_key_file
    st.start_service("payments-wrong", "payments", *wrong_args)
    c.check(st.wait_healthy(["payments"]), "payments with the wrong keys starts (they are keys)")
    signed = wx.status()["bad_signatures"], ali.status().get("bad_signatures", 0)
    r, _ = pay(800, new_code("13"))
    wrong_wx = r["body"]["intent"]
    c.eq(final(wrong_wx).get("state"), "failed", "wechat with the wrong key: refused, failed")
    r, _ = pay(800, new_code("28"))
    wrong_ali = r["body"]["intent"]
    c.check(wait_for(lambda: wx.status()["bad_signatures"] > signed[0], 10) and
            wait_for(lambda: call(reg, "payment.get", {"intent": wrong_ali})["body"]
                     .get("state") not in ("created", None), 10),
            "the providers refused the wrong key's signatures")
    st.kill("payments-wrong", signal.SIGTERM)
    st.start_service("payments", "payments", *pay_args)
    c.check(st.wait_healthy(["payments"]), "payments with the right keys again")
    end = final(wrong_ali, timeout=40)
    c.check(end.get("final"), f"the Alipay intent the wrong key left open ends: {end.get('state')}")

    # ---- bad configuration: the instance stops at start, the key stays out of its log ---------
    garbled = os.path.join(st.tmp, "garbled.key")
    lines = open(emu.merchant_key_file, encoding="ascii").read().splitlines()
    lines[5] = lines[5][:20] + "!!!!" + lines[5][24:]
    with open(garbled, "w", encoding="ascii") as f:
        f.write("\n".join(lines) + "\n")
    truncated = os.path.join(st.tmp, "truncated.key")
    with open(truncated, "w", encoding="ascii") as f:
        f.write("\n".join(lines[:len(lines) // 2]) + "\n")
    inline_pem = open(emu.merchant_key_file, encoding="ascii").read()
    inline_app = open(app_key_file, encoding="ascii").read()

    def with_opt(option, value):
        args = list(pay_args)
        args[args.index(option) + 1] = value
        return args

    BAD_CONFIGS = [
        ("garbled merchant key file", with_opt("--wechat-key-file", garbled)),
        ("truncated merchant key file", with_opt("--wechat-key-file", truncated)),
        ("the API v3 key file as the merchant key", with_opt("--wechat-key-file",
                                                             emu.apiv3_file)),
        ("the merchant key as the API v3 key file", with_opt("--wechat-apiv3-key-file",
                                                             emu.merchant_key_file)),
        ("the app's public key as its private key", with_opt("--alipay-key-file",
                                                             app_pub_file)),
        ("the app's private key as Alipay's public key", with_opt("--alipay-public-key-file",
                                                                  app_key_file)),
        ("garbled app key file", with_opt("--alipay-key-file", garbled)),
        # a key's text given where its file's path belongs: the error names no value
        ("the merchant key's text as --wechat-key-file", with_opt("--wechat-key-file",
                                                                  inline_pem)),
        ("the API v3 key's text as --wechat-apiv3-key-file",
         with_opt("--wechat-apiv3-key-file", emu.APIV3_KEY)),
        ("the app key's text as --alipay-key-file", with_opt("--alipay-key-file", inline_app)),
    ]

    def start_bad(n, what, args):
        tag = f"payments-bad{n}"
        p = st.start_service(tag, "payments", *args)
        deadline = time.time() + STARTUP_TIMEOUT
        while p.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        if p.poll() is None:
            st.kill(tag, signal.SIGTERM)
            return tag, None
        st.procs.pop(tag, None)
        return tag, p.returncode

    for n, (what, args) in enumerate(BAD_CONFIGS):
        tag, rc = start_bad(n, what, args)
        log = open(os.path.join(st.tmp, tag + ".log"), encoding="utf-8", errors="replace").read()
        said = [x for x in log.splitlines() if " ERROR " in x]
        c.check(rc not in (None, 0) and said, f"{what}: payments refuses to start (exit {rc}): "
                f"{said[-1][-160:] if said else 'no ERROR line'}")
        found = sec.search(log)
        c.check(found is None, f"{what}: no secret in its log (found: {found})")

    # ---- the search: Redis, then (every process stopped) every log and every reply -------------
    rc = st.redis()
    cursor, dump = b"0", []
    while True:
        cursor, keys = rc.call("SCAN", cursor, "COUNT", 1000)
        for key in keys:
            kind = rc.call("TYPE", key)
            value = {"string": ("GET", key), "hash": ("HGETALL", key),
                     "list": ("LRANGE", key, 0, -1), "set": ("SMEMBERS", key),
                     "zset": ("ZRANGE", key, 0, -1, "WITHSCORES"),
                     "stream": ("XRANGE", key, "-", "+")}.get(kind)
            dump.append(repr((key, rc.call(*value) if value else kind)))
        if cursor == b"0":
            break
    redis_text = "\n".join(dump)
    c.check(len(dump) > 20, f"Redis read: {len(dump)} keys, {len(redis_text)} characters")
    c.eq(sec.search(redis_text), None, "no secret material in Redis")
    c.eq(find_codes(codes, redis_text), [], f"none of the {len(codes)} full payment codes in "
         f"Redis (masked only)")
    masked = [f"{x[:4]}{'*' * 10}{x[-4:]}" for x in codes]
    c.check(any(m in redis_text for m in masked), "the intents keep the codes masked")
finally:
    if emu:
        emu.stop()
    st.stop_all(c)

logs = sorted(glob.glob(os.path.join(st.tmp, "*.log")))
total = 0
for path in logs:
    text = open(path, encoding="utf-8", errors="replace").read()
    total += len(text)
    name = os.path.basename(path)
    c.eq(sec.search(text), None, f"{name}: no secret material ({len(text)} characters)")
    if name.startswith("payments"):
        c.eq(find_codes(codes, text), [], f"{name}: no full payment code")
c.check(len(logs) >= 4 + 1 + len(BAD_CONFIGS) and total > 10000,
        f"{len(logs)} logs searched, {total} characters")
reply_text = "\n".join(repr(r) for r in replies)
c.eq(sec.search(reply_text), None, f"no secret material in the {len(replies)} replies")
c.finish()
