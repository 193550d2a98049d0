#!/usr/bin/python3
"""test_exactly_once - retried requests to the real sales service run once.

A client whose reply was lost resends the same envelope (same request id). day.close and
sale.recall are not idempotent by nature: run twice, day.close closes the next day too and
sale.recall answers "not found" and the ticket is lost to the register that asked first. Here the
first reply is dropped and the request sent again, to a running service, and again after the
service was killed (SIGKILL) and restarted between the two sends: one day closed, the ticket
recalled once, and the retry gets the first answer."""
import datetime
import secrets
import time

import msgpack

from harness import Bus, Checks, Stack

c = Checks("test_exactly_once")
st = Stack("once")
st.start_redis()
st.start_busd()
st.start_service("sales", "sales")
st.start_service("inventory", "inventory")
c.check(st.wait_healthy(["sales", "inventory"]), "sales and inventory healthy")
st.posctl("store", "add", "S1", "Once store", check=True)
bus = Bus(st)


def envelope(method, body):
    """One request envelope, encoded once: every send of it is the same request."""
    return msgpack.packb({"v": 1, "type": method, "id": secrets.token_hex(16), "src": "pytest",
                          "seq": 1, "ts": int(time.time() * 1000), "body": body})


def send(env, what, timeout=10.0):
    """Send env to sales; a reply that never comes is a clear failure, not a traceback."""
    reply = bus.call_raw("sales", env, timeout)
    c.check(reply is not None, f"{what}: a reply within {timeout} s")
    return reply or {"type": "none", "body": {}}


def current_day():
    r = send(envelope("day.current", {"store": "S1"}), "day.current")
    return r["body"].get("business_day")


def next_day(day):
    d = datetime.date.fromisoformat(day) + datetime.timedelta(days=1)
    return d.isoformat()


def restart_sales():
    st.kill("sales")
    st.start_service("sales", "sales")
    c.check(st.wait_healthy(["sales"]), "sales restarted after SIGKILL and healthy")


def check_close(restart):
    when = "across a restart" if restart else "on a running service"
    day0 = current_day()
    env = envelope("day.close", {"store": "S1"})
    send(env, "day.close, first attempt (its reply is dropped)")
    if restart:
        restart_sales()
    second = send(env, "day.close, the retry")
    day1 = current_day()
    body = second["body"]
    c.check(second["type"] == "reply" and body.get("closed_day") == day0,
            f"{when}: the retry answers the first close: closed {body.get('closed_day')} "
            f"(want {day0}), reply {second['type']} {body}")
    want = max(next_day(day0), datetime.date.today().isoformat())
    c.check(day1 == want,
            f"{when}: one day closed: business day {day0} -> {day1} (want {want})")
    fresh = send(envelope("day.close", {"store": "S1"}), "a new day.close")
    c.check(fresh["type"] == "reply" and fresh["body"].get("closed_day") == day1,
            f"{when}: a new request (new id) closes the next day: {fresh['body']}")


def check_recall(restart):
    when = "across a restart" if restart else "on a running service"
    ticket = {"lines": [{"sku": "X1", "qty": 2}], "note": secrets.token_hex(4)}
    parked = send(envelope("sale.park", {"store": "S1", "register": "R1", "ticket": ticket}),
                  "sale.park")
    park_id = parked["body"].get("park_id")
    c.check(bool(park_id), f"ticket parked as {park_id}")
    env = envelope("sale.recall", {"store": "S1", "park_id": park_id or "?"})
    send(env, "sale.recall, first attempt (its reply is dropped)")
    if restart:
        restart_sales()
    second = send(env, "sale.recall, the retry")
    c.check(second["type"] == "reply" and second["body"].get("ticket") == ticket,
            f"{when}: the retry gets the recalled ticket: {second['type']} {second['body']}")
    left = send(envelope("sale.parked", {"store": "S1"}), "sale.parked")["body"].get("parked")
    c.check(park_id not in (left or []), f"{when}: the ticket is no longer parked ({left})")
    other = send(envelope("sale.recall", {"store": "S1", "park_id": park_id or "?"}),
                 "another register's recall")
    c.check(other["type"] == "error" and other["body"].get("code") == "not_found",
            f"{when}: a different recall of the same ticket finds nothing: {other['body']}")


def check_upload(restart, seq):
    """sale.upload keys its commit on the sale id and the request id itself: a retry of the
    committing request is answered as the first time (duplicate false), another upload of the
    same sale as a duplicate; the sale is committed once."""
    when = "across a restart" if restart else "on a running service"
    sale = {"sale_id": f"S1-R9-{seq:06d}", "store": "S1", "register": "R9", "seq": seq,
            "cashier": "c1", "ts": int(time.time() * 1000), "kind": "nosale", "lines": [],
            "tenders": [], "total": 0}
    env = envelope("sale.upload", sale)
    first = send(env, "sale.upload, first attempt")
    if restart:
        restart_sales()
    again = send(env, "sale.upload, the retry")
    other = send(envelope("sale.upload", sale), "the same sale in a new request")
    fb, ab, ob = first["body"], again["body"], other["body"]
    c.check(first["type"] == "reply" and fb.get("duplicate") is False,
            f"{when}: the sale is committed: {first['type']} {fb}")
    c.check(again["type"] == "reply" and ab.get("duplicate") is False and
            ab.get("stream_id") == fb.get("stream_id"),
            f"{when}: the retry gets the first reply (duplicate false, same stream id): {ab}")
    c.check(other["type"] == "reply" and ob.get("duplicate") is True and
            ob.get("stream_id") == fb.get("stream_id"),
            f"{when}: a new request for the same sale is a duplicate: {ob}")
    out = st.redis_cli("XRANGE", "sales:stream", "-", "+").stdout.splitlines()
    entries = sum(1 for i in range(len(out) - 1) if out[i] == "sale_id" and
                  out[i + 1] == sale["sale_id"])
    c.check(entries == 1, f"{when}: {sale['sale_id']} is in the sales stream once "
            f"(found {entries} times)")


check_upload(restart=False, seq=1)
check_upload(restart=True, seq=2)
check_close(restart=False)
check_close(restart=True)
check_recall(restart=False)
check_recall(restart=True)

stats = send(envelope("stats", {}), "sales stats")["body"].get("counters", {})
c.check(stats.get("replies_repeated", 0) >= 1,
        f"the restarted instance counts the repeated replies: {stats.get('replies_repeated')}")
c.finish()
