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
- One thread runs one select() loop over the transport, the control socket and a wake-up pipe;
  all state is touched only by that thread. Replies may be held back (reply_delay_ms) or cut in
  two (split_ms) to test a driver's reading; timed output is kept in a list the loop flushes.
  Garbage can be sent at once or just before the next reply, where it meets the driver's reply
  parser for sure. Scale (the in-process form) hands its calls to the loop through a queue.

Run with Debian's /usr/bin/python3."""
import argparse
import json
import logging
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
import tty

LOG = logging.getLogger("scale_8217")
LOG.addHandler(logging.NullHandler())  # a library is silent unless its user sets up logging

# ---- defaults and limits (one table; the CLI help reads from it) ------------------------------
CAPACITY_G = 15000        # over this (above zero) the scale is overloaded
ZERO_RANGE_PERCENT = 2    # Z is accepted within this share of capacity around power-up zero
READ_SIZE = 4096
LOOP_TICK = 0.5           # seconds select() waits when nothing happens

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


class Simulator:
    """One scale on a pty or a TCP port, with an optional control socket. setup() opens
    everything (the control socket last, so that its existence means ready); run() loops until
    stop() or a quit command; close() releases everything and removes the symlink."""

    def __init__(self, pty=None, tcp=None, control=None, capacity=CAPACITY_G):
        if (pty is None) == (tcp is None):
            raise ValueError("exactly one of pty and tcp")
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.link, self.tcp, self.control_path = pty, tcp, control
        self.model = Model(capacity)
        self.connections = 0
        self.master = self.slave = None
        self.slave_name = None
        self.listener = self.client = None
        self.port = None
        self.control = None
        self.control_clients = {}   # socket -> pending input bytes
        self.calls = queue.Queue()  # (fn, reply queue) from other threads
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        self.stopping = False
        self.silent = False         # read commands, answer nothing
        self.reply_delay_ms = 0     # hold every reply back this long
        self.split_ms = 0           # send a reply's second half this much later
        self.pending = []           # [(due ms, bytes)] in order
        self.before_reply = b""     # garbage sent just before the next reply

    # -- setup and teardown
    def setup(self):
        if self.link:
            self._open_pty()
        else:
            host, _, port = self.tcp.rpartition(":")
            if host != "127.0.0.1":
                raise ValueError("--tcp listens on 127.0.0.1 only")
            self.listener = socket.socket()
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((host, int(port)))
            self.listener.listen(4)
            self.port = self.listener.getsockname()[1]
        if self.control_path:
            if os.path.exists(self.control_path):
                os.unlink(self.control_path)
            self.control = socket.socket(socket.AF_UNIX)
            self.control.bind(self.control_path)
            self.control.listen(8)
        LOG.info("ready: %s, capacity %d g", self.address(), self.model.capacity)

    def address(self):
        return f"pty {self.link} -> {self.slave_name}" if self.link \
            else f"tcp 127.0.0.1:{self.port}"

    def _open_pty(self):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.slave_name = os.ttyname(self.slave)
        tmp = f"{self.link}.{os.getpid()}.tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(self.slave_name, tmp)
        if os.path.lexists(self.link) and not os.path.islink(self.link):
            os.unlink(tmp)
            raise ValueError(f"{self.link} exists and is not a symlink")
        os.replace(tmp, self.link)
        self.connections += 1

    def _close_pty(self):
        for fd in (self.master, self.slave):
            if fd is not None:
                os.close(fd)
        self.master = self.slave = None

    def close(self):
        if self.link:
            self._close_pty()
            try:
                if os.path.islink(self.link):
                    os.unlink(self.link)
            except OSError:
                pass
        for s in [self.client, self.listener, self.control, *self.control_clients]:
            if s is not None:
                s.close()
        self.client = self.listener = self.control = None
        self.control_clients = {}
        if self.control_path and os.path.exists(self.control_path):
            os.unlink(self.control_path)
        for fd in (self.wake_r, self.wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        LOG.info("stopped: %d requests, %d bytes received", self.model.requests,
                 self.model.bytes_received)

    # -- the loop
    def wake(self):
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def stop(self):
        self.stopping = True
        self.wake()

    def run(self):
        while not self.stopping:
            readers = [self.wake_r]
            if self.master is not None:
                readers.append(self.master)
            if self.client is not None:
                readers.append(self.client)
            if self.listener is not None and self.client is None:
                readers.append(self.listener)
            if self.control is not None:
                readers.append(self.control)
            readers += list(self.control_clients)
            tick = LOOP_TICK
            if self.pending:
                tick = min(tick, max(0.0, (self.pending[0][0] - now_ms()) / 1000))
            try:
                ready, _, _ = select.select(readers, [], [], tick)
            except InterruptedError:
                continue
            for r in ready:
                if self.stopping:
                    break
                self._ready(r)
            self._flush()
            self._do_calls()

    def _ready(self, r):
        if r == self.wake_r:
            try:
                os.read(self.wake_r, 4096)
            except BlockingIOError:
                pass
        elif r == self.master and self.master is not None:
            try:
                data = os.read(self.master, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EIO: no slave open; we hold one, so only transiently
                return
            self._receive(data)
        elif r is self.listener:
            try:
                self.client, peer = self.listener.accept()
            except OSError:
                return
            self.client.setblocking(False)
            self.connections += 1
            LOG.info("connection %d from %s:%d", self.connections, *peer)
        elif r is self.client and self.client is not None:
            try:
                data = self.client.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if data:
                self._receive(data)
            else:
                self._drop_client("the host closed the connection")
        elif r is self.control:
            c, _ = self.control.accept()
            self.control_clients[c] = bytearray()
        elif r in self.control_clients:
            self._control_input(r)

    def _receive(self, data):
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
            self._send(self.pending.pop(0)[1])

    def _drop_client(self, why):
        LOG.info("connection %d closed: %s", self.connections, why)
        self.client.close()
        self.client = None
        self.pending = []

    def _send(self, data):
        """Bytes to the host; dropped (and logged) when it is not there or not reading."""
        try:
            if self.master is not None:
                os.write(self.master, data)
            elif self.client is not None:
                self.client.send(data)
            else:
                LOG.warning("no host connected: %d bytes of answer dropped", len(data))
        except OSError as e:
            LOG.warning("answer of %d bytes dropped: %s", len(data), e)

    # -- control
    def _control_input(self, c):
        try:
            data = c.recv(65536)
        except OSError:
            data = b""
        if not data:
            del self.control_clients[c]
            c.close()
            return
        buf = self.control_clients[c]
        buf += data
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("a command is a JSON object")
                answer = self.command(req)
            except (ValueError, KeyError, TypeError) as e:
                answer = {"ok": False, "error": str(e)}
            try:
                c.settimeout(5)
                c.sendall(json.dumps(answer).encode() + b"\n")
                c.setblocking(False)
            except OSError:
                self.control_clients.pop(c, None)
                c.close()
                return

    def status(self):
        return {"ok": True, **self.model.status(), "silent": self.silent,
                "reply_delay_ms": self.reply_delay_ms, "split_ms": self.split_ms,
                "connections": self.connections, "address": self.address(),
                "port": self.port, "link": self.link}

    @staticmethod
    def _ms(req, name):
        v = req[name]
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 60000:
            raise ValueError(f"{name} must be an integer from 0 to 60000")
        return v

    def command(self, req):
        """One control command (a dict as on the control socket); returns the answer dict."""
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
        elif cmd == "disconnect":
            self.pending = []
            if self.link:  # the new pair first, so that it never gets the old one's name
                old = (self.master, self.slave)
                self._open_pty()
                for fd in old:
                    os.close(fd)
                LOG.info("pty replaced: %s", self.address())
            elif self.client is not None:
                self._drop_client("disconnect requested on the control channel")
            else:
                return {"ok": False, "error": "no connection"}
        elif cmd == "garbage":
            data = bytes.fromhex(req["bytes"])
            if req.get("next_reply"):
                self.before_reply += data
                return {"ok": True}
            if self.master is None and self.client is None:
                return {"ok": False, "error": "no connection"}
            self._send(data)
        elif cmd == "quit":
            self.stop()
        else:
            raise ValueError(f"unknown command {cmd!r}")
        LOG.info("control: %s", json.dumps(req))
        return {"ok": True}

    def call(self, fn, timeout=10):
        """Run fn() on the loop's thread and return its result (for Scale)."""
        answer = queue.Queue()
        self.calls.put((fn, answer))
        self.wake()
        ok, value = answer.get(timeout=timeout)
        if not ok:
            raise value
        return value

    def _do_calls(self):
        while True:
            try:
                fn, answer = self.calls.get_nowait()
            except queue.Empty:
                return
            try:
                answer.put((True, fn()))
            except Exception as e:  # handed back to the calling thread
                answer.put((False, e))


class Scale:
    """The simulator on a thread of the calling process (tests):

        s = Scale(pty="/tmp/x/scale")   # or tcp="127.0.0.1:0"
        s.start(); s.set(grams=1234); ...s.status()...; s.stop()

    Every control command is a method: status(), set(**fields), silent(on), reply_delay_ms(ms),
    split_ms(ms), disconnect(), garbage(data), and command(dict) takes the control channel's
    JSON form."""

    def __init__(self, pty=None, tcp=None, control=None, capacity=CAPACITY_G):
        self.sim = Simulator(pty, tcp, control, capacity)
        self.thread = None

    def start(self):
        self.sim.setup()
        self.thread = threading.Thread(target=self.sim.run, name="scale_8217", daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.thread is not None:
            self.sim.stop()
            self.thread.join(10)
            self.thread = None
            self.sim.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        return self.sim.port

    @property
    def link(self):
        return self.sim.link

    def command(self, req):
        return self.sim.call(lambda: self.sim.command(req))

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

    def disconnect(self):
        return self.command({"cmd": "disconnect"})

    def garbage(self, data, next_reply=False):
        return self.command({"cmd": "garbage", "bytes": bytes(data).hex(),
                             "next_reply": next_reply})


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Mettler Toledo 8217 scale simulator (devices/sim/README.md)")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", metavar="LINKPATH",
                       help="open a pseudo-terminal and point the symlink LINKPATH at it")
    where.add_argument("--tcp", metavar="127.0.0.1:PORT",
                       help="listen on this address (port 0: any free port, see the log)")
    ap.add_argument("--control", metavar="PATH", help="unix socket for JSON control commands")
    ap.add_argument("--capacity", type=int, default=CAPACITY_G,
                    help=f"capacity in grams (default {CAPACITY_G})")
    ap.add_argument("--grams", type=int, default=0, help="load on the platter at start")
    ap.add_argument("--log-level", choices=("debug", "info", "warning"), default="info")
    args = ap.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="scale_8217: %(levelname)s %(message)s")
    try:
        sim = Simulator(args.pty, args.tcp, args.control, args.capacity)
        sim.model.grams = args.grams
    except ValueError as e:
        LOG.error("cannot start: %s", e)
        return 2

    def on_signal(signum, frame):
        sim.stop()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        sim.setup()
    except (ValueError, OSError) as e:
        LOG.error("cannot start: %s", e)
        sim.close()
        return 2
    try:
        sim.run()
    finally:
        sim.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
