#!/usr/bin/python3
"""test_card - posnode takes card payments through a ZVT terminal (the simulator over TCP, the
real APDUs): an approval becomes the sale's card tender, the terminal's intermediate statuses
reach the cashier, a decline leaves the ticket to another tender, a lost answer is resolved by
asking the terminal (one charge), a posnode killed while the customer is at the terminal finds
the charge at its restart and reverses it (its ticket is gone), a payment whose answer never
comes is given up only with a supervisor, and the terminal's end of day is a device command
from the back office. Every request and result is an audit record in the journal before it
counts."""
import os
import subprocess
import sys

from harness import BIN, Checks, SRC, Stack, journal_audits, journal_sales, wait_for

sys.path.insert(0, os.path.join(SRC, "devices", "sim"))
from zvt_terminal import ZvtTerminal  # noqa: E402

STORE = "S1"
c = Checks("test_card")
st = Stack("card")
term = None
try:
    st.start_redis()
    st.start_busd()
    for s in ("sales", "inventory", "devices"):
        st.start_service(s, s)
    c.check(st.wait_healthy(["sales", "inventory", "devices"]), "back office healthy")
    st.posctl("store", "add", STORE, "Card store", check=True)
    st.posctl("catalog", "import", os.path.join(SRC, "scripts", "sample", "catalog.csv"),
              check=True)
    for cid, name, role, pin in (("ann", "Ann", "cashier", "1111"),
                                 ("sue", "Sue", "supervisor", "2222"),
                                 ("max", "Max", "manager", "3333")):
        subprocess.run([f"{BIN}/posctl", *st.conn_args(), "cashier", "add", "--store", STORE,
                        "--id", cid, "--name", name, "--role", role], input=pin + "\n",
                       text=True, capture_output=True, check=True)

    term = ZvtTerminal(tcp="127.0.0.1:0").start()
    devices_file = os.path.join(st.tmp, "devices.conf")
    with open(devices_file, "w") as f:
        f.write(f"card zvt tcp:127.0.0.1:{term.port} t3_ms=3000,t4_ms=6000\n")

    def start():
        return st.start_posnode("r01", STORE, "R01", "--devices", devices_file)

    r01 = start()

    def card_health():
        return {d["name"]: d["health"] for d in r01.cmd("devices").get("devices", [])}

    c.check(wait_for(lambda: card_health() == {"card": "ok"}, 15),
            f"the card terminal is found: {card_health()}")
    wait_for(lambda: r01.cmd("state")["config_version"] >= 1, 15)
    c.check(r01.cmd("login ann 1111")["ok"], "Ann logs in")

    def approved():
        return [t for t in term.status()["transactions"]
                if t["kind"] == "authorize" and t["state"] == "approved"]

    def audits(kind):
        return journal_audits(r01.journal, kind)

    def sales():
        return journal_sales(r01.journal)

    def settled(last):
        s = r01.cmd("state")
        return s["last_sale"] > last and s.get("card") is None

    # 1. approval, with the terminal's statuses shown while the customer is at it
    term.mode("slow", seconds=2)
    r01.cmd("scan 6901234500097")
    r01.cmd("scan 6901234500103")
    last = r01.cmd("state")["last_sale"]
    r = r01.cmd("pay card")
    c.check(r["ok"] and r.get("card", {}).get("state") == "at_terminal" and
            r["card"]["amount"] == 500, f"pay card: the terminal has 5.00: {r.get('card')}")
    r2 = r01.cmd("scan 6901234500097")
    c.check(not r2["ok"] and r2["error"] == "card_waiting",
            f"the ticket is locked while the terminal has it: {r2.get('error')}")
    seen = []
    wait_for(lambda: seen.append((r01.cmd("state").get("card") or {}).get("status")) or
             seen[-1] not in (None, ""), 10)
    c.check(any(seen), f"an intermediate status reaches the cashier: {seen[-1]!r}")
    c.check(wait_for(lambda: settled(last), 15), "approved: the sale completes by itself")
    sale = sales()[-1]
    c.eq(sale["tenders"], [{"kind": "card", "amount": 500}], "the sale's tender is the card's")
    c.eq(len(approved()), 1, "one charge at the terminal")
    req, res = audits("card_request"), audits("card_result")
    c.check(len(req) == 1 and req[0]["amount"] == 500 and req[0]["sale_seq"] == sale["seq"],
            f"the request is journaled with its amount and sale: {req}")
    c.check(len(res) == 1 and res[0]["key"] == req[0]["key"] and res[0]["ok"] is True and
            res[0]["amount"] == 500 and res[0]["trace"] == approved()[0]["trace"],
            f"the result is journaled with the terminal's trace: {res}")

    # 2. a decline: nothing charged, the cashier takes cash
    term.mode("decline")
    r01.cmd("scan 6901234500097")
    last = r01.cmd("state")["last_sale"]
    r01.cmd("pay card")
    c.check(wait_for(lambda: r01.cmd("state").get("card") is None, 10),
            "the terminal declined: the card payment is over")
    s = r01.cmd("state")
    c.check(s["last_sale"] == last and s["ticket"] and not s["ticket"]["tenders"],
            "declined: the ticket stays open with no tender")
    r = r01.cmd("pay cash 10")
    c.check(r["ok"] and r.get("sale_id") and r.get("change") == 700,
            f"then paid in cash: change {r.get('change')}")
    c.eq(len(approved()), 1, "the decline charged nothing")
    c.check(audits("card_result")[-1]["ok"] is False, "the decline is journaled")

    # 3. the final answer lost: the till asks the terminal; charged once
    term.mode("lost_answer")
    r01.cmd("scan 6901234500103")
    last = r01.cmd("state")["last_sale"]
    r01.cmd("pay card")
    c.check(wait_for(lambda: (r01.cmd("state").get("card") or {}).get("state") == "unknown" or
                     settled(last), 15),
            "the answer does not come: the payment is unknown, not failed")
    c.check(wait_for(lambda: settled(last), 20),
            "the terminal's repeat receipt resolves it: the sale completes")
    c.eq(len(approved()), 2, "charged once (two approvals in all)")
    c.eq(sales()[-1]["tenders"], [{"kind": "card", "amount": 200}], "with the card tender")
    c.eq(term.status()["commands"].get("06 01"), 3, "three authorizations ever sent, none again")

    # 3b. the terminal's end of day against the card tenders journaled since the last one
    r = r01.cmd("card-eod")
    c.check(not r["ok"] and r["error"] == "not_permitted", "a cashier may not run it alone")
    r = r01.cmd("card-eod approve max 3333")
    c.check(r["ok"], f"card-eod with a manager (the Z report's permission): {r.get('message')}")
    c.check(wait_for(lambda: audits("card_eod"), 10), "the end of day's result is journaled")
    eod = (audits("card_eod") or [{}])[-1]
    c.check(eod.get("terminal_total") == 700 and eod.get("recorded_total") == 700 and
            eod.get("difference") == 0 and term.status()["eod_totals"] == [700],
            f"the terminal's 7.00 matches the card tenders (5.00 + 2.00): {eod}")

    # 4. posnode killed while the customer is at the terminal: the charge has no ticket
    term.mode("slow", seconds=3)
    r01.cmd("scan 6901234500097")
    last = r01.cmd("state")["last_sale"]
    r01.cmd("pay card")
    c.check(wait_for(lambda: term.status()["in_dialogue"] and len(approved()) == 3, 10),
            "the terminal books it")
    st.kill("r01")
    r01 = start()
    c.check(wait_for(lambda: any(t["state"] == "reversed" for t in
                                 term.status()["transactions"]), 25),
            "after the restart the charge is found and reversed")
    c.check(wait_for(lambda: r01.cmd("state").get("card") is None, 10),
            "and the till has no card payment left")
    c.eq(r01.cmd("state")["last_sale"], last, "no sale for it")
    rev = audits("card_reversal")
    c.check(len(rev) == 1 and rev[0]["amount"] == 300, f"the reversal is journaled: {rev}")
    c.check(wait_for(lambda: audits("card_result")[-1]["key"] == rev[0]["key"] and
                     audits("card_result")[-1]["ok"] is True, 10),
            "and its result")

    # 4b. a card paid part of a ticket, then posnode died before the sale: the charge is reversed
    c.check(r01.cmd("login ann 1111")["ok"], "Ann logs in again")
    r01.cmd("scan 6901234500097")
    r01.cmd("scan 6901234500103")
    last = r01.cmd("state")["last_sale"]
    r01.cmd("pay card 1.00")
    c.check(wait_for(lambda: (r01.cmd("state").get("ticket") or {}).get("tenders") ==
                     [{"kind": "card", "amount": 100}], 10), "a card paid 1.00 of 5.00")
    st.kill("r01")
    r01 = start()
    c.check(wait_for(lambda: any(t["kind"] == "authorize" and t["amount"] == 100 and
                                 t["state"] == "reversed" for t in term.status()["transactions"]),
                     20), "after the restart the 1.00 charge without a sale is reversed")
    c.eq(r01.cmd("state")["last_sale"], last, "and there is no sale for it")
    c.check(r01.cmd("login ann 1111")["ok"], "Ann logs in again")

    # 5. no answer and the terminal gone: only a supervisor gives it up
    term.mode("lost_answer")
    r = r01.cmd("scan 6901234500103")
    c.check(r["ok"], f"a scan: {r.get('message')}")
    r = r01.cmd("pay card")
    c.check(r["ok"], f"pay card: {r.get('message')}")
    c.check(wait_for(lambda: len([t for t in term.status()["transactions"]
                                  if t["kind"] == "authorize"]) == 6, 10),
            "the terminal booked it")
    term.stop()
    term = None
    c.check(wait_for(lambda: (r01.cmd("state").get("card") or {}).get("state") == "unknown",
                     15), f"no answer and no terminal: unknown: {r01.cmd('state').get('card')}")
    r = r01.cmd("card-cancel")
    c.check(not r["ok"] and r["error"] == "not_permitted", f"a cashier cannot: {r.get('error')}")
    r = r01.cmd("card-cancel approve sue 2222")
    c.check(r["ok"] and r.get("card") is None, f"a supervisor gives it up: {r.get('message')}")
    c.check(audits("card_result")[-1].get("note") == "given up", "journaled as given up")
    r = r01.cmd("pay cash 2")
    c.check(r["ok"] and r.get("sale_id"), "the ticket is paid another way")

    # 5b. a card payment for a terminal that is offline: a supervisor may give it up at once
    r01.cmd("scan 6901234500097")
    r = r01.cmd("pay card")
    c.check(r["ok"] and r.get("card", {}).get("state") == "at_terminal",
            "pay card with the terminal offline: queued for it")
    c.check(not r01.cmd("card-cancel")["ok"], "a cashier cannot give it up")
    given = {}
    c.check(wait_for(lambda: given.update(r01.cmd("card-cancel approve sue 2222")) or
                     given.get("ok"), 15),
            f"the terminal is offline: a supervisor gives it up: {given.get('message')}")
    c.check(r01.cmd("pay cash 5")["ok"], "and the ticket is paid in cash")

    # 6. the terminal's end of day from the back office
    term = ZvtTerminal(tcp=f"127.0.0.1:{0}").start()
    with open(devices_file, "w") as f:
        f.write(f"card zvt tcp:127.0.0.1:{term.port} t3_ms=3000,t4_ms=6000\n")
    st.kill("r01", sig=15)
    r01 = start()
    c.check(wait_for(lambda: card_health() == {"card": "ok"}, 15), "a new terminal is found")
    p = st.posctl("device", "command", "--store", STORE, "--register", "R01", "--device", "card",
                  "--command", "end_of_day", "--wait-ms", "10000")
    c.check(p.returncode == 0, f"posctl device command end_of_day: {p.stdout.strip()}")
    c.check(wait_for(lambda: term.status()["end_of_days"] == 1, 10),
            "the terminal ran its end of day")
    c.check(wait_for(lambda: len(audits("card_eod")) == 2, 10) and
            audits("card_eod")[-1].get("difference") == 0,
            f"and its totals are compared too: {audits('card_eod')[-1:]}")
    r = r01.cmd("card-status")
    c.check(not r["ok"] and r["error"] == "no_card", "card-status with nothing at the terminal")

    # 7. a partial approval: the amount the terminal approved is the tender, the rest stays due
    c.check(r01.cmd("login ann 1111")["ok"], "Ann logs in again")
    term.mode("partial", amount=350)
    r01.cmd("scan 6901234500097")
    r01.cmd("scan 6901234500103")
    last = r01.cmd("state")["last_sale"]
    r01.cmd("pay card")
    c.check(wait_for(lambda: r01.cmd("state").get("card") is None, 10), "the terminal answered")
    t = r01.cmd("state").get("ticket") or {}
    c.check(t.get("tenders") == [{"kind": "card", "amount": 350}] and t.get("remaining") == 150,
            f"5.00 asked, 3.50 approved: the card tender is 3.50, 1.50 still due: {t}")
    r = r01.cmd("pay cash 1.50")
    c.check(r["ok"] and r.get("sale_id"), f"the rest in cash: {r.get('message')}")
    c.eq(sales()[-1]["tenders"], [{"kind": "card", "amount": 350}, {"kind": "cash", "amount": 150}],
         "the sale's tenders: card 3.50 (what the terminal took) and cash 1.50")
    c.eq(r01.cmd("state")["last_sale"], last + 1, "one sale")
    p = st.posctl("device", "command", "--store", STORE, "--register", "R01", "--device", "card",
                  "--command", "end_of_day", "--wait-ms", "10000")
    c.check(wait_for(lambda: len(audits("card_eod")) == 3, 10) and
            audits("card_eod")[-1].get("terminal_total") == 350 and
            audits("card_eod")[-1].get("difference") == 0,
            f"the terminal's end of day agrees with the card tenders: {audits('card_eod')[-1:]}")
    v = subprocess.run([f"{BIN}/posctl", "journal", "verify", r01.journal], capture_output=True,
                       text=True, timeout=60)
    c.check(v.returncode == 0, f"the journal verifies: {v.stdout.strip()[-80:]}")
finally:
    if term:
        term.stop()
    st.stop_all(c)
c.finish()
