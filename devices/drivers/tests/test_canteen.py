#!/usr/bin/python3
"""test_canteen - the canteen terminal driver alone (device_tool) against the canteen line
simulator (devices/sim/canteen_terminal.py) with terminals 1 and 2, on a pty and over TCP
(docs/canteen-protocol.md).

Attach finds both terminals, publishes what each reports at start (blocklist version, last sequence,
offline transactions waiting) and sets their clocks; the fee rules and meal periods reach both; a
tap is published once and answered approve or decline as the job says; blocklist jobs bring both
terminals to the version, in chunks, and a terminal that reports an older version is brought up
through the chain of versions, one older than every update kept is reported stale and a full list
(base 0) brings it up; a terminal that stops answering makes the health warn while the other keeps
taking taps, its tap is settled offline (a late answer says so), and when it is back collect
publishes each offline transaction once, in sequence order, and acks them (nothing left at the
terminal, a second collect finds none); bad checksums, garbage and a disconnect are counted or
recovered from, the driver's counts match what the simulator sent, the byte counts match the line's,
and device_tool exits cleanly without a sanitizer report."""
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.environ.get("POSBUS_SRC", "."), "tests", "integration"))
sys.path.insert(0, os.path.join(os.environ.get("POSBUS_SRC", "."), "devices", "sim"))
from harness import Checks, wait_for  # noqa: E402
from devtool import DeviceTool, kill_all  # noqa: E402
from canteen_terminal import CanteenLine  # noqa: E402

c = Checks("test_canteen")
tmp = tempfile.mkdtemp(prefix="posbus-canteen-")
WAIT = 15  # seconds anything may take on a loaded machine
ONLINE_WAIT_MS = 6000  # the terminals' online wait once the fees job set it


class Tool(DeviceTool):
    def __init__(self, transport):
        super().__init__("canteen", transport, "terminals=1,2,poll_ms=100,reply_ms=1000", tmp)

    def event(self, name, pred=lambda b: True, timeout=WAIT):
        """The body of the first event name whose body pred accepts, seen already or coming
        within timeout (None otherwise)."""
        for e in self.events:
            if e.get("name") == name and pred(e.get("body", {})):
                return e.get("body")
        m = self.read_until(lambda m: m.get("event", {}).get("name") == name
                            and pred(m["event"].get("body", {})), timeout)
        return m["event"].get("body") if m else None

    def job(self, key, verb, text=None, timeout=WAIT):
        self.send(f"submit {key} {verb}" + (f" text:{text}" if text is not None else ""))
        return self.outcome(key, timeout)

    def stats(self):
        """(the device's statistics, the driver's stats event body)."""
        self.send("stats")
        dev = self.read_until(lambda m: "stats" in m)
        key = f"st{time.time_ns()}"
        self.send(f"submit {key} stats")
        m = self.read_until(lambda m: m.get("event", {}).get("name") == "stats")
        self.outcome(key)
        return (dev or {}).get("stats", {}), (m["event"]["body"] if m else {})

    def health_is(self, health):
        return wait_for(lambda: self.health().get("health") == health, WAIT, f"health {health}")

    def seen(self, name, pred=lambda b: True):
        return [e.get("body") for e in self.events if e.get("name") == name
                and pred(e.get("body", {}))]


def tap(tool, line, terminal, card, amount):
    """A card tapped at terminal: the seq the terminal gave and the tap event's body."""
    seq = line.tap(terminal, card, amount)["seq"]
    body = tool.event("tap", lambda b: b.get("terminal") == terminal and b.get("seq") == seq)
    return seq, body


def answer(tool, line, terminal, card, amount, verdict, text=""):
    seq, body = tap(tool, line, terminal, card, amount)
    c.eq(body, {"terminal": terminal, "card": card, "amount": amount, "seq": seq},
         f"{verdict}: the tap event {{terminal, card, amount, seq}}")
    key = f"ans-{terminal}-{seq}"
    end = tool.job(key, "answer", f"{terminal} {seq} {verdict} {text}".rstrip())
    got = tool.event("answered", lambda b: b.get("seq") == seq and b.get("terminal") == terminal)
    st = line.terminal(terminal)
    want = "approved" if verdict == "approve" else "declined"
    c.check(end == "done" and got and got["result"] == want and st["settled"].get(str(seq)) ==
            want, f"terminal {terminal} seq {seq}: {want} at the terminal", want,
            (end, got, st["settled"].get(str(seq))))
    return seq


def basics(tool, line, label):
    c.check(tool.health_is("ok"), f"{label}: both terminals found: health ok")
    c.eq(tool.health().get("kind"), "canteen", f"{label}: kind canteen")
    c.check(wait_for(lambda: all(line.terminal(t)["clock"] and not line.terminal(t)["started"]
                                 for t in (1, 2)), WAIT, "clocks set"),
            f"{label}: the time pushed to both terminals on attach")
    c.eq(tool.job(f"{label}-fees", "fees",
                  f"params {ONLINE_WAIT_MS} 2000;meal 1 06:30-09:00;meal 2 11:00-13:30;"
                  "fee 1 0 500;fee 2 0 1200"), "done", f"{label}: the fees job is done")
    st1, st2 = line.terminal(1), line.terminal(2)
    c.check(all(s["online_wait_ms"] == ONLINE_WAIT_MS and s["offline_max"] == 2000 and
                s["meals"] == [[1, "06:30", "09:00"], [2, "11:00", "13:30"]] and
                s["fees"] == [[1, 0, 500], [2, 0, 1200]] for s in (st1, st2)),
            f"{label}: parameters, meal periods and fee rules reach both terminals", "pushed",
            [(s["online_wait_ms"], s["offline_max"], s["meals"], s["fees"]) for s in (st1, st2)])
    answer(tool, line, 1, 10001, 1250, "approve", "余额 87.50")
    c.eq(line.terminal(1)["text"], "余额 87.50", f"{label}: the approval's text (GB18030) shown")
    answer(tool, line, 2, 10002, 99900, "decline", "余额不足")


def test_pty():
    link = os.path.join(tmp, "line.tty")
    line = CanteenLine(pty=link, terminals=(1, 2))
    line.start()
    tool = Tool(f"serial:{link},baud=9600")
    try:
        basics(tool, line, "pty")
        taps = tool.seen("tap")
        c.eq(len(taps), len({(b["terminal"], b["seq"]) for b in taps}),
             "every tap published once although polled again until answered")
        c.eq(tool.job("ans-bad", "answer", "1 99 approve"), "failed",
             "an answer to no pending tap fails")
        c.eq(tool.event("answered", lambda b: b.get("seq") == 99)["result"], "not_pending",
             "and says not_pending")
        for i, bad in enumerate(("x", "3 1 approve", "1 1 maybe", "1 -1 approve")):
            c.eq(tool.job(f"bad-{i}", "answer", bad), "failed", f"answer {bad!r} is refused")

        # blocklist: versions, chunks, a terminal behind
        c.eq(tool.job("bl5", "blocklist", "0 5 clear +111 +222"), "done", "blocklist 0 -> 5")
        c.check(wait_for(lambda: all(line.terminal(t)["blocklist_version"] == 5 and
                                     line.terminal(t)["blocklist"] == [111, 222]
                                     for t in (1, 2)), WAIT),
                "both terminals at version 5 with {111, 222}")
        c.eq(sorted(b["terminal"] for b in tool.seen("blocklist", lambda b: b["version"] == 5)),
             [1, 2], "an event blocklist {terminal, version 5} for each")
        ops = " ".join(f"+{9000 + i}" for i in range(100))
        c.eq(tool.job("bl6", "blocklist", f"5 6 -111 +333 {ops}"), "done",
             "blocklist 5 -> 6 with 102 operations (3 frames)")
        c.check(wait_for(lambda: all(line.terminal(t)["blocklist_version"] == 6 and
                                     len(line.terminal(t)["blocklist"]) == 102 and
                                     111 not in line.terminal(t)["blocklist"]
                                     for t in (1, 2)), WAIT),
                "both terminals at version 6 with 102 cards, 111 removed")
        c.eq(tool.job("bl6again", "blocklist", f"5 6 -111 +333 {ops}"), "done",
             "the same blocklist job again is done (nothing new)")
        line.blocklist_version(2, 5)
        c.check(wait_for(lambda: line.terminal(2)["blocklist_version"] == 6, WAIT),
                "terminal 2 reporting version 5 is brought to 6 by the driver")

        # terminal 2 stops answering: warn, terminal 1 unaffected, taps settled offline
        line.offline(2, on=True)
        c.check(wait_for(lambda: "terminal 2" in tool.health().get("detail", "") and
                         tool.health().get("health") == "warn", WAIT),
                "terminal 2 silent: health warn \"terminal 2 not answering\"")
        c.check(tool.event("terminal", lambda b: b["terminal"] == 2 and not b["up"]) is not None,
                "the event terminal {terminal 2, up false}")
        t0 = time.time()
        answer(tool, line, 1, 10003, 400, "approve")
        c.check(time.time() - t0 < 8, f"terminal 1 answered while 2 is silent "
                f"({time.time() - t0:.1f} s)")
        seq2 = line.tap(2, 20001, 800)["seq"]
        line.queue_offline(2, 14, 20002, 300)
        c.check(wait_for(lambda: line.terminal(2)["settled"].get(str(seq2)) ==
                         "offline_approved", WAIT),
                "the unanswered tap is approved offline by the terminal's rule")
        c.eq(tool.seen("tap", lambda b: b["terminal"] == 2 and b["seq"] == seq2), [],
             "no tap event for a terminal that did not answer")
        line.offline(2, on=False)
        c.check(tool.health_is("ok"), "terminal 2 back: health ok")
        up = tool.event("terminal", lambda b: b["terminal"] == 2 and b["up"] and
                        b.get("offline") == 15)
        c.check(up is not None, "terminal {2, up, offline: 15} tells there is something to collect")
        c.eq(tool.job("late", "answer", f"2 {seq2} decline"), "failed", "a late answer fails")
        c.eq(tool.event("answered", lambda b: b.get("seq") == seq2 and
                        b.get("terminal") == 2)["result"],
             "offline_approved", "and says the terminal approved it offline")
        first = min(t["seq"] for t in line.terminal(2)["offline"])
        c.eq(tool.job("col1", "collect", f"2 {first - 1}"), "done", "collect 2 after seq N")
        got = tool.seen("offline_tx", lambda b: b["terminal"] == 2)
        c.eq([b["seq"] for b in got], list(range(first, first + 15)),
             "15 offline_tx events, each once, in sequence order")
        c.check(got and got[0]["card"] == 20001 and got[0]["amount"] == 800 and
                got[1]["card"] == 20002 and got[1]["amount"] == 300 and
                all(isinstance(b["ts"], int) and b["ts"] > 1700000000 for b in got),
                "card, amount (fen) and timestamp of each")
        done = tool.event("collected", lambda b: b["terminal"] == 2)
        c.eq((done["count"], done["last"], done["ok"]), (15, first + 14, True),
             "collected {count 15, last seq}")
        st2 = line.terminal(2)
        c.eq((len(st2["offline"]), st2["acked"]), (15, 0),
             "nothing acked before the host says it holds them")
        c.eq(tool.job("col1b", "collect", f"2 {first - 1}"), "done", "the same collect again")
        c.eq(len(tool.seen("offline_tx")), 30, "gives the same 15 again (the host dedupes)")
        c.eq(tool.job("col2", "collect", f"2 {first + 14}"), "done",
             "collect after the last one held")
        st2 = line.terminal(2)
        c.eq((st2["offline"], st2["acked"]), ([], 15), "acks them: nothing left")
        c.eq(len(tool.seen("offline_tx")), 30, "and finds nothing more")

        # garbled replies and garbage: counted, never fatal
        _, before = tool.stats()
        line.bad_checksum(1, 2)
        line.garbage(b"\xff\xfe\xfd", next_reply=True)
        line.garbage(b"\xf0" * 10)
        c.check(wait_for(lambda: line.terminal(1)["bad_replies_sent"] == 2 and
                         line.status()["garbage_sent"] == 13, WAIT),
                "the simulator garbled two replies and sent 13 garbage bytes")
        answer(tool, line, 1, 10004, 600, "approve")
        time.sleep(0.3)
        dev1, after = tool.stats()
        sim = line.status()
        dev2, _ = tool.stats()
        c.eq(after["bad_checksums"] - before["bad_checksums"], 2,
             "the driver counted the 2 bad checksums")
        c.eq(after["stray_bytes"], sim["garbage_sent"],
             "the driver skipped exactly the garbage bytes the simulator sent")
        c.check(after["resyncs"] >= 2, "and counted the resyncs", ">= 2", after["resyncs"])
        c.eq((sim["bad_checksums"], after["recv_errors"]), (0, 0),
             "no frame of the driver was garbled")
        c.check(dev1["bytes_out"] <= sim["bytes_received"] <= dev2["bytes_out"] and
                dev1["bytes_in"] <= sim["bytes_sent"] <= dev2["bytes_in"],
                "bytes in and out match the line's counts",
                "between two samples", (dev1, sim["bytes_received"], sim["bytes_sent"], dev2))
        c.check(tool.health().get("health") == "ok", "health still ok")

        # the line goes down and comes back; a disconnect
        line.offline(1, on=True)
        line.offline(2, on=True)
        c.check(tool.health_is("offline"), "no terminal answers: health offline")
        line.offline(1, on=False)
        line.offline(2, on=False)
        c.check(tool.health_is("ok"), "both back: health ok")
        line.disconnect()
        c.check(wait_for(lambda: dev_stat(tool, "reconnects") >= 1, WAIT),
                "a disconnect: the driver reopens the line")
        c.check(tool.health_is("ok"), "and both terminals answer")
        line.restart(1)
        c.check(wait_for(lambda: not line.terminal(1)["started"] and
                         line.terminal(1)["online_wait_ms"] == ONLINE_WAIT_MS, WAIT),
                "a restarted terminal gets the time and the fee configuration again")
        answer(tool, line, 1, 10005, 700, "approve")
        rc, report = tool.quit()
        c.eq(rc, 0, "device_tool exits 0")
        c.eq(report, None, "no sanitizer report")
    finally:
        line.stop()


def dev_stat(tool, name):
    tool.send("stats")
    m = tool.read_until(lambda m: "stats" in m)
    return m["stats"].get(name, 0) if m else 0


def test_tcp():
    line = CanteenLine(tcp="127.0.0.1:0", terminals=(1, 2))
    line.start()
    line.blocklist_version(1, 3)
    line.queue_offline(1, 2, 40001, 250)
    tool = Tool(f"tcp:127.0.0.1:{line.port}")
    try:
        t1 = tool.event("terminal", lambda b: b["terminal"] == 1)
        c.eq(t1, {"terminal": 1, "up": True, "blocklist_version": 3, "last_seq": 2,
                  "offline": 2}, "tcp: at start terminal 1 reports version 3, last seq 2, "
             "2 offline transactions")
        basics(tool, line, "tcp")
        c.eq(tool.job("tcp-bl4", "blocklist", "3 4 +555"), "done", "tcp: blocklist 3 -> 4")
        c.check(wait_for(lambda: line.terminal(1)["blocklist"] == [555] and
                         line.terminal(1)["blocklist_version"] == 4, WAIT),
                "tcp: terminal 1 (at 3) brought to version 4")
        c.eq(tool.event("blocklist_stale", lambda b: b["terminal"] == 2),
             {"terminal": 2, "version": 0},
             "tcp: terminal 2 (at 0, no update from 0 kept): blocklist_stale")
        c.check(line.terminal(2)["blocklist_version"] == 0,
                "tcp: terminal 2 stays at 0 meanwhile")
        c.eq(tool.job("tcp-bl4f", "blocklist", "0 4 clear +555"), "done",
             "tcp: the full list at the same version 4 (the host's answer to blocklist_stale)")
        c.check(wait_for(lambda: line.terminal(2)["blocklist"] == [555] and
                         line.terminal(2)["blocklist_version"] == 4, WAIT),
                "tcp: terminal 2 (at 0) brought to version 4 by it")
        c.eq(tool.job("tcp-bl5", "blocklist", "0 5 clear +555 +556"), "done",
             "tcp: a full list (base 0) as version 5")
        c.check(wait_for(lambda: all(line.terminal(t)["blocklist"] == [555, 556] and
                                     line.terminal(t)["blocklist_version"] == 5
                                     for t in (1, 2)), WAIT),
                "tcp: both terminals at version 5")
        c.eq(tool.job("tcp-col", "collect", "1 0"), "done", "tcp: collect terminal 1 after 0")
        c.eq([(b["seq"], b["card"], b["amount"]) for b in tool.seen("offline_tx")],
             [(1, 40001, 250), (2, 40001, 250)], "tcp: its 2 offline transactions, once each")
        line.garbage(b"\xee" * 50)
        line.bad_checksum(2, 1)
        answer(tool, line, 2, 30001, 100, "approve")
        line.disconnect()
        c.check(wait_for(lambda: dev_stat(tool, "reconnects") >= 1, WAIT),
                "tcp: the connection dropped: reconnected")
        c.check(tool.health_is("ok"), "tcp: health ok again")
        answer(tool, line, 1, 30002, 100, "decline")
        rc, report = tool.quit()
        c.eq((rc, report), (0, None), "tcp: device_tool exits 0 without a sanitizer report")
    finally:
        line.stop()


try:
    test_pty()
    test_tcp()
finally:
    kill_all()
    shutil.rmtree(tmp, ignore_errors=True)
c.finish()
