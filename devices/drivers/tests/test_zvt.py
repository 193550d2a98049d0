#!/usr/bin/python3
"""test_zvt - the ZVT card terminal driver alone (device_tool) against the terminal simulator,
on a pty (9600 8N2, DLE frames, CRC, ACK/NAK) and over TCP (bare APDUs).

An approval publishes the intermediate statuses in order, the receipt lines and result {ok true,
amount, receipt, trace}; a decline fails the job with result ok false; a frame the terminal does
not acknowledge or NAKs is sent again and charged once; a frame from the terminal with a bad CRC
is NAKed and its resend taken; a frame whose ACK is lost but which the terminal answers is
not sent again; a lost final answer publishes unknown, is resolved by the verb
status as approved, and the same key submitted again never charges twice (the terminal holds
exactly one transaction); reversal, refund and end of day complete; garbage and a disconnect do
not stop the next authorization."""
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import tty

sys.path.insert(0, os.path.join(os.environ.get("POSBUS_SRC", "."), "tests", "integration"))
sys.path.insert(0, os.path.join(os.environ.get("POSBUS_SRC", "."), "devices", "sim"))
from harness import BIN, Checks, wait_for  # noqa: E402
from devtool import DeviceTool, kill_all  # noqa: E402
from zvt_terminal import ZvtTerminal  # noqa: E402

c = Checks("test_zvt")
tmp = tempfile.mkdtemp(prefix="posbus-zvt-")
OPTIONS = "t3_ms=1000,t4_ms=4000"


class Tool(DeviceTool):
    """device_tool running the zvt driver on transport."""

    def __init__(self, transport, options=OPTIONS):
        super().__init__("zvt", transport, options, tmp)

    def job(self, key, verb, text=None, timeout=15):
        """Submit; (the events published for it, in order, and "done" / "failed" / None)."""
        n = len(self.events)
        self.send(f"submit {key} {verb}" + (f" text:{text}" if text is not None else ""))
        end = self.outcome(key, timeout)
        return self.events[n:], end



def named(events, name):
    return [e.get("body", {}) for e in events if e["name"] == name]


def result(events, key=None):
    r = [b for b in named(events, "result") if key is None or b.get("key") == key]
    return r[-1] if r else {}


def approved(term):
    return [t for t in term.status()["transactions"]
            if t["kind"] == "authorize" and t["state"] == "approved"]


def serial_tests(term, tool):
    c.check(wait_for(lambda: tool.health().get("health") == "ok", 10, "health ok"),
            "the terminal is found: health ok")
    c.eq(tool.health().get("kind"), "card", "kind card")

    # approval: intermediate statuses in order, receipt lines, the result
    ev, end = tool.job("a1", "authorize", "1234 99")
    r = result(ev, "a1")
    c.eq(end, "done", "an approved authorization: the job is done")
    c.check(r.get("ok") is True and r.get("amount") == 1234 and r.get("receipt") == 1 and
            r.get("trace") == 100 and r.get("result_code") == 0,
            "result ok, amount 1234, the terminal's receipt 1 and trace 100", "ok", r)
    c.eq([b.get("text") for b in named(ev, "intermediate")],
         ["insert card", "please watch PIN pad", "please wait"],
         "intermediate statuses published in the terminal's order")
    c.eq(named(ev, "print"), [{"lines": ["AUTHORIZATION", "AMOUNT 12.34"]}],
         "the receipt lines published as print")
    c.check([e["name"] for e in ev].index("intermediate") < [e["name"] for e in ev].index("result"),
            "the statuses come before the result")

    # slow: the statuses spread over 1.5 s, published as they come
    term.mode("slow", seconds=1.5)
    t0 = time.time()
    tool.send("submit a0 authorize text:150")
    first = tool.read_until(lambda m: m.get("event", {}).get("name") == "intermediate")
    t_first = time.time() - t0
    ev, end = tool.job("a0x", "end_of_day")  # queued behind a0: waits for it
    took = time.time() - t0
    r = result(tool.events, "a0")
    c.check(first is not None and t_first < 1.2 and took >= 1.4 and r.get("ok") is True,
            f"slow: the first status after {t_first:.2f} s, approved after {took:.2f} s",
            "first < 1.2 s, done >= 1.4 s", (t_first, took, r))

    # decline
    term.mode("decline")
    ev, end = tool.job("a2", "authorize", "999")
    r = result(ev, "a2")
    c.eq(end, "failed", "a declined authorization fails the job")
    c.check(r.get("ok") is False and r.get("result_code") == 5 and r.get("text") == "declined" and
            not r.get("unknown"), "result ok false, result code 05, declined", "declined", r)

    # a frame not acknowledged (lost ACK), a frame NAKed: resent, charged once
    for mode, key, amount in (("lost_ack", "a3", 300), ("nak", "a4", 400),
                              ("ack_lost", "a4b", 450)):
        before = len(approved(term))
        st0 = term.status()
        term.mode(mode)
        ev, end = tool.job(key, "authorize", str(amount))
        st = term.status()
        c.check(end == "done" and result(ev, key).get("amount") == amount,
                f"{mode}: the authorization is resent and approved", "done", (end, result(ev, key)))
        c.eq(len(approved(term)) - before, 1, f"{mode}: exactly one transaction at the terminal")
        c.eq(st["commands"].get("06 01", 0) - st0["commands"].get("06 01", 0), 1,
             f"{mode}: the terminal took the command once")
        if mode == "lost_ack":
            c.eq(st["frames_dropped"] - st0["frames_dropped"], 1, "lost_ack: one frame dropped")
        elif mode == "nak":
            c.check(st["naks_sent"] - st0["naks_sent"] == 1, "nak: the terminal NAKed once")
        else:  # the terminal took it and answered, only its ACK was lost: never sent again
            c.check(st["acks_lost"] - st0["acks_lost"] == 1 and
                    st["frames_received"] - st0["frames_received"] ==
                    st["acks_sent"] - st0["acks_sent"] + 1,
                    "ack_lost: the answer counts as the ACK, the frame was not sent again")

    # the terminal sends a frame with a bad CRC: NAKed, its resend accepted
    st0 = term.status()
    term.mode("bad_crc")
    ev, end = tool.job("a5", "authorize", "500")
    st = term.status()
    c.eq(end, "done", "a bad CRC from the terminal: the authorization still completes")
    c.eq(st["naks_received"] - st0["naks_received"], 1, "the driver NAKed the bad frame once")
    c.eq(st["resends"] - st0["resends"], 1, "the terminal resent it once")

    # the lost final answer: unknown, resolved by status, never charged twice
    before = len(approved(term))
    st0 = term.status()
    term.mode("lost_answer")
    ev, end = tool.job("a6", "authorize", "777", timeout=20)
    r = result(ev, "a6")
    c.eq(end, "failed", "no final answer: the job fails")
    c.check(r.get("ok") is False and r.get("unknown") is True,
            "result ok false, unknown true", "unknown", r)
    c.eq(tool.health().get("health"), "warn", "an unresolved transaction: health warn")
    ev, end = tool.job("a6", "authorize", "777")
    r = result(ev, "a6")
    c.check(r.get("ok") is True and r.get("resolved") is True and r.get("amount") == 777,
            "the same key again: resolved as approved from the terminal's last transaction",
            "resolved ok", r)
    c.eq(end, "done", "and the job is done")
    tool.send("submit a6 authorize text:777 R-0006")
    m = tool.read_until(lambda m: "submitted" in m)
    c.eq(m and m["submitted"], 1, "a third time: not queued (the device layer knows the key done)")
    st = term.status()
    c.eq(len(approved(term)) - before, 1, "lost answer: exactly one transaction at the terminal")
    c.eq(st["commands"].get("06 01", 0) - st0["commands"].get("06 01", 0), 1,
         "the authorization was sent once, never again")
    c.eq(tool.health().get("health"), "ok", "resolved: health ok")

    # the verb status resolves (a fresh lost answer, then status)
    before = len(approved(term))
    term.mode("lost_answer")
    ev, end = tool.job("a7", "authorize", "888", timeout=20)
    c.check(result(ev, "a7").get("unknown") is True, "a second lost answer: unknown")
    ev, end = tool.job("s1", "status")
    r = result(ev, "a7")
    c.check(end == "done" and r.get("ok") is True and r.get("resolved") is True and
            r.get("amount") == 888 and r.get("trace") == approved(term)[-1]["trace"],
            "status resolves it: approved, with the terminal's trace", "resolved", r)
    c.eq(len(approved(term)) - before, 1, "status charged nothing more")

    # reversal, refund, end of day
    receipt = approved(term)[-1]["receipt"]
    ev, end = tool.job("v1", "reversal", str(receipt))
    c.check(end == "done" and result(ev, "v1").get("ok") is True, "reversal: done")
    c.check(any(t["receipt"] == receipt and t["state"] == "reversed"
                for t in term.status()["transactions"]), "the terminal reversed that receipt")
    ev, end = tool.job("v2", "reversal", "9999")
    c.eq(end, "failed", "a reversal of an unknown receipt fails")
    ev, end = tool.job("f1", "refund", "250")
    c.check(end == "done" and result(ev, "f1").get("amount") == 250, "refund 250: done")
    ev, end = tool.job("e1", "end_of_day")
    c.check(end == "done" and named(ev, "print"), "end of day: done, with its receipt lines")
    for key, verb, text in (("x1", "authorize", "abc"), ("x2", "authorize", "0"),
                            ("x3", "bogus", None), ("x4", "reversal", "12345")):
        ev, end = tool.job(key, verb, text)
        c.eq(end, "failed", f"{verb} {text!r} is refused")

    # garbage and a disconnect: the next authorization works
    term.garbage(bytes.fromhex("10021003ffff06151002aabb10") + b"noise")
    ev, end = tool.job("g1", "authorize", "111")
    c.check(end == "done" and result(ev, "g1").get("ok") is True,
            "garbage between dialogues: the next authorization works")
    term.disconnect()
    ev, end = tool.job("g2", "authorize", "222", timeout=25)
    c.check(end == "done" and result(ev, "g2").get("ok") is True,
            "after a disconnect the next authorization works", "done", (end, result(ev, "g2")))


def raw_frame_test():
    """The driver's bytes against a frame written out by hand: an authorization of 10.00 (BCD
    00 00 00 00 10 00, the 10 doubled), CRC-16/KERMIT 0x9162 sent low byte first."""
    master, slave = os.openpty()
    tty.setraw(slave)
    link = os.path.join(tmp, "raw.tty")
    os.symlink(os.ttyname(slave), link)
    raw = Tool(f"serial:{link},baud=9600,data=8,parity=none,stop=2", "t3_ms=1000,t4_ms=2000")
    want = bytes.fromhex("1002" "06010704000000001010" "00" "1003" "6291")
    raw.send("submit r1 authorize text:1000")
    got = b""
    deadline = time.time() + 5
    while len(got) < len(want) and time.time() < deadline:
        if select.select([master], [], [], 0.2)[0]:
            got += os.read(master, 256)
    c.eq(got.hex(), want.hex(), "the driver's authorization frame, byte for byte")
    os.write(master, b"\x06" + bytes.fromhex("1002800000100380") + b"\x00")  # wrong CRC
    time.sleep(0.3)
    c.eq(os.read(master, 256) if select.select([master], [], [], 1)[0] else b"", b"\x15",
         "a frame with a wrong CRC from the terminal: the driver answers NAK")
    crc = 0
    for b in bytes.fromhex("80000003"):
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    os.write(master, bytes.fromhex("1002800000" "1003") + bytes([crc & 0xFF, crc >> 8]))
    c.eq(os.read(master, 256) if select.select([master], [], [], 1)[0] else b"", b"\x06",
         "its resend with the right CRC: ACK")
    end = raw.read_until(lambda m: m.get("event", {}).get("name") in ("done", "failed"), 10)
    c.check(end and end["event"]["name"] == "failed", "no answer after that: the job fails")
    rc, report = raw.quit()
    c.check(rc == 0 and report is None, f"device_tool exits 0, no sanitizer report: {report}")
    os.close(master)
    os.close(slave)


try:
    raw_frame_test()
    link = os.path.join(tmp, "zvt.tty")
    term = ZvtTerminal(pty=link).start()
    tool = Tool(f"serial:{link},baud=9600,data=8,parity=none,stop=2")
    serial_tests(term, tool)
    rc, report = tool.quit()
    c.eq(rc, 0, "device_tool exits 0")
    c.check(report is None, f"no sanitizer report: {report}")
    term.stop()

    # TCP: bare APDUs, no ACK/NAK
    tterm = ZvtTerminal(tcp="127.0.0.1:0").start()
    ttool = Tool(f"tcp:127.0.0.1:{tterm.port}", OPTIONS + ",password=123456")
    c.check(wait_for(lambda: ttool.health().get("health") == "ok", 10, "health ok"),
            "TCP: health ok")
    c.check(tterm.status()["registered"], "password given: attach registered (06 00)")
    ev, end = ttool.job("t1", "authorize", "4321")
    r = result(ev, "t1")
    c.check(end == "done" and r.get("amount") == 4321 and r.get("ok") is True,
            "TCP: approved", "done", (end, r))
    st = tterm.status()
    c.check(st["acks_received"] == 0 and st["naks_received"] == 0,
            "TCP: no ACK or NAK on the wire")
    tterm.mode("decline")
    ev, end = ttool.job("t2", "authorize", "100")
    c.check(end == "failed" and result(ev, "t2").get("ok") is False, "TCP: declined")
    tterm.mode("lost_answer")
    ev, end = ttool.job("t3", "authorize", "600", timeout=20)
    c.check(result(ev, "t3").get("unknown") is True, "TCP: a lost answer is unknown")
    ev, end = ttool.job("s1", "status")
    c.check(result(ev, "t3").get("ok") is True, "TCP: status resolves it as approved")
    c.eq(len(approved(tterm)), 2, "TCP: two approved transactions (t1, t3), none twice")
    tterm.garbage(b"\x04\xff\x01")  # half an APDU, then a disconnect
    tterm.disconnect()
    ev, end = ttool.job("t4", "authorize", "700", timeout=25)
    c.check(end == "done" and result(ev, "t4").get("ok") is True,
            "TCP: after garbage and a disconnect the next authorization works", "done",
            (end, result(ev, "t4")))
    rc, report = ttool.quit()
    c.check(rc == 0 and report is None, f"TCP: device_tool exits 0, no sanitizer report: {report}")
    tterm.stop()

    bad = subprocess.run([f"{BIN}/device_tool", "zvt", "tcp:127.0.0.1:1", "password=12"],
                         input="quit\n", capture_output=True, text=True, timeout=10)
    c.check(bad.returncode != 0 and "password" in bad.stderr,
            f"a bad option is refused: {bad.stderr.strip()}")
finally:
    kill_all()
    shutil.rmtree(tmp, ignore_errors=True)
c.finish()
