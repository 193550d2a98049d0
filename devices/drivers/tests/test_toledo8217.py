#!/usr/bin/python3
"""test_toledo8217 - the Mettler Toledo 8217 scale driver alone (device_tool) against the scale
simulator on a pty, 9600 7E1 as configured for a real scale.

A stable 1.234 kg gives the event weight {grams: 1234, stable: true}; a scale moving for 1 s
gives the weight it settles at, never an earlier one; a scale moving for longer than the weigh
timeout, an overloaded one and one under zero give stable false with the reason and the job
fails (no weight); overload makes the health warn; malformed and split replies, garbage and a
disconnect do not stop the next weigh from working; zero, tare and clear tare reach the scale;
a scale that stops answering goes offline and comes back. On a pty and over TCP: a 6 KB burst
of garbage changes nothing, a disconnect between jobs is reported (offline, then ok), the line
dropped in the middle of a weigh (drop_after_bytes) does not lose the weigh, clear_tare right
after a disconnect reaches the scale, and the statistics (jobs, opens, reconnects, bytes in and
out) match what the scale counted."""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.environ.get("POSBUS_SRC", "."), "tests", "integration"))
sys.path.insert(0, os.path.join(os.environ.get("POSBUS_SRC", "."), "devices", "sim"))
from harness import BIN, Checks, wait_for  # noqa: E402
from devtool import DeviceTool, kill_all  # noqa: E402
from scale_8217 import Scale  # noqa: E402

c = Checks("test_toledo8217")
tmp = tempfile.mkdtemp(prefix="posbus-toledo8217-")


class Tool(DeviceTool):
    """device_tool running the driver for the scale on link (or on transport, e.g. TCP)."""

    def __init__(self, link, options=None, transport=None):
        super().__init__("toledo8217", transport or
                         f"serial:{link},baud=9600,data=7,parity=even,stop=1", options, tmp)

    def weigh(self, key, timeout=10):
        """Submit weigh; (the weight event's body, the job's outcome event, seconds taken)."""
        t0 = time.time()
        self.send(f"submit {key} weigh")
        w = self.read_until(lambda m: m.get("event", {}).get("name") == "weight", timeout)
        end = self.read_until(lambda m: m.get("event", {}).get("name") in ("done", "failed")
                              and m["event"]["body"].get("key") == key, timeout)
        return (w["event"].get("body") if w else None,
                end["event"]["name"] if end else None, time.time() - t0)

    def command(self, key, verb):
        self.send(f"submit {key} {verb}")
        return self.outcome(key)


link = os.path.join(tmp, "scale.tty")
scale = Scale(pty=link)
scale.start()
tool = Tool(link)
events = tool.events
health, weigh, command, send, read_until = (tool.health, tool.weigh, tool.command, tool.send,
                                            tool.read_until)

try:
    c.check(wait_for(lambda: health().get("health") == "ok", 10, "health ok"),
            "the scale is found: health ok")
    c.eq(health().get("kind"), "scale", "kind scale")

    scale.set(grams=1234)
    body, outcome, _ = weigh("w1")
    c.eq(body, {"grams": 1234, "stable": True}, "a stable 1.234 kg: the weight event")
    c.eq(outcome, "done", "the weigh job is done")

    # moving for 1 s: the driver keeps asking and takes the weight it settles at
    scale.set(grams=900)
    before = scale.status()["statuses_sent"]
    scale.set(grams=2500, moving_for_ms=1000)
    body, outcome, took = weigh("w2")
    c.eq(body, {"grams": 2500, "stable": True}, "moving for 1 s: the settled 2.5 kg")
    c.check(outcome == "done" and took >= 0.9, f"taken after it settled ({took:.2f} s)")
    c.check(scale.status()["statuses_sent"] - before >= 2,
            "asked again while it moved (the scale answered moving at least twice)")

    # moving for longer than the weigh timeout (5 s): no weight at all
    scale.set(grams=3000, moving=True)
    n = len(events)
    body, outcome, took = weigh("w3", timeout=15)
    c.eq(body, {"stable": False, "reason": "moving"}, "moving beyond the timeout: stable false")
    c.eq(outcome, "failed", "and the weigh job fails")
    c.check(4.0 <= took <= 8.0, f"it gave up after about 5 s ({took:.2f} s)")
    c.check(not any(e["name"] == "weight" and e.get("body", {}).get("stable")
                    for e in events[n:]), "no stable weight published while it moved")

    # overload: stable false, health warn
    scale.set(grams=3000, moving=False, overload=True)
    body, outcome, took = weigh("w4")
    c.eq(body, {"stable": False, "reason": "overload"}, "overload: stable false, reason overload")
    c.check(outcome == "failed" and took < 2.0, f"the job fails at once ({took:.2f} s)")
    h = health()
    c.check(h.get("health") == "warn" and h.get("detail") == "over capacity",
            "overload: health warn, over capacity", "warn / over capacity", h)
    scale.set(overload=False)
    c.check(wait_for(lambda: health().get("health") == "ok", 5, "health ok"),
            "overload gone: health ok again")

    scale.set(grams=-120)
    body, outcome, _ = weigh("w5")
    c.check(body == {"stable": False, "reason": "negative"} and outcome == "failed",
            "under zero: stable false, reason negative, job failed", "negative / failed",
            (body, outcome))

    scale.set(grams=0)
    body, outcome, _ = weigh("w6", timeout=15)
    c.check(body == {"stable": False, "reason": "no stable weight"} and outcome == "failed",
            "nothing on the scale: no stable weight", "no stable weight / failed",
            (body, outcome))

    # malformed replies, garbage, a reply split across reads
    scale.set(grams=1234)
    scale.garbage(bytes.fromhex("ff0d023f0d02") + b"9" * 30 + b"\r\x02ab.cde\r", next_reply=True)
    body, outcome, _ = weigh("w7")
    c.eq(body, {"grams": 1234, "stable": True}, "garbage before the reply: the weight")
    detail = health().get("detail", "")
    c.check(detail.endswith("malformed replies") and int(detail.split()[0]) >= 3,
            f"malformed replies counted in the health detail ({detail!r})")
    scale.garbage(bytes.fromhex("0207ff0d414243"))
    scale.split_ms(150)
    scale.set(grams=777)
    body, outcome, _ = weigh("w8")
    c.eq(body, {"grams": 777, "stable": True}, "unasked garbage and a split reply: the weight")
    scale.split_ms(0)

    # a disconnect (the pty replaced): the next weigh works
    scale.set(grams=4321)
    scale.disconnect()
    body, outcome, _ = weigh("w9", timeout=15)
    c.eq(body, {"grams": 4321, "stable": True}, "after a disconnect the next weigh works")
    send("stats")
    stats = read_until(lambda m: "stats" in m)["stats"]
    c.check(stats.get("reconnects", 0) >= 1, f"the transport was reopened: {stats}")

    # zero, tare, clear tare reach the scale
    st0 = scale.status()
    scale.set(grams=20)
    c.eq(command("z1", "zero"), "done", "zero: done")
    c.check(wait_for(lambda: scale.status()["zero"] == 20, 3), "zero reached the scale")
    scale.set(grams=1020)
    c.eq(command("t1", "tare"), "done", "tare: done")
    c.check(wait_for(lambda: scale.status()["tare"] == 1000, 3), "tare reached the scale")
    scale.set(grams=1520)
    body, _, _ = weigh("w10")
    c.eq(body, {"grams": 500, "stable": True}, "with a 1 kg tare, 1.5 kg weighs 500 g net")
    c.eq(command("c1", "clear_tare"), "done", "clear_tare: done")
    st = scale.status()
    c.check(st["tare"] == 0 and st["zero_requests"] - st0["zero_requests"] == 1 and
            st["tare_requests"] - st0["tare_requests"] == 1 and
            st["clear_tare_requests"] - st0["clear_tare_requests"] == 1,
            "one Z, one T, one C counted by the scale")
    c.eq(command("x1", "bogus"), "failed", "an unknown verb is refused")

    # a scale that stops answering goes offline, and comes back
    scale.silent(True)
    c.check(wait_for(lambda: health().get("health") == "offline", 8, "offline"),
            "no answer: health offline")
    scale.silent(False)
    # the same pty is opened again with 7E1 (the transport carries on with 8N1 where a pty
    # refuses the line settings: a pty has no wire)
    c.check(wait_for(lambda: health().get("health") == "ok", 15, "ok"),
            "answers again on the same line: health ok")
    scale.set(grams=1520)
    body, _, _ = weigh("w11")
    c.eq(body, {"grams": 1500, "stable": True}, "and weighs (from the zero set at 20 g)")

    rc, report = tool.quit()
    c.eq(rc, 0, "device_tool exits 0")
    c.check(report is None, f"no sanitizer report: {report}")

    # one poll only (options weigh_ms=500,poll_ms=500): the weight must come from the first
    # reply, whatever garbage and cut-off frames come before it in the same read
    link2 = os.path.join(tmp, "scale2.tty")
    scale2 = Scale(pty=link2)
    scale2.start()
    one = Tool(link2, "weigh_ms=500,poll_ms=500")
    c.check(wait_for(lambda: one.health().get("health") == "ok", 10, "health ok"),
            "options weigh_ms=500,poll_ms=500 accepted")
    scale2.set(grams=250)
    for i, (junk, grams, what) in enumerate([
            ("023132", 250, "a frame cut off by the reply's STX"),
            ("02", 250, "a lone STX"),
            ("0d0d02ffff", 250, "stray CRs, a frame of bytes over 0x7F"),
            ("023f", 250, "a status frame without its byte"),
            ("02" + "37" * 20, 250, "a frame longer than any reply"),
            ("02302e3132330d", 123, "a well-formed 0.123 kg frame (taken: the line has no "
             "sequence numbers)")]):
        scale2.garbage(bytes.fromhex(junk), next_reply=True)
        body, outcome, _ = one.weigh(f"g{i}")
        c.eq(body, {"grams": grams, "stable": True}, f"{what} before the reply: {grams} g")
    scale2.set(moving=True)
    body, outcome, took = one.weigh("m1")
    c.check(body == {"stable": False, "reason": "moving"} and took < 2.0,
            f"moving with weigh_ms=500: gives up after one poll ({took:.2f} s)")
    rc, report = one.quit()
    c.check(rc == 0 and report is None, f"device_tool exits 0, no sanitizer report: {report}")
    scale2.stop()
    bad = subprocess.run([f"{BIN}/device_tool", "toledo8217", f"serial:{link2}", "weigh_ms=9"],
                         input="quit\n", capture_output=True, text=True, timeout=10)
    c.check(bad.returncode != 0 and "weigh_ms" in bad.stderr,
            f"a bad option is refused: {bad.stderr.strip()}")

    # garbage bursts, a disconnect between jobs and the line dropped in the middle of a weigh,
    # on a pty and over TCP; the statistics against what the scale counted
    for kind in ("pty", "tcp"):
        what = kind
        sim = Scale(pty=os.path.join(tmp, "scale3.tty")) if kind == "pty" else \
            Scale(tcp="127.0.0.1:0")
        sim.start()
        t = Tool(sim.link, None, None if kind == "pty" else f"tcp:127.0.0.1:{sim.port}")

        def stats():
            t.send("stats")
            m = t.read_until(lambda m: "stats" in m)
            return m["stats"] if m else {}

        def statuses(since):
            t.health()  # reads what device_tool printed so far: its events too
            return [e["body"]["health"] for e in t.events[since:] if e["name"] == "status"]

        c.check(wait_for(lambda: t.health().get("health") == "ok", 10, "health ok"),
                f"{what}: health ok")
        sim.set(grams=1234)
        body, outcome, _ = t.weigh("a1")
        c.eq((body, outcome), ({"grams": 1234, "stable": True}, "done"), f"{what}: a weight")
        opens = stats().get("opens")
        sim.garbage(bytes([0xFF, 0x0D, 0x02, 0x41]) * 1500)  # 6000 bytes nobody asked for
        sim.garbage(b"\x02" + b"7" * 100 + b"\r\x02?\r", next_reply=True)
        body, outcome, _ = t.weigh("a2")
        c.eq((body, outcome), ({"grams": 1234, "stable": True}, "done"),
             f"{what}: a 6 KB burst of garbage and junk before the reply: the weight")
        c.eq(stats().get("opens"), opens, f"{what}: garbage does not make the driver reconnect")

        mark = len(t.events)
        c.eq(sim.disconnect().get("ok"), True, f"{what}: the scale disconnects")
        c.check(wait_for(lambda: statuses(mark)[-2:] == ["offline", "ok"], 15),
                f"{what}: health offline, then ok", None, statuses(mark))
        sim.set(grams=2000)
        body, outcome, _ = t.weigh("a3")
        c.eq((body, outcome), ({"grams": 2000, "stable": True}, "done"),
             f"{what}: after the reconnect the next weigh works")

        # dropped in the middle of a weigh: the weigh carries on after the reopen
        sim.set(grams=3000, moving_for_ms=2500)
        before = sim.status()["weigh_requests"]
        mark = len(t.events)
        t0 = time.time()
        t.send("submit a4 weigh")
        c.check(wait_for(lambda: sim.status()["weigh_requests"] > before, 5),
                f"{what}: the weigh asks the scale")
        sim.drop_after_bytes(0)  # the next W drops the line
        w = t.read_until(lambda m: m.get("event", {}).get("name") == "weight", 15)
        c.eq(w and w["event"]["body"], {"grams": 3000, "stable": True},
             f"{what}: the line dropped mid-weigh: the weigh carries on, the settled weight")
        c.eq(t.outcome("a4"), "done", f"{what}: the job is done")
        c.check(time.time() - t0 < 6.0, f"{what}: within the weigh's own time",
                "< 6 s", time.time() - t0)
        c.check("offline" in statuses(mark), f"{what}: the drop was reported (offline)", None,
                statuses(mark))

        # a command without a reply right after the scale closed the line: not lost
        before = sim.status()["clear_tare_requests"]
        c.eq(sim.disconnect().get("ok"), True, f"{what}: the scale disconnects again")
        t.send("submit a5 clear_tare")
        c.eq(t.outcome("a5", 15), "done", f"{what}: clear_tare right after the disconnect: done")
        c.check(wait_for(lambda: sim.status()["clear_tare_requests"] == before + 1, 5),
                f"{what}: and it reached the scale (sent after the reconnect, not into the "
                "closed line)")

        st, mine = sim.status(), stats()
        c.eq(st["drop_after_bytes"], None, f"{what}: the drop happened")
        c.eq([mine.get("jobs"), mine.get("jobs_failed"), mine.get("opens"),
              mine.get("reconnects")], [5, 0, st["connections"], 3],
             f"{what}: statistics: 5 jobs, none failed, opens = the scale's connections, "
             "3 reconnects")

        def counts():  # (driver, scale); the idle W every second may fall between two reads
            m, st = stats(), sim.status()
            return ((m.get("bytes_out"), m.get("bytes_in")),
                    (st["bytes_received"] + st["bytes_dropped"], st["bytes_sent"]))

        c.check(wait_for(lambda: (lambda x: x[0] == x[1])(counts()), 10),
                f"{what}: bytes_out is what the scale received (and threw away in the drop), "
                "bytes_in what it sent", None, counts())
        c.check(mine.get("errors", 0) >= 3, f"{what}: the lost lines count errors", None, mine)
        rc, report = t.quit()
        c.check(rc == 0 and report is None,
                f"{what}: device_tool exits 0, no sanitizer report: {report}")
        sim.stop()
finally:
    kill_all()
    scale.stop()
    shutil.rmtree(tmp, ignore_errors=True)
c.finish()
