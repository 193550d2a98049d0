#!/usr/bin/python3
"""Canteen consumption terminals (消费机) on one RS-485 line, speaking posbus's own framed
protocol (the reference: docs/canteen-protocol.md): tests use it in place of a row of
terminals, and the canteen driver is tested against it (docs: devices/sim/README.md).

Why it is built this way:

- One line, several terminals (addresses 1-32), like a real bus: every terminal sees every frame
  and only the one addressed answers; a frame for an address nobody here has is ignored (another
  terminal that is switched off). The line is the transport of simcore.py (a pty or TCP), the
  terminals are models (Terminal) without transport.
- The frame parser is the protocol's: ADDR CMD LEN DATA SUM XOR, a gap of more than
  INTER_BYTE_MS inside a frame throws the partial frame away, a byte that cannot start a frame
  (address 0 or over 32, LEN over 200) is skipped; a frame with a bad checksum addressed to one
  of ours is answered 0xAA (receive error). Every one of these is counted, so a test can compare
  the driver's counts with the line's.
- A terminal keeps what a real one keeps: its blocklist and version, its transaction sequence,
  the pending tap (reported to every poll until the host answers it) and the offline
  transactions not yet collected. A tap the host does not answer within the online wait is
  settled by the offline rule (approved when the amount is within the offline limit and the card
  is not blocklisted) and kept for collection; a late answer is refused with the verdict the
  terminal took. Amounts are integer fen throughout.
- Faults are scripted on the control socket: a terminal that stops answering for a while (or the
  whole line), replies with a bad checksum, garbage before the next reply, a burst of queued
  offline transactions, a restart (it reports "started" and wants the time again).

Run with Debian's /usr/bin/python3."""
import logging
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simcore  # noqa: E402

LOG = logging.getLogger("canteen_terminal")
LOG.addHandler(logging.NullHandler())  # a library is silent unless its user sets up logging

# ---- the protocol (docs/canteen-protocol.md) and defaults --------------------------------------
ADDR_MIN, ADDR_MAX = 1, 32
LEN_MAX = 200              # data bytes in one frame
INTER_BYTE_MS = 50         # a longer gap inside a frame ends it (resync)
READ_SIZE = 4096

CMD_POLL = 0x10
CMD_TIME = 0x20
CMD_PARAMS = 0x21
CMD_MEALS = 0x22
CMD_FEES = 0x23
CMD_BLOCKLIST = 0x30
CMD_ANSWER = 0x40
CMD_COLLECT = 0x50
CMD_ACK = 0x51

REP_STATUS = 0x11
REP_TAP = 0x12
REP_TXS = 0x13
REP_OK = 0x88
REP_FAILED = 0x99
REP_RECV_ERROR = 0xAA

FAIL_BAD_DATA = 1
FAIL_UNKNOWN_CMD = 2
FAIL_NOT_PENDING = 3
FAIL_SETTLED = 4

ST_STARTED = 0x01          # status flags
ST_OFFLINE_TX = 0x02

VERDICT_APPROVE, VERDICT_DECLINE = 1, 2
OP_ADD, OP_REMOVE, OP_CLEAR = 1, 2, 3

ONLINE_WAIT_MS = 3000      # defaults a terminal starts with (the host's params change them)
OFFLINE_MAX_FEN = 2000
TXS_PER_FRAME = 11         # 1 + 11 * 17 = 188 bytes
U32_MAX = 0xFFFFFFFF


def now_ms():
    return int(time.monotonic() * 1000)


def checksums(body):
    s = x = 0
    for b in body:
        s = (s + b) & 0xFF
        x ^= b
    return s, x


def frame(addr, cmd, data=b""):
    """ADDR CMD LEN DATA SUM XOR (the checksums over ADDR through the last data byte)."""
    if len(data) > LEN_MAX:
        raise ValueError("frame data over 200 bytes")
    body = bytes([addr, cmd, len(data)]) + bytes(data)
    return body + bytes(checksums(body))


class FrameParser:
    """The protocol's receiver: feed(data, t_ms) -> [(addr, cmd, data, ok)] for each complete
    frame (ok: the checksums match); bytes that cannot start a frame are skipped and counted
    (skipped_bytes, resyncs: runs of them), a partial frame older than INTER_BYTE_MS is thrown
    away (gaps)."""

    def __init__(self):
        self.buf = bytearray()
        self.last_ms = 0
        self.skipped_bytes = self.resyncs = self.gaps = 0
        self.skipping = False

    def feed(self, data, t_ms):
        if self.buf and t_ms - self.last_ms > INTER_BYTE_MS:
            self.gaps += 1
            self.buf = bytearray()
        self.last_ms = t_ms
        self.buf += data
        out = []
        while self.buf:
            b = self.buf
            if not ADDR_MIN <= b[0] <= ADDR_MAX or (len(b) >= 3 and b[2] > LEN_MAX):
                if not self.skipping:
                    self.resyncs += 1
                    self.skipping = True
                self.skipped_bytes += 1
                del b[0]
                continue
            if len(b) < 3 or len(b) < 5 + b[2]:
                break
            self.skipping = False
            n = b[2]
            body, tail = bytes(b[:3 + n]), bytes(b[3 + n:5 + n])
            del b[:5 + n]
            out.append((body[0], body[1], body[3:], bytes(checksums(body)) == tail))
        return out

    def reset(self):
        self.buf = bytearray()
        self.skipping = False


class Terminal:
    """One terminal without transport: handle(cmd, data) -> (reply cmd, reply data)."""

    def __init__(self, addr):
        self.addr = addr
        self.started = True          # reports ST_STARTED until the host sets the time
        self.clock = None            # (y, mo, d, h, mi, s) last set by the host
        self.online_wait_ms = ONLINE_WAIT_MS
        self.offline_max = OFFLINE_MAX_FEN
        self.meals = []              # [[id, start "HH:MM", end "HH:MM"]]
        self.fees = []               # [(meal, class, fen)]
        self.blocklist = set()
        self.blocklist_version = 0
        self.seq = 0                 # the last sequence number used
        self.pending = None          # {seq, card, amount, t_ms, ts}
        self.settled = {}            # seq -> "approved" | "declined" | "offline_approved" | ...
        self.offline = []            # [{seq, card, amount, ts}] not yet acked, in order
        self.text = ""               # the text of the last answer (what the display shows)
        self.silent_until = 0        # now_ms() before which it answers nothing (0: answers)
        self.silent = False          # answers nothing until told otherwise
        self.bad_checksum_next = 0   # replies still to send with a wrong checksum
        self.counts = dict(frames=0, polls=0, replies=0, unanswered=0, bad_checksums=0,
                           bad_replies_sent=0, taps=0, approved=0, declined=0,
                           offline_approved=0, offline_declined=0, late_answers=0,
                           collected=0, acked=0, time_set=0, params_set=0, meals_set=0,
                           fees_set=0, blocklist_frames=0)

    def answering(self):
        return not self.silent and now_ms() >= self.silent_until

    # -- the card side
    def tap(self, card, amount):
        if self.pending:
            raise ValueError(f"terminal {self.addr} is waiting for the answer to a tap")
        self.seq = (self.seq + 1) & U32_MAX
        self.pending = dict(seq=self.seq, card=card, amount=amount, t_ms=now_ms(),
                            ts=int(time.time()))
        self.counts["taps"] += 1
        LOG.info("terminal %d: tap card %d amount %d fen seq %d", self.addr, card, amount,
                 self.seq)
        return self.seq

    def expire(self):
        """The offline rule, once the online wait is over."""
        p = self.pending
        if not p or now_ms() - p["t_ms"] < self.online_wait_ms:
            return
        self.pending = None
        if p["amount"] <= self.offline_max and p["card"] not in self.blocklist:
            self.settled[p["seq"]] = "offline_approved"
            self.offline.append(dict(seq=p["seq"], card=p["card"], amount=p["amount"],
                                     ts=p["ts"]))
            self.offline.sort(key=lambda t: t["seq"])  # collected and acked in sequence order
            self.counts["offline_approved"] += 1
        else:
            self.settled[p["seq"]] = "offline_declined"
            self.counts["offline_declined"] += 1
        LOG.info("terminal %d: seq %d %s by the offline rule", self.addr, p["seq"],
                 self.settled[p["seq"]])

    def queue_offline(self, count, card, amount):
        """A burst of offline transactions taken while the host was away."""
        for _ in range(count):
            self.seq = (self.seq + 1) & U32_MAX
            self.offline.append(dict(seq=self.seq, card=card, amount=amount,
                                     ts=int(time.time())))
            self.settled[self.seq] = "offline_approved"
            self.counts["offline_approved"] += 1

    # -- the host's commands
    def status_data(self):
        flags = (ST_STARTED if self.started else 0) | (ST_OFFLINE_TX if self.offline else 0)
        return struct.pack(">BIIH", flags, self.blocklist_version, self.seq,
                           min(len(self.offline), 0xFFFF))

    def handle(self, cmd, data):
        self.counts["frames"] += 1
        try:
            return self._handle(cmd, data)
        except (struct.error, ValueError, IndexError):
            return REP_FAILED, bytes([FAIL_BAD_DATA])

    def _handle(self, cmd, data):
        if cmd == CMD_POLL:
            self.counts["polls"] += 1
            if self.pending:
                p = self.pending
                return REP_TAP, struct.pack(">III", p["seq"], p["card"], p["amount"])
            return REP_STATUS, self.status_data()
        if cmd == CMD_TIME:
            y, mo, d, h, mi, s = struct.unpack(">HBBBBB", data)
            self.clock, self.started = (y, mo, d, h, mi, s), False
            self.counts["time_set"] += 1
            return REP_OK, b""
        if cmd == CMD_PARAMS:
            wait, limit = struct.unpack(">HI", data)
            if not 1 <= wait <= 600:
                raise ValueError("online wait")
            self.online_wait_ms, self.offline_max = wait * 100, limit
            self.counts["params_set"] += 1
            return REP_OK, b""
        if cmd == CMD_MEALS:
            n = data[0]
            if len(data) != 1 + 5 * n:
                raise ValueError("length")
            meals = []
            for i in range(n):
                mid, h1, m1, h2, m2 = data[1 + 5 * i:6 + 5 * i]
                if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
                    raise ValueError("time")
                meals.append([mid, f"{h1:02d}:{m1:02d}", f"{h2:02d}:{m2:02d}"])
            self.meals = meals
            self.counts["meals_set"] += 1
            return REP_OK, b""
        if cmd == CMD_FEES:
            n = data[0]
            if len(data) != 1 + 6 * n:
                raise ValueError("length")
            self.fees = [list(struct.unpack(">BBI", data[1 + 6 * i:7 + 6 * i]))
                         for i in range(n)]
            self.counts["fees_set"] += 1
            return REP_OK, b""
        if cmd == CMD_BLOCKLIST:
            version, flags, n = struct.unpack(">IBB", data[:6])
            if len(data) != 6 + 5 * n:
                raise ValueError("length")
            ops = [struct.unpack(">BI", data[6 + 5 * i:11 + 5 * i]) for i in range(n)]
            if any(op not in (OP_ADD, OP_REMOVE, OP_CLEAR) for op, _ in ops):
                raise ValueError("op")
            self.counts["blocklist_frames"] += 1
            if version > self.blocklist_version:
                for op, card in ops:
                    if op == OP_ADD:
                        self.blocklist.add(card)
                    elif op == OP_REMOVE:
                        self.blocklist.discard(card)
                    else:
                        self.blocklist.clear()
                if flags & 0x01:
                    self.blocklist_version = version
            return REP_OK, struct.pack(">I", self.blocklist_version)
        if cmd == CMD_ANSWER:
            seq, verdict = struct.unpack(">IB", data[:5])
            if verdict not in (VERDICT_APPROVE, VERDICT_DECLINE) or len(data) > 5 + 32:
                raise ValueError("verdict")
            if self.pending and self.pending["seq"] == seq:
                self.pending = None
                result = "approved" if verdict == VERDICT_APPROVE else "declined"
                self.settled[seq] = result
                self.counts[result] += 1
                self.text = data[5:].decode("gb18030", "replace")
                return REP_OK, b""
            done = self.settled.get(seq)
            if done in ("offline_approved", "offline_declined"):
                self.counts["late_answers"] += 1
                v = VERDICT_APPROVE if done == "offline_approved" else VERDICT_DECLINE
                return REP_FAILED, bytes([FAIL_SETTLED, v])
            if done == ("approved" if verdict == VERDICT_APPROVE else "declined"):
                return REP_OK, b""  # the same answer again (its reply was lost)
            return REP_FAILED, bytes([FAIL_NOT_PENDING])
        if cmd == CMD_COLLECT:
            after, most = struct.unpack(">IB", data)
            most = max(1, min(most, TXS_PER_FRAME))
            txs = [t for t in self.offline if t["seq"] > after][:most]
            out = bytes([len(txs)])
            for t in txs:
                out += struct.pack(">IIIIB", t["seq"], t["card"], t["amount"], t["ts"], 1)
            self.counts["collected"] += len(txs)
            return REP_TXS, out
        if cmd == CMD_ACK:
            (upto,) = struct.unpack(">I", data)
            before = len(self.offline)
            self.offline = [t for t in self.offline if t["seq"] > upto]
            self.counts["acked"] += before - len(self.offline)
            return REP_OK, b""
        return REP_FAILED, bytes([FAIL_UNKNOWN_CMD])

    def status(self):
        return {"addr": self.addr, "started": self.started, "clock": self.clock,
                "online_wait_ms": self.online_wait_ms, "offline_max": self.offline_max,
                "meals": self.meals, "fees": [list(f) for f in self.fees],
                "blocklist": sorted(self.blocklist), "blocklist_version": self.blocklist_version,
                "seq": self.seq, "pending": self.pending and {k: v for k, v in
                                                              self.pending.items()
                                                              if k != "t_ms"},
                "settled": {str(k): v for k, v in self.settled.items()},
                "offline": list(self.offline), "text": self.text, "answering": self.answering(),
                **self.counts}


class Simulator(simcore.Simulator):
    """The line with its terminals (simcore.Simulator): frames from the host go to the terminal
    addressed; its reply goes out at once (or after reply_delay_ms)."""
    read_size = READ_SIZE

    def __init__(self, pty=None, tcp=None, control=None, terminals=(1,)):
        terminals = list(terminals)
        if not terminals or any(not ADDR_MIN <= a <= ADDR_MAX for a in terminals) or \
                len(set(terminals)) != len(terminals):
            raise ValueError("terminals: distinct addresses from 1 to 32")
        super().__init__(pty, tcp, control, LOG)
        self.terms = {a: Terminal(a) for a in terminals}
        self.parser = FrameParser()
        self.bytes_received = 0
        self.frames_other = 0        # well-formed frames for an address not on this line
        self.bad_checksums = 0       # frames from the host with a bad checksum
        self.before_reply = b""      # garbage sent just before the next reply
        self.garbage_sent = 0        # every garbage byte sent (now or before a reply)
        self.line_down_until = 0     # nobody answers before this now_ms()

    def ready_note(self):
        return ", terminals " + ",".join(str(a) for a in self.terms)

    def log_stopped(self):
        LOG.info("stopped: %d bytes received, %d bad checksums", self.bytes_received,
                 self.bad_checksums)

    def timeout(self):
        return 0.05 if any(t.pending for t in self.terms.values()) else simcore.LOOP_TICK

    def after_select(self, writable):
        for t in self.terms.values():
            t.expire()

    def connection_lost(self):
        self.parser.reset()

    def received(self, data):
        self.bytes_received += len(data)
        for addr, cmd, body, ok in self.parser.feed(data, now_ms()):
            t = self.terms.get(addr)
            if t is None:
                self.frames_other += 1
                continue
            t.expire()
            if not ok:
                self.bad_checksums += 1
                t.counts["bad_checksums"] += 1
            if not t.answering() or now_ms() < self.line_down_until:
                t.counts["unanswered"] += 1
                continue
            rcmd, rdata = t.handle(cmd, body) if ok else (REP_RECV_ERROR, b"")
            out = frame(addr, rcmd, rdata)
            if t.bad_checksum_next:
                t.bad_checksum_next -= 1
                t.counts["bad_replies_sent"] += 1
                out = out[:-1] + bytes([out[-1] ^ 0x5A])
            t.counts["replies"] += 1
            self.send(self.before_reply + out)
            self.before_reply = b""

    # -- control
    def term(self, req):
        a = req.get("terminal")
        if a not in self.terms:
            raise ValueError(f"no terminal {a!r} on this line")
        return self.terms[a]

    @staticmethod
    def _int(req, name, lo=0, hi=U32_MAX):
        v = req[name]
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ValueError(f"{name} must be an integer from {lo} to {hi}")
        return v

    def status(self):
        return {"ok": True, "terminals": {str(a): t.status() for a, t in self.terms.items()},
                "bytes_received": self.bytes_received, "frames_other": self.frames_other,
                "bad_checksums": self.bad_checksums, "resyncs": self.parser.resyncs,
                "skipped_bytes": self.parser.skipped_bytes, "gaps": self.parser.gaps,
                "garbage_sent": self.garbage_sent,
                "line_down": now_ms() < self.line_down_until, **self.transport_status()}

    def command(self, req):
        """The line's control commands; disconnect, garbage (now) and quit are simcore's."""
        cmd = req.get("cmd")
        if cmd == "status":
            return self.status()
        if cmd == "tap":
            seq = self.term(req).tap(self._int(req, "card"), self._int(req, "amount"))
            self.log_control(req)
            return {"ok": True, "seq": seq}
        if cmd == "offline":
            # {terminal: N or 0 (the whole line), ms: N (for a while) | on: bool}
            targets = list(self.terms.values()) if req.get("terminal") == 0 else [self.term(req)]
            if "ms" in req:
                until = now_ms() + self._int(req, "ms", 0, 600000)
                if req.get("terminal") == 0:
                    self.line_down_until = until
                else:
                    targets[0].silent_until = until
            else:
                for t in targets:
                    t.silent = bool(req["on"])
        elif cmd == "bad_checksum":
            self.term(req).bad_checksum_next += self._int(req, "count", 1, 1000)
        elif cmd == "queue_offline":
            self.term(req).queue_offline(self._int(req, "count", 1, 1000),
                                         self._int(req, "card"), self._int(req, "amount"))
        elif cmd == "blocklist_version":
            self.term(req).blocklist_version = self._int(req, "version")
        elif cmd == "restart":
            t = self.term(req)
            t.started, t.pending = True, None
        elif cmd == "garbage":
            data = bytes.fromhex(req["bytes"])
            if req.get("next_reply"):
                self.before_reply += data
                self.garbage_sent += len(data)
                self.log_control(req)
                return {"ok": True}
            answer = super().command(req)
            if answer.get("ok"):
                self.garbage_sent += len(data)
            return answer
        else:
            return super().command(req)
        self.log_control(req)
        return {"ok": True}


class CanteenLine(simcore.Threaded):
    """The simulator on a thread of the calling process (tests):

        line = CanteenLine(pty="/tmp/x/canteen", terminals=(1, 2))   # or tcp="127.0.0.1:0"
        line.start(); seq = line.tap(1, card=12345, amount=1250)["seq"]; ...; line.stop()

    Every control command is a method: status(), tap(terminal, card, amount),
    offline(terminal, ms=N | on=bool) (terminal 0: the whole line, ms only),
    bad_checksum(terminal, count), queue_offline(terminal, count, card, amount),
    blocklist_version(terminal, version), restart(terminal), garbage(data, next_reply),
    disconnect(); command(dict) takes the control channel's JSON form."""
    name = "canteen_terminal"

    def __init__(self, pty=None, tcp=None, control=None, terminals=(1,)):
        super().__init__(Simulator(pty, tcp, control, terminals))

    def status(self):
        return self.command({"cmd": "status"})

    def terminal(self, addr):
        return self.status()["terminals"][str(addr)]

    def tap(self, terminal, card, amount):
        return self.command({"cmd": "tap", "terminal": terminal, "card": card,
                             "amount": amount})

    def offline(self, terminal, **kw):
        return self.command({"cmd": "offline", "terminal": terminal, **kw})

    def bad_checksum(self, terminal, count=1):
        return self.command({"cmd": "bad_checksum", "terminal": terminal, "count": count})

    def queue_offline(self, terminal, count, card, amount):
        return self.command({"cmd": "queue_offline", "terminal": terminal, "count": count,
                             "card": card, "amount": amount})

    def blocklist_version(self, terminal, version):
        return self.command({"cmd": "blocklist_version", "terminal": terminal,
                             "version": version})

    def restart(self, terminal):
        return self.command({"cmd": "restart", "terminal": terminal})

    def garbage(self, data, next_reply=False):
        return self.command({"cmd": "garbage", "bytes": bytes(data).hex(),
                             "next_reply": next_reply})


def main(argv=None):
    ap = simcore.parser("canteen consumption terminals on one line (devices/sim/README.md)")
    ap.add_argument("--terminals", default="1",
                    help="the terminals' addresses, comma-separated (default 1)")

    def make(args):
        try:
            addrs = [int(a) for a in args.terminals.split(",")]
        except ValueError:
            raise ValueError("--terminals: addresses like 1,2")
        return Simulator(args.pty, args.tcp, args.control, addrs)
    return simcore.main("canteen_terminal", ap, make, LOG, argv)


if __name__ == "__main__":
    sys.exit(main())
