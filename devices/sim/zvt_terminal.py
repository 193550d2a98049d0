#!/usr/bin/python3
"""A ZVT card terminal simulator: tests and `make demo` use it in place of a card terminal, and
the zvt driver is tested against it, so it speaks the real byte protocol (docs:
devices/sim/README.md; protocol summary: section 4 of protocols.md).

Why it is built this way:

- Two layers, as in ZVT. The link layer (serial: DLE STX APDU DLE ETX CRC-lo CRC-hi, DLE
  doubled, CRC-16/KERMIT over the unstuffed APDU and ETX, every frame answered ACK 06 or NAK 15,
  a frame resent after a NAK or a missing ACK at most twice; TCP: the bare APDU) moves APDUs.
  The terminal (Terminal) takes APDUs and produces a script of APDUs for the dialogue.
- The dialogue is the terminal as master: after the command's 80 00 00 it sends each message
  (04 FF intermediate status, 04 0F status, 06 D1 print line, 06 0F completion / 06 1E abort)
  only after the ECR answered the previous one with 80 00 00, each after its delay (slow mode
  spreads the statuses over seconds).
- Faults are one-shot and named after what a driver must survive: lost_ack (the next frame
  from the ECR is dropped unanswered, so only a resend gets through), nak (the next frame is
  NAKed once), bad_crc (the next frame the terminal sends carries a wrong CRC; a NAK makes it
  send it again, correctly), lost_answer (the next authorization is booked, then the terminal
  says nothing more: no 04 0F, no 06 0F). A later repeat receipt (06 20) answers the last
  transaction's 04 0F again, so an ECR can find out what happened without charging twice.
- The transport, the control socket, the loop and the thread runner are simcore.py's (one
  thread, one select() loop; all state is touched only by that thread); this module keeps the
  link layer (Simulator) and the terminal (Terminal). The loop wakes every LOOP_TICK to send
  what is due: a resend after a missing ACK, the dialogue's next message.

Run with Debian's /usr/bin/python3."""
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simcore  # noqa: E402

LOG = logging.getLogger("zvt_terminal")
LOG.addHandler(logging.NullHandler())

# ---- defaults and limits ------------------------------------------------------------------
READ_SIZE = 4096
LOOP_TICK = 0.1            # seconds select() waits when nothing happens
ACK_TIMEOUT = 2.0          # seconds the terminal waits for the ECR's ACK before resending
RETRIES = 2                # resends of one frame
STEP_DELAY = 0.05          # seconds between the messages of a normal dialogue
SLOW_SECONDS = 3.0         # slow mode: the intermediate statuses spread over this
APDU_MAX = 65535
TRACE_FIRST, RECEIPT_FIRST = 100, 1
TERMINAL_ID = 12345678
CARD_NAME = b"Girocard"

DLE, STX, ETX, ACK, NAK = 0x10, 0x02, 0x03, 0x06, 0x15
RC_APPROVED, RC_DECLINED, RC_NOT_POSSIBLE, RC_NO_TRANSACTION = 0x00, 0x05, 0x83, 0xFF
TX_MODES = ("approve", "decline", "slow", "lost_answer", "partial")
LINK_MODES = ("lost_ack", "nak", "bad_crc", "ack_lost")


def crc16(data, crc=0):
    """CRC-16/KERMIT: reflected polynomial 0x8408, initial value 0, no final xor."""
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def frame(apdu, bad_crc=False):
    """The serial frame of an APDU (optionally with a wrong CRC)."""
    crc = crc16(bytes(apdu) + bytes([ETX]))
    if bad_crc:
        crc ^= 0xFFFF
    return (bytes([DLE, STX]) + bytes(apdu).replace(b"\x10", b"\x10\x10") +
            bytes([DLE, ETX, crc & 0xFF, crc >> 8]))


def apdu(cls, ins, data=b""):
    data = bytes(data)
    if len(data) < 0xFF:
        return bytes([cls, ins, len(data)]) + data
    return bytes([cls, ins, 0xFF, len(data) & 0xFF, len(data) >> 8]) + data


def bcd(value, nbytes):
    digits = f"{value:0{2 * nbytes}d}"
    if len(digits) > 2 * nbytes:
        raise ValueError(f"{value} does not fit {nbytes} BCD bytes")
    return bytes.fromhex(digits)


def unbcd(data):
    return int(bytes(data).hex())


def apdu_data(a):
    return a[5:] if len(a) >= 5 and a[2] == 0xFF else a[3:]


class Parser:
    """Bytes in any chunks -> units: ("ack",), ("nak",), ("frame", apdu), ("bad", apdu); for TCP
    only ("frame", apdu). Noise between frames is counted and skipped."""

    def __init__(self, tcp):
        self.tcp = tcp
        self.state = "idle"
        self.buf = bytearray()
        self.crc = bytearray()
        self.noise = 0

    def feed(self, data):
        out = []
        for b in data:
            u = self._tcp(b) if self.tcp else self._serial(b)
            if u:
                out.append(u)
        return out

    def _tcp(self, b):
        self.buf.append(b)
        need = None
        if len(self.buf) >= 3 and self.buf[2] != 0xFF:
            need = 3 + self.buf[2]
        elif len(self.buf) >= 5:
            need = 5 + (self.buf[3] | self.buf[4] << 8)
        if need is not None and len(self.buf) == need:
            a, self.buf = bytes(self.buf), bytearray()
            return ("frame", a)
        return None

    def _serial(self, b):
        s = self.state
        if s == "idle":
            if b == ACK:
                return ("ack",)
            if b == NAK:
                return ("nak",)
            if b == DLE:
                self.state = "dle"
            else:
                self.noise += 1
        elif s == "dle":
            self.state = "data" if b == STX else "idle"
            self.buf = bytearray()
        elif s == "data":
            if b == DLE:
                self.state = "data_dle"
            elif len(self.buf) < APDU_MAX:
                self.buf.append(b)
            else:
                self.state = "idle"
        elif s == "data_dle":
            if b == DLE:
                self.buf.append(b)
                self.state = "data"
            elif b == ETX:
                self.state, self.crc = "crc", bytearray()
            elif b == STX:
                self.buf = bytearray()
                self.state = "data"
            else:
                self.state = "idle"
        elif s == "crc":
            self.crc.append(b)
            if len(self.crc) == 2:
                self.state = "idle"
                a = bytes(self.buf)
                good = crc16(a + bytes([ETX])) == (self.crc[0] | self.crc[1] << 8)
                return ("frame" if good and len(a) >= 3 else "bad", a)
        return None


class Terminal:
    """The terminal without transport. receive(apdu) from the ECR -> it queues its messages in
    script [(delay s, apdu)]; the link layer sends script[0] when the ECR answered the
    previous one (waiting_ecr False) and its delay has passed."""

    def __init__(self):
        self.next_tx = "approve"
        self.slow_seconds = SLOW_SECONDS
        self.partial_limit = 0   # "partial": the most the next authorization approves (fen)
        self.transactions = []   # {trace, amount, receipt, state, kind}
        self.trace = TRACE_FIRST
        self.receipt = RECEIPT_FIRST
        self.script = []         # [(delay, apdu)]
        self.waiting_ecr = False
        self.ready_at = 0.0      # when the last message was answered (delays count from it)
        self.commands = {}       # "06 01" -> count
        self.ecr_acks = self.ecr_negative = 0
        self.registered = False
        self.end_of_days = 0
        self.eod_from = 0        # transactions before this index were in an end of day
        self.eod_totals = []     # what each end of day reported

    def status_data(self, tx, rc=RC_APPROVED):
        now = time.localtime()
        return (bytes([0x27, rc]) + b"\x04" + bcd(tx["amount"], 6) + b"\x0b" + bcd(tx["trace"], 3) +
                b"\x87" + bcd(tx["receipt"], 2) +
                b"\x0c" + bcd(now.tm_hour * 10000 + now.tm_min * 100 + now.tm_sec, 3) +
                b"\x0d" + bcd(now.tm_mon * 100 + now.tm_mday, 2) + b"\x29" + bcd(TERMINAL_ID, 4) +
                b"\x8b" + bytes([0xF0 | len(CARD_NAME) // 10, 0xF0 | len(CARD_NAME) % 10]) +
                CARD_NAME)

    @staticmethod
    def print_line(text):
        return apdu(0x06, 0xD1, b"\x00" + text.encode())

    def _book(self, kind, amount, state):
        tx = {"kind": kind, "amount": amount, "trace": self.trace, "receipt": self.receipt,
              "state": state}
        self.trace += 1
        self.receipt += 1
        self.transactions.append(tx)
        return tx

    def _say(self, *steps):
        """Queue the dialogue after 80 00 00: steps of (delay, apdu)."""
        self.script = list(steps)
        self.waiting_ecr = False
        self.ready_at = time.monotonic()

    def receive(self, a):
        """One APDU from the ECR; returns the immediate answer APDU (or None)."""
        cls, ins = a[0], a[1]
        d = apdu_data(a)
        if cls in (0x80, 0x84):
            if self.waiting_ecr:
                self.waiting_ecr = False
                self.ready_at = time.monotonic()
            if cls == 0x80:
                self.ecr_acks += 1
            else:
                self.ecr_negative += 1
            return None
        name = f"{cls:02X} {ins:02X}"
        self.commands[name] = self.commands.get(name, 0) + 1
        LOG.info("command %s (%d bytes of data)", name, len(d))
        ok = apdu(0x80, 0x00)
        if (cls, ins) == (0x06, 0x01):
            if len(d) < 7 or d[0] != 0x04:
                return apdu(0x84, RC_NOT_POSSIBLE)
            self._authorize(unbcd(d[1:7]))
        elif (cls, ins) == (0x06, 0x00):
            self.registered = True
            self._say((STEP_DELAY, apdu(0x06, 0x0F)))
        elif (cls, ins) == (0x06, 0x20):
            if not self.transactions:
                self._say((STEP_DELAY, apdu(0x06, 0x1E, bytes([RC_NO_TRANSACTION]))))
            else:
                tx = self.transactions[-1]
                rc = RC_APPROVED if tx["state"] != "declined" else RC_DECLINED
                self._say((STEP_DELAY, apdu(0x04, 0x0F, self.status_data(tx, rc))),
                          (STEP_DELAY, self.print_line("** COPY **")),
                          (STEP_DELAY, apdu(0x06, 0x0F if rc == RC_APPROVED else 0x1E,
                                            b"" if rc == RC_APPROVED else bytes([rc]))))
        elif (cls, ins) == (0x06, 0x30):
            receipt = unbcd(d[4:6]) if len(d) >= 6 and d[3] == 0x87 else -1
            found = [t for t in self.transactions
                     if t["receipt"] == receipt and t["kind"] == "authorize" and
                     t["state"] == "approved"]
            if not found:
                self._say((STEP_DELAY, apdu(0x06, 0x1E, bytes([RC_NOT_POSSIBLE]))))
            else:
                found[0]["state"] = "reversed"
                tx = self._book("reversal", found[0]["amount"], "approved")
                self._say((STEP_DELAY, apdu(0x04, 0x0F, self.status_data(tx))),
                          (STEP_DELAY, self.print_line("REVERSAL")),
                          (STEP_DELAY, apdu(0x06, 0x0F)))
        elif (cls, ins) == (0x06, 0x31):
            if len(d) < 10 or d[3] != 0x04:
                return apdu(0x84, RC_NOT_POSSIBLE)
            tx = self._book("refund", unbcd(d[4:10]), "approved")
            self._say((STEP_DELAY, apdu(0x04, 0x0F, self.status_data(tx))),
                      (STEP_DELAY, self.print_line("REFUND")), (STEP_DELAY, apdu(0x06, 0x0F)))
        elif (cls, ins) == (0x06, 0x50):
            # end of day: the net of what was booked since the last one (authorizations still
            # approved, less refunds), as the status (04 0F: result 00, amount) and a print line;
            # then the totals start again
            self.end_of_days += 1
            since = self.transactions[self.eod_from:]
            total = sum(t["amount"] for t in since
                        if t["kind"] == "authorize" and t["state"] == "approved") - \
                sum(t["amount"] for t in since if t["kind"] == "refund")
            self.eod_from = len(self.transactions)
            self.eod_totals.append(total)
            self._say((STEP_DELAY, apdu(0x04, 0x0F, bytes([0x27, RC_APPROVED]) + b"\x04" +
                                        bcd(max(total, 0), 6))),
                      (STEP_DELAY, self.print_line(f"END OF DAY TOTAL {total}")),
                      (STEP_DELAY, apdu(0x06, 0x0F)))
        else:
            return apdu(0x84, RC_NOT_POSSIBLE)
        return ok

    def _authorize(self, amount):
        mode, self.next_tx = self.next_tx, "approve"
        statuses = [0x0A, 0x01, 0x0E]
        gap = self.slow_seconds / len(statuses) if mode == "slow" else STEP_DELAY
        steps = [(gap, apdu(0x04, 0xFF, bytes([s]))) for s in statuses]
        if mode == "decline":
            tx = self._book("authorize", amount, "declined")
            steps += [(STEP_DELAY, apdu(0x04, 0x0F, self.status_data(tx, RC_DECLINED))),
                      (STEP_DELAY, self.print_line("DECLINED")),
                      (STEP_DELAY, apdu(0x06, 0x1E, bytes([RC_DECLINED])))]
        elif mode == "lost_answer":
            self._book("authorize", amount, "approved")
            steps = steps[:2]  # then silence: booked, never told
        else:
            if mode == "partial":  # a partial approval: the status tells the amount approved
                amount = min(amount, self.partial_limit)
            tx = self._book("authorize", amount, "approved")
            steps += [(STEP_DELAY, apdu(0x04, 0x0F, self.status_data(tx))),
                      (STEP_DELAY, self.print_line("AUTHORIZATION")),
                      (STEP_DELAY, self.print_line(f"AMOUNT {amount // 100}.{amount % 100:02d}")),
                      (STEP_DELAY, apdu(0x06, 0x0F))]
        self._say(*steps)


class Simulator(simcore.Simulator):
    """One terminal on a pty or a TCP port, with an optional control socket (simcore.Simulator):
    the link layer (frames, ACK/NAK, resends) over the transport, the Terminal behind it."""
    read_size = READ_SIZE

    def __init__(self, pty=None, tcp=None, control=None):
        super().__init__(pty, tcp, control, LOG)
        self.terminal = Terminal()
        self.parser = Parser(tcp is not None)
        self.link_fault = None
        # link layer state
        self.outq = []            # APDUs to send, in order (immediate answers)
        self.unacked = None       # (apdu, tries, deadline) awaiting the ECR's ACK
        self.stats = {"frames_received": 0, "frames_bad_crc": 0, "frames_dropped": 0,
                      "frames_sent": 0, "acks_lost": 0, "naks_sent": 0, "naks_received": 0, "acks_sent": 0,
                      "acks_received": 0, "resends": 0, "bytes_received": 0}
        self.apdus = []           # every APDU both ways: ("ecr"|"terminal", hex)

    def log_stopped(self):
        LOG.info("stopped: %d transactions", len(self.terminal.transactions))

    def timeout(self):
        return LOOP_TICK          # resends and the dialogue's delays are due in steps of this

    def after_select(self, writable):
        self._tick()

    def received(self, data):
        self._receive(data)

    def connection_lost(self):
        """A TCP client gone or a pty replaced: the next host starts on a clean link and no
        dialogue. (A new TCP client needs no reset of its own: nothing touches the link state
        while no host is connected.)"""
        self._reset_link()

    def _reset_link(self):
        self.parser = Parser(self.tcp is not None)
        self.outq, self.unacked = [], None
        self.terminal.script, self.terminal.waiting_ecr = [], False

    # -- the link layer
    def _receive(self, data):
        self.stats["bytes_received"] += len(data)
        for unit in self.parser.feed(data):
            kind = unit[0]
            if kind == "ack":
                self.stats["acks_received"] += 1
                if self.unacked is not None:
                    self.unacked = None
            elif kind == "nak":
                self.stats["naks_received"] += 1
                if self.unacked is not None:
                    self._resend()
            elif kind == "bad":
                self.stats["frames_bad_crc"] += 1
                self.stats["naks_sent"] += 1
                self.send(bytes([NAK]))
            else:
                self._frame(unit[1])
        self._tick()

    def _frame(self, a):
        if not self.tcp:
            if self.link_fault == "lost_ack":
                self.link_fault = None
                self.stats["frames_dropped"] += 1
                LOG.info("lost_ack: frame %s dropped", a.hex())
                return
            if self.link_fault == "ack_lost":  # taken, but the ACK never reaches the ECR
                self.link_fault = None
                self.stats["acks_lost"] += 1
            elif self.link_fault == "nak":
                self.link_fault = None
                self.stats["naks_sent"] += 1
                self.send(bytes([NAK]))
                return
            else:
                self.stats["acks_sent"] += 1
                self.send(bytes([ACK]))
        self.stats["frames_received"] += 1
        self.apdus.append(("ecr", a.hex()))
        answer = self.terminal.receive(a)
        if answer is not None:
            self.outq.append(answer)

    def _transmit(self, a, tries):
        bad = self.link_fault == "bad_crc" and not self.tcp
        if bad:
            self.link_fault = None
        self.apdus.append(("terminal", a.hex()))
        self.send(a if self.tcp else frame(a, bad_crc=bad))
        self.stats["frames_sent"] += 1
        if not self.tcp:
            self.unacked = (a, tries, time.monotonic() + ACK_TIMEOUT)

    def _resend(self):
        a, tries, _ = self.unacked
        self.unacked = None
        if tries >= RETRIES:
            LOG.warning("frame %s not acknowledged after %d resends: dropped", a.hex(), tries)
            self.terminal.script, self.terminal.waiting_ecr = [], False
            return
        self.stats["resends"] += 1
        self._transmit(a, tries + 1)

    def _tick(self):
        if self.host() is None:
            return
        now = time.monotonic()
        if self.unacked is not None:
            if now >= self.unacked[2]:
                self._resend()
            return
        if self.outq:
            self._transmit(self.outq.pop(0), 0)
            return
        t = self.terminal
        if t.script and not t.waiting_ecr and now >= t.ready_at + t.script[0][0]:
            a = t.script.pop(0)[1]
            t.waiting_ecr = True
            self._transmit(a, 0)

    # -- control
    def status(self):
        t = self.terminal
        return {"ok": True, "transactions": [dict(x) for x in t.transactions],
                **self.stats, "noise_bytes": self.parser.noise, "commands": dict(t.commands),
                "ecr_acks": t.ecr_acks, "ecr_negative": t.ecr_negative,
                "registered": t.registered, "end_of_days": t.end_of_days,
                "eod_totals": list(t.eod_totals),
                "next": t.next_tx, "link_fault": self.link_fault,
                "in_dialogue": bool(t.script or t.waiting_ecr),
                **self.transport_status()}

    def command(self, req):
        """The terminal's control commands; disconnect, garbage and quit are simcore's."""
        cmd = req.get("cmd")
        if cmd == "status":
            return self.status()
        if cmd == "log":
            return {"ok": True, "apdus": [list(x) for x in self.apdus]}
        if cmd == "mode":
            nxt = req["next"]
            if nxt in TX_MODES:
                self.terminal.next_tx = nxt
                if "seconds" in req:
                    s = req["seconds"]
                    if not isinstance(s, (int, float)) or isinstance(s, bool) or not 0 <= s <= 600:
                        raise ValueError("seconds must be a number from 0 to 600")
                    self.terminal.slow_seconds = float(s)
                if nxt == "partial":
                    a = req.get("amount")
                    if not isinstance(a, int) or isinstance(a, bool) or not 0 < a < 10**12:
                        raise ValueError("partial needs amount: the fen approved, 1 or more")
                    self.terminal.partial_limit = a
            elif nxt in LINK_MODES:
                self.link_fault = nxt
            else:
                raise ValueError(f"next must be one of {', '.join(TX_MODES + LINK_MODES)}")
        elif cmd == "send":  # an APDU of our own (tests): framed on serial
            a = bytes.fromhex(req["apdu"])
            self.send(a if self.tcp else frame(a, bad_crc=bool(req.get("bad_crc"))))
        else:
            return super().command(req)
        self.log_control(req)
        return {"ok": True}


class ZvtTerminal(simcore.Threaded):
    """The simulator on a thread of the calling process (tests):

        t = ZvtTerminal(pty="/tmp/x/zvt")   # or tcp="127.0.0.1:0"
        t.start(); t.mode("decline"); ...t.status()...; t.stop()

    Every control command is a method: status(), mode(next, **kw), disconnect(), garbage(data),
    and command(dict) takes the control channel's JSON form."""
    name = "zvt_terminal"

    def __init__(self, pty=None, tcp=None, control=None):
        super().__init__(Simulator(pty, tcp, control))

    def status(self):
        return self.command({"cmd": "status"})

    def mode(self, nxt, **kw):
        return self.command({"cmd": "mode", "next": nxt, **kw})


def main(argv=None):
    ap = simcore.parser("ZVT card terminal simulator (devices/sim/README.md)")
    return simcore.main("zvt_terminal", ap,
                        lambda args: Simulator(args.pty, args.tcp, args.control), LOG, argv)


if __name__ == "__main__":
    sys.exit(main())
