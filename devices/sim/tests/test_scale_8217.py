#!/usr/bin/python3
"""The Mettler Toledo 8217 scale simulator (devices/sim/scale_8217.py) driven with hand-written
bytes, as a driver would: the program on a pty (the symlink opened like a serial port, raw) with
its control socket, and the Scale class over TCP.

W must answer exactly STX "01.234" CR for a stable 1.234 kg, and STX '?' status CR with the
documented bits while moving, overloaded or negative; moving_for_ms must turn into the stable
weight after it; Z, T and C must change what W answers (and be refused where a scale refuses
them); garbage goes to the host as sent; a disconnect gives a fresh pty that answers; SIGTERM
exits 0 and removes the symlink and the control socket."""
import os
import select
import time

from simtest import Program, PtyHost, TcpHost, run  # noqa: E402 (sys.path too)
from scale_8217 import Scale, Model  # noqa: E402

ANSWER = 1.0    # seconds a reply may take

STX, CR = b"\x02", b"\x0d"


def weight(text):
    return STX + text.encode() + CR


def status(bits):
    return STX + b"?" + bytes([0x40 | bits]) + CR


def reply(host):
    """The bytes up to and including the first CR (or what came within ANSWER)."""
    return host.read_until(CR, ANSWER)


def ask(host, cmd=b"W"):
    host.send(cmd)
    return reply(host)


def test_program(c, tmp):
    link = os.path.join(tmp, "scale.tty")
    sim = Program("scale_8217.py", tmp, "--pty", link)
    try:
        c.check(os.path.islink(link), "the control socket exists only once the symlink does")
        host = PtyHost(link)
        c.eq(ask(host), weight("00.000"), "an empty scale at rest answers 00.000")
        sim.ctl("set", grams=1234)
        c.eq(ask(host), weight("01.234"), "a stable 1.234 kg: 02 30 31 2E 32 33 34 0D")
        c.eq(ask(host, b"W\r\n"), weight("01.234"), "CR LF after a command are ignored")
        sim.ctl("set", moving=True)
        c.eq(ask(host), status(0x01), "moving: STX ? 0x41 CR, no weight")
        sim.ctl("set", moving=False, overload=True)
        c.eq(ask(host), status(0x02), "overload forced: STX ? 0x42 CR")
        sim.ctl("set", overload=False, grams=15001)
        c.eq(ask(host), status(0x02), "over the 15 kg capacity: STX ? 0x42 CR")
        sim.ctl("set", grams=-50)
        c.eq(ask(host), status(0x04), "under zero: STX ? 0x44 CR")
        sim.ctl("set", grams=500, negative=True)
        c.eq(ask(host), status(0x04), "negative forced: STX ? 0x44 CR")
        sim.ctl("set", negative=False, moving=True, overload=True)
        c.eq(ask(host), status(0x03), "moving and overloaded: both bits")
        sim.ctl("set", moving=False, overload=False, grams=2500, moving_for_ms=800)
        first = ask(host)
        time.sleep(1.0)
        c.check(first == status(0x01) and ask(host) == weight("02.500"),
                "moving_for_ms: moving at first, the stable weight after it",
                [status(0x01), weight("02.500")], first)
        st = sim.ctl("status")
        c.check(st["weigh_requests"] == 11 and st["requests"] == 11,
                "every W counted", 11, (st["weigh_requests"], st["requests"]))
        # zero, tare and clear tare are not answered; W shows their effect
        sim.ctl("set", grams=20)
        host.send(b"Z")
        c.check(host.quiet(), "Z is not answered")
        c.eq(ask(host), weight("00.000"), "Z at 20 g: the scale shows 0")
        sim.ctl("set", grams=1020)
        c.eq(ask(host), weight("01.000"), "after Z the load counts from the new zero")
        host.send(b"Z")
        c.eq(ask(host), weight("01.000"), "Z at 1 kg (outside the 2% zero range) is refused")
        host.send(b"T")
        c.check(host.quiet(), "T is not answered")
        c.eq(ask(host), weight("00.000"), "T: the net weight is 0")
        sim.ctl("set", grams=1520)
        c.eq(ask(host), weight("00.500"), "after T: 500 g net")
        sim.ctl("set", grams=1020, moving=True)
        c.eq(ask(host), status(0x01 | 0x08 | 0x20),
             "moving with a tare after a refused Z: moving, outside zero range and net bits")
        sim.ctl("set", grams=1020, moving=False)
        host.send(b"C")
        c.eq(ask(host), weight("01.000"), "C clears the tare")
        st = sim.ctl("status")
        c.check(st["zero_requests"] == 2 and st["tare_requests"] == 1 and
                st["clear_tare_requests"] == 1 and st["zero_refused"] == 1,
                f"Z, T, C counted: {st}")
        host.send(b"x")
        c.check(host.quiet() and sim.ctl("status")["unknown_bytes"] == 1,
                "an unknown byte is not answered and counted")
        # the host's side: garbage as sent, a split reply, a disconnect
        sim.ctl("garbage", bytes="ff02303d0d")
        got = reply(host)
        c.eq(got, bytes.fromhex("ff02303d0d"), "garbage reaches the host as sent")
        sim.ctl("garbage", bytes="0d02ff", next_reply=True)
        c.eq(ask(host, b"W") + reply(host), bytes.fromhex("0d") + bytes.fromhex("02ff") +
             weight("01.000"), "garbage with next_reply: sent just before the next reply")
        sim.ctl("split_ms", ms=200)
        host.send(b"W")
        part = b""
        deadline = time.time() + 0.1
        while time.time() < deadline and select.select([host.fd], [], [], 0.05)[0]:
            part += os.read(host.fd, 16)
        rest = reply(host)
        c.check(part == weight("01.000")[:4] and part + rest == weight("01.000"),
                "split_ms: the reply comes in two halves", weight("01.000"), (part, rest))
        sim.ctl("split_ms", ms=0)
        sim.ctl("silent", on=True)
        host.send(b"W")
        c.check(host.quiet(0.5), "silent: W is not answered")
        sim.ctl("silent", on=False)
        old = os.readlink(link)
        c.check(sim.ctl("disconnect")["ok"], "disconnect accepted")
        c.check(os.readlink(link) != old, "disconnect: the symlink points at a new pty")
        host.close()
        host = PtyHost(link)
        c.eq(ask(host), weight("01.000"), "the new pty answers W")
        c.eq(sim.ctl("status")["connections"], 2, "two pty pairs opened")
        c.check(sim.ctl("bogus").get("ok") is False, "an unknown control command: ok false")
        c.check(sim.ctl("set", grams="12").get("ok") is False, "grams must be an integer")
        host.close()
        c.eq(sim.terminate(), 0, "SIGTERM: exit 0")
        c.check(not os.path.lexists(link) and not os.path.exists(sim.control),
                "symlink and control socket removed")
    finally:
        sim.terminate()


def test_class(c, tmp):
    with Scale(tcp="127.0.0.1:0", capacity=6000) as s:
        host = TcpHost(s.port)
        s.set(grams=5999)
        c.eq(ask(host), weight("05.999"), "Scale over TCP: 5.999 kg")
        s.set(grams=6001)
        c.eq(ask(host), status(0x02), "capacity 6 kg: 6.001 kg is over capacity")
        s.set(grams=0)
        c.eq(ask(host), weight("00.000"), "0 g at rest: a weight")
        s.reply_delay_ms(300)
        t0 = time.time()
        got = ask(host)
        c.check(got == weight("00.000") and time.time() - t0 >= 0.25,
                "reply_delay_ms holds the reply back")
        s.reply_delay_ms(0)
        c.eq(s.disconnect()["ok"], True, "TCP disconnect closes the client")
        c.check(host.s.recv(1) == b"", "the host sees the connection closed")
        host.close()
        host = TcpHost(s.port)
        c.eq(ask(host), weight("00.000"), "the next connection answers")
        host.close()
    m = Model()
    m.set({"grams": 1234})
    c.eq(m.receive(b"W" + bytes([ord("W") | 0x80])), weight("01.234") * 2,
         "Model: bit 7 (the parity bit on a 7E1 line) is ignored")


def main():
    run("test_scale_8217", test_program, test_class)

if __name__ == "__main__":
    main()
