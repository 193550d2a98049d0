#!/usr/bin/python3
"""test_scanner - the barcode scanner driver alone (device_tool) against the scanner simulator,
on a pty (a serial / USB-CDC scanner) and over TCP.

What a cashier would notice: every scan is one "scan" event with the code, its symbology and
whether its check digit is right (EAN-13, EAN-8, UPC-A; other codes such as Code 128 SKUs are
valid); a wrong check digit is published valid false, never dropped; 50 codes in one burst are
50 events in order; a code in two pieces is one event; a line that is not a code (binary, over
64 bytes) is published as bad_read and the next code still comes through; after the line
drops the driver reconnects and the next code comes through; bytes_in is what the scanner
sent; 6 KB of garbage and a burst over TCP change nothing (no reconnect); the statistics
count the reconnects; jobs are refused; a bad option is refused at start."""
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.environ.get("POSBUS_SRC", "."), "tests", "integration"))
sys.path.insert(0, os.path.join(os.environ.get("POSBUS_SRC", "."), "devices", "sim"))
from harness import BIN, Checks, sanitizer_report, wait_for  # noqa: E402
from scanner import Scanner  # noqa: E402

WAIT = 10.0   # seconds anything may take before the check fails
QUIET = 0.5   # seconds without an event after which nothing more is expected

c = Checks("test_scanner")
tmp = tempfile.mkdtemp(prefix="posbus-scanner-")


def ean(data):
    """data digits and their GTIN check digit (EAN-13 with 12, EAN-8 with 7, UPC-A with 11)."""
    s = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(data)))
    return data + str((10 - s % 10) % 10)


class Tool:
    """device_tool running one scanner; its output lines collected by a thread."""

    def __init__(self, transport, options=None):
        args = [f"{BIN}/device_tool", "scanner", transport] + ([options] if options else [])
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, bufsize=1)
        self.lines = queue.Queue()
        self.events = []  # every event, in order
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def _take(self, timeout):
        try:
            msg = self.lines.get(timeout=timeout)
        except queue.Empty:
            return False
        if msg and "event" in msg:
            self.events.append(msg["event"])
        return msg

    def send(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()

    def ask(self, what):
        """health or stats: the answer's body."""
        self.send(what)
        deadline = time.time() + WAIT
        while time.time() < deadline:
            msg = self._take(deadline - time.time())
            if msg is None:
                return {}
            if msg and what in msg:
                return msg[what]
        return {}

    def settle(self):
        """Take events until none came for QUIET seconds (or WAIT passed); the new ones."""
        start, deadline = len(self.events), time.time() + WAIT
        while time.time() < deadline:
            msg = self._take(QUIET)
            if msg is False or msg is None:
                break
        return self.events[start:]

    def wait_events(self, name, n):
        """Take events until n more named name came (or WAIT passed), then settle: the new
        events of that name, all of them."""
        start, deadline = len(self.events), time.time() + WAIT
        while time.time() < deadline and \
                sum(e["name"] == name for e in self.events[start:]) < n:
            if self._take(deadline - time.time()) is None:
                break
        self.settle()
        return [e for e in self.events[start:] if e["name"] == name]

    def quit(self):
        self.send("quit")
        try:
            rc = self.p.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = None
        return rc, self.p.stderr.read()


def scans(events):
    return [e.get("body") for e in events if e["name"] == "scan"]


def body(code, symbology, valid):
    return {"code": code, "symbology": symbology, "valid": valid}


def finish_tool(tool, what):
    rc, err = tool.quit()
    c.eq(rc, 0, f"{what}: device_tool exits 0")
    report = sanitizer_report(err)
    c.check(report is None, f"{what}: no sanitizer report", None, report)


# ---- a serial scanner on a pty, the driver's default suffix (any) ----------------------------
link = os.path.join(tmp, "scanner.tty")
sim = Scanner(pty=link).start()
tool = Tool(f"serial:{link},baud=9600")
c.check(wait_for(lambda: tool.ask("health").get("health") == "ok", WAIT), "pty: health ok")
c.eq(tool.ask("health").get("kind"), "scanner", "its kind is scanner")

EAN13, EAN8, UPCA = "6901234500011", "96385074", "036000291452"
sim.scan(EAN13)  # CR LF
c.eq(scans(tool.wait_events("scan", 1)), [body(EAN13, "ean13", True)],
     "an EAN-13 with CR LF: one scan event, ean13, valid")
sim.scan(EAN8)
sim.scan(UPCA)
c.eq(scans(tool.wait_events("scan", 2)), [body(EAN8, "ean8", True), body(UPCA, "upca", True)],
     "EAN-8 and UPC-A")
sim.scan("6901234500012")
sim.scan("96385075")
sim.scan("036000291453")
c.eq(scans(tool.wait_events("scan", 3)),
     [body("6901234500012", "ean13", False), body("96385075", "ean8", False),
      body("036000291453", "upca", False)], "wrong check digits: published valid false")
sim.scan("RICE5")
sim.scan("12345678901234")  # 14 digits: no check the driver knows
c.eq(scans(tool.wait_events("scan", 2)),
     [body("RICE5", "other", True), body("12345678901234", "other", True)],
     "a Code 128 SKU and a 14-digit code: other, valid")
sim.scan("2012345", suffix="cr")
sim.scan("2012346", suffix="lf")
c.eq([b["code"] for b in scans(tool.wait_events("scan", 2))], ["2012345", "2012346"],
     "suffix any: a code ends at CR or at LF alone")

burst = [ean(f"69{i:010d}") for i in range(50)]
sim.burst(burst)
got = scans(tool.wait_events("scan", 50))
c.eq([b["code"] for b in got], burst, "a burst of 50 codes: 50 events in order")
c.check(all(b["valid"] and b["symbology"] == "ean13" for b in got), "all of them valid ean13")

sim.split(EAN13)
c.eq(scans(tool.wait_events("scan", 1)), [body(EAN13, "ean13", True)],
     "a code in two writes 50 ms apart: one event")
sim.split(EAN8, at=len(EAN8) + 1)  # the CR in one write, its LF in the next
c.eq(scans(tool.wait_events("scan", 1)), [body(EAN8, "ean8", True)],
     "a CR LF cut between two writes: one event, no empty code")

sim.garbage(bytes.fromhex("00ff1b9c0d0a"))
sim.scan(EAN13)
ev = tool.wait_events("scan", 1)
c.eq(scans(ev), [body(EAN13, "ean13", True)],
     "binary garbage: discarded, the next code comes through")
bad = [e["body"] for e in tool.events if e["name"] == "bad_read"]
c.check(len(bad) == 1 and bad[0]["reason"] == "not_printable" and bad[0]["length"] == 4,
        "and it is published as one bad read (not_printable, 4 bytes)", None, bad)

sim.scan("A" * 65)
sim.scan("B" * 64)
sim.scan(UPCA)
got = tool.wait_events("scan", 2)
c.eq(scans(got), [body("B" * 64, "other", True), body(UPCA, "upca", True)],
     "a 65-byte line is discarded; 64 bytes is a code; the next code comes through")
bad = [e["body"] for e in tool.events if e["name"] == "bad_read"]
c.check(len(bad) == 2 and bad[1]["reason"] == "too_long" and bad[1]["length"] == 65
        and bad[1]["bad_reads"] == 2, "the long line is a bad read (too_long)", None, bad)

sim.garbage(b"\x07" + b"Z" * 5000)  # no terminator: the reader resynchronises at the next one
sim.scan("LOST1")
sim.scan(EAN8)
c.eq(scans(tool.wait_events("scan", 1)), [body(EAN8, "ean8", True)],
     "garbage without a terminator takes the next line with it; the one after comes through")

tool.send("submit job-1 print text:hello")
failed = tool.wait_events("failed", 1)
c.check(len(failed) == 1 and failed[0]["body"]["ok"] is False, "a job is refused", None,
        failed)

before = tool.ask("stats")
sim.disconnect()
ev = tool.wait_events("status", 2)
c.check([e["body"]["health"] for e in ev][-2:] == ["offline", "ok"],
        "pty hangs up: health offline, then ok again", None, ev)
sim.scan(EAN13)
c.eq(scans(tool.wait_events("scan", 1)), [body(EAN13, "ean13", True)],
     "after the reconnect the next code comes through")
stats = tool.ask("stats")
c.check(stats.get("reconnects") == before.get("reconnects", -1) + 1,
        "statistics count the reconnect", None, stats)
c.eq(stats.get("bytes_in"), sim.status()["bytes_sent"], "bytes_in is what the scanner sent")
finish_tool(tool, "pty")
sim.stop()

# ---- options --------------------------------------------------------------------------------
bad_opt = subprocess.run([f"{BIN}/device_tool", "scanner", f"serial:{link}", "suffix=tab"],
                         input="quit\n", capture_output=True, text=True, timeout=WAIT)
c.check(bad_opt.returncode != 0 and "suffix=any|cr|lf|crlf" in bad_opt.stderr,
        "a bad option is refused at start, naming the good ones", None, bad_opt.stderr)

# ---- a network scanner over TCP, suffix=crlf ------------------------------------------------
sim = Scanner(tcp="127.0.0.1:0").start()
tool = Tool(f"tcp:127.0.0.1:{sim.port}", "suffix=crlf")
c.check(wait_for(lambda: sim.status()["connected"], WAIT), "tcp: the driver connects")
c.check(wait_for(lambda: tool.ask("health").get("health") == "ok", WAIT), "tcp: health ok")
sim.scan(EAN13)
sim.scan("RICE5")
c.eq(scans(tool.wait_events("scan", 2)), [body(EAN13, "ean13", True),
                                          body("RICE5", "other", True)], "tcp: codes come")
sim.scan("HALF1", suffix="cr")
sim.scan(UPCA)
c.eq(scans(tool.wait_events("scan", 1)), [],
     "suffix=crlf: a lone CR does not end a code (the line is spoilt up to the CR LF)")
sim.scan(EAN8)
c.eq(scans(tool.wait_events("scan", 1)), [body(EAN8, "ean8", True)], "the next code comes")
sim.garbage(bytes([0x00, 0xFF, 0x1B, 0x9C]) * 1500 + b"\r\n")
burst = [ean(f"69{i:010d}") for i in range(50)]
sim.burst(burst)
got = scans(tool.wait_events("scan", 50))
c.eq([b["code"] for b in got], burst, "tcp: 6 KB of garbage, then a burst of 50 codes in order")
bad = [e["body"] for e in tool.events if e["name"] == "bad_read"]
c.check(bad and bad[-1]["reason"] in ("not_printable", "too_long"),
        "tcp: the garbage is one bad_read", None, bad[-1:])
c.eq(tool.ask("stats").get("reconnects"), 0, "tcp: garbage and a burst: no reconnect")
sim.disconnect()
c.check(wait_for(lambda: sim.status()["connections"] == 2, WAIT),
        "tcp: after a disconnect the driver connects again")
wait_for(lambda: tool.ask("health").get("health") == "ok", WAIT)
sim.scan(EAN13)
c.eq(scans(tool.wait_events("scan", 1)), [body(EAN13, "ean13", True)],
     "tcp: after the reconnect the next code comes through")
stats, st = tool.ask("stats"), sim.status()
c.eq(stats.get("bytes_in"), st["bytes_sent"], "tcp: bytes_in is what the scanner sent")
c.eq([stats.get("opens"), stats.get("reconnects")], [st["connections"], 1],
     "tcp: opens are the scanner's connections, one reconnect")
finish_tool(tool, "tcp")
sim.stop()
c.finish()
