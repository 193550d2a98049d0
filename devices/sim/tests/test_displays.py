#!/usr/bin/python3
"""The customer display simulators (devices/sim/vfd_display.py, led_display.py) driven with
hand-written bytes, as a driver would: as programs over their pty (the symlink opened like a
serial port, raw) checked through their control sockets, and as modules over TCP.

The VFD must show exactly what the bytes put on its 2x20 screen (cursor, wrap, cancel line,
clear, brightness, ESC @), wait for a command split across writes, count garbage without
crashing and recover on ESC @; the LED display must show the number and label sent, refuse
malformed numbers; both must send injected garbage to the host, survive a disconnect (the pty
is replaced, a TCP client dropped; a command cut by it is counted), and exit 0 on SIGTERM,
removing the symlink and the control socket."""
import os
import random
import socket
import tempfile
import time

from simtest import WAIT, Feed, Program, PtyHost, run  # noqa: E402 (sys.path too)
from led_display import LED  # noqa: E402
from vfd_display import VFD  # noqa: E402

BLANK = " " * 20


def start(tmp, script, query):
    d = tempfile.mkdtemp(dir=tmp)
    return Program(script, d, "--pty", os.path.join(d, "display.tty"), query=query)


def garbage_and_disconnect(c, name, sim, send, garbage, cut):
    """Injected garbage reaches the host; a disconnect in the middle of the command cut hangs
    up the old pty and points the link at a new one. Returns the host on the new pty."""
    c.eq(sim.ctl("garbage", bytes=garbage.hex()).get("ok"), True,
         f"{name}: garbage injection accepted")
    c.eq(send.host.read(len(garbage)), garbage, f"{name}: the host receives the injected garbage")
    send(cut)
    c.eq(sim.ctl("disconnect").get("ok"), True, f"{name}: disconnect accepted")
    c.check(send.host.hung_up(), f"{name}: after a disconnect the old pty hangs up")
    send.host.close()
    send.host = PtyHost(sim.link)
    return send.host


def test_vfd_program(c, tmp):
    sim = start(tmp, "vfd_display.py", "screen")
    host = PtyHost(sim.link)
    send = Feed(sim, host)

    st = sim.ctl("screen")
    c.eq(st["lines"], [BLANK, BLANK], "vfd: blank at start")
    c.eq(st["brightness"], 4, "vfd: brightness 4 at start")
    frame = (b"\x1b@\x0c\x1fX\x02\x1f\x01" + b"\x1f$\x01\x01" + b"TOTAL".ljust(20) +
             b"\x1f$\x01\x02" + b"55.90".rjust(20))
    st = send(frame)
    c.eq(st["lines"], ["TOTAL" + " " * 15, " " * 15 + "55.90"], "vfd: the two lines as sent")
    c.eq(st["brightness"], 2, "vfd: 1F 58 02 sets brightness 2")
    c.eq(st["clears"], 1, "vfd: one clear (0C) counted")
    c.eq(st["unknown"], 0, "vfd: nothing unknown in a valid frame")
    c.eq(st["bytes_received"], len(frame), "vfd: every byte counted")

    # a cursor command split across two writes waits for its remaining bytes
    st = send(b"\x1f$")
    c.eq(st["lines"][1], " " * 15 + "55.90", "vfd: half a cursor command changes nothing yet")
    st = send(b"\x05\x02X")
    c.eq(st["lines"][1], "    X" + " " * 10 + "55.90", "vfd: a split cursor command lands at 5,2")
    c.eq(st["cursor"], [6, 2], "vfd: the cursor after the character")

    # overwrite mode wraps from the end of line 2 to the start of line 1
    st = send(b"\x1f$\x13\x02" + b"abcd")
    c.eq(st["lines"], ["cdTAL" + " " * 15, "    X" + " " * 10 + "55.ab"],
         "vfd: text wraps from the end of line 2 to line 1 in overwrite mode")
    st = send(b"\x18")
    c.eq(st["lines"][0], BLANK, "vfd: 18 cancels the cursor's line")
    c.eq(st["lines"][1], "    X" + " " * 10 + "55.ab", "vfd: 18 leaves the other line")
    st = send(b"\x0bHi")
    c.eq(st["lines"][0], "Hi" + " " * 18, "vfd: 0B homes the cursor")

    # garbage: counted, never a crash; a cursor out of range and a bad brightness are garbage
    rnd = random.Random(9)
    junk = bytes(rnd.randrange(0x80, 0x100) for _ in range(3000)) + b"\x1f$\x15\x01\x1fX\x09"
    st = send(junk)
    c.check(st["unknown"] >= 3000, f"vfd: garbage counted as unknown ({st['unknown']})")
    c.check(st["brightness"] == 2, "vfd: a brightness of 9 is refused")
    c.check(sim.proc.poll() is None, "vfd: garbage does not stop it")
    st = send(b"\x1b@")
    c.eq([st["lines"], st["brightness"], st["mode"]], [[BLANK, BLANK], 4, "overwrite"],
         "vfd: ESC @ after garbage: blank, brightness 4, overwrite")

    host = garbage_and_disconnect(c, "vfd", sim, send, b"\xff\x00\xaa", b"\x1f$\x01")
    st = send(b"\x1f$\x01\x02again")
    c.eq(st["lines"][1], "again" + " " * 15, "vfd: after a disconnect the new pty works")
    c.eq(st["incomplete"], 1, "vfd: the command cut by the disconnect is counted")
    c.eq(st["connections"], 2, "vfd: two connections")
    host.close()
    c.eq(sim.ctl("bogus").get("ok"), False, "vfd: an unknown control command is refused")
    c.eq(sim.terminate(), 0, "vfd: SIGTERM exits 0")
    c.check(not os.path.lexists(sim.link), "vfd: the symlink is removed")
    c.check(not os.path.exists(sim.control), "vfd: the control socket is removed")


def test_led_program(c, tmp):
    sim = start(tmp, "led_display.py", "state")
    host = PtyHost(sim.link)
    send = Feed(sim, host)

    st = sim.ctl("state")
    c.eq([st["number"], st["label"]], ["0", "none"], "led: 0 and no label at start")
    st = send(b"\x1b@\x1bs2\x1bQA55.90\r")
    c.eq([st["number"], st["label"]], ["55.90", "total"], "led: total 55.90")
    c.eq([st["updates"], st["unknown"]], [1, 0], "led: one update, nothing unknown")
    st = send(b"\x1bs\x04\x1bQA4.")
    c.eq([st["number"], st["label"]], ["55.90", "change"],
         "led: the label at once, the number only with its CR")
    st = send(b"10\r")
    c.eq([st["number"], st["updates"]], ["4.10", 2], "led: a number split across writes")
    for bad, what in ((b"\x1bQA5x.00\r", "a letter"), (b"\x1bQA1.2.3\r", "two dots"),
                      (b"\x1bQA123456789\r", "nine digits"), (b"\x1bs9", "label 9")):
        before = sim.ctl("state")
        st = send(bad)
        c.check(st["unknown"] > before["unknown"] and st["number"] == "4.10" and
                st["label"] == "change", f"led: {what} is counted as unknown, shown nothing")
    st = send(b"\x1bs0\x1bQA0\r")
    c.eq([st["number"], st["label"]], ["0", "none"], "led: label 0 and number 0 clear it")
    st = send(bytes(range(256)) * 4 + b"\x1bs3\x1bQA12345678\r")
    c.eq([st["number"], st["label"]], ["12345678", "received"],
         "led: after garbage, eight digits with the received label")
    host = garbage_and_disconnect(c, "led", sim, send, b"\r\n", b"\x1bQA9")
    st = send(b"\x1bs1\x1bQA3.50\r")
    c.eq([st["number"], st["label"], st["incomplete"]], ["3.50", "price", 1],
         "led: after a disconnect the new pty works; the cut number is counted, not shown")
    host.close()
    c.eq(sim.terminate(), 0, "led: SIGTERM exits 0")
    c.check(not os.path.lexists(sim.link), "led: the symlink is removed")


def test_modules_tcp(c, tmp):
    with VFD(tcp="127.0.0.1:0") as v, LED(tcp="127.0.0.1:0") as d:
        c.eq(v.disconnect().get("ok"), False, "module: no client, disconnect refused")
        sv = socket.create_connection(("127.0.0.1", v.port), WAIT)
        sd = socket.create_connection(("127.0.0.1", d.port), WAIT)
        sv.sendall(b"\x0c\x1f$\x01\x01\xe4\xbd\xa0hi")
        sd.sendall(b"\x1bs\x02\x1bQA0.01\r")  # the label as the byte 2, as some drivers send
        deadline = time.time() + WAIT
        while time.time() < deadline and (v.screen()["bytes_received"] < 10 or
                                          d.state()["bytes_received"] < 11):
            time.sleep(0.05)
        st = v.screen()
        c.eq(st["lines"][0], "hi" + " " * 18, "module vfd over TCP: UTF-8 bytes are not shown")
        c.eq(st["unknown"], 3, "module vfd: the 3 UTF-8 bytes are counted as unknown")
        st = d.state()
        c.eq([st["number"], st["label"]], ["0.01", "total"], "module led over TCP: byte label")
        d.garbage(b"\x00")
        c.eq(sd.recv(1), b"\x00", "module led: garbage reaches the TCP client")
        c.eq(d.disconnect().get("ok"), True, "module led: disconnect drops the client")
        sd.settimeout(WAIT)
        c.eq(sd.recv(1), b"", "module led: the client sees the end of the connection")
        sd = socket.create_connection(("127.0.0.1", d.port), WAIT)
        sd.sendall(b"\x1bs4\x1bQA1.00\r")
        deadline = time.time() + WAIT
        while time.time() < deadline and d.state()["updates"] < 2:
            time.sleep(0.05)
        st = d.state()
        c.eq([st["number"], st["label"], st["connections"]], ["1.00", "change", 2],
             "module led: a new connection works")
        sv.close()
        sd.close()


def main():
    run("test_displays", test_vfd_program, test_led_program, test_modules_tcp)

if __name__ == "__main__":
    main()
