#!/usr/bin/python3
"""test_reconcile - reconciliation (对账) of WeChat Pay's trade bill with the payment intents.

Payments go through the payments service against the WeChat Pay emulator (paid, reversed,
declined); the emulator's trade bill of the day (its real layout: backticks, yuan, a summary)
reconciles with no difference (exit 0). Then differences are planted: a payment dropped from
the bill, an amount changed, a trade posbus never saw, a refund made at the provider, a summary
that does not add up. posctl payments reconcile finds each of them, as its own kind, and
nothing else (exit 1); the result is kept and the Z report shows it.

Then: a payment is counted on the day it was paid (paid_ms) even when a refund the next day has
moved its updated_ms, and an intent refunded in full (state refunded) still matches its payment
row; a statement with thousands of differences is kept all the same (its counts whole, the
first differences listed, truncated) and the Z report shows it."""
import base64
import datetime
import http.client
import json
import os
import secrets
import ssl
import subprocess
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from harness import BIN, Bus, Checks, PaymentEmulators, Stack, wait_for


# the store runs on Beijing time, as the provider's statement does (so that its business day
# and the statement's day are one, whatever this machine's zone)
os.environ["TZ"] = "CST-8"
time.tzset()
STORE = "S1"
c = Checks("test_reconcile")
st = Stack("reconcile")
emu = None
try:
    st.start_redis()
    st.start_busd()
    for s in ("inventory", "sales", "reporting"):
        st.start_service(s, s)
    c.check(st.wait_healthy(["inventory", "sales", "reporting"]), "back office healthy")
    st.posctl("store", "add", STORE, "Reconcile store", check=True)
    emu = PaymentEmulators(st, alipay=False)
    wx, key = emu.wx, emu.merchant_key
    st.start_service("payments", "payments", *emu.args,
                     "--query-interval-ms", "300", "--reverse-after-ms", "3000",
                     "--lease-ms", "8000")
    c.check(st.wait_healthy(["payments"]), "payments healthy")
    reg = Bus(st, cert=st.key("register", "S1.R01"))

    def pay(seq, amount):
        r = reg.call("payments", "payment.pay", {"sale_id": f"S1-R01-{seq:06d}", "attempt": 1,
                                                 "amount": amount,
                                                 "code": "134567890123456789"})
        i = r["body"]["intent"]
        wait_for(lambda: reg.call("payments", "payment.get", {"intent": i})["body"]["final"],
                 20, f"{i} final")
        return i, reg.call("payments", "payment.get", {"intent": i})["body"]["state"]

    paid = [pay(1, 1000), pay(2, 2050), pay(3, 3999)]
    wx.mode("userpaying_then_timeout")
    reversed_ = pay(4, 700)
    wx.mode("declined")
    declined = pay(5, 800)
    c.eq([s for _, s in paid] + [reversed_[1], declined[1]],
         ["succeeded"] * 3 + ["reversed", "failed"], "three paid, one reversed, one declined")
    # a refund made through posbus: its row in the bill matches it
    r = reg.call("payments", "payment.refund", {"intent": paid[1][0], "refund_no": "RF-OURS",
                                                "amount": 50})
    c.check(r["type"] == "reply", f"a refund through posbus: {r['body']}")
    c.check(wait_for(lambda: reg.call("payments", "payment.refund_get",
                                      {"refund_no": "RF-OURS"})["body"].get("state") ==
                     "succeeded", 15), "refunded")
    day = datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=8))) \
        .strftime("%Y-%m-%d")

    def reconcile(name, data, date=None):
        path = os.path.join(st.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        r = subprocess.run([f"{BIN}/posctl", *st.conn_args(), "payments", "reconcile",
                            "--store", STORE, "--date", date or day, path, "--format", "json"],
                           capture_output=True, text=True, timeout=60)
        try:
            return r.returncode, json.loads(r.stdout.strip().splitlines()[-1]), r
        except (ValueError, IndexError):
            return r.returncode, {}, r

    # posctl payments list: the day's intents as payments keeps them
    r = subprocess.run([f"{BIN}/posctl", *st.conn_args(), "payments", "list", "--store", STORE,
                        "--date", day, "--format", "json"], capture_output=True, text=True,
                       timeout=60)
    try:
        listed = json.loads(r.stdout.strip().splitlines()[-1]).get("intents", [])
    except (ValueError, IndexError):
        listed = []
    c.eq(sorted((x["intent"], x["state"], x["amount"]) for x in listed),
         sorted([(i, s, a) for (i, s), a in zip(paid + [reversed_, declined],
                                                 (1000, 2050, 3999, 700, 800))]),
         f"posctl payments list: the five intents with their states and amounts "
         f"(exit {r.returncode} {r.stderr.strip()})")

    bill = wx.bill(day)
    c.check(b"`" in bill and "总交易单数".encode() in bill,
            "the emulator's bill has backticks and a summary")
    rc, res, raw = reconcile("clean.csv", bill)
    c.check(rc == 0 and res.get("differences") == 0 and res.get("matched") == 4,
            f"the day's bill reconciles: exit 0, the 3 paid and posbus's refund matched (the "
            f"reversed one was never paid: not in the bill), no difference "
            f"({rc}, {res.get('matched')}, {res.get('diffs')}) {raw.stderr.strip()}")
    c.eq(res.get("provider_paid"), 1000 + 2050 + 3999, "paid at the provider (fen)")
    c.eq(res.get("here_paid"), 1000 + 2050 + 3999, "paid here (fen)")

    # a refund made at the provider (signed, as a merchant's other system would)
    def signed_post(path, body):
        raw_body = json.dumps(body).encode()
        ts, nonce = str(int(time.time())), secrets.token_hex(16)
        msg = f"POST\n{path}\n{ts}\n{nonce}\n{raw_body.decode()}\n".encode()
        sig = base64.b64encode(key.sign(msg, padding.PKCS1v15(), hashes.SHA256())).decode()
        ctx = ssl.create_default_context(cafile=wx.ca_file)
        conn = http.client.HTTPSConnection("127.0.0.1", wx.port, context=ctx, timeout=10)
        conn.request("POST", path, raw_body, {
            "Content-Type": "application/json", "Accept": "application/json",
            "Authorization": f'WECHATPAY2-SHA256-RSA2048 mchid="{emu.MCHID}",nonce_str="{nonce}",'
                             f'timestamp="{ts}",serial_no="{emu.SERIAL}",signature="{sig}"'})
        resp = conn.getresponse()
        out = resp.status, resp.read()
        conn.close()
        return out

    status, _ = signed_post("/v3/refund/domestic/refunds",
                            {"out_trade_no": paid[2][0], "out_refund_no": "R-1",
                             "amount": {"refund": 500, "total": 3999, "currency": "CNY"}})
    c.eq(status, 200, "a refund at the provider")
    wx.command({"cmd": "bill_edit", "drop": [paid[0][0]], "amount": {paid[1][0]: 2060},
                "add": [{"out_trade_no": "NOT-OURS-1", "amount": 1234}]})
    rc, res, raw = reconcile("planted.csv", wx.bill(day))
    kinds = sorted((d["kind"], d["out_trade_no"]) for d in res.get("diffs", []))
    c.eq(kinds, sorted([("missing_at_provider", paid[0][0]), ("amount_mismatch", paid[1][0]),
                        ("missing_here", "NOT-OURS-1"), ("refund_mismatch", paid[2][0])]),
         "every planted difference found, as its kind, and nothing else")
    c.check(rc == 1, f"exit 1 on differences (got {rc})")
    amt = [d for d in res.get("diffs", []) if d["kind"] == "amount_mismatch"]
    c.check(amt and amt[0]["here"] == 2050 and amt[0]["provider"] == 2060,
            f"the amounts of the mismatch, in fen: {amt}")

    # the statement's own summary does not add up
    text = wx.bill(day).decode()
    lines = text.split("\r\n")
    summary_at = [i for i, ln in enumerate(lines) if ln.startswith("总交易单数")][0] + 1
    cells = lines[summary_at].split(",")
    cells[0] = "`" + str(int(cells[0].lstrip("`")) + 1)
    lines[summary_at] = ",".join(cells)
    rc, res, raw = reconcile("summary.csv", "\r\n".join(lines).encode())
    c.check(rc == 1 and any(d["kind"] == "summary_mismatch" for d in res.get("diffs", [])),
            f"a summary that does not add up: summary_mismatch ({res.get('diffs')})")

    # columns in another order: parsed by name, the same result
    rows = [ln.split(",") for ln in wx.bill(day).decode().split("\r\n") if ln]
    head_n = len(rows[0])
    swapped = []
    for r in rows:
        if len(r) == head_n:
            r = [r[6], r[0], r[1], r[2], r[3], r[4], r[5]] + r[7:]
        swapped.append(",".join(r))
    rc, res2, raw = reconcile("swapped.csv", ("\r\n".join(swapped) + "\r\n").encode())
    kinds2 = sorted((d["kind"], d["out_trade_no"]) for d in res2.get("diffs", []))
    c.eq(kinds2, kinds, "columns in another order: the same differences")

    # a file that is no trade bill: refused with a reason, nothing kept
    rc, _, raw = reconcile("bogus.csv", b"a,b,c\n1,2,3\n")
    c.check(rc == 1 and "no column" in raw.stderr, f"not a trade bill: {raw.stderr.strip()}")

    # kept for the day, shown in the Z report
    ops = Bus(st)
    kept = ops.call("payments", "payment.recon.get", {"store": STORE, "day": day})["body"]
    c.check(kept.get("results", {}).get("wechat", {}).get("differences") == 4,
            f"the last result is kept for the day: {kept.get('results', {}).get('wechat', {})}")
    z = subprocess.run([f"{BIN}/posctl", *st.conn_args(), "report", "z", "--store", STORE],
                       capture_output=True, text=True, timeout=60)
    c.check("reconciliation.wechat" in z.stdout and "4 differences" in z.stdout,
            f"the Z report shows it:\n{z.stdout}{z.stderr}")

    # a statement's refund numbers are looked up 200 at a time
    got = ops.call("payments", "payment.recon.refunds",
                   {"store": STORE, "refund_nos": ["RF-OURS", "R-1", "no such", "RF-OURS"]})
    c.eq(got["body"].get("refunds"), {"RF-OURS": {"intent": paid[1][0], "amount": 50,
                                                  "provider": "wechat", "state": "succeeded"}},
         "payment.recon.refunds: posbus's refund under its number, none for the others")
    got = ops.call("payments", "payment.recon.refunds",
                   {"store": STORE, "refund_nos": ["R"] * 201})
    c.check(got["type"] == "error" and got["body"].get("code") == "bad_request",
            f"more than 200 at once: bad_request ({got['body']})")

    # the paid day: paid[0] (dropped from the bill) was paid today; a refund tomorrow moves its
    # updated_ms to tomorrow, paid_ms stays. paid[2] is refunded in full (state refunded).
    tomorrow = (datetime.datetime.strptime(day, "%Y-%m-%d") +
                datetime.timedelta(days=1)).strftime("%Y-%m-%d")

    def intent_key(i):
        return f"pay:{{{STORE}}}:{i}"
    updated = int(st.redis_cli("HGET", intent_key(paid[0][0]), "updated_ms").stdout.strip())
    st.redis_cli("HSETNX", intent_key(paid[0][0]), "paid_ms", updated)
    st.redis_cli("HSET", intent_key(paid[0][0]), "updated_ms", updated + 86400 * 1000)
    st.redis_cli("HSET", intent_key(paid[2][0]), "state", "refunded")
    rc, res, raw = reconcile("paid-day.csv", wx.bill(day))
    c.eq(sorted((d["kind"], d["out_trade_no"]) for d in res.get("diffs", [])), kinds,
         "updated the next day, paid today: still missing from today's bill; refunded in full: "
         "still its payment row's match (the same differences as before)")
    c.eq(res.get("here_paid"), 1000 + 2050 + 3999, "paid here that day: the refunded one too")
    rc, res, raw = reconcile("tomorrow.csv", wx.bill(tomorrow), tomorrow)
    c.check(rc == 0 and res.get("differences") == 0,
            f"tomorrow's bill: nothing missing (the payment updated then was paid today) "
            f"({rc}, {res.get('diffs')}) {raw.stderr.strip()}")

    # thousands of differences (a hostile or broken bill): kept all the same, cut to its counts
    # and first differences, and the Z report shows the day
    many = 6000
    wx.command({"cmd": "bill_edit", "add": [{"out_trade_no": f"NOTOURS{n:025d}", "amount": 100}
                                            for n in range(many)]})
    rc, res, raw = reconcile("many.csv", wx.bill(day))
    total = len(kinds) + many
    c.check(rc == 1 and res.get("differences") == total and len(res.get("diffs", [])) == total,
            f"{many} more rows no one here knows: {total} differences, all listed "
            f"({rc}, {res.get('differences')}) {raw.stderr.strip()[:300]}")
    kept = ops.call("payments", "payment.recon.get", {"store": STORE, "day": day})["body"]
    w = kept.get("results", {}).get("wechat", {})
    c.check(w.get("differences") == total and w.get("truncated") is True and
            0 < w.get("listed", 0) == len(w.get("diffs", [])) < total and
            w.get("diffs", [None])[0] == res.get("diffs", [None])[0] and
            w.get("provider_paid") == res.get("provider_paid"),
            f"kept: every count, the first {w.get('listed')} differences, truncated "
            f"({w.get('differences')}, {w.get('truncated')})")
    z = subprocess.run([f"{BIN}/posctl", *st.conn_args(), "report", "z", "--store", STORE,
                        "--date", day], capture_output=True, text=True, timeout=60)
    c.check(f"{total} differences" in z.stdout, f"the Z report shows it:\n{z.stdout}{z.stderr}")
finally:
    if emu:
        emu.stop()
    st.stop_all(c)
c.finish()
