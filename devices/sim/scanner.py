#!/usr/bin/python3
"""A barcode scanner simulator for a serial (RS-232 / USB-CDC) or TCP scanner: each code goes out
as ASCII followed by CR, LF or CR LF, as a real scanner in that mode sends it (section 5 of
docs/protocols.md). Tests drive the scanner driver with it (docs: devices/sim/README.md).

Why it is built this way:

- A scanner only talks; it never waits for the host. So the simulator has no protocol state:
  the control channel says what to "scan" and the bytes go out. What tests need from it is
  control over how the bytes arrive, because that is what a driver gets wrong: many codes in
  one write (burst), one code in two writes with a pause between (split, also in the middle of
  a CR LF), bytes that are not a code (garbage), the line going away (disconnect).
- Output goes through one buffer written when the transport takes it (select for writing), so
  a host that does not read never blocks the loop or the control channel; bytes_sent counts
  what the transport took, the number a driver's bytes_in must match.
- On a pty the simulator keeps the slave open itself, so a driver may close and reopen the
  symlink freely and codes scanned meanwhile wait in the pty, as in a USB-CDC port's buffer.
  On TCP the scanner is the server (one client at a time); a code scanned while no client is
  connected is refused (ok false), not queued: a network scanner drops it too.
- One thread runs one select() loop over the transport, the control socket and a wake-up pipe;
  Scanner (the in-process form) hands its calls to that loop, so tests get the program's
  behaviour.

Run with Debian's /usr/bin/python3."""
import argparse
import heapq
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

LOG = logging.getLogger("scanner")
LOG.addHandler(logging.NullHandler())  # a library is silent unless its user sets up logging

# ---- defaults and limits (one table; the CLI help reads from it) ------------------------------
SUFFIXES = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n", "none": b""}
DEFAULT_SUFFIX = "crlf"
SPLIT_DELAY_MS = 50      # pause between the two writes of a split code
READ_SIZE = 65536
LOOP_TICK = 0.5          # seconds select() waits when nothing happens
OUT_LIMIT = 16 << 20     # bytes waiting for the host beyond which a scan is refused


class Simulator:
    """One scanner on a pty or a TCP port, with an optional control socket. setup() opens
    everything (the control socket last, so that its existence means ready); run() loops until
    stop() or a quit command; close() releases everything and removes the symlink."""

    def __init__(self, pty=None, tcp=None, control=None, suffix=DEFAULT_SUFFIX):
        if (pty is None) == (tcp is None):
            raise ValueError("exactly one of pty and tcp")
        if suffix not in SUFFIXES:
            raise ValueError(f"suffix must be one of {', '.join(SUFFIXES)}")
        self.link, self.tcp, self.control_path, self.suffix = pty, tcp, control, suffix
        self.master = self.slave = self.slave_name = None
        self.listener = self.client = None
        self.port = None
        self.control = None
        self.control_clients = {}    # socket -> pending input bytes
        self.out = bytearray()       # bytes waiting for the transport to take them
        self.later = []              # heap of (when, seq, bytes): the second half of a split
        self.seq = 0
        self.sent = 0                # codes scanned
        self.bytes_sent = 0          # bytes the transport took
        self.bytes_received = 0      # bytes the host sent (a scanner ignores them)
        self.connections = 0         # TCP clients accepted; pty pairs opened
        self.calls = queue.Queue()   # (fn, reply queue) from other threads
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        self.stopping = False

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
        LOG.info("ready: %s, suffix %s", self.address(), self.suffix)

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

    def close(self):
        for fd in (self.master, self.slave):
            if fd is not None:
                os.close(fd)
        self.master = self.slave = None
        if self.link:
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
        LOG.info("stopped: %d codes, %d bytes sent", self.sent, self.bytes_sent)

    # -- the loop
    def wake(self):
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def stop(self):
        self.stopping = True
        self.wake()

    def _host(self):
        """The file descriptor or socket bytes go to, None when no host is connected."""
        return self.master if self.master is not None else self.client

    def run(self):
        while not self.stopping:
            readers, writers = [self.wake_r], []
            host = self._host()
            if host is not None:
                readers.append(host)
                if self.out:
                    writers.append(host)
            if self.listener is not None and self.client is None:
                readers.append(self.listener)
            if self.control is not None:
                readers.append(self.control)
            readers += list(self.control_clients)
            tick = LOOP_TICK
            if self.later:
                tick = max(0.0, min(tick, self.later[0][0] - time.monotonic()))
            try:
                ready, writable, _ = select.select(readers, writers, [], tick)
            except InterruptedError:
                continue
            for r in ready:
                if self.stopping:
                    break
                self._ready(r)
            if writable:
                self._flush()
            self._due()
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
            except OSError:  # EAGAIN, or EIO while no slave is open (we hold one: transient)
                return
            self.bytes_received += len(data)
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
                self.bytes_received += len(data)
            else:
                self._drop_client("the host closed the connection")
        elif r is self.control:
            c, _ = self.control.accept()
            self.control_clients[c] = bytearray()
        elif r in self.control_clients:
            self._control_input(r)

    def _drop_client(self, why):
        LOG.info("connection %d closed: %s", self.connections, why)
        self.client.close()
        self.client = None
        self.out.clear()  # what the closed connection had not taken is lost with it
        self.later.clear()

    def _send(self, data):
        """Queue bytes for the host and write as much as it takes now."""
        self.out += data
        self._flush()

    def _flush(self):
        host = self._host()
        while self.out and host is not None:
            try:
                if host is self.client:
                    n = self.client.send(self.out)
                else:
                    n = os.write(self.master, self.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                LOG.warning("write: %s", e)
                if host is self.client:
                    self._drop_client(str(e))
                return
            self.bytes_sent += n
            del self.out[:n]

    def _due(self):
        now = time.monotonic()
        while self.later and self.later[0][0] <= now:
            _, _, data = heapq.heappop(self.later)
            if self._host() is not None:
                self._send(data)

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
        return {"ok": True, "sent": self.sent, "bytes_sent": self.bytes_sent,
                "bytes_waiting": len(self.out) + sum(len(d) for _, _, d in self.later),
                "bytes_received": self.bytes_received, "connections": self.connections,
                "connected": self._host() is not None, "suffix": self.suffix,
                "address": self.address(), "port": self.port, "link": self.link}

    def _code(self, req, code=None):
        """A code's bytes with its suffix (the request's, else the default)."""
        code = req["code"] if code is None else code
        if not isinstance(code, str) or not code.isascii():
            raise ValueError("a code is an ASCII string (use garbage for other bytes)")
        suffix = req.get("suffix", self.suffix)
        if suffix not in SUFFIXES:
            raise ValueError(f"suffix must be one of {', '.join(SUFFIXES)}")
        return code.encode("ascii") + SUFFIXES[suffix]

    def command(self, req):
        """One control command (a dict as on the control socket); returns the answer dict."""
        cmd = req.get("cmd")
        if cmd == "status":
            return self.status()
        if cmd == "quit":
            self.stop()
            return {"ok": True}
        if cmd not in ("scan", "burst", "split", "garbage", "disconnect"):
            raise ValueError(f"unknown command {cmd!r}")
        if cmd == "disconnect":
            return self._disconnect()
        if cmd == "scan":
            data, codes = self._code(req), 1
        elif cmd == "burst":
            if not isinstance(req["codes"], list):
                raise ValueError("codes is a list of strings")
            data = b"".join(self._code(req, c) for c in req["codes"])
            codes = len(req["codes"])
        elif cmd == "split":
            data, codes = self._code(req), 1
        else:
            data, codes = bytes.fromhex(req["bytes"]), 0
        if self._host() is None:
            return {"ok": False, "error": "no connection"}
        if len(self.out) + len(data) > OUT_LIMIT:
            return {"ok": False, "error": "the host is not reading"}
        if cmd == "split":
            at = int(req.get("at", len(data) // 2))
            delay = float(req.get("delay_ms", SPLIT_DELAY_MS)) / 1000
            if not 0 < at < len(data) or delay < 0:
                raise ValueError("at must cut the bytes in two, delay_ms must be 0 or more")
            self._send(data[:at])
            self.seq += 1
            heapq.heappush(self.later, (time.monotonic() + delay, self.seq, data[at:]))
        else:
            self._send(data)
        self.sent += codes
        LOG.debug("control: %s: %d bytes", cmd, len(data))
        return {"ok": True, "bytes": len(data)}

    def _disconnect(self):
        if self.link:  # the new pair first, so that it never gets the old one's name
            old = (self.master, self.slave)
            self.out.clear()
            self.later.clear()
            self._open_pty()
            for fd in old:
                os.close(fd)
            LOG.info("pty replaced: %s", self.address())
        elif self.client is not None:
            self._drop_client("disconnect requested on the control channel")
        else:
            return {"ok": False, "error": "no connection"}
        return {"ok": True}

    def call(self, fn, timeout=10):
        """Run fn() on the loop's thread and return its result (for Scanner)."""
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


class Scanner:
    """The simulator on a thread of the calling process (tests):

        s = Scanner(tcp="127.0.0.1:0")   # or pty="/tmp/x/scanner"; control=, suffix=
        s.start(); ...s.port... s.scan("6901234500011"); s.status(); s.stop()

    Every control command is a method: status(), scan(code, suffix), burst(codes, suffix),
    split(code, suffix, at, delay_ms), garbage(data), disconnect(); command(dict) takes the
    control channel's JSON form. A refused command answers ok false; a malformed one raises."""

    def __init__(self, pty=None, tcp=None, control=None, suffix=DEFAULT_SUFFIX):
        self.sim = Simulator(pty, tcp, control, suffix)
        self.thread = None

    def start(self):
        self.sim.setup()
        self.thread = threading.Thread(target=self.sim.run, name="scanner", daemon=True)
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

    @staticmethod
    def _with(req, **extra):
        req.update({k: v for k, v in extra.items() if v is not None})
        return req

    def scan(self, code, suffix=None):
        return self.command(self._with({"cmd": "scan", "code": code}, suffix=suffix))

    def burst(self, codes, suffix=None):
        return self.command(self._with({"cmd": "burst", "codes": list(codes)}, suffix=suffix))

    def split(self, code, suffix=None, at=None, delay_ms=None):
        return self.command(self._with({"cmd": "split", "code": code}, suffix=suffix, at=at,
                                       delay_ms=delay_ms))

    def garbage(self, data):
        return self.command({"cmd": "garbage", "bytes": bytes(data).hex()})

    def disconnect(self):
        return self.command({"cmd": "disconnect"})


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="barcode scanner simulator, serial or TCP (devices/sim/README.md)")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", metavar="LINKPATH",
                       help="open a pseudo-terminal and point the symlink LINKPATH at it")
    where.add_argument("--tcp", metavar="127.0.0.1:PORT",
                       help="listen on this address (port 0: any free port, see the log)")
    ap.add_argument("--control", metavar="PATH", help="unix socket for JSON control commands")
    ap.add_argument("--suffix", choices=sorted(SUFFIXES), default=DEFAULT_SUFFIX,
                    help=f"what follows each code unless a command says (default "
                         f"{DEFAULT_SUFFIX})")
    ap.add_argument("--log-level", choices=("debug", "info", "warning"), default="info")
    args = ap.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="scanner: %(levelname)s %(message)s")
    try:
        sim = Simulator(args.pty, args.tcp, args.control, args.suffix)
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
