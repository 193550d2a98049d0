#!/usr/bin/python3
"""test_escpos - the ESC/POS driver alone (device_tool) against the printer simulator, the same
cases on a pty (a serial printer) and over TCP (a network printer on port 9100):

- a job prints once per key; garbage and a 6 KB burst of it from the printer change nothing
  (no reconnect, health ok, the next job prints); ten jobs queued at once print in order, once;
- the paper runs out in the middle of a receipt: the status event (error, paper out) comes
  while the receipt is held, then, paper loaded, the receipt is completed and not duplicated;
- the printer disconnects between jobs: health offline, then ok, the next job prints;
- the connection drops in the middle of a receipt (drop_after_bytes) and right after the
  receipt's cut, before the driver hears that it printed (drop_after_receipt): the event
  interrupted, the piece on the paper ends "PRINTING INTERRUPTED", the whole receipt follows
  marked "REPRINT", the job is done once (printer.c's header); a reconnect while a job waits
  to start is no interruption (paper out in its middle then resumes as usual);
- the statistics (jobs, opens, reconnects, bytes out and in) match what the printer counted;
  device_tool exits 0 without a sanitizer report."""
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
from escpos_printer import Printer, decode  # noqa: E402

WAIT = 15  # seconds for anything that should happen at once (ASan, a loaded machine)
INTERRUPTED = "*** PRINTING INTERRUPTED / 打印中断 ***"
REPRINT = "*** REPRINT / 重印 ***"
# noise from the printer: no byte looks like a status answer (bits 1, 4 set, 0 and 7 clear)
NOISE = bytes.fromhex("ff00ff00")
BURST = bytes([0x00, 0xFF, 0x81, 0x20]) * 1536


def receipt(tag, lines=40):
    """A receipt's bytes: init, Chinese mode, a centred title, lines with Chinese text, a QR
    code, feed and cut."""
    b = b"\x1b@\x1c&\x1ba\x01" + f"RECEIPT {tag}\n".encode() + b"\x1ba\x00"
    for i in range(lines):
        b += f"{tag} {i:02d} 苹果 apple x1 {i + 10}.50\n".encode("gb18030")
    qr = f"https://example.com/{tag}".encode()
    b += b"\x1d(k" + bytes([len(qr) + 3, 0]) + b"\x31\x50\x30" + qr
    b += b"\x1d(k\x03\x00\x31\x51\x30" + b"\x1bd\x03\x1dV\x01"
    return b


def text_of(job):
    return decode(job)[0]["text"]


def short(texts):
    """Receipts' texts for a failure message: the first and last line of each."""
    return [f"{t.splitlines()[0]!r} .. {t.rstrip().splitlines()[-1]!r} ({t.count(chr(10))} lines)"
            if t.strip() else repr(t) for t in texts]


def lines_of(text):
    """The lines of a receipt's text without the empty ones the feed left at its end."""
    return text.rstrip("\n").split("\n")


def run(c, tmp, kind):
    what = kind
    if kind == "pty":
        sim = Printer(pty=os.path.join(tmp, "printer.tty")).start()
        transport = f"serial:{sim.link},baud=19200"
    else:
        sim = Printer(tcp="127.0.0.1:0").start()
        transport = f"tcp:127.0.0.1:{sim.port}"
    tool = DeviceTool("escpos", transport, None, tmp)
    done = []

    def submit(key, job):
        tool.send(f"submit {key} print hex:{job.hex()}")

    def outcome(key):
        o = tool.outcome(key, WAIT)
        if o == "done":
            done.append(key)
        return o

    def stats():
        tool.send("stats")
        m = tool.read_until(lambda m: "stats" in m)
        return m["stats"] if m else {}

    def quiet_counts():
        """(the driver's bytes_out, what the printer received or dropped), read while neither
        moves for 0.3 s: the idle status check (every second) is not half counted."""
        def one():
            a, s1 = stats().get("bytes_out"), sim.status()
            time.sleep(0.3)
            b, s2 = stats().get("bytes_out"), sim.status()
            took = [s1[k] == s2[k] for k in ("bytes_received", "bytes_dropped")]
            return (b, s2["bytes_received"] + s2["bytes_dropped"]) if a == b and all(took) \
                else None
        return wait_for(one, WAIT) or (None, None)

    def status_events(since):
        tool.health()  # reads what device_tool printed so far: its events too
        return [(e["body"]["health"], e["body"]["detail"]) for e in tool.events[since:]
                if e["name"] == "status"]

    def printed(since, want, what):
        got = texts(since)
        return c.check(got == want, what, short(want), short(got))

    def texts(since):
        return [r["text"] for r in sim.receipts()[since:]]

    try:
        c.check(wait_for(lambda: tool.health().get("health") == "ok", WAIT),
                f"{what}: the printer is found, health ok")
        job1 = receipt("job-1")
        submit("job-1", job1)
        submit("job-1", job1)
        c.eq(outcome("job-1"), "done", f"{what}: job done")
        printed(0, [text_of(job1)], f"{what}: a job submitted twice with one key prints once")
        c.eq(sim.status()["status_inside_commands"], 0,
             f"{what}: status is never asked inside a command")

        # garbage and a burst of it from the printer
        opens = stats().get("opens")
        sim.garbage(NOISE)
        sim.garbage(BURST)
        c.check(wait_for(lambda: stats().get("bytes_in") ==
                         len(NOISE) + len(BURST) + sim.status()["status_requests"], WAIT),
                f"{what}: the driver reads the garbage and every status answer (bytes_in)",
                None, (stats().get("bytes_in"), sim.status()["status_requests"]))
        job2 = receipt("job-2")
        submit("job-2", job2)
        c.eq(outcome("job-2"), "done", f"{what}: after garbage and a burst the next job prints")
        printed(1, [text_of(job2)], f"{what}: its text")
        c.eq(tool.health().get("health"), "ok", f"{what}: garbage leaves health ok")
        c.eq(stats().get("opens"), opens, f"{what}: garbage does not make the driver reconnect")

        # a burst of jobs
        keys = [f"burst-{i}" for i in range(10)]
        jobs = {k: receipt(k, 8) for k in keys}
        for k in keys:
            submit(k, jobs[k])
        c.eq([outcome(k) for k in keys], ["done"] * 10, f"{what}: ten jobs at once: all done")
        printed(2, [text_of(jobs[k]) for k in keys], f"{what}: printed in order, once each")

        # paper out in the middle of a receipt
        n = sim.status()["receipts"]
        mark = len(tool.events)
        sim.paper_out_after_lines(10)
        job3 = receipt("job-3")
        submit("job-3", job3)
        c.check(tool.read_until(lambda m: m.get("event", {}).get("name") == "status" and
                                m["event"]["body"]["health"] == "error", WAIT),
                f"{what}: paper out mid-receipt: a status event (error)")
        c.eq(status_events(mark)[-1], ("error", "paper out"), f"{what}: its detail: paper out")
        st = sim.status()
        c.check(st["receipts"] == n and st["held_bytes"] > 0 and "job-3" not in done,
                f"{what}: the receipt is held, not done", None, st)
        sim.set_paper("ok")
        c.eq(outcome("job-3"), "done", f"{what}: paper loaded: the job is done")
        printed(n, [text_of(job3)], f"{what}: the receipt completed, once, not duplicated")
        c.check(any(e["name"] == "paper" and e["body"] == {"paper": "loaded"}
                    for e in tool.events[mark:]), f"{what}: the event paper loaded")
        c.eq(status_events(mark)[-1][0], "ok", f"{what}: health ok again")

        mine = stats()
        c.eq([mine.get("jobs"), mine.get("jobs_failed"), mine.get("reconnects")], [13, 0, 0],
             f"{what}: statistics: 13 jobs, none failed, no reconnect")
        out, took = quiet_counts()
        c.check(out is not None and out == took, f"{what}: bytes_out is what the printer "
                "received", took, out)

        # a disconnect between jobs
        mark = len(tool.events)
        c.eq(sim.disconnect().get("ok"), True, f"{what}: the printer disconnects")
        c.check(wait_for(lambda: [h for h, _ in status_events(mark)][-2:] == ["offline", "ok"],
                         WAIT), f"{what}: health offline, then ok", None, status_events(mark))
        job4 = receipt("job-4")
        n = sim.status()["receipts"]
        submit("job-4", job4)
        c.eq(outcome("job-4"), "done", f"{what}: after the reconnect the next job prints")
        printed(n, [text_of(job4)], f"{what}: once")

        # the connection drops in the middle of a receipt
        job5 = receipt("job-5")
        n = sim.status()["receipts"]
        mark = len(tool.events)
        sim.drop_after_bytes(len(job5) // 3)
        submit("job-5", job5)
        c.eq(outcome("job-5"), "done", f"{what}: dropped mid-receipt: the job is done")
        got = texts(n)
        piece = lines_of(got[0]) if got else []
        c.check(len(got) == 2 and piece[-1].strip() == INTERRUPTED and piece[-2] == "" and
                text_of(job5).startswith("\n".join(piece[:-2])),
                f"{what}: first a part of the receipt, then PRINTING INTERRUPTED", None,
                short(got))
        c.check(len(got) == 2 and got[1].split("\n", 1)[0].strip() == REPRINT and
                got[1].split("\n", 1)[1] == text_of(job5),
                f"{what}: then the whole receipt headed REPRINT", None, short(got))
        tool.health()
        ev = [e["body"] for e in tool.events[mark:] if e["name"] == "interrupted"]
        c.check(len(ev) == 1 and ev[0]["key"] == "job-5" and 0 < ev[0]["sent"] <= len(job5),
                f"{what}: the event interrupted {{key, sent}}", None, ev)
        c.check("offline" in [h for h, _ in status_events(mark)],
                f"{what}: the lost connection was reported (offline)", None, status_events(mark))

        # the connection drops right after the cut, before the driver hears the job printed
        job6 = receipt("job-6")
        n = sim.status()["receipts"]
        mark = len(tool.events)
        sim.drop_after_receipt()
        submit("job-6", job6)
        c.eq(outcome("job-6"), "done", f"{what}: dropped after the cut: the job is done")
        got = texts(n)
        c.check(len(got) == 3 and got[0] == text_of(job6) and
                got[1].strip() == INTERRUPTED and got[2].split("\n", 1)[0].strip() == REPRINT
                and got[2].split("\n", 1)[1] == text_of(job6),
                f"{what}: the receipt, a piece saying PRINTING INTERRUPTED, the receipt headed "
                "REPRINT", None, short(got))
        tool.health()
        c.eq(len([e for e in tool.events[mark:] if e["name"] == "interrupted"]), 1,
             f"{what}: one interrupted event")

        # a reconnect while a job waits to start (cover open), then the paper runs out in its
        # middle: the job resumes as after any paper out, nothing is taken for an interruption
        n = sim.status()["receipts"]
        mark = len(tool.events)
        sim.set_cover(True)
        sim.paper_out_after_lines(10)
        job8 = receipt("job-8")
        submit("job-8", job8)
        c.check(wait_for(lambda: ("error", "cover open") in status_events(mark), WAIT),
                f"{what}: cover open: the job waits (status error, cover open)", None,
                status_events(mark))
        reconnects = stats().get("reconnects")
        c.eq(sim.disconnect().get("ok"), True, f"{what}: the printer disconnects meanwhile")
        c.check(wait_for(lambda: stats().get("reconnects") == reconnects + 1, WAIT),
                f"{what}: the driver reconnects")
        sim.set_cover(False)
        c.check(wait_for(lambda: ("error", "paper out") in status_events(mark), WAIT),
                f"{what}: cover closed, the job starts and the paper runs out in its middle")
        sim.set_paper("ok")
        c.eq(outcome("job-8"), "done", f"{what}: paper loaded: the job is done")
        printed(n, [text_of(job8)], f"{what}: the receipt once, whole, no interruption marked")
        c.eq([e for e in tool.events[mark:] if e["name"] == "interrupted"], [],
             f"{what}: no interrupted event")

        # a clean job after all this: the statistics
        out0, took0 = quiet_counts()
        job7 = receipt("job-7")
        n = sim.status()["receipts"]
        submit("job-7", job7)
        c.eq(outcome("job-7"), "done", f"{what}: the next job prints")
        printed(n, [text_of(job7)], f"{what}: once")
        out1, took1 = quiet_counts()
        c.check(None not in (out0, out1) and out1 - out0 == took1 - took0,
                f"{what}: bytes_out grows by what the printer received", took1 - took0,
                None if None in (out0, out1) else out1 - out0)
        c.check(out1 is not None and out1 >= took1, f"{what}: bytes_out counts what the "
                "printer received or threw away in a drop (and what a drop lost in flight)",
                took1, out1)
        st, mine = sim.status(), stats()
        c.eq([mine.get("jobs"), mine.get("jobs_failed"), mine.get("opens"),
              mine.get("reconnects")], [len(done), 0, st["connections"], 4],
             f"{what}: statistics: jobs done, none failed, opens = the printer's connections, "
             "4 reconnects")
        c.check(mine.get("errors", 0) >= 4, f"{what}: every lost connection counts an error",
                None, mine)
        c.eq(sim.status()["status_inside_commands"], 0,
             f"{what}: status never asked inside a command")
        rc, report = tool.quit()
        c.eq(rc, 0, f"{what}: device_tool exits 0")
        c.check(report is None, f"{what}: no sanitizer report", None, report)
    finally:
        sim.stop()


def drawer_and_options(c, tmp):
    """The drawer's opened-state sensor (DLE EOT 1 bit 2) as drawer events, and the options
    refused that the driver does not know."""
    sim = Printer(tcp="127.0.0.1:0").start()
    try:
        tool = DeviceTool("escpos", f"tcp:127.0.0.1:{sim.port}", "width=58,drawer_sensor=open_high",
                          tmp)
        c.check(wait_for(lambda: tool.health().get("health") == "ok", WAIT),
                "drawer sensor: the printer is found")

        def drawer_events():
            tool.health()
            return [e["body"]["open"] for e in tool.events if e.get("name") == "drawer"]
        c.check(wait_for(lambda: drawer_events() == [False], WAIT),
                f"drawer sensor: closed at the start: {drawer_events()}")
        sim.set_drawer(True)
        c.check(wait_for(lambda: drawer_events() == [False, True], WAIT),
                f"the drawer opened: an event: {drawer_events()}")
        sim.set_drawer(False)
        c.check(wait_for(lambda: drawer_events() == [False, True, False], WAIT),
                f"and closed again: {drawer_events()}")
        rc, report = tool.quit()
        c.check(rc == 0 and report is None, f"drawer sensor: device_tool exits 0: {report}")
    finally:
        sim.stop()
    for bad in ("width=76", "drawer_sensor=maybe", "colour=red"):
        r = subprocess.run([f"{BIN}/device_tool", "escpos", "tcp:127.0.0.1:1", bad],
                           input="quit\n", capture_output=True, text=True, timeout=10)
        c.check(r.returncode != 0 and "option" in r.stderr,
                f"a bad option is refused: {bad}: {r.stderr.strip()}")


def main():
    c = Checks("test_escpos")
    tmp = tempfile.mkdtemp(prefix="posbus-escpos-")
    try:
        run(c, tmp, "pty")
        run(c, tmp, "tcp")
        drawer_and_options(c, tmp)
    finally:
        kill_all()
        shutil.rmtree(tmp, ignore_errors=True)
    c.finish()


if __name__ == "__main__":
    main()
