#!/usr/bin/python3
"""A customer display simulator: an Epson-style 2x20 VFD pole display (DM-D command set). Tests
use it in place of a display and the "vfd" driver is tested against it, so it speaks the real
byte protocol (docs: devices/sim/README.md; protocol summary: section 5 of protocols.md).

Why it is built this way:

- A display never answers, so all there is to simulate is the screen: 2 lines of 20 cells, a
  cursor, a brightness, a mode. The byte stream is cut into commands by an incremental parser
  that never looks further ahead than the command it is in: a command split across reads waits
  for its remaining bytes, a command cut by a disconnect is discarded, and anything the display
  does not know (a byte outside printable ASCII, an unknown 1F sequence, a cursor position or
  brightness out of range) is skipped one byte at a time and counted (unknown). Nothing a
  driver sends may raise out of the parser.
- Commands: 0C clear (blank, cursor home), 18 cancel the cursor's line (blank, cursor to its
  start), 0B home, 1F 24 x y cursor (1-based, x 1..20, y 1..2), 1F 01/02/03 overwrite /
  vertical scroll / horizontal scroll mode, 1F 58 n brightness (1..4), 1B 40 initialise
  (clear, overwrite mode, brightness 4), 08 back, 09 right, 0A down, 0D line start. Text in
  overwrite mode wraps from the end of line 1 to line 2 and from the end of line 2 to line 1;
  vertical scroll mode scrolls up instead of going back to line 1. Horizontal scroll mode is
  taken as overwrite (no pole display driver here uses it).
- The transport loop (Simulator) is shared with led_display.py: one thread, one select() over
  the pty or TCP client, the control socket and a wake-up pipe; all state is touched only by
  that thread; the in-process form hands its calls to the loop through a queue.

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
import tty

LOG = logging.getLogger("vfd_display")
LOG.addHandler(logging.NullHandler())  # a library is silent unless its user sets up logging

# ---- defaults and limits (one table; the CLI help reads from it) ------------------------------
COLUMNS = 20
LINES = 2
BRIGHTNESS_MAX = 4      # brightness levels 1..4; 4 after power-on and ESC @
READ_SIZE = 65536
LOOP_TICK = 0.5         # seconds select() waits when nothing happens

ESC, US = 0x1B, 0x1F
MODES = {1: "overwrite", 2: "vertical", 3: "horizontal"}


class Display:
    """The VFD without transport: receive(chunk) takes bytes in any chunks."""

    def __init__(self):
        self.buf = bytearray()
        self.bytes_received = self.unknown = self.clears = self.incomplete = 0
        self.commands = 0
        self._init()

    def _init(self):
        self.cells = [[" "] * COLUMNS for _ in range(LINES)]
        self.x = self.y = 0
        self.brightness = BRIGHTNESS_MAX
        self.mode = "overwrite"

    def lines(self):
        return ["".join(row) for row in self.cells]

    def receive(self, data):
        self.bytes_received += len(data)
        self.buf += data
        i, b = 0, self.buf
        while i < len(b):
            n = self._one(b, i)
            if n is None:
                break
            i += n
        del b[:i]

    def connection_lost(self):
        """The link went away: an unfinished command is dropped and counted."""
        if self.buf:
            self.incomplete += 1
            self.buf = bytearray()

    def _one(self, b, i):
        """Execute the command at b[i]; its length, or None when more bytes are needed."""
        c = b[i]
        if 0x20 <= c < 0x7F:
            self._put(chr(c))
            return 1
        if c == 0x0C:
            self.cells = [[" "] * COLUMNS for _ in range(LINES)]
            self.x = self.y = 0
            self.clears += 1
        elif c == 0x18:
            self.cells[self.y] = [" "] * COLUMNS
            self.x = 0
        elif c == 0x0B:
            self.x = self.y = 0
        elif c == 0x08:
            self.x = max(0, self.x - 1)
        elif c == 0x09:
            self.x = min(COLUMNS - 1, self.x + 1)
        elif c == 0x0A:
            self._down()
        elif c == 0x0D:
            self.x = 0
        elif c == ESC:
            if len(b) < i + 2:
                return None
            if b[i + 1] != 0x40:
                self.unknown += 1
                return 1
            self._init()
            self.commands += 1
            return 2
        elif c == US:
            return self._us(b, i)
        else:
            self.unknown += 1
            return 1
        self.commands += 1
        return 1

    def _us(self, b, i):
        if len(b) < i + 2:
            return None
        c = b[i + 1]
        if c in MODES:
            self.mode = MODES[c]
            self.commands += 1
            return 2
        if c == 0x24:
            if len(b) < i + 4:
                return None
            x, y = b[i + 2], b[i + 3]
            if not (1 <= x <= COLUMNS and 1 <= y <= LINES):
                self.unknown += 1
                return 1
            self.x, self.y = x - 1, y - 1
            self.commands += 1
            return 4
        if c == 0x58:
            if len(b) < i + 3:
                return None
            n = b[i + 2]
            if not 1 <= n <= BRIGHTNESS_MAX:
                self.unknown += 1
                return 1
            self.brightness = n
            self.commands += 1
            return 3
        self.unknown += 1
        return 1

    def _put(self, ch):
        self.cells[self.y][self.x] = ch
        self.x += 1
        if self.x == COLUMNS:
            self.x = 0
            self._down()

    def _down(self):
        if self.y < LINES - 1:
            self.y += 1
        elif self.mode == "vertical":
            self.cells = self.cells[1:] + [[" "] * COLUMNS]
        else:
            self.y = 0

    def state(self):
        return {"ok": True, "lines": self.lines(), "cursor": [self.x + 1, self.y + 1],
                "brightness": self.brightness, "mode": self.mode, "clears": self.clears,
                "commands": self.commands, "bytes_received": self.bytes_received,
                "unknown": self.unknown, "incomplete": self.incomplete}


# ---- the transport loop (shared with led_display.py) -------------------------------------------
class Simulator:
    """One display on a pty or a TCP port, with an optional control socket. setup() opens
    everything (the control socket last, so that its existence means ready); run() loops until
    stop() or a quit command; close() releases everything and removes the symlink. display is
    the display object (receive, connection_lost, state); query is the control command that
    answers display.state() ("screen", "state")."""

    def __init__(self, display, query, pty=None, tcp=None, control=None, log=LOG):
        if (pty is None) == (tcp is None):
            raise ValueError("exactly one of pty and tcp")
        self.display, self.query, self.log = display, query, log
        self.link, self.tcp, self.control_path = pty, tcp, control
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
        self.log.info("ready: %s", self.address())

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
        self.log.info("stopped: %d bytes received", self.display.bytes_received)

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
            readers = [self.wake_r, *self.control_clients]
            for r in (self.master, self.client, self.control):
                if r is not None:
                    readers.append(r)
            if self.listener is not None and self.client is None:
                readers.append(self.listener)
            try:
                ready, _, _ = select.select(readers, [], [], LOOP_TICK)
            except InterruptedError:
                continue
            for r in ready:
                if self.stopping:
                    break
                self._ready(r)
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
            self.display.receive(data)
        elif r is self.listener:
            try:
                self.client, peer = self.listener.accept()
            except OSError:
                return
            self.client.setblocking(False)
            self.connections += 1
            self.log.info("connection %d from %s:%d", self.connections, *peer)
        elif r is self.client and self.client is not None:
            try:
                data = self.client.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if data:
                self.display.receive(data)
            else:
                self._drop_client("the host closed the connection")
        elif r is self.control:
            c, _ = self.control.accept()
            self.control_clients[c] = bytearray()
        elif r in self.control_clients:
            self._control_input(r)

    def _drop_client(self, why):
        self.log.info("connection %d closed: %s", self.connections, why)
        self.client.close()
        self.client = None
        self.display.connection_lost()

    def _send(self, data):
        try:
            if self.master is not None:
                os.write(self.master, data)
            elif self.client is not None:
                self.client.send(data)
        except OSError as e:
            self.log.warning("%d bytes to the host dropped: %s", len(data), e)

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
                c.sendall(json.dumps(answer, ensure_ascii=False).encode() + b"\n")
                c.setblocking(False)
            except OSError:
                self.control_clients.pop(c, None)
                c.close()
                return

    def command(self, req):
        """One control command (a dict as on the control socket); returns the answer dict."""
        cmd = req.get("cmd")
        if cmd == self.query:
            return dict(self.display.state(), connections=self.connections)
        if cmd == "disconnect":
            if self.link:  # the new pair first, so that it never gets the old one's name
                old = (self.master, self.slave)
                self._open_pty()
                self.display.connection_lost()
                for fd in old:
                    os.close(fd)
                self.log.info("pty replaced: %s", self.address())
            elif self.client is not None:
                self._drop_client("disconnect requested on the control channel")
            else:
                return {"ok": False, "error": "no connection"}
        elif cmd == "garbage":
            data = bytes.fromhex(req["bytes"])
            if self.master is None and self.client is None:
                return {"ok": False, "error": "no connection"}
            self._send(data)
        elif cmd == "quit":
            self.stop()
        else:
            raise ValueError(f"unknown command {cmd!r}")
        self.log.info("control: %s", json.dumps(req))
        return {"ok": True}

    def call(self, fn, timeout=10):
        """Run fn() on the loop's thread and return its result."""
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


class Threaded:
    """A Simulator on a thread of the calling process (tests); the display classes derive."""
    name = "display"

    def __init__(self, sim):
        self.sim = sim
        self.thread = None

    def start(self):
        self.sim.setup()
        self.thread = threading.Thread(target=self.sim.run, name=self.name, daemon=True)
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

    def disconnect(self):
        return self.command({"cmd": "disconnect"})

    def garbage(self, data):
        return self.command({"cmd": "garbage", "bytes": bytes(data).hex()})


class VFD(Threaded):
    """The VFD simulator on a thread (tests):

        v = VFD(pty="/tmp/x/vfd")     # or tcp="127.0.0.1:0"; control=PATH
        v.start(); v.screen()["lines"]; v.garbage(b"\\xff"); v.disconnect(); v.stop()"""
    name = "vfd_display"

    def __init__(self, pty=None, tcp=None, control=None):
        super().__init__(Simulator(Display(), "screen", pty, tcp, control))

    def screen(self):
        return self.command({"cmd": "screen"})


def serve(prog, description, make_display, query, argv=None):
    """The command line shared by the display simulators."""
    ap = argparse.ArgumentParser(prog=prog, description=description)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", metavar="LINKPATH",
                       help="open a pseudo-terminal and point the symlink LINKPATH at it")
    where.add_argument("--tcp", metavar="127.0.0.1:PORT",
                       help="listen on this address (port 0: any free port, see the log)")
    ap.add_argument("--control", metavar="PATH", help="unix socket for JSON control commands")
    ap.add_argument("--log-level", choices=("debug", "info", "warning"), default="info")
    args = ap.parse_args(argv)
    log = logging.getLogger(prog)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format=f"{prog}: %(levelname)s %(message)s")
    try:
        sim = Simulator(make_display(), query, args.pty, args.tcp, args.control, log)
    except ValueError as e:
        log.error("cannot start: %s", e)
        return 2

    def on_signal(signum, frame):
        sim.stop()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        sim.setup()
    except (ValueError, OSError) as e:
        log.error("cannot start: %s", e)
        sim.close()
        return 2
    try:
        sim.run()
    finally:
        sim.close()
    return 0


def main(argv=None):
    return serve("vfd_display", "Epson-style 2x20 VFD customer display simulator "
                 "(devices/sim/README.md)", Display, "screen", argv)


if __name__ == "__main__":
    sys.exit(main())
