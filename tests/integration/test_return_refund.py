#!/usr/bin/python3
"""test_return_refund - a return is refunded to the tenders its sale was paid with: sales rung
at R01 and paid by WeChat and Alipay payment codes and stored-value cards (some split with cash)
are returned at R02, where `pay refund` sends what is owed back to those payments (what each may
still give back: payment.refundable, card.sale; each sale at most what the ticket returns of it)
as tenders of the return sale, written into the sale's own record and sent to payments
(payment.refund, card.refund) once it is written, until payments answers (refund_done): the
emulators' books and the cards show each refund once, with the right amount; partial returns
refund partially and several refunds never add up to more than was paid; a cashier cannot pay a
WeChat sale's return out in cash, a supervisor can; a refund waiting for payments when posnode
is killed with SIGKILL is sent after its restart, once."""
import os
import signal
import subprocess
import sys
import time

from harness import (BIN, SRC, Bus, Checks, PaymentEmulators, Stack, alipay_trade_no,
                     journal_audits, journal_sales, wait_for)

STORE = "S1"
RICE, MILK = "6901234500011", "6901234500035"  # 49.90, 3.50
WX_CODE, ALI_CODE = "134567890123456789", "2812345678901234"
WAIT = 20
c = Checks("test_return_refund")
st = Stack("return_refund")
emus = None
try:
    st.start_redis()
    st.start_busd()
    emus = PaymentEmulators(st)
    wx, ali = emus.wx, emus.ali
    pay_args = emus.args + ["--query-interval-ms", "400"]
    for s in ("sales", "inventory", "devices"):
        st.start_service(s, s)
    st.start_service("payments", "payments", *pay_args)
    c.check(st.wait_healthy(["sales", "inventory", "devices", "payments"]),
            "back office healthy")
    st.posctl("store", "add", STORE, "Returns store", check=True)
    st.posctl("catalog", "import", os.path.join(SRC, "scripts", "sample", "catalog.csv"),
              check=True)
    for cid, name, role, pin in (("ann", "Ann", "cashier", "1111"),
                                 ("sue", "Sue", "supervisor", "2222")):
        subprocess.run([f"{BIN}/posctl", *st.conn_args(), "cashier", "add", "--store", STORE,
                        "--id", cid, "--name", name, "--role", role], input=pin + "\n",
                       text=True, capture_output=True, check=True)
    r01 = st.start_posnode("r01", STORE, "R01")
    r02 = st.start_posnode("r02", STORE, "R02", "--request-timeout-ms", "800")
    for t in (r01, r02):
        wait_for(lambda: t.cmd("state")["config_version"] >= 1, WAIT)
        c.check(t.cmd("login ann 1111")["ok"], "Ann logs in")

    def sell(lines, *pays):
        """Ring lines at R01 and pay; the sale id once it is written."""
        last = r01.cmd("state")["last_sale"]
        for code in lines:
            r01.cmd(f"scan {code}")
        for p in pays:
            r = r01.cmd(p)
            c.check(r["ok"], f"R01 {p}: {r.get('message')}")
        c.check(wait_for(lambda: r01.cmd("state")["last_sale"] == last + 1, WAIT),
                "the sale completes")
        return journal_sales(r01.journal)[-1]

    def wx_refunds(sale_id):
        t = next((t for t in wx.status()["trades"] if t["out_trade_no"] == f"{sale_id}-1"), {})
        return [(r["out_refund_no"], r["amount"]) for r in t.get("refunds", [])]

    def ali_refunds(sale_id):
        otn = alipay_trade_no(f"{sale_id}-1")
        t = next((t for t in ali.status()["trades"] if t["out_trade_no"] == otn), {})
        return [(r["out_request_no"], r["amount_fen"]) for r in t.get("refunds", [])]

    def ret_line(sale, sku):
        """A return line at R02 (a cashier's return, approved by Sue)."""
        r = r02.cmd(f"return {sale['sale_id']} {sku} 1 approve sue 2222")
        c.check(r["ok"], f"return {sku} of {sale['sale_id']}: {r.get('message')}")

    def done(refund_no):
        return next((a for a in journal_audits(r02.journal, "refund_done")
                     if a.get("refund_no") == refund_no), None)

    # sale A: 53.40 by WeChat; sale B: 53.40 as 10.00 cash + 43.40 Alipay
    a = sell([RICE, MILK], f"pay code {WX_CODE}")
    c.eq(a["tenders"], [{"kind": "wechat", "amount": 5340}], "sale A paid by WeChat")
    b = sell([RICE, MILK], "pay cash 10", f"pay code {ALI_CODE}")
    c.eq(b["tenders"], [{"kind": "cash", "amount": 1000}, {"kind": "alipay", "amount": 4340}],
         "sale B paid 10.00 cash + 43.40 Alipay")

    # 1. a WeChat sale's return at another register: not in cash by a cashier, back to WeChat
    ret_line(a, "RICE5")
    r = r02.cmd("pay cash")
    c.check(not r["ok"] and r["error"] == "not_permitted" and "refund_cash" in r["message"],
            f"Ann cannot pay a WeChat sale's return out in cash: {r.get('message')}")
    last = r02.cmd("state")["last_sale"]
    r = r02.cmd("pay refund")
    c.check(r["ok"] and r.get("sale_id") and
            r.get("refunds") == [{"provider": "wechat", "intent": f"{a['sale_id']}-1",
                                  "amount": 4990}],
            f"pay refund: 49.90 back to A's WeChat payment, the return sale written: {r}")
    ret = journal_sales(r02.journal)[-1]
    c.eq((ret["seq"], ret["tenders"], ret["total"]),
         (last + 1, [{"kind": "wechat", "amount": -4990}], -4990),
         "the return sale carries the WeChat refund as its tender")
    no1 = f"{ret['sale_id']}-r1"
    c.check(ret.get("refunds") == [{"intent": f"{a['sale_id']}-1", "provider": "wechat",
                                    "refund_no": no1, "amount": 4990}],
            f"the refunds are written in the return sale's own record: {ret.get('refunds')}")
    c.check(wait_for(lambda: done(no1), WAIT), "refund_done journaled once payments took it")
    c.check(wait_for(lambda: wx_refunds(a["sale_id"]) == [(no1, 4990)], WAIT),
            f"the WeChat emulator booked 49.90 against A's payment: {wx_refunds(a['sale_id'])}")

    # 2. several partial refunds never more than was paid
    ret_line(a, "MILK1")
    r = r02.cmd("pay refund")
    c.check(r["ok"] and [x["amount"] for x in r.get("refunds", [])] == [350],
            f"the milk: the 3.50 A's WeChat payment still holds: {r.get('refunds')}")
    no2 = f"{journal_sales(r02.journal)[-1]['sale_id']}-r1"
    c.check(wait_for(lambda: sorted(wx_refunds(a["sale_id"])) == sorted([(no1, 4990),
                                                                         (no2, 350)]), WAIT),
            "the emulator: 49.90 + 3.50 refunded, all A paid")
    r = r02.cmd(f"return {a['sale_id']} MILK1 1 approve sue 2222")
    c.check(not r["ok"] and r["error"] == "too_many" and "1 returned already" in r["message"],
            f"A's one milk is back already: a second return of it is refused at the till: "
            f"{r.get('message')}")

    # 3. a split sale: Alipay's part back to Alipay, the rest in cash (what B took in cash)
    ret_line(b, "RICE5")
    r = r02.cmd("pay refund")
    c.check(r["ok"] and r.get("refunds") == [{"provider": "alipay",
                                              "intent": f"{b['sale_id']}-1", "amount": 4340}] and
            r["ticket"]["remaining"] == -650,
            f"pay refund: 43.40 back to Alipay, 6.50 still owed: {r.get('refunds')}")
    r = r02.cmd("pay cash")
    c.check(r["ok"] and r.get("sale_id"), f"6.50 in cash: within B's 10.00 cash, no approval: "
            f"{r.get('message')}")
    ret = journal_sales(r02.journal)[-1]
    c.eq(ret["tenders"], [{"kind": "alipay", "amount": -4340}, {"kind": "cash", "amount": -650}],
         "the return sale: -43.40 Alipay, -6.50 cash")
    c.check(wait_for(lambda: ali_refunds(b["sale_id"]) == [(f"{ret['sale_id']}-r1", 4340)],
                     WAIT), f"the Alipay emulator booked 43.40: {ali_refunds(b['sale_id'])}")
    # B's milk: the rice took back all B's Alipay payment held, nothing is left there
    ret_line(b, "MILK1")
    r = r02.cmd("pay refund")
    c.check(not r["ok"] and r["error"] == "no_wallet",
            f"B's Alipay payment has nothing left to give back: {r.get('message')}")
    r02.cmd("cancel")

    # 4. a supervisor may choose cash: the WeChat payment is then left as it is
    d = sell([MILK], f"pay code {WX_CODE}")
    ret_line(d, "MILK1")
    r = r02.cmd("pay cash approve sue 2222")
    c.check(r["ok"] and r.get("approved_by") == "sue" and r.get("sale_id"),
            f"Sue approves paying D's return in cash: {r.get('message')}")
    c.eq(wx_refunds(d["sale_id"]), [], "nothing refunded to D's WeChat payment")

    # 5. a refund waiting for payments when posnode is killed: sent after its restart, once
    e = sell([RICE], f"pay code {WX_CODE}")
    pay_proc = st.procs["payments"]
    pay_proc.send_signal(signal.SIGSTOP)
    ret_line(e, "RICE5")
    r = r02.cmd("pay refund")
    c.check(r["ok"] is False and r.get("error") in ("offline", "refused"),
            f"payments stopped: nothing planned while it cannot say what may be refunded: "
            f"{r.get('error')}")
    pay_proc.send_signal(signal.SIGCONT)
    r = r02.cmd("pay refund")
    c.check(r["ok"] and r.get("sale_id"), "payments back: planned and the return sale written")
    no5 = f"{journal_sales(r02.journal)[-1]['sale_id']}-r1"
    c.check(wait_for(lambda: done(no5), WAIT), "sent and answered")
    c.eq(wx_refunds(e["sale_id"]), [(no5, 4990)], "booked once")

    # RICE 49.90 paid 10.00 cash + 39.90 WeChat: planned while payments answers, written (the
    # cash part) after payments stalled, posnode killed before payments took the refund
    f = sell([RICE], "pay cash 10", f"pay code {WX_CODE}")
    ret_line(f, "RICE5")
    r = r02.cmd("pay refund")
    c.check(r["ok"] and not r.get("sale_id") and r["ticket"]["remaining"] == -1000,
            f"39.90 planned back to WeChat, 10.00 still owed: {r.get('refunds')}")
    pay_proc.send_signal(signal.SIGSTOP)
    r = r02.cmd("pay cash")
    no6 = f"{r.get('sale_id')}-r1"
    c.check(r["ok"] and r.get("sale_id"), "the return sale written while payments stalls")
    c.check(wait_for(lambda: r02.cmd("state").get("refunds_pending") == 1, WAIT),
            "the refund waits for payments")
    st.kill("r02", signal.SIGKILL)
    pay_proc.send_signal(signal.SIGCONT)
    r02 = st.start_posnode("r02", STORE, "R02", "--request-timeout-ms", "800")
    c.check(wait_for(lambda: done(no6), WAIT), "after the restart the refund is sent")
    c.check(r02.cmd("login ann 1111")["ok"], "Ann logs in again")
    c.check(wait_for(lambda: wx_refunds(f["sale_id"]) == [(no6, 3990)], WAIT),
            f"booked once: {wx_refunds(f['sale_id'])}")
    c.eq(len([x for x in journal_audits(r02.journal, "refund_done")
              if x.get("refund_no") == no6]), 1, "one refund_done for it")

    # 6. stored-value cards: a return goes back to the card that paid, never more than it took
    for card, topup in (("SVR1", "100"), ("SVR2", "100")):
        st.posctl("card", "create", card, "--holder", "Holder " + card, "--offline-cap", "20",
                  check=True)
        st.posctl("card", "topup", card, topup, check=True)

    def balance(card):
        return st.posctl_json("card", "get", card)["balance"]

    g = sell([RICE, MILK], "pay sv SVR1")
    c.eq(g["tenders"], [{"kind": "stored_value", "amount": 5340}], "sale G paid by card SVR1")
    h = sell([RICE], "pay cash 20", "pay sv SVR2")
    c.eq(h["tenders"], [{"kind": "cash", "amount": 2000}, {"kind": "stored_value", "amount": 2990}],
         "sale H paid 20.00 cash + 29.90 card SVR2")
    c.eq((balance("SVR1"), balance("SVR2")), (4660, 7010), "the cards were charged")
    ret_line(g, "RICE5")
    r = r02.cmd("pay refund")
    c.check(r["ok"] and r.get("refunds") == [{"provider": "sv", "card": "SVR1", "amount": 4990}],
            f"pay refund: 49.90 back to card SVR1: {r.get('refunds')}")
    ret = journal_sales(r02.journal)[-1]
    c.eq(ret["tenders"], [{"kind": "stored_value", "amount": -4990}],
         "the return sale's tender: -49.90 stored_value")
    c.check(wait_for(lambda: done(f"{ret['sale_id']}-r1"), WAIT), "card.refund answered")
    c.eq(balance("SVR1"), 4660 + 4990, "SVR1 has the 49.90 back")
    ret_line(g, "MILK1")
    r = r02.cmd(f"return {g['sale_id']} MILK1 1 approve sue 2222")
    c.check(not r["ok"] and r["error"] == "too_many" and "1 on this ticket" in r["message"],
            f"G sold one milk, which this ticket returns already: {r.get('message')}")
    r = r02.cmd("pay cash")
    c.check(not r["ok"] and r["error"] == "not_permitted",
            "the milk's 3.50 in cash: G took no cash, so a supervisor decides")
    r = r02.cmd("cancel")
    c.check(r["ok"] and not r.get("ticket"), "the ticket is cancelled")
    time.sleep(0.5)
    c.eq(balance("SVR1"), 4660 + 4990, "nothing was sent for it")
    ret_line(h, "RICE5")
    r = r02.cmd("pay refund")
    c.check(r["ok"] and r.get("refunds") == [{"provider": "sv", "card": "SVR2", "amount": 2990}] and
            r["ticket"]["remaining"] == -2000,
            f"split sale H: 29.90 back to SVR2, 20.00 still owed: {r.get('refunds')}")
    r = r02.cmd("pay cash")
    c.check(r["ok"] and r.get("sale_id"), "20.00 in cash (what H took in cash)")
    ret = journal_sales(r02.journal)[-1]
    c.check(wait_for(lambda: done(f"{ret['sale_id']}-r1"), WAIT), "card.refund answered")
    c.eq(balance("SVR2"), 10000, "SVR2 is whole again")

    # 7. one ticket returning from a cash sale and a WeChat sale: each sale's payment gives back
    #    only what the ticket returns of that sale
    k = sell([MILK], "pay cash 5")
    m = sell([RICE, MILK], f"pay code {WX_CODE}")
    ret_line(k, "MILK1")
    ret_line(m, "RICE5")
    r = r02.cmd("pay refund")
    c.check(r["ok"] and [x["amount"] for x in r.get("refunds", [])] == [4990] and
            r["ticket"]["remaining"] == -350,
            f"WeChat gives back the rice only (49.90 of 53.40 owed): {r.get('refunds')}")
    r = r02.cmd("pay cash")
    c.check(r["ok"] and r.get("sale_id"),
            f"the milk's 3.50 in cash: what the cash sale took: {r.get('message')}")

    # payments itself never gives back more than a deduction took, and a refund number once
    bus = Bus(st, cert=st.key("register", "S1.R02"))
    cs = bus.call("payments", "card.sale", {"sale_id": g["sale_id"]})["body"]
    c.eq([(d["card"], d["amount"], d["refunded"], d["refundable"]) for d in cs["deductions"]],
         [("SVR1", 5340, 4990, 350)], f"card.sale: G's deduction, 49.90 of 53.40 given back")
    args = {"card": "SVR1", "sale_id": g["sale_id"], "attempt": cs["deductions"][0]["attempt"]}
    r = bus.call("payments", "card.refund", {**args, "amount": 351, "refund_no": "T-1"})
    c.check(r["type"] == "error" and r["body"]["code"] == "too_much",
            f"3.51 more: too_much: {r['body'].get('message')}")
    r = bus.call("payments", "card.refund", {**args, "amount": 100, "refund_no": "T-2"})
    c.check(r["type"] == "reply" and r["body"]["balance"] == 4660 + 4990 + 100 and
            not r["body"]["duplicate"], "1.00 given back by hand")
    r = bus.call("payments", "card.refund", {**args, "amount": 100, "refund_no": "T-2"})
    c.check(r["type"] == "reply" and r["body"]["duplicate"] and
            r["body"]["balance"] == 4660 + 4990 + 100, "the same refund number: the same refund")
    r = bus.call("payments", "card.refund", {**args, "amount": 200, "refund_no": "T-2"})
    c.check(r["type"] == "error" and r["body"]["code"] == "conflict",
            "the same number with another amount: conflict")
    r = bus.call("payments", "card.refund", {**args, "sale_id": "S2-R01-000001", "amount": 1,
                                             "refund_no": "T-3"})
    c.check(r["type"] == "error" and r["body"]["code"] == "bad_request",
            f"another store's sale: refused: {r['body'].get('message')}")
    c.eq(balance("SVR1"), 4660 + 4990 + 100, "SVR1: nothing else moved")
    st_r02 = {}
    c.check(wait_for(lambda: st_r02.update(r02.cmd("state")) or
                     (st_r02.get("unsynced") == 0 and not st_r02.get("upload_blocked")), WAIT),
            f"every return sale (refunds in its record) taken by sales: {st_r02.get('unsynced')}"
            f" {st_r02.get('upload_blocked')}")
finally:
    if emus:
        emus.stop()
    st.stop_all(c)
c.finish()
