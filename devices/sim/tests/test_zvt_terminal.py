#!/usr/bin/python3
"""The ZVT card terminal simulator (devices/sim/zvt_terminal.py) driven with hand-written bytes,
as an ECR would: the program on a pty with its control socket, and the ZvtTerminal class over
TCP.

The CRC must be CRC-16/KERMIT (the catalogue's check value, and a second computation the other
way round: CCITT over bit-reversed bytes); a frame must be DLE-stuffed exactly as written out
by hand; the terminal must ACK a good frame, NAK a frame with a wrong CRC and take nothing from
it; an authorization must run 80 00 00, 04 FF x3, 04 0F, 06 D1, 06 0F, each message sent only
after the ECR's 80 00 00; the faults (lost_ack, nak, bad_crc, lost_answer, decline) must do
what they say; the repeat receipt 06 20 must return the last transaction; TCP carries bare
APDUs; SIGTERM exits 0 and removes the symlink and the control socket."""
import os
import select
import time

from simtest import Program, PtyHost, TcpHost, run  # noqa: E402 (sys.path too)
from zvt_terminal import ZvtTerminal, crc16, frame  # noqa: E402

ANSWER = 1.5  # seconds a unit from the terminal may take

# An authorization of 10.00 (1000 fen: BCD 00 00 00 00 10 00), written out by hand: the 10 of
# the amount is doubled, the CRC (KERMIT over 06 01 07 04 00 00 00 00 10 00 03) is 0x9162.
AUTH_APDU = bytes.fromhex("06010704000000001000")
AUTH_FRAME = bytes.fromhex("1002" "06010704000000001010" "00" "1003" "6291")
ACK_APDU = bytes.fromhex("800000")


def crc_other_way(data):
    """CRC-16/KERMIT computed as CCITT (poly 0x1021, MSB first) over bit-reversed bytes, the
    result bit-reversed: an independent check of the reflected implementation."""
    def rev(v, bits):
        return int(f"{v:0{bits}b}"[::-1], 2)
    crc = 0
    for b in data:
        crc ^= rev(b, 8) << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return rev(crc, 16)


class Host:
    """The ECR's side: the pty opened raw (or a TCP socket), simtest's PtyHost or TcpHost, with
    frames decoded by hand."""

    def __init__(self, link=None, port=None):
        self.io = TcpHost(port) if port is not None else PtyHost(link)
        self.fd = self.io.fd
        self.send = self.io.send
        self.buf = b""

    def _more(self, deadline):
        chunk = self.io._chunk(4096, deadline)
        self.buf += chunk
        return bool(chunk)

    def unit(self, timeout=ANSWER):
        """The next unit: b"\\x06", b"\\x15", or (apdu, crc_ok) of a frame; None on a timeout."""
        deadline = time.time() + timeout
        while True:
            b = self.buf
            if b[:1] in (b"\x06", b"\x15"):
                self.buf = b[1:]
                return b[:1]
            if b[:2] == b"\x10\x02":
                i, apdu = 2, b""
                while i + 1 < len(b):
                    if b[i] == 0x10 and b[i + 1] == 0x10:
                        apdu += b"\x10"
                        i += 2
                    elif b[i] == 0x10 and b[i + 1] == 0x03:
                        if i + 4 <= len(b):
                            crc = b[i + 2] | b[i + 3] << 8
                            self.buf = b[i + 4:]
                            return apdu, crc == crc16(apdu + b"\x03")
                        break
                    else:
                        apdu += b[i:i + 1]
                        i += 1
            elif b:
                self.buf = b[1:]  # noise
                continue
            if not self._more(deadline):
                return None

    def apdu(self, timeout=ANSWER):
        """The next bare APDU (TCP)."""
        deadline = time.time() + timeout
        while True:
            b = self.buf
            if len(b) >= 3 and len(b) >= 3 + b[2]:
                self.buf = b[3 + b[2]:]
                return b[:3 + b[2]]
            if not self._more(deadline):
                return None

    def quiet(self, timeout=0.4):
        return not self.buf and not select.select([self.fd], [], [], timeout)[0]

    def close(self):
        self.io.close()


def dialogue(c, host, command_frame, what, answer=True):
    """Send a command frame, ACK and answer every terminal frame; the APDUs the terminal sent."""
    host.send(command_frame)
    c.eq(host.unit(), b"\x06", f"{what}: the command frame is ACKed")
    got = []
    while True:
        u = host.unit(3.0)
        if not isinstance(u, tuple):
            break
        host.send(b"\x06")
        got.append(u[0])
        if u[0][:2] != b"\x80\x00" and answer:
            host.send(frame(ACK_APDU))
            if host.unit() != b"\x06":
                c.fail(f"{what}: the terminal did not ACK the ECR's 80 00 00")
        if u[0][:2] in (b"\x06\x0f", b"\x06\x1e"):
            break
    return got


def test_crc(c, tmp):
    c.eq(crc16(b"123456789"), 0x2189, "CRC-16/KERMIT check value of '123456789' is 0x2189")
    for data in (b"", b"\x10\x03", AUTH_APDU + b"\x03", bytes(range(256))):
        c.eq(crc16(data), crc_other_way(data), f"the CRC computed both ways ({len(data)} bytes)")
    c.eq(frame(AUTH_APDU).hex(), AUTH_FRAME.hex(), "the authorization frame as written by hand")
    c.eq(frame(bytes.fromhex("101010")).hex()[:16], "1002101010101010",
         "every 10 of an APDU is doubled")


def test_program(c, tmp):
    link = os.path.join(tmp, "zvt.tty")
    prog = Program("zvt_terminal.py", tmp, "--pty", link)
    ctl = prog.ctl
    try:
        c.check(os.path.islink(link), "the control socket exists only once the symlink does")
        host = Host(link)
        got = dialogue(c, host, AUTH_FRAME, "approve")
        c.eq([a[:2].hex() for a in got], ["8000", "04ff", "04ff", "04ff", "040f", "06d1", "06d1",
                                          "060f"], "an authorization: the whole dialogue in order")
        c.eq([a[3] for a in got[1:4]], [0x0A, 0x01, 0x0E],
             "intermediate statuses insert card, watch PIN pad, please wait")
        st = got[4][3:]
        c.check(st[:2] == b"\x27\x00" and st[2:9] == bytes.fromhex("04000000001000") and
                st[9:13] == bytes.fromhex("0b000100") and st[13:16] == bytes.fromhex("870001"),
                "04 0F: result 00, amount 1000, trace 100, receipt 1", "27 00 04 .. 0B .. 87 ..",
                st.hex())
        s = ctl("status")
        c.eq([(t["amount"], t["trace"], t["receipt"], t["state"]) for t in s["transactions"]],
             [(1000, 100, 1, "approved")], "status: one approved transaction")
        c.eq(s["ecr_acks"], 7, "the terminal counted the ECR's seven 80 00 00")

        # the terminal waits for the ECR's 80 00 00 before its next message
        host.send(AUTH_FRAME)
        host.unit()
        host.unit()  # 80 00 00
        host.send(b"\x06")
        first = host.unit()
        host.send(b"\x06")
        c.check(isinstance(first, tuple) and first[0][:2] == b"\x04\xff" and host.quiet(0.6),
                "after 04 FF it waits for the ECR's 80 00 00")
        host.send(frame(ACK_APDU))
        host.unit()
        nxt = host.unit()
        c.check(isinstance(nxt, tuple) and nxt[0][:2] == b"\x04\xff", "then sends the next one")
        ctl("disconnect")  # ends that dialogue: a fresh pty
        host.close()
        host = Host(link)

        # a wrong CRC is NAKed and taken for nothing
        n = len(ctl("status")["transactions"])
        host.send(AUTH_FRAME[:-2] + b"\x00\x00")
        c.eq(host.unit(), b"\x15", "a frame with a wrong CRC: NAK 15")
        c.check(host.quiet() and len(ctl("status")["transactions"]) == n,
                "and nothing else happens (no transaction)")

        # stuffing both ways: an amount of 10.10 (BCD ...10 10) in the frame and in the 04 0F
        got = dialogue(c, host, frame(bytes.fromhex("06010704000000001010")), "stuffed amount")
        c.check(AUTH_APDU not in b"".join(got) and
                any(a[:2] == b"\x04\x0f" and bytes.fromhex("04000000001010") in a for a in got),
                "a stuffed amount 10.10 read back from the terminal's 04 0F")

        # lost_ack: the first frame is dropped, the resend is ACKed
        ctl("mode", next="lost_ack")
        host.send(AUTH_FRAME)
        c.check(host.unit(0.8) is None, "lost_ack: the first frame gets no answer")
        got = dialogue(c, host, AUTH_FRAME, "lost_ack resend")
        c.check(got and got[-1][:2] == b"\x06\x0f", "lost_ack: the resend runs the dialogue")
        s = ctl("status")
        c.eq(s["frames_dropped"], 1, "lost_ack: one frame dropped")

        # nak: the first frame is NAKed
        ctl("mode", next="nak")
        host.send(AUTH_FRAME)
        c.eq(host.unit(), b"\x15", "nak: the first frame is NAKed")
        dialogue(c, host, AUTH_FRAME, "nak resend")

        # ack_lost: the frame is taken but no ACK goes out; the answer comes all the same
        ctl("mode", next="ack_lost")
        host.send(AUTH_FRAME)
        u = host.unit()
        c.check(isinstance(u, tuple) and u[0] == ACK_APDU,
                "ack_lost: no 06, the terminal's 80 00 00 comes straight away")
        host.send(b"\x06")
        while True:  # finish the dialogue
            u = host.unit(3.0)
            if not isinstance(u, tuple):
                break
            host.send(b"\x06")
            host.send(frame(ACK_APDU))
            host.unit()
            if u[0][:2] in (b"\x06\x0f", b"\x06\x1e"):
                break
        c.eq(ctl("status")["acks_lost"], 1, "ack_lost: counted")

        # bad_crc: the terminal's next frame has a wrong CRC; a NAK brings it again, right
        ctl("mode", next="bad_crc")
        host.send(AUTH_FRAME)
        c.eq(host.unit(), b"\x06", "bad_crc: the command is ACKed")
        u = host.unit()
        c.check(isinstance(u, tuple) and u[0] == ACK_APDU and not u[1],
                "bad_crc: the terminal's 80 00 00 comes with a wrong CRC")
        host.send(b"\x15")
        u = host.unit()
        c.check(isinstance(u, tuple) and u[0] == ACK_APDU and u[1],
                "after the NAK it is sent again with the right CRC")
        host.send(b"\x06")
        rest = []
        while True:  # finish the dialogue
            u = host.unit(3.0)
            if not isinstance(u, tuple):
                break
            host.send(b"\x06")
            rest.append(u[0])
            host.send(frame(ACK_APDU))
            host.unit()
            if u[0][:2] in (b"\x06\x0f", b"\x06\x1e"):
                break
        c.check(rest and rest[-1][:2] == b"\x06\x0f", "bad_crc: the dialogue completes")
        s = ctl("status")
        c.check(s["naks_received"] == 1 and s["resends"] == 1, "one NAK received, one resend")

        # decline
        ctl("mode", next="decline")
        got = dialogue(c, host, AUTH_FRAME, "decline")
        c.check(got and got[-1] == bytes.fromhex("061e0105") and
                any(a[:2] == b"\x04\x0f" and a[3:5] == b"\x27\x05" for a in got),
                "decline: 04 0F with result 05, then 06 1E 05")

        # lost_answer: booked, then silence; 06 20 returns it
        ctl("mode", next="lost_answer")
        amount = bytes.fromhex("06010704000000000777")
        got = dialogue(c, host, frame(amount), "lost_answer")
        c.check(not any(a[:2] in (b"\x04\x0f", b"\x06\x0f", b"\x06\x1e") for a in got),
                "lost_answer: no 04 0F, no completion")
        last = ctl("status")["transactions"][-1]
        c.check(last["amount"] == 777 and last["state"] == "approved",
                "lost_answer: the transaction is booked all the same")
        got = dialogue(c, host, frame(bytes.fromhex("062003000000")), "repeat receipt")
        st = [a for a in got if a[:2] == b"\x04\x0f"]
        c.check(st and bytes.fromhex("04000000000777") in st[0] and got[-1][:2] == b"\x06\x0f",
                "06 20: the last transaction's 04 0F again, then 06 0F")
        c.eq(len([t for t in ctl("status")["transactions"] if t["amount"] == 777]), 1,
             "the repeat receipt booked nothing")

        # an unknown command is refused with 84
        host.send(frame(bytes.fromhex("069900")))
        c.eq(host.unit(), b"\x06", "an unknown command frame is ACKed")
        u = host.unit()
        c.check(isinstance(u, tuple) and u[0][:1] == b"\x84", "and refused with 84 xx 00")
        host.send(b"\x06")

        c.eq(ctl("garbage", bytes="deadbeef")["ok"], True, "garbage: ok")
        time.sleep(0.2)
        c.check(b"\xde\xad\xbe\xef" in host.buf or host._more(time.time() + 1),
                "garbage reaches the host")
        host.close()
        c.eq(ctl("mode", next="bogus")["ok"], False, "an unknown mode is refused")
    finally:
        rc = prog.terminate()
    c.eq(rc, 0, "SIGTERM: exit 0")
    c.check(not os.path.lexists(link) and not os.path.exists(prog.control),
            "the symlink and the control socket are removed")


def test_tcp(c, tmp):
    with ZvtTerminal(tcp="127.0.0.1:0") as t:
        host = Host(port=t.port)
        host.send(AUTH_APDU)
        got = []
        while True:
            a = host.apdu(3.0)
            if a is None:
                break
            got.append(a)
            if a[:2] != b"\x80\x00":
                host.send(ACK_APDU)
            if a[:2] in (b"\x06\x0f", b"\x06\x1e"):
                break
        c.eq([a[:2].hex() for a in got], ["8000", "04ff", "04ff", "04ff", "040f", "06d1", "06d1",
                                          "060f"], "TCP: the same dialogue with bare APDUs")
        c.check(b"\x06" not in host.buf and t.status()["acks_sent"] == 0,
                "TCP: no ACK bytes on the wire")
        c.eq(len(t.status()["transactions"]), 1, "TCP: one transaction")
        c.eq(t.disconnect()["ok"], True, "TCP: disconnect closes the client")
        host.close()


if __name__ == "__main__":
    run("test_zvt_terminal", test_crc, test_program, test_tcp)
