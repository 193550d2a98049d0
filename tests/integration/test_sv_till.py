#!/usr/bin/python3
"""test_sv_till - posnode takes stored-value cards (canteen, campus, member cards) through the
payments service: `pay sv CARD` online completes the sale with the stored_value tender and the
card's balance drops by exactly the amount; a short balance and a blocked card are refused with
the ticket left open; with payments stopped the register takes a card under its offline cap,
refuses one over it and refuses a card its pulled blocklist holds blocked; when payments answers
again the offline deduction is uploaded once; a posnode killed with a deduction not uploaded
uploads it after its restart, once. Every request and result is an audit record in the journal
before it counts."""
import os
import signal
import subprocess
import time

from harness import BIN, Checks, SRC, Stack, journal_audits, journal_sales, wait_for

STORE = "S1"
MILK = "6901234500035"  # 3.50
RICE = "6901234500011"  # 49.90
c = Checks("test_sv_till")
st = Stack("sv_till")
try:
    st.start_redis()
    st.start_busd()
    for s in ("sales", "inventory", "devices", "payments"):
        st.start_service(s, s)
    c.check(st.wait_healthy(["sales", "inventory", "devices", "payments"]),
            "back office healthy")
    st.posctl("store", "add", STORE, "Canteen", check=True)
    st.posctl("catalog", "import", os.path.join(SRC, "scripts", "sample", "catalog.csv"),
              check=True)
    subprocess.run([f"{BIN}/posctl", *st.conn_args(), "cashier", "add", "--store", STORE,
                    "--id", "ann", "--name", "Ann", "--role", "cashier"], input="1111\n",
                   text=True, capture_output=True, check=True)
    for card, cap, topup in (("SV1", "20", "100"), ("LOW1", "20", "1"), ("BLK1", "20", "50"),
                             ("BLK2", "20", "50"), ("NEW1", "20", "50")):
        st.posctl("card", "create", card, "--holder", "Holder " + card, "--offline-cap", cap,
                  check=True)
        st.posctl("card", "topup", card, topup, check=True)

    def balance(card):
        return st.posctl_json("card", "get", card)["balance"]

    r01 = st.start_posnode("r01", STORE, "R01", "--request-timeout-ms", "500")
    wait_for(lambda: r01.cmd("state")["config_version"] >= 1, 15)
    c.check(r01.cmd("login ann 1111")["ok"], "Ann logs in")

    def audits(kind):
        return journal_audits(r01.journal, kind)

    def sales():
        return journal_sales(r01.journal)

    def info(card):
        return r01.cmd(f"sv-info {card}").get("sv", {})

    # 1. online: the sale completes with the stored_value tender, the balance drops exactly
    r01.cmd(f"scan {MILK}")
    last = r01.cmd("state")["last_sale"]
    r = r01.cmd("pay sv SV1")
    c.check(r["ok"] and r["last_sale"] == last + 1 and r.get("card_balance") == 9650,
            f"pay sv SV1 completes the sale, 96.50 left: {r.get('message')} {r.get('error')}")
    c.eq(balance("SV1"), 9650, "SV1's balance dropped by exactly 3.50")
    doc = sales()[-1]
    c.check([(t["kind"], t["amount"]) for t in doc["tenders"]] == [("stored_value", 350)],
            f"the sale's tender is stored_value 3.50: {doc['tenders']}")
    reqs, ress = audits("sv_request"), audits("sv_result")
    c.check(len(reqs) == 1 and len(ress) == 1 and reqs[0]["_seq"] < ress[0]["_seq"] and
            reqs[0]["card"] == "SV1" and reqs[0]["amount"] == 350 and ress[0]["ok"],
            f"sv_request journaled before card.pay, sv_result after: {reqs} {ress}")
    i = info("SV1")
    c.check(i.get("known") and i.get("offline_cap") == 2000 and i.get("balance") == 9650,
            f"the register keeps SV1's offline cap and balance: {i}")
    c.check(r01.cmd("pay stored_value 1")["error"] == "no_ticket",
            "pay stored_value AMOUNT is still the typed tender (no ticket: refused as before)")

    # 2. a short balance: refused, the ticket stays open
    r01.cmd(f"scan {RICE}")
    r = r01.cmd("pay sv LOW1")
    c.check(not r["ok"] and r.get("reason") == "insufficient_balance" and
            r["last_sale"] == last + 1 and r.get("ticket"),
            f"LOW1 with 1.00 refused for 49.90, the ticket open: {r.get('message')}")
    c.eq(balance("LOW1"), 100, "LOW1 not charged")
    c.check(r01.cmd("pay cash")["ok"], "the ticket paid in cash instead")

    # 3. blocked cards: BLK1 refused online; BLK2 seen online, then blocked: the blocklist
    #    reaches the till
    r01.cmd(f"scan {MILK}")
    c.check(r01.cmd("pay sv BLK2")["ok"], "BLK2 pays online while active")
    st.posctl("card", "block", "BLK1", "--reason", "lost", check=True)
    st.posctl("card", "block", "BLK2", "--reason", "stolen", check=True)
    r01.cmd(f"scan {MILK}")
    r = r01.cmd("pay sv BLK1")
    c.check(not r["ok"] and r.get("reason") == "card_blocked" and r.get("ticket"),
            f"a blocked card refused online: {r.get('message')}")
    c.eq(balance("BLK1"), 5000, "BLK1 not charged")
    c.check(wait_for(lambda: info("BLK2").get("blocked"), 20),
            f"the pulled blocklist reaches the till: {info('BLK2')}")

    # 4. payments stopped: under the cap taken, over it refused, the blocked card refused
    pay_proc = st.procs["payments"]
    pay_proc.send_signal(signal.SIGSTOP)
    last = r01.cmd("state")["last_sale"]
    r = r01.cmd("pay sv SV1")
    c.check(r["ok"] and r.get("offline") and r["last_sale"] == last + 1,
            f"payments stopped: 3.50 taken offline from SV1 (cap 20): {r.get('message')} "
            f"{r.get('error')}")
    c.eq(info("SV1").get("offline_pending"), 350, "the offline deduction waits for its upload")
    c.eq(r01.cmd("state").get("sv_unsent"), 1, "the state shows one deduction not uploaded")
    r01.cmd(f"scan {RICE}")
    r = r01.cmd("pay sv SV1")
    c.check(not r["ok"] and r.get("reason") == "over_offline_cap" and r.get("ticket"),
            f"49.90 over SV1's offline cap refused at the till: {r.get('message')}")
    r = r01.cmd("pay sv BLK2 3.50")
    c.check(not r["ok"] and r.get("reason") == "card_blocked",
            f"BLK2 refused offline by the register's blocklist: {r.get('message')}")
    r = r01.cmd("pay sv NEW1 3.50")
    c.check(not r["ok"] and r.get("reason") == "no_offline",
            f"a card never seen here is not taken offline: {r.get('message')}")
    c.check(r01.cmd("pay cash")["ok"], "the ticket paid in cash")
    c.check(len(audits("sv_offline")) == 1, "the offline deduction is journaled")

    # 5. payments back: uploaded once, the balance matches
    pay_proc.send_signal(signal.SIGCONT)
    c.check(wait_for(lambda: info("SV1").get("offline_pending") == 0, 30),
            f"the offline deduction is uploaded: {info('SV1')}")
    c.check("sv_unsent" not in r01.cmd("state"), "the state shows nothing waiting any more")
    c.eq(balance("SV1"), 9300, "SV1: 100 - 3.50 online - 3.50 offline")
    time.sleep(3)
    c.eq(balance("SV1"), 9300, "the upload was taken once")
    up = audits("sv_uploaded")
    c.check(len(up) == 1 and up[0]["balance"] == 9300 and not up[0].get("flagged"),
            f"one sv_uploaded record: {up}")

    # 6. posnode killed with an offline deduction not uploaded: uploaded after its restart, once
    pay_proc.send_signal(signal.SIGSTOP)
    r01.cmd(f"scan {MILK}")
    r = r01.cmd("pay sv SV1")
    c.check(r["ok"] and r.get("offline"), f"payments stopped again: taken offline: {r}")
    r01.close()
    st.kill("r01")
    pay_proc.send_signal(signal.SIGCONT)
    c.check(st.wait_healthy(["payments"]), "payments answers again")
    r01 = st.start_posnode("r01", STORE, "R01", "--request-timeout-ms", "500")
    c.check(wait_for(lambda: balance("SV1") == 8950, 30),
            f"after the restart the deduction is uploaded: {balance('SV1')}")
    c.check(wait_for(lambda: info("SV1").get("offline_pending") == 0, 10),
            "nothing waits any more")
    time.sleep(3)
    c.eq(balance("SV1"), 8950, "taken once")
    c.eq(len(audits("sv_uploaded")), 2, "two offline deductions, two sv_uploaded records")

    # 7. the first card.pay after payments stalls times out and the till refuses the card
    #    offline (over its cap): the ticket is paid in cash. That card.pay may still be taken
    #    when payments wakes, so the attempt is given up there (card.void): no double charge
    c.check(r01.cmd("login ann 1111")["ok"], "Ann logs in again")
    before = balance("SV1")
    pay_proc.send_signal(signal.SIGSTOP)
    r01.cmd(f"scan {RICE}")
    r = r01.cmd("pay sv SV1")
    c.check(not r["ok"] and r.get("reason") == "over_offline_cap",
            f"payments stalls; 49.90 over SV1's offline cap refused: {r.get('message')}")
    c.check(len(audits("sv_voidreq")) == 1, "the timed-out attempt is journaled as given up")
    c.check(r01.cmd("pay cash 50")["ok"], "the ticket paid in cash instead")
    pay_proc.send_signal(signal.SIGCONT)
    c.check(wait_for(lambda: any(u.get("voided") for u in audits("sv_uploaded")), 30),
            f"payments back: the attempt is given up there: {audits('sv_uploaded')[-1:]}")
    time.sleep(1)
    c.eq(balance("SV1"), before, "SV1 keeps its money: the ticket was paid in cash")
    r01.close()
    st.kill("r01", signal.SIGTERM)
finally:
    st.stop_all(c)
c.finish()
