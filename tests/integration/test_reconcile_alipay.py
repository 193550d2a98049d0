#!/usr/bin/python3
"""test_reconcile_alipay - reconciliation (对账) of Alipay's 业务明细 with the payment intents.

Payments go through the payments service against the Alipay emulator (paid, waiting until
reversed, declined, paid and then cancelled) and one against the WeChat Pay emulator. The
Alipay emulator's statement of the day (its real layout: GBK, `#` lines, tab-padded fields,
negative refund rows carrying the refund's request number, the 交易合计/退款合计 totals)
reconciles with no difference (exit 0), read as GBK and as UTF-8, its provider told by its
header; the WeChat bill of the same day is clean too, the Alipay intents being none of its
business. Then differences are planted: a payment dropped from the statement, an amount
changed, a trade posbus never saw, a row naming a WeChat payment, a refund made at the provider
alone, totals that do not add up. posctl payments reconcile finds each of them, as its own kind,
and nothing else (exit 1); the result is kept beside WeChat's and the Z report shows both.
Alipay knows each intent by its wire form (letters, digits and '_' only: S1__R01__000001__1 for
S1-R01-000001-1); the statement is read back into intent ids, and a 商户订单号 that is no wire form
is reported as it stands."""
import datetime
import json
import os
import subprocess
import time

from harness import BIN, Bus, Checks, PaymentEmulators, Stack, alipay_trade_no, wait_for


# the store runs on Beijing time, as the provider's statement does (see test_reconcile.py)
os.environ["TZ"] = "CST-8"
time.tzset()
STORE = "S1"
ACODE, WCODE = "284567890123456789", "134567890123456789"
c = Checks("test_reconcile_alipay")
st = Stack("reconcile_alipay")
emu = None
try:
    st.start_redis()
    st.start_busd()
    for s in ("inventory", "sales", "reporting"):
        st.start_service(s, s)
    c.check(st.wait_healthy(["inventory", "sales", "reporting"]), "back office healthy")
    st.posctl("store", "add", STORE, "Reconcile store", check=True)
    emu = PaymentEmulators(st)
    wx, ali = emu.wx, emu.ali
    st.start_service("payments", "payments", *emu.args,
                     "--query-interval-ms", "300", "--reverse-after-ms", "3000",
                     "--lease-ms", "8000")
    c.check(st.wait_healthy(["payments"]), "payments healthy")
    reg = Bus(st, cert=st.key("register", "S1.R01"))

    def final(i):
        wait_for(lambda: reg.call("payments", "payment.get", {"intent": i})["body"]["final"],
                 20, f"{i} final")
        return reg.call("payments", "payment.get", {"intent": i})["body"]["state"]

    def pay(seq, amount, code=ACODE):
        r = reg.call("payments", "payment.pay", {"sale_id": f"S1-R01-{seq:06d}", "attempt": 1,
                                                 "amount": amount, "code": code})
        i = r["body"]["intent"]
        return i, final(i)

    paid = [pay(1, 1000), pay(2, 2050), pay(3, 3999)]
    ali.mode("waiting_then_timeout")
    reversed_ = pay(4, 700)
    ali.mode("declined")
    declined = pay(5, 800)
    cancelled = pay(6, 1500)
    r = reg.call("payments", "payment.cancel", {"intent": cancelled[0]})
    c.check(r["type"] == "reply", f"a paid Alipay payment cancelled: {r['body']}")
    c.check(wait_for(lambda: reg.call("payments", "payment.get", {"intent": cancelled[0]})
                     ["body"]["state"] == "reversed", 20), "and reversed (撤销, money back)")
    wechat_paid = pay(7, 500, WCODE)
    c.eq([s for _, s in paid] + [reversed_[1], declined[1], wechat_paid[1]],
         ["succeeded"] * 3 + ["reversed", "failed", "succeeded"],
         "three paid, one reversed, one declined at Alipay; one paid at WeChat")
    # a refund made through posbus: its 退款 row carries posbus's refund number
    r = reg.call("payments", "payment.refund", {"intent": paid[1][0], "refund_no": "RF-OURS",
                                                "amount": 50})
    c.check(r["type"] == "reply", f"a refund through posbus: {r['body']}")
    c.check(wait_for(lambda: reg.call("payments", "payment.refund_get",
                                      {"refund_no": "RF-OURS"})["body"].get("state") ==
                     "succeeded", 15), "refunded")
    day = datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=8))) \
        .strftime("%Y-%m-%d")

    def reconcile(name, data, *extra):
        path = os.path.join(st.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        r = subprocess.run([f"{BIN}/posctl", *st.conn_args(), "payments", "reconcile",
                            "--store", STORE, "--date", day, *extra, path, "--format", "json"],
                           capture_output=True, text=True, timeout=60)
        try:
            return r.returncode, json.loads(r.stdout.strip().splitlines()[-1]), r
        except (ValueError, IndexError):
            return r.returncode, {}, r

    def kinds(res):
        return sorted((d["kind"], d["out_trade_no"]) for d in res.get("diffs", []))

    bill = ali.bill(day)
    text = bill.decode("gbk")
    c.check(text.startswith("#支付宝业务明细查询") and "支付宝交易号" in text and
            "#交易合计：" in text and "\t," in text,
            "the emulator's statement has the # lines, the header and tab-padded fields")
    try:
        bill.decode("utf-8")
        gbk = False
    except UnicodeDecodeError:
        gbk = True
    c.check(gbk, "and it is GBK, not UTF-8")
    otns = [ln.split(",")[1].strip() for ln in text.split("\r\n")
            if ln and not ln.startswith(("#", "支付宝交易号"))]
    c.check(otns and all(o.replace("_", "").isalnum() for o in otns) and
            alipay_trade_no(paid[0][0]) in otns and paid[0][0] not in otns,
            f"the statement's 商户订单号 are the intents' wire forms, in Alipay's alphabet: {otns}")
    for name, data, extra in (("clean-gbk.csv", bill, ()),
                              ("clean-utf8.csv", text.encode(), ()),
                              ("clean-told.csv", bill, ("--provider", "alipay"))):
        rc, res, raw = reconcile(name, data, *extra)
        c.check(rc == 0 and res.get("provider") == "alipay" and res.get("differences") == 0 and
                res.get("matched") == 6,
                f"{name}: reconciles, exit 0: the 3 paid, posbus's refund and the cancelled "
                f"payment's two rows matched (the reversed one was never paid, the WeChat one is "
                f"not Alipay's) ({rc}, {res.get('matched')}, {res.get('diffs')}) "
                f"{raw.stderr.strip()}")
        c.eq((res.get("provider_paid"), res.get("here_paid")), (1000 + 2050 + 3999,) * 2,
             f"{name}: paid at the provider and here (fen)")
    rc, res, raw = reconcile("wechat.csv", wx.bill(day))
    c.check(rc == 0 and res.get("provider") == "wechat" and res.get("matched") == 1,
            f"WeChat's bill of the same day: clean, the Alipay payments none of its business "
            f"({rc}, {res.get('diffs')}) {raw.stderr.strip()}")
    rc, _, raw = reconcile("told-wrong.csv", bill, "--provider", "wechat")
    c.check(rc == 1 and "no column" in raw.stderr,
            f"an Alipay statement read as WeChat's: refused ({raw.stderr.strip()})")

    c.eq(ali.command({"cmd": "bill_edit", "add": [{"out_trade_no": "NOT-OURS-1",
                                                   "amount": 1234}]})["ok"], False,
         "the emulator takes no out_trade_no outside Alipay's alphabet")
    # the rows name the wire forms; the differences name the intents (NOT__OURS__1 reads as
    # NOT-OURS-1; OTHER_SYS_1 is no wire form: another system's trade, as it stands)
    e = ali.command({"cmd": "bill_edit", "drop": [alipay_trade_no(paid[0][0])],
                     "amount": {alipay_trade_no(paid[1][0]): 2060},
                     "add": [{"out_trade_no": "NOT__OURS__1", "amount": 1234},
                             {"out_trade_no": "OTHER_SYS_1", "amount": 99},
                             {"out_trade_no": alipay_trade_no(wechat_paid[0]), "amount": 500},
                             {"out_trade_no": alipay_trade_no(paid[2][0]),
                              "out_request_no": "R-1", "amount": 500}]})
    c.check(e["ok"], f"differences planted: {e}")
    planted = sorted([("missing_at_provider", paid[0][0]), ("amount_mismatch", paid[1][0]),
                      ("missing_here", "NOT-OURS-1"), ("missing_here", "OTHER_SYS_1"),
                      ("missing_here", wechat_paid[0]), ("refund_mismatch", paid[2][0])])
    bill = ali.bill(day)
    for name, data in (("planted-gbk.csv", bill), ("planted-utf8.csv", ali.bill(day, "utf-8"))):
        rc, res, raw = reconcile(name, data)
        c.eq(kinds(res), planted, f"{name}: every planted difference found, as its kind, and "
                                  f"nothing else")
        c.check(rc == 1, f"{name}: exit 1 on differences (got {rc}) {raw.stderr.strip()}")
    amt = [d for d in res.get("diffs", []) if d["kind"] == "amount_mismatch"]
    c.check(amt and amt[0]["here"] == 2050 and amt[0]["provider"] == 2060,
            f"the amounts of the mismatch, in fen: {amt}")
    other = [d for d in res.get("diffs", []) if d["out_trade_no"] == wechat_paid[0]]
    c.check(other and "wechat payment here" in other[0]["detail"],
            f"a row naming a WeChat payment says so: {other}")
    ref = [d for d in res.get("diffs", []) if d["kind"] == "refund_mismatch"]
    c.check(ref and ref[0]["provider"] == 500, f"the refund at the provider, 500 fen: {ref}")

    # the statement's own totals do not add up
    lines = bill.decode("gbk").split("\r\n")
    at = [i for i, ln in enumerate(lines) if ln.startswith("#交易合计：")][0]
    n = int(lines[at].split("：")[1].split("笔")[0])
    lines[at] = lines[at].replace(f"：{n}笔", f"：{n + 1}笔")
    rc, res, raw = reconcile("summary.csv", "\r\n".join(lines).encode("gbk"))
    c.eq(kinds(res), sorted(planted + [("summary_mismatch", "")]),
         "totals that do not add up: summary_mismatch besides the others")

    # columns in another order, LF line ends: parsed by name, the same result
    rows = bill.decode("gbk").split("\r\n")
    head = [i for i, ln in enumerate(rows) if ln.startswith("支付宝交易号")][0]
    width = len(rows[head].split(","))
    moved = []
    for i, ln in enumerate(rows):
        cells = ln.split(",")
        if i >= head and not ln.startswith("#") and len(cells) == width:
            cells = cells[11:] + cells[:11]
        moved.append(",".join(cells))
    rc, res, raw = reconcile("moved.csv", "\n".join(moved).encode("gbk"))
    c.eq(kinds(res), planted, f"columns in another order: the same differences "
                              f"{raw.stderr.strip()}")

    # bad input: refused with a reason, never a crash
    bad = bill.decode("gbk").replace(",20.60,", ",20.605,", 1).encode("gbk")
    rc, _, raw = reconcile("bad-amount.csv", bad)
    c.check(rc == 1 and "amount 20.605" in raw.stderr,
            f"an amount with 3 decimals: refused ({raw.stderr.strip()})")
    rc, _, raw = reconcile("binary.csv", b"\xff\xfe\x00\x01" * 8)
    c.check(rc == 1 and "neither UTF-8 nor GBK" in raw.stderr,
            f"neither UTF-8 nor GBK: refused ({raw.stderr.strip()})")
    rc, _, raw = reconcile("bogus.csv", b"a,b,c\n1,2,3\n")
    c.check(rc == 1 and "no column" in raw.stderr, f"not a statement: {raw.stderr.strip()}")

    # kept for the day beside WeChat's, both shown in the Z report
    kept = Bus(st).call("payments", "payment.recon.get", {"store": STORE, "day": day})["body"]
    res_by = kept.get("results", {})
    c.check(res_by.get("alipay", {}).get("differences") == 6 and
            res_by.get("wechat", {}).get("differences") == 0,
            f"one result per provider kept for the day: {sorted(res_by)}")
    z = subprocess.run([f"{BIN}/posctl", *st.conn_args(), "report", "z", "--store", STORE],
                       capture_output=True, text=True, timeout=60)
    c.check("reconciliation.alipay" in z.stdout and "6 differences" in z.stdout and
            "reconciliation.wechat" in z.stdout and "1 matched, 0 differences" in z.stdout,
            f"the Z report shows both:\n{z.stdout}{z.stderr}")
finally:
    if emu:
        emu.stop()
    st.stop_all(c)
c.finish()
