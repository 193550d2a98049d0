#!/usr/bin/python3
"""A Mettler Toledo 8217 scale simulator: tests and `make demo` use it in place of a checkout
scale, and the toledo8217 driver is tested against it, so it speaks the real byte protocol
(docs: devices/sim/README.md; protocol summary: section 5 of docs/protocols.md).

Why it is built this way:

- The scale is a model (Model) without transport: receive(bytes) takes the host's bytes in any
  chunks and returns the reply bytes. Each command is one byte (W weigh, Z zero, T tare, C clear
  tare; CR and LF after it are ignored, anything else is counted as unknown), so a command can
  never be split across reads. Bit 7 of every byte is dropped: the line is 7 data bits with even
  parity, and a pty passes 8 (the parity is not visible on a pty: there are just bytes).
- W answers STX weight CR (kg with 3 decimals, "01.234") only while the scale is at rest, not
  overloaded and not under zero; otherwise STX '?' status CR, the status byte's bits 0 moving,
  1 over capacity, 2 negative, 3 outside zero range, 4 centre of zero, 5 net, with bit 6 set as
  on the real scale (so the byte is printable and never STX or CR). So a moving or overloaded
  scale never shows a weight: the rule a sale depends on is the protocol's, not the driver's.
- The weight is integer grams everywhere (the load on the platter, the zero offset, the tare);
  no floating point touches it.
- Z, T and C are not answered (the host asks W to see their effect). Z is refused while the
  scale moves or is overloaded, and for a load outside the zero range (2% of capacity from the
  load at power-up), which also sets the "outside zero range" bit until the next accepted Z; T
  is refused unless the scale is at rest with a positive weight. Refusals are counted.
- The transport, the control socket, the loop and the thread runner are simcore.py's (one
  thread, one select() loop; all state is touched only by that thread). Replies may be held
  back (reply_delay_ms) or cut in two (split_ms) to test a driver's reading; timed output is
  kept in a list the loop flushes. Garbage can be sent at once or just before the next reply,
  where it meets the driver's reply parser for sure.

Run with Debian's /usr/bin/python3."""
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simcore  # noqa: E402

LOG = logging.getLogger("scale_8217")
LOG.addHandler(logging.NullHandler())  # a library is silent unless its user sets up logging

# ---- defaults and limits (one table; the CLI help reads from it) ------------------------------
CAPACITY_G = 15000        # over this (above zero) the scale is overloaded
ZERO_RANGE_PERCENT = 2    # Z is accepted within this share of capacity around power-up zero
READ_SIZE = 4096          # bytes read from the host at a time (commands are one byte)

STX, CR, LF = 0x02, 0x0D, 0x0A
ST_MOVING = 0x01
ST_OVER = 0x02
ST_NEGATIVE = 0x04
ST_OUTSIDE_ZERO = 0x08
ST_CENTRE_ZERO = 0x10
ST_NET = 0x20
ST_FIXED = 0x40


def now_ms():
    return int(time.monotonic() * 1000)


def weight_reply(grams):
    """STX kg.ggg CR for a weight in integer grams (at least two integer digits, like "01.234")."""
    return bytes([STX]) + b"%02d.%03d" % divmod(grams, 1000) + bytes([CR])


def status_reply(bits):
    return bytes([STX, ord("?"), ST_FIXED | (bits & 0x3F), CR])


class Model:
    """The scale without transport. receive(data) -> reply bytes."""

    def __init__(self, capacity=CAPACITY_G):
        self.capacity = capacity
        self.grams = 0           # the load on the platter
        self.zero = 0            # the zero offset (Z)
        self.tare = 0            # the tare (T), 0 = none
        self.moving = False      # moving until set otherwise
        self.moving_until = 0    # now_ms() before which it moves (moving_for_ms)
        self.overload = False    # forced overload (also over capacity by weight)
        self.negative = False    # forced under zero (also by weight)
        self.outside_zero = False
        self.requests = 0        # every command byte
        self.weigh_requests = self.zero_requests = 0
        self.tare_requests = self.clear_tare_requests = 0
        self.zero_refused = self.tare_refused = 0
        self.unknown_bytes = 0
        self.bytes_received = 0
        self.weights_sent = self.statuses_sent = 0

    # -- what the scale shows
    def is_moving(self):
        return self.moving or now_ms() < self.moving_until

    def gross(self):
        return self.grams - self.zero

    def shown(self):
        return self.gross() - self.tare

    def status_bits(self):
        bits = 0
        if self.is_moving():
            bits |= ST_MOVING
        if self.overload or self.gross() > self.capacity:
            bits |= ST_OVER
        if self.negative or self.shown() < 0:
            bits |= ST_NEGATIVE
        if self.outside_zero:
            bits |= ST_OUTSIDE_ZERO
        if self.shown() == 0 and not bits & ST_MOVING:
            bits |= ST_CENTRE_ZERO
        if self.tare:
            bits |= ST_NET
        return bits

    def weigh(self):
        bits = self.status_bits()
        if bits & (ST_MOVING | ST_OVER | ST_NEGATIVE):
            self.statuses_sent += 1
            return status_reply(bits)
        self.weights_sent += 1
        return weight_reply(self.shown())

    # -- the host's bytes
    def receive(self, data):
        self.bytes_received += len(data)
        out = bytearray()
        for b in data:
            c = b & 0x7F
            if c in (CR, LF):
                continue
            self.requests += 1
            if c == ord("W"):
                self.weigh_requests += 1
                out += self.weigh()
            elif c == ord("Z"):
                self.zero_requests += 1
                self._zero()
            elif c == ord("T"):
                self.tare_requests += 1
                self._tare()
            elif c == ord("C"):
                self.clear_tare_requests += 1
                self.tare = 0
            else:
                self.requests -= 1
                self.unknown_bytes += 1
                LOG.debug("unknown byte 0x%02x", b)
        return bytes(out)

    def _zero(self):
        bits = self.status_bits()
        if bits & (ST_MOVING | ST_OVER) or \
                abs(self.grams) * 100 > self.capacity * ZERO_RANGE_PERCENT:
            self.zero_refused += 1
            self.outside_zero = not bits & (ST_MOVING | ST_OVER)
            LOG.info("zero refused: %s", "moving or overloaded" if bits & (ST_MOVING | ST_OVER)
                     else f"{self.grams} g is outside the zero range")
            return
        self.zero, self.tare, self.outside_zero = self.grams, 0, False
        LOG.info("zeroed at %d g", self.grams)

    def _tare(self):
        if self.status_bits() & (ST_MOVING | ST_OVER | ST_NEGATIVE) or self.shown() <= 0:
            self.tare_refused += 1
            LOG.info("tare refused: the scale is not at rest with a positive weight")
            return
        self.tare = self.gross()
        LOG.info("tare %d g", self.tare)

    def set(self, req):
        """The control command set: any of grams, moving, moving_for_ms, overload, negative."""
        if "grams" in req:
            g = req["grams"]
            if not isinstance(g, int) or isinstance(g, bool):
                raise ValueError("grams must be an integer")
            self.grams = g
        for flag in ("moving", "overload", "negative"):
            if flag in req:
                if not isinstance(req[flag], bool):
                    raise ValueError(f"{flag} must be true or false")
                setattr(self, flag, req[flag])
        if "moving_for_ms" in req:
            ms = req["moving_for_ms"]
            if not isinstance(ms, int) or isinstance(ms, bool) or ms < 0:
                raise ValueError("moving_for_ms must be an integer, 0 or more")
            self.moving_until = now_ms() + ms
        elif "grams" in req:
            self.moving_until = 0

    def status(self):
        return {"grams": self.grams, "zero": self.zero, "tare": self.tare,
                "shown": self.shown(), "moving": self.is_moving(),
                "overload": bool(self.status_bits() & ST_OVER),
                "negative": bool(self.status_bits() & ST_NEGATIVE),
                "status_bits": self.status_bits(), "capacity": self.capacity,
                "requests": self.requests, "weigh_requests": self.weigh_requests,
                "zero_requests": self.zero_requests, "tare_requests": self.tare_requests,
                "clear_tare_requests": self.clear_tare_requests,
                "zero_refused": self.zero_refused, "tare_refused": self.tare_refused,
                "unknown_bytes": self.unknown_bytes, "bytes_received": self.bytes_received,
                "weights_sent": self.weights_sent, "statuses_sent": self.statuses_sent}


class Simulator(simcore.Simulator):
    """One scale on a pty or a TCP port, with an optional control socket (simcore.Simulator):
    replies go out through a list of timed writes the loop flushes."""
    read_size = READ_SIZE

    def __init__(self, pty=None, tcp=None, control=None, capacity=CAPACITY_G):
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        super().__init__(pty, tcp, control, LOG)
        self.model = Model(capacity)
        self.silent = False         # read commands, answer nothing
        self.reply_delay_ms = 0     # hold every reply back this long
        self.split_ms = 0           # send a reply's second half this much later
        self.pending = []           # [(due ms, bytes)] in order
        self.before_reply = b""     # garbage sent just before the next reply

    def ready_note(self):
        return f", capacity {self.model.capacity} g"

    def log_stopped(self):
        LOG.info("stopped: %d requests, %d bytes received", self.model.requests,
                 self.model.bytes_received)

    def timeout(self):
        if self.pending:
            return min(simcore.LOOP_TICK, max(0.0, (self.pending[0][0] - now_ms()) / 1000))
        return simcore.LOOP_TICK

    def after_select(self, writable):
        self._flush()

    def received(self, data):
        reply = self.model.receive(data)
        if not reply or self.silent:
            return
        reply, self.before_reply = self.before_reply + reply, b""
        due = now_ms() + self.reply_delay_ms
        if self.split_ms and len(reply) > 1:
            half = len(reply) // 2
            self.pending += [(due, reply[:half]), (due + self.split_ms, reply[half:])]
        else:
            self.pending.append((due, reply))
        self._flush()

    def _flush(self):
        while self.pending and self.pending[0][0] <= now_ms():
            self.send(self.pending.pop(0)[1])

    def connection_lost(self):
        self.pending = []

    # -- control
    def status(self):
        return {"ok": True, **self.model.status(), "silent": self.silent,
                "reply_delay_ms": self.reply_delay_ms, "split_ms": self.split_ms,
                **self.transport_status()}

    @staticmethod
    def _ms(req, name):
        v = req[name]
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 60000:
            raise ValueError(f"{name} must be an integer from 0 to 60000")
        return v

    def command(self, req):
        """The scale's control commands; disconnect, garbage and quit are simcore's."""
        cmd = req.get("cmd")
        if cmd == "status":
            return self.status()
        if cmd == "set":
            self.model.set(req)
        elif cmd == "silent":
            self.silent = bool(req["on"])
        elif cmd == "reply_delay_ms":
            self.reply_delay_ms = self._ms(req, "ms")
        elif cmd == "split_ms":
            self.split_ms = self._ms(req, "ms")
        elif cmd == "garbage" and req.get("next_reply"):
            self.before_reply += bytes.fromhex(req["bytes"])
            return {"ok": True}
        else:
            return super().command(req)
        self.log_control(req)
        return {"ok": True}


class Scale(simcore.Threaded):
    """The simulator on a thread of the calling process (tests):

        s = Scale(pty="/tmp/x/scale")   # or tcp="127.0.0.1:0"
        s.start(); s.set(grams=1234); ...s.status()...; s.stop()

    Every control command is a method: status(), set(**fields), silent(on), reply_delay_ms(ms),
    split_ms(ms), disconnect(), garbage(data), and command(dict) takes the control channel's
    JSON form."""
    name = "scale_8217"

    def __init__(self, pty=None, tcp=None, control=None, capacity=CAPACITY_G):
        super().__init__(Simulator(pty, tcp, control, capacity))

    def status(self):
        return self.command({"cmd": "status"})

    def set(self, **fields):
        return self.command({"cmd": "set", **fields})

    def silent(self, on):
        return self.command({"cmd": "silent", "on": on})

    def reply_delay_ms(self, ms):
        return self.command({"cmd": "reply_delay_ms", "ms": ms})

    def split_ms(self, ms):
        return self.command({"cmd": "split_ms", "ms": ms})

    def garbage(self, data, next_reply=False):
        return self.command({"cmd": "garbage", "bytes": bytes(data).hex(),
                             "next_reply": next_reply})


def main(argv=None):
    ap = simcore.parser("Mettler Toledo 8217 scale simulator (devices/sim/README.md)")
    ap.add_argument("--capacity", type=int, default=CAPACITY_G,
                    help=f"capacity in grams (default {CAPACITY_G})")
    ap.add_argument("--grams", type=int, default=0, help="load on the platter at start")

    def make(args):
        sim = Simulator(args.pty, args.tcp, args.control, args.capacity)
        sim.model.grams = args.grams
        return sim
    return simcore.main("scale_8217", ap, make, LOG, argv)


if __name__ == "__main__":
    sys.exit(main())
